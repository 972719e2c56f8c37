"""lkit builds what `linuxkit build` builds: each case's tar, unpacked, and its bundle files, byte for byte.

expected/ was written by LinuxKit itself (regen.py, commit in expected/LINUXKIT_VERSION) from the same
specs and the same synthetic images (images.py); this test needs no LinuxKit and no network.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import posixpath
from pathlib import Path

import pytest

from lkit.build.builder import build
from lkit.errors import LkitError
from lkit.images.store import Store
from lkit.spec import load_spec
from tests.conformance import images
from tests.conformance.fsstate import bundle_files, fs_state

HERE = Path(__file__).parent
CASES = sorted(p.name for p in (HERE / "cases").iterdir() if (p / "spec.yml").exists())
BAD = sorted(p.name for p in (HERE / "cases_bad").iterdir() if (p / "spec.yml").exists())

# Cases LinuxKit builds and lkit refuses on purpose (docs/linuxkit-differences.md), with lkit's words.
DIFFER = {
    "device_node": "character device",
    "volume_oci": "format oci is not supported",
}
SBOM = "sbom.spdx.json"


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    store = Store(tmp_path_factory.mktemp("conformance-store"))
    images.install(store)
    return store


def spec_paths(case: Path) -> list[Path]:
    return [p for p in (case / "spec.yml", case / "spec2.yml") if p.exists()]


def build_tar(case: Path, store: Store, out: Path, *, sbom: bool = True) -> Path:
    spec = load_spec(spec_paths(case))
    built = build(spec, ["tar"], out, store=store, cache_dir=out / "cache", use_cache=False, offline=True, sbom=sbom)
    return built.artifacts["tar"][0].path


def sbom_line_cut(line: str) -> str:
    """LinuxKit's SBOM has a random UUID: expected/fs.txt keeps its path and type only."""
    path, kind = line.split("\t")[:2]
    return f"{path}\t{kind}" if path == SBOM else line


@pytest.mark.parametrize("name", [c for c in CASES if c not in DIFFER])
def test_same_root_filesystem_and_bundles(name: str, store: Store, tmp_path: Path) -> None:
    case, expected = HERE / "cases" / name, HERE / "expected" / name
    tar = build_tar(case, store, tmp_path)
    got = [sbom_line_cut(line) for line in fs_state(tar)]
    want = (expected / "fs.txt").read_text().splitlines()
    missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
    assert not missing and not extra, f"{name}: LinuxKit has {missing[:8]}\nlkit has {extra[:8]}"
    bundles = bundle_files(tar)
    want_bundles = {p.relative_to(expected / "bundles").as_posix(): p.read_bytes()
                    for p in sorted((expected / "bundles").rglob("*.json"))}
    assert sorted(bundles) == sorted(want_bundles)
    for path, data in want_bundles.items():
        assert bundles[path] == data, f"{name}: {path} differs from LinuxKit's"


@pytest.mark.parametrize("name", [c for c in CASES if c not in DIFFER])
def test_tar_is_linuxkits_byte_for_byte(name: str, store: Store, tmp_path: Path) -> None:
    """Without the SBOM (LinuxKit puts a random UUID in it), the whole tar is LinuxKit's, byte for byte."""
    digest, size = (HERE / "expected" / name / "tar-no-sbom.sha256").read_text().split()
    tar = build_tar(HERE / "cases" / name, store, tmp_path, sbom=False)
    assert (hashlib.sha256(tar.read_bytes()).hexdigest(), tar.stat().st_size) == (digest, int(size))


def cpio_state(initrd: Path) -> dict[str, str]:
    """path -> "type mode uid gid mtime size detail" of the newc archive in a gzip initrd."""
    raw = initrd.read_bytes()
    data = gzip.decompress(raw[raw.index(b"\x1f\x8b\x08"):])  # after a ucode cpio, if any
    out: dict[str, str] = {}
    kinds = {0o040000: "dir", 0o100000: "file", 0o120000: "symlink", 0o010000: "fifo"}
    i = 0
    while True:
        assert data[i:i + 6] == b"070701", f"no cpio header at {i}"
        f = [int(data[i + 6 + 8 * k:i + 14 + 8 * k], 16) for k in range(13)]
        mode, uid, gid, mtime, size, namesize = f[1], f[2], f[3], f[5], f[6], f[11]
        name = data[i + 110:i + 110 + namesize - 1].decode()
        i = (i + 110 + namesize + 3) // 4 * 4
        body = data[i:i + size]
        i = (i + size + 3) // 4 * 4
        if name == "TRAILER!!!":
            return out
        kind = kinds[mode & 0o170000]
        detail = hashlib.sha256(body).hexdigest() if kind == "file" else body.decode() if kind == "symlink" else "-"
        out[name.rstrip("/")] = f"{kind}\t{mode & 0o7777:04o}\t{uid}\t{gid}\t{mtime}\t{size if kind == 'file' else 0}\t{detail}"


@pytest.mark.parametrize("name", [c for c in CASES if c not in DIFFER and
                                  "kernel:" in (HERE / "cases" / c / "spec.yml").read_text()])
def test_initrd_unpacks_to_linuxkits_tree(name: str, store: Store, tmp_path: Path) -> None:
    """kernel+initrd: the initrd holds LinuxKit's root but boot/'s files (they ride beside it), with
    hard links as relative symlinks, as LinuxKit's initrd writer makes them."""
    spec = load_spec(spec_paths(HERE / "cases" / name))
    built = build(spec, ["kernel+initrd"], tmp_path, store=store, cache_dir=tmp_path / "cache", use_cache=False,
                  offline=True)
    initrd = next(a.path for a in built.artifacts["kernel+initrd"] if a.path.name.endswith("-initrd.img"))
    got = cpio_state(initrd)
    want: dict[str, str] = {}
    for line in (HERE / "expected" / name / "fs.txt").read_text().splitlines():
        path, kind, *rest = line.split("\t")
        if path.startswith("boot/") or path == ".":
            continue
        if kind == "hardlink":
            want[path] = "symlink\t" + posixpath.relpath(rest[0], posixpath.dirname(path) or ".")
            got[path] = "symlink\t" + got[path].split("\t")[-1] if path in got else "missing"
        elif path == SBOM:
            want[path], got[path] = kind, got.get(path, "missing").split("\t")[0]
        else:
            want[path] = "\t".join([kind, *rest])
    missing = {p: v for p, v in want.items() if got.get(p) != v}
    # lkit also lists parents an image left implicit (the kernel's unpacker needs them): 0755 dirs.
    extra = {p: v for p, v in got.items() if p not in want and not v.startswith("dir\t0755\t0\t0\t")}
    assert not missing and not extra, f"LinuxKit: {[(p, v) for p, v in missing.items()][:5]}, lkit: " \
        f"{[(p, got.get(p)) for p in list(missing)[:5]]} extra {list(extra.items())[:5]}"


@pytest.mark.parametrize("name", [c for c in CASES if c not in DIFFER])
def test_sbom_has_linuxkit_shape_and_is_deterministic(name: str, store: Store, tmp_path: Path) -> None:
    case, expected = HERE / "cases" / name, HERE / "expected" / name
    first, second = (build_tar(case, store, tmp_path / n) for n in ("a", "b"))
    assert first.read_bytes() == second.read_bytes()  # the whole tar, the SBOM's namespace included
    import tarfile

    with tarfile.open(first) as tf:
        member = tf.extractfile(SBOM)
        assert member is not None
        doc = json.loads(member.read())
    assert doc.pop("documentNamespace").startswith("https://github.com/linuxkit/linuxkit/sbom-")
    want = json.loads((expected / "sbom.json").read_text())
    want.pop("documentNamespace")
    assert doc == want


@pytest.mark.parametrize("name", BAD)
def test_refused_like_linuxkit(name: str, store: Store, tmp_path: Path) -> None:
    """LinuxKit refuses these (expected_bad/NAME.txt has its words); lkit must refuse them too."""
    assert (HERE / "expected_bad" / f"{name}.txt").read_text().startswith("exit 1")
    with pytest.raises(LkitError) as info:
        build_tar(HERE / "cases_bad" / name, store, tmp_path)
    assert info.value.where or info.value.hint, f"{name}: the error names no place and gives no hint"


@pytest.mark.parametrize("name", sorted(DIFFER))
def test_deliberate_refusals(name: str, store: Store, tmp_path: Path) -> None:
    folder = HERE / ("cases" if (HERE / "cases" / name).exists() else "cases_differ") / name
    with pytest.raises(LkitError, match=DIFFER[name]):
        build_tar(folder, store, tmp_path)


def test_outputs_key_accepted_though_linuxkit_refuses(store: Store, tmp_path: Path) -> None:
    case = HERE / "cases_differ" / "outputs_key"
    assert load_spec(spec_paths(case)).outputs == ["tar"]
    assert build_tar(case, store, tmp_path).stat().st_size > 0


def test_every_case_has_linuxkit_output() -> None:
    for name in CASES:
        assert (HERE / "expected" / name / "fs.txt").exists(), f"run regen.py for {name}"
    assert (HERE / "expected" / "LINUXKIT_VERSION").read_text().strip()

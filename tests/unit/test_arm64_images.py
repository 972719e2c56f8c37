"""Images for more than one architecture, without the network: per-architecture locks and .deb names,
NAME:ARCH apt queries, ELF machine refusal, `{arch}` in build.yml, the per-platform tag (an index of
both, deterministic, amd64 resolving to the amd64-only manifest), platform matching (arm64 with
variant v8 or none) and the refusal of a single-platform image for another platform."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import zlib
from pathlib import Path

import pytest

from lkit.core import arch as arch_table
from lkit.core.arch import AMD64, ARM64
from lkit.errors import ImageError, SpecError
from lkit.images import debian, pkgbuild
from lkit.images.oci import add_image
from lkit.images.pkgbuild import lock as lock_mod
from lkit.images.registry import _select_platform
from lkit.images.store import OCI_INDEX, PlatformMismatch, Store, platform_matches

_spec = importlib.util.spec_from_file_location("lkit_test_debian_fakes_arm", Path(__file__).with_name("test_debian.py"))
fakes = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fakes)

REPO = Path(__file__).resolve().parents[2]
assemble_mod = importlib.import_module("lkit.images.pkgbuild.assemble")  # the package exports a function `assemble`


def machine(data: bytes, e_machine: int) -> bytes:
    """`data` (a fake ELF) as a binary of another machine."""
    return data[:0x12] + struct.pack("<H", e_machine) + data[0x14:]


def layer_tar(path: Path, files: dict[str, bytes]) -> Path:
    layer = pkgbuild.ImageTree()
    for name, data in files.items():
        layer.add(name, pkgbuild.ImageFile("file", 0o644, data))
    with open(path, "wb") as fh:
        pkgbuild.write_layer_tar(fh, layer.entries)
    return path


# -- locks, .deb names, apt ------------------------------------------------------------------------


def test_lock_name_and_header_per_arch():
    assert lock_mod.lock_name(AMD64) == "build.lock" and lock_mod.lock_name(ARM64) == "build.arm64.lock"
    # amd64's header is the one every committed build.lock starts with, byte for byte
    assert lock_mod.lock_header(AMD64) == lock_mod.LOCK_HEADER
    assert (REPO / "fixtures/pkgs/runc/build.lock").read_text().startswith(lock_mod.LOCK_HEADER)
    header = lock_mod.lock_header(ARM64)
    assert "(bookworm, arm64)" in header and "--update --arch arm64" in header
    assert (REPO / "fixtures/pkgs/runc/build.arm64.lock").read_text().startswith(header)


def test_every_fixture_has_an_arm64_lock():
    for build in sorted((REPO / "fixtures/pkgs").glob("*/build.yml")):
        assert (build.parent / "build.arm64.lock").is_file(), build.parent.name


def test_deb_cache_name_carries_the_arch():
    assert debian.deb_file_name("runc", "1:1.1-1", AMD64) == "runc_1%3a1.1-1_amd64.deb"
    assert debian.deb_file_name("runc", "1:1.1-1", ARM64) == "runc_1%3a1.1-1_arm64.deb"


def _fake_tool(tmp_path: Path, monkeypatch, name: str, script: str) -> Path:
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    log = tmp_path / f"{name}.log"
    (bindir / name).write_text(f'#!/bin/sh\necho "$@" >> {log}\n' + script)
    (bindir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    monkeypatch.setattr(debian, "check_apt_lists", lambda lists=None: None)
    return log


def test_download_asks_for_name_arch_then_all(tmp_path, monkeypatch):
    # an architecture-independent package is not NAME:arm64 to apt, only NAME:all
    log = _fake_tool(tmp_path, monkeypatch, "apt-get",
                     'case "$4" in *:all=*) printf "deb" > "x_1_all.deb";; *) echo "E: not found" >&2; exit 100;; esac\n')
    path, sha = debian.download("ca-certificates", "1", None, cache=tmp_path / "debs", arch=ARM64)
    assert path.name == "ca-certificates_1_arm64.deb" and sha == hashlib.sha256(b"deb").hexdigest()
    calls = log.read_text().splitlines()
    assert calls == ["download -q -- ca-certificates:arm64=1", "download -q -- ca-certificates:all=1"]


def test_download_failure_names_the_arch_and_its_update_command(tmp_path, monkeypatch):
    _fake_tool(tmp_path, monkeypatch, "apt-get", "echo \"E: Version '9' for 'runc' was not found\" >&2; exit 100\n")
    with pytest.raises(ImageError) as exc:
        debian.download("runc", "9", None, cache=tmp_path / "debs", arch=ARM64)
    assert "runc=9 (arm64)" in exc.value.message and "--update --arch arm64" in exc.value.hint


def test_candidate_versions_query_name_arch_then_all(tmp_path, monkeypatch):
    log = _fake_tool(tmp_path, monkeypatch, "apt-cache", """for a in "$@"; do case "$a" in
  busybox-static:arm64) printf 'busybox-static:arm64:\\n  Installed: (none)\\n  Candidate: 1:1.35\\n';;
  ca-certificates:arm64) printf 'ca-certificates:arm64:\\n  Installed: (none)\\n  Candidate: (none)\\n';;
  ca-certificates:all) printf 'ca-certificates:\\n  Installed: (none)\\n  Candidate: 2023\\n';;
esac; done
""")
    found = debian.candidate_versions(["busybox-static", "ca-certificates"], ARM64)
    assert found == {"busybox-static": "1:1.35", "ca-certificates": "2023"}
    assert log.read_text().splitlines() == ["policy -- busybox-static:arm64 ca-certificates:arm64",
                                            "policy -- ca-certificates:all"]
    with pytest.raises(ImageError, match="no installable candidate version for arm64"):
        debian.candidate_versions(["nosuch"], ARM64)


# -- ELF machine -------------------------------------------------------------------------------------


def test_elf_machine_refusal_names_both_machines():
    x86 = fakes.make_elf([])
    assert debian.elf_machine(x86) == 62 and debian.elf_machine(machine(x86, 183)) == 183
    debian.check_elf_machine(x86, AMD64, "/bin/x")
    debian.check_elf_machine(machine(x86, 183), ARM64, "/bin/x")
    with pytest.raises(ImageError) as exc:
        debian.check_elf_machine(x86, ARM64, "/usr/bin/tool")
    assert "/usr/bin/tool is an x86-64 (amd64) binary, not AArch64 (arm64)" in exc.value.message
    with pytest.raises(ImageError, match="ELF machine 40"):
        debian.check_elf_machine(machine(x86, 40), AMD64, "/bin/arm32")


def _arm_archive(tmp_path: Path, monkeypatch, tool_machine: int) -> Path:
    """A build.yml + build.arm64.lock over fake arm64 .debs (libraries in aarch64-linux-gnu)."""
    debs = tmp_path / "debs"
    debs.mkdir()
    arm = lambda data: machine(data, 183)  # noqa: E731
    libc = {"lib": None, "lib/aarch64-linux-gnu": None,
            "lib/aarch64-linux-gnu/libc.so.6": arm(fakes.make_elf([])),
            "lib/aarch64-linux-gnu/ld-linux-aarch64.so.1": arm(fakes.make_elf([])),
            "lib/ld-linux-aarch64.so.1": "/lib/aarch64-linux-gnu/ld-linux-aarch64.so.1"}
    tool = {"usr/bin/tool": machine(fakes.make_elf(["libc.so.6"], interp="/lib/ld-linux-aarch64.so.1"), tool_machine)}
    paths = {name: fakes.make_deb(debs / f"{name}.deb", files) for name, files in (("libc6", libc), ("tool", tool))}
    asked: list[tuple[str, str | None]] = []

    def download(name, version, sha256, cache=None, arch=None):
        asked.append((name, arch.name if arch else None))
        return paths[name], debian.sha256_file(paths[name])

    monkeypatch.setattr(debian, "download", download)
    d = tmp_path / "tool"
    d.mkdir()
    (d / "build.yml").write_text('image: lkit/tool\ntag: "1"\npackages: [libc6, tool]\n'
                                 "take:\n  - binaries: [/usr/bin/tool]\n")
    (d / "build.arm64.lock").write_text("".join(f"{n} 1 sha256:{debian.sha256_file(p)}\n"
                                                for n, p in sorted(paths.items())))
    (d / "asked").write_text("")
    monkeypatch.setattr(pkgbuild, "_asked", asked, raising=False)
    return d


def test_arm64_build_takes_aarch64_closure_and_writes_an_arm64_config(tmp_path, monkeypatch):
    d = _arm_archive(tmp_path, monkeypatch, 183)
    store = Store(tmp_path / "store")
    result = pkgbuild.build(d, store, arch=ARM64)
    assert result.status == "built" and result.arch == "arm64" and result.line().endswith("[arm64]")
    assert {a for _n, a in pkgbuild._asked} == {"arm64"}  # every .deb fetched for arm64
    img = store.resolve("lkit/tool:1", ARM64.platform)
    assert (img.config["architecture"], img.config["os"], img.config["variant"]) == ("arm64", "linux", "v8")
    names = set()
    import tarfile
    with tarfile.open(store.uncompressed_layer(img.layers[0], img.diff_ids[0])) as tf:
        names = set(tf.getnames())
    assert {"usr/bin/tool", "lib/ld-linux-aarch64.so.1", "lib/aarch64-linux-gnu/libc.so.6"} <= names
    # no build.lock (amd64) was needed; an amd64 build of the same folder asks for one
    with pytest.raises(Exception, match="no build.lock"):
        pkgbuild.build(d, store)
    assert pkgbuild.build(d, store, arch=ARM64).status == "unchanged"


def test_arm64_build_refuses_an_x86_binary(tmp_path, monkeypatch):
    d = _arm_archive(tmp_path, monkeypatch, 62)
    with pytest.raises(ImageError) as exc:
        pkgbuild.build(d, Store(tmp_path / "store"), arch=ARM64)
    assert "/usr/bin/tool is an x86-64 (amd64) binary, not AArch64 (arm64)" in exc.value.message
    assert exc.value.where.endswith("build.yml:5")


def test_lib_dirs_per_arch():
    # amd64's search order is what it always was
    assert AMD64.lib_dirs == assemble_mod.LIB_DIRS == (
        "lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")
    assert ARM64.lib_dirs[:2] == ("lib/aarch64-linux-gnu", "usr/lib/aarch64-linux-gnu")


# -- build.yml for an architecture ----------------------------------------------------------------


def test_arch_placeholder_and_per_arch_kernel_modules(tmp_path):
    d = tmp_path / "k"
    d.mkdir()
    (d / "build.yml").write_text('image: lkit/k\ntag: "1"\npackages:\n'
                                 '  - {via: "linux-image-cloud-{arch}", match: "linux-image-*-cloud-{arch}"}\n'
                                 "take:\n  - paths: [\"/lib/modules/6.1-{arch}/x.ko:/x.ko\"]\n"
                                 "  - kernel: {modules: [virtio-net], arm64: [virtio_mmio], amd64: [pcspkr]}\n")
    amd, arm = pkgbuild.load_build(d), pkgbuild.load_build(d, ARM64)
    assert amd.packages[0].via == "linux-image-cloud-amd64" and arm.packages[0].via == "linux-image-cloud-arm64"
    assert arm.packages[0].match == "linux-image-*-cloud-arm64"
    assert arm.take[0].value == [("/lib/modules/6.1-arm64/x.ko", "/x.ko")]
    assert amd.take[1].value == ["virtio_net", "pcspkr"] and arm.take[1].value == ["virtio_net", "virtio_mmio"]
    assert amd.arch is AMD64 and arm.arch is ARM64


def test_packages_of_one_architecture(tmp_path):
    """rngd links libgcrypt on amd64 and not on arm64: each architecture fetches and locks only its own."""
    d = tmp_path / "r"
    d.mkdir()
    (d / "build.yml").write_text('image: lkit/r\ntag: "1"\npackages:\n  - rng-tools5\n'
                                 "  - amd64: [libgcrypt20, libgpg-error0]\n  - libc6\ntake: [{paths: [/x]}]\n")
    amd, arm = pkgbuild.load_build(d), pkgbuild.load_build(d, ARM64)
    assert [(p.name, p.line) for p in amd.packages] == [("rng-tools5", 4), ("libgcrypt20", 5), ("libgpg-error0", 5),
                                                       ("libc6", 6)]
    assert [p.name for p in arm.packages] == ["rng-tools5", "libc6"]


@pytest.mark.parametrize(("item", "words"), [
    ("{arm64: [Bad_Name]}", ["Bad_Name", "invalid Debian package name"]),   # checked when amd64 is built too
    ("{amd64: [x], via: y}", ["unknown key 'via'", "amd64, arm64"]),
    ("{arm64: x}", ["expected a list"]),
])
def test_packages_of_one_architecture_errors(tmp_path, item, words):
    d = tmp_path / "r"
    d.mkdir()
    (d / "build.yml").write_text(f'image: lkit/r\ntag: "1"\npackages:\n  - tool\n  - {item}\ntake: [{{paths: [/x]}}]\n')
    with pytest.raises(SpecError) as exc:
        pkgbuild.load_build(d)
    assert exc.value.where == f"{d / 'build.yml'}:5", str(exc.value)
    for word in words:
        assert word in str(exc.value), str(exc.value)


def test_kernel_tar_names_builtins_and_refuses_foreign_modules(tmp_path):
    base = "lib/modules/6.1.0-9-cloud-arm64"
    files = {f"{base}/kernel/drivers/virtio/virtio.ko": machine(fakes.make_ko(name="virtio", depends=""), 183),
             f"{base}/kernel/drivers/x86/amd.ko": fakes.make_ko(name="amd", depends=""),
             f"{base}/modules.builtin": b"kernel/drivers/acpi/button.ko\n"}
    fs = debian.PackageFS.open([("k", fakes.make_deb(tmp_path / "k.deb", files))], tmp_path)
    builtin: list[str] = []
    pkgbuild.kernel_tar(fs, "6.1.0-9-cloud-arm64", ["virtio", "button"], "build.yml:7", arch=ARM64,
                        builtin_out=builtin)
    assert builtin == ["button"]
    with pytest.raises(ImageError, match="amd.ko is an x86-64"):
        pkgbuild.kernel_tar(fs, "6.1.0-9-cloud-arm64", ["amd"], "build.yml:7", arch=ARM64)


def test_check_kernel_per_arch():
    image = b"MZ" + b"\0" * 0x36 + b"ARM\x64" + b"\0" * 64
    assemble_mod.check_kernel(image, ARM64, "/boot/vmlinuz")  # Debian's arm64 vmlinuz: a plain Image
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    assemble_mod.check_kernel(gz.compress(image) + gz.flush(), ARM64, "/kernel")  # LinuxKit's Image.gz
    bz = b"\0" * 0x202 + b"HdrS" + b"\0" * 64
    assemble_mod.check_kernel(bz, AMD64, "/boot/vmlinuz")
    with pytest.raises(ImageError, match="not an arm64 kernel"):
        assemble_mod.check_kernel(bz, ARM64, "/boot/vmlinuz")
    with pytest.raises(ImageError, match="not an amd64 kernel"):
        assemble_mod.check_kernel(image, AMD64, "/boot/vmlinuz")


# -- the per-platform tag ---------------------------------------------------------------------------


def _both(tmp_path: Path, store: Store, order: tuple[str, ...]) -> dict[str, str]:
    digests = {}
    for arch_name in order:
        arch = arch_table.get(arch_name)
        tar = layer_tar(tmp_path / f"{arch_name}.tar", {"arch": arch_name.encode()})
        digests[arch_name] = add_image(store, "lkit/multi:1", [tar], config={}, platform=arch.platform).digest
    return digests


def test_second_platform_makes_a_deterministic_index(tmp_path):
    one, two = Store(tmp_path / "one"), Store(tmp_path / "two")
    alone = _both(tmp_path, Store(tmp_path / "alone"), ("amd64",))["amd64"]
    first = _both(tmp_path, one, ("amd64", "arm64"))
    second = _both(tmp_path, two, ("arm64", "amd64"))
    assert first == second
    root_one, root_two = one.lookup("lkit/multi:1"), two.lookup("lkit/multi:1")
    assert root_one.media_type == OCI_INDEX and root_one.digest == root_two.digest
    index = json.loads(one.read_blob(root_one.digest))
    assert [m["platform"] for m in index["manifests"]] == [
        {"architecture": "amd64", "os": "linux"}, {"architecture": "arm64", "os": "linux", "variant": "v8"}]
    # linux/amd64 resolves to exactly the amd64-only build's manifest: amd64 outputs do not change
    assert one.resolve("lkit/multi:1", "linux/amd64").digest == alone == first["amd64"]
    assert one.resolve("lkit/multi:1", "linux/arm64/v8").digest == first["arm64"]
    assert one.platforms(root_one) == ["linux/amd64", "linux/arm64/v8"]


def test_rebuilding_one_platform_keeps_the_other(tmp_path):
    store = Store(tmp_path / "s")
    digests = _both(tmp_path, store, ("arm64", "amd64"))
    tar = layer_tar(tmp_path / "new.tar", {"arch": b"amd64 v2"})
    new = add_image(store, "lkit/multi:1", [tar], config={}, platform="linux/amd64").digest
    assert new != digests["amd64"]
    assert store.resolve("lkit/multi:1", "linux/amd64").digest == new
    assert store.resolve("lkit/multi:1", "linux/arm64").digest == digests["arm64"]
    index = json.loads(store.read_blob(store.lookup("lkit/multi:1").digest))
    assert len(index["manifests"]) == 2


def test_one_platform_stays_a_plain_manifest(tmp_path):
    store = Store(tmp_path / "s")
    digest = _both(tmp_path, store, ("amd64", "amd64"))["amd64"]
    assert store.lookup("lkit/multi:1").digest == digest  # same platform twice: replaced, no index


# -- platform matching and refusal -----------------------------------------------------------------


@pytest.mark.parametrize("offered, wanted, ok", [
    ({"os": "linux", "architecture": "arm64"}, "linux/arm64/v8", True),
    ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64/v8", True),
    ({"os": "linux", "architecture": "arm64", "variant": "v8"}, "linux/arm64", True),
    ({"os": "linux", "architecture": "arm64"}, "linux/arm64", True),
    ({"os": "linux", "architecture": "arm64", "variant": "v9"}, "linux/arm64/v8", False),
    ({"os": "linux", "architecture": "amd64"}, "linux/arm64/v8", False),
    ({"os": "linux", "architecture": "amd64"}, "linux/amd64", True),
])
def test_platform_matching(offered, wanted, ok):
    from lkit.images.store import parse_platform
    assert platform_matches(offered, parse_platform(wanted)) is ok
    index = {"manifests": [{"mediaType": "x", "digest": "sha256:" + "a" * 64, "size": 1, "platform": offered}]}
    if ok:
        assert _select_platform("r", index, wanted).platform == offered
    else:
        with pytest.raises(ImageError, match="no .* variant"):
            _select_platform("r", index, wanted)


def test_index_entry_without_variant_resolves_for_arm64_v8(tmp_path):
    store = Store(tmp_path / "s")
    tar = layer_tar(tmp_path / "a.tar", {"a": b"1"})
    img = add_image(store, "other/x:1", [tar], config={}, platform="linux/arm64")  # no variant anywhere
    assert "variant" not in img.config
    assert store.resolve("other/x:1", "linux/arm64/v8").digest == img.digest


def test_single_platform_image_for_another_platform_is_refused_by_name(tmp_path):
    store = Store(tmp_path / "s")
    tar = layer_tar(tmp_path / "a.tar", {"a": b"1"})
    add_image(store, "lkit/kernel:6.1", [tar], config={})
    add_image(store, "example.com/app:1", [tar], config={})
    with pytest.raises(PlatformMismatch) as exc:
        store.resolve("lkit/kernel:6.1", "linux/arm64/v8")
    message = exc.value.message
    assert "docker.io/lkit/kernel:6.1" in message and "amd64" in message and "arm64" in message
    assert exc.value.hint == "build it for arm64: lkit pkg build --arch arm64 fixtures/pkgs/kernel"
    with pytest.raises(PlatformMismatch) as exc:
        store.resolve("example.com/app:1", "linux/arm64/v8")
    assert "lkit cache pull --platform linux/arm64/v8 example.com/app:1" in exc.value.hint
    assert "lkit boots amd64 guests" not in (exc.value.hint or "")
    # an index without the platform says what it offers, with the same hint
    tar2 = layer_tar(tmp_path / "b.tar", {"b": b"2"})
    add_image(store, "lkit/kernel:6.1", [tar2], config={}, platform="linux/arm64/v8")
    with pytest.raises(PlatformMismatch, match="offers: linux/amd64, linux/arm64/v8"):
        store.resolve("lkit/kernel:6.1", "linux/s390x")


def test_ensure_keeps_the_mismatch_when_the_registry_has_nothing_either(tmp_path, monkeypatch):
    from lkit.errors import InfraError
    from lkit.images import registry
    store = Store(tmp_path / "s")
    add_image(store, "lkit/kernel:6.1", [layer_tar(tmp_path / "a.tar", {"a": b"1"})], config={})

    def no_registry(*_a, **_k):
        raise InfraError("registry docker.io: unreachable")

    monkeypatch.setattr(registry, "pull", no_registry)
    with pytest.raises(PlatformMismatch) as exc:
        registry.ensure(store, "lkit/kernel:6.1", platform="linux/arm64/v8")
    assert "built for amd64" in exc.value.message and "unreachable" in exc.value.hint
    with pytest.raises(PlatformMismatch):
        registry.ensure(store, "lkit/kernel:6.1", platform="linux/arm64/v8", offline=True)


# -- cache import/export and ls with two platforms ------------------------------------------------


def test_import_merges_a_platform_and_export_carries_the_index(tmp_path, capsys):
    from lkit.cli import main
    from lkit.images.cache_archive import export_archive, import_archive
    amd_store, arm_store = Store(tmp_path / "amd"), Store(tmp_path / "arm")
    amd = _both(tmp_path, amd_store, ("amd64",))["amd64"]
    arm = _both(tmp_path, arm_store, ("arm64",))["arm64"]
    # an arm64-only archive imported where amd64 is: both stay, as after building both
    import_archive(amd_store, export_archive(arm_store, ["lkit/multi:1"], tmp_path / "arm.tar",
                                             platform="linux/arm64/v8"))
    root = amd_store.lookup("lkit/multi:1")
    assert root.media_type == OCI_INDEX
    assert amd_store.resolve("lkit/multi:1", "linux/amd64").digest == amd
    assert amd_store.resolve("lkit/multi:1", "linux/arm64").digest == arm
    # the same index as building both in one store
    _both(tmp_path, Store(tmp_path / "built"), ("amd64", "arm64"))
    assert Store(tmp_path / "built").lookup("lkit/multi:1").digest == root.digest
    # both platforms present: the export carries the index, and an import elsewhere has both
    fresh = Store(tmp_path / "fresh")
    import_archive(fresh, export_archive(amd_store, ["lkit/multi:1"], tmp_path / "both.tar"))
    assert fresh.lookup("lkit/multi:1").digest == root.digest
    assert fresh.resolve("lkit/multi:1", "linux/arm64/v8").digest == arm
    capsys.readouterr()
    assert main(["cache", "--store", str(fresh.root), "ls"]) == 0
    assert f"docker.io/lkit/multi:1\t{root.digest}\tindex\tlinux/amd64,linux/arm64/v8" in capsys.readouterr().out

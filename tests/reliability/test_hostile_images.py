"""Hostile images, generated here as real OCI images in a temp store, built with the real `lkit build`.

Each layer is used twice: as an onboot container and as an init image. Whatever the entries say, the
host must be untouched (a canary folder and an absolute escape path are checked), the initrd may hold no
entry outside the build root (and none of a container image outside containers/), a refused image gives
a non-zero exit with one message naming the image and the spec entry, and no traceback.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from relkit import (D, Entry, F, H, S, add_tar_image, assert_clean_error, canonical, gz, initrd_modes,
                    lkit_env, put_raw_blob, run_lkit, tag_raw, tree_snapshot, write_tar)

ESCAPE = f"/tmp/lkit-escape-{uuid.uuid4().hex[:12]}"   # nothing may ever create this on the host


@dataclass(frozen=True)
class Hostile:
    name: str
    entries: tuple[Entry, ...]
    refused: str | None          # text the error must contain, or None: the build succeeds, contained


def _cases(canary: str) -> list[Hostile]:
    up = "../" * 12
    return [
        Hostile("dotdot-path", (F(f"{up}{canary.lstrip('/')}/pwned"),), "'..'"),
        Hostile("dotdot-inner", (D("etc"), F("etc/../../../pwned"),), "'..'"),
        Hostile("abs-symlink-parent", (S("evil", canary), F("evil/pwned"), S("esc", ESCAPE), F("esc/x")), None),
        Hostile("rel-symlink-parent", (S("up", up.rstrip("/")), F(f"up{canary}/pwned"),
                                       S("up2", f"a/{up}tmp"), F(f"up2/{Path(ESCAPE).name}")), None),
        # An entry under a symlink of its own image is dropped when the image is flattened (LinuxKit's
        # go-containerregistry does so: a non-directory hides what is below its path), loops included.
        Hostile("symlink-chain-loop", (S("a", "b"), S("b", "a"), F("a/x")), None),
        Hostile("hardlink-abs", (H("passwd", "/etc/passwd"),), "hardlink"),
        Hostile("hardlink-dotdot", (F("x"), H("shadow", f"{up}etc/shadow"),), "hardlink"),
        Hostile("hardlink-unseen", (H("shadow", "etc/shadow"),), "hardlink"),
        Hostile("char-device", (D("dev"), Entry("dev/sda", tarfile.CHRTYPE, devmajor=8, devminor=0, mode=0o660)),
                "character device"),
        Hostile("block-device", (Entry("disk", tarfile.BLKTYPE, devmajor=8, devminor=1, mode=0o660),),
                "block device"),
        Hostile("fifo", (Entry("run-fifo", tarfile.FIFOTYPE, mode=0o600),), None),  # harmless; LinuxKit takes it
        Hostile("whiteout-dotdot", (D("etc"), F("etc/.wh.."),), "whiteout"),
        Hostile("opaque-root", (F(".wh..wh..opq"),), "opaque"),
        Hostile("setuid", (D("bin"), F("bin/su", b"#!/bin/sh\n", mode=0o4755), F("bin/sg", b"x", mode=0o2755)),
                None),
    ]


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("canary")
    (d / "keep").write_text("canary\n")
    return d


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory: pytest.TempPathFactory, canary: Path) -> Path:
    """A fresh store: a tiny fake kernel and init, a benign image, and every hostile image."""
    root = tmp_path_factory.mktemp("hostile") / "store"
    tars = root.parent / "tars"
    tars.mkdir()
    add_tar_image(root, "hostile/kernel:1", [write_tar(tars / "kernel.tar", [F("kernel", b"\x7fELF not a kernel")])])
    add_tar_image(root, "hostile/init:1", [write_tar(tars / "init.tar", [D("sbin"), F("sbin/init", b"#!/bin/sh\n", 0o755),
                                                                         D("etc"), F("etc/passwd", b"root:x:0:0::/:/bin/sh\n")])])
    add_tar_image(root, "hostile/benign:1", [write_tar(tars / "benign.tar", [D("bin"), F("bin/true", b"", 0o755)])])
    for h in _cases(str(canary)):
        add_tar_image(root, f"hostile/{h.name}:1", [write_tar(tars / f"{h.name}.tar", h.entries)])
    return root


def _spec(path: Path, image: str, how: str) -> Path:
    lines = ["kernel:", "  image: hostile/kernel:1", "  tar: none", '  cmdline: "console=ttyS0"', "init:",
             "  - hostile/init:1"]
    if how == "init":
        lines.append(f"  - {image}")
    else:
        lines += ["onboot:", "  - name: evil", f"    image: {image}"]
    path.write_text("\n".join(lines) + "\n")
    return path


def _build(store: Path, spec: Path, out: Path):
    env = lkit_env(LKIT_STORE=store, LKIT_BUILD_CACHE=out.parent / "cache")
    return run_lkit(["build", "--offline", "--dir", out, spec], env=env)


@pytest.fixture(scope="module")
def baseline(hostile_store: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Initrd entries outside containers/ for a benign onboot image and with init only."""
    out: dict[str, set[str]] = {}
    for how in ("onboot", "init"):
        d = tmp_path_factory.mktemp(f"baseline-{how}")
        res = _build(hostile_store, _spec(d / "base.yml", "hostile/benign:1", how), d / "out")
        assert res.rc == 0, res.stderr
        out[how] = {n for n in initrd_modes(d / "out" / "base-initrd.img") if not n.startswith("containers/")}
    return out


def _names() -> list[str]:
    return [h.name for h in _cases("/canary")]


@pytest.mark.parametrize("how", ["onboot", "init"])
@pytest.mark.parametrize("name", _names())
def test_hostile_layer(name: str, how: str, hostile_store: Path, canary: Path, baseline: dict[str, set[str]],
                       tmp_path: Path, case) -> None:
    hostile = next(h for h in _cases(str(canary)) if h.name == name)
    case("hostile image", f"{name} as {how}")
    before = tree_snapshot(canary)
    image = f"hostile/{name}:1"
    spec = _spec(tmp_path / "spec.yml", image, how)
    res = _build(hostile_store, spec, tmp_path / "out")

    assert tree_snapshot(canary) == before, "the build wrote into the host canary folder"
    assert not os.path.lexists(ESCAPE), f"the build created {ESCAPE} on the host"
    assert "Traceback" not in res.stderr, res.stderr
    initrd = tmp_path / "out" / "spec-initrd.img"
    if hostile.refused is not None:
        text = assert_clean_error(res, hostile.refused, f"docker.io/{image}")
        if how == "onboot":
            assert "evil" in text, f"the error must name the spec entry:\n{text}"
        assert not initrd.exists(), "a refused image must leave no initrd"
        return
    assert res.rc == 0, res.stderr
    modes = initrd_modes(initrd)
    assert all(not n.startswith("/") and ".." not in n.split("/") for n in modes), sorted(modes)
    if how == "onboot":
        outside = {n for n in modes if not n.startswith("containers/")}
        assert outside == baseline["onboot"], f"container entries escaped containers/: {outside - baseline['onboot']}"
    if name == "setuid":
        prefix = "containers/onboot/000-evil/lower/" if how == "onboot" else ""
        assert modes[f"{prefix}bin/su"] == 0o104755, oct(modes[f"{prefix}bin/su"])
        assert modes[f"{prefix}bin/sg"] == 0o102755
    if name in ("abs-symlink-parent", "rel-symlink-parent", "symlink-chain-loop"):
        prefix = "containers/onboot/000-evil/lower/" if how == "onboot" else ""
        below = [n for n in modes if n.endswith(("/pwned", "/x", "/" + Path(ESCAPE).name))]
        assert not below, f"entries under a symlink must be dropped, as LinuxKit drops them: {below}"
        assert f"{prefix}{'a' if name == 'symlink-chain-loop' else 'up' if name.startswith('rel') else 'evil'}" in modes


# ---------------------------------------------------------------------------------- hostile configs

BAD_CONFIGS: dict[str, tuple[dict, str]] = {
    "cmd-int": ({"Cmd": 5}, "Cmd"),
    "cmd-null-item": ({"Cmd": [None]}, "Cmd"),
    "entrypoint-object": ({"Entrypoint": {"a": 1}}, "Entrypoint"),
    "env-string": ({"Env": "PATH=/bin", "Cmd": ["/x"]}, "Env"),
    "env-non-strings": ({"Env": [1, None], "Cmd": ["/x"]}, "Env"),
    "workdir-list": ({"WorkingDir": ["/"], "Cmd": ["/x"]}, "WorkingDir"),
    "user-int": ({"User": 0, "Cmd": ["/x"]}, "User"),
    "labels-list": ({"Labels": ["a"], "Cmd": ["/x"]}, "Labels"),
    "label-bad-json": ({"Labels": {"org.mobyproject.config": "{nope"}, "Cmd": ["/x"]}, "invalid JSON"),
    "label-wrong-type": ({"Labels": {"org.mobyproject.config": '{"capabilities": 5}'}, "Cmd": ["/x"]},
                         "capabilities"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_hostile_config(name: str, hostile_store: Path, tmp_path: Path, case) -> None:
    case("hostile image", f"image config {name}")
    config, expect = BAD_CONFIGS[name]
    ref = f"hostile/config-{name}:1"
    add_tar_image(hostile_store, ref, [write_tar(tmp_path / "l.tar", [D("bin")])], config=config)
    res = _build(hostile_store, _spec(tmp_path / "spec.yml", ref, "onboot"), tmp_path / "out")
    text = assert_clean_error(res, expect, f"docker.io/{ref}", "onboot evil")
    assert text.startswith(f"lkit: error: {tmp_path / 'spec.yml'}:"), text
    assert not (tmp_path / "out" / "spec-initrd.img").exists()


# ---------------------------------------------------------------------------------- broken blobs

def _good_image(store: Path, tmp: Path, ref: str) -> dict:
    """A benign image; returns its manifest (so a test can break one of its blobs)."""
    from lkit.images.store import Store

    digest = add_tar_image(store, ref, [write_tar(tmp / f"{uuid.uuid4().hex}.tar", [D("bin"), F("bin/true", b"ok" * 5000, 0o755)])])
    return Store(store).read_json(digest, "manifest")


def _layer_path(store: Path, manifest: dict) -> Path:
    return store / "blobs" / "sha256" / manifest["layers"][0]["digest"].split(":")[1]


@pytest.mark.parametrize("fault", ["digest-mismatch", "truncated", "missing-layer", "missing-config",
                                   "garbage-manifest"])
def test_broken_blob(fault: str, hostile_store: Path, tmp_path: Path, case) -> None:
    case("hostile image", f"blob fault: {fault}")
    store = tmp_path / "store"
    shutil.copytree(hostile_store, store, symlinks=True)
    ref = f"hostile/broken-{fault}:1"
    manifest = _good_image(store, tmp_path, ref)
    layer = _layer_path(store, manifest)
    if fault == "digest-mismatch":
        layer.write_bytes(gz(b"something else entirely" * 100))
        expect = ("corrupt",)
    elif fault == "truncated":
        data = layer.read_bytes()
        layer.write_bytes(data[: len(data) // 2])
        expect = ("corrupt",)
    elif fault == "missing-layer":
        layer.unlink()
        expect = ("missing",)
    elif fault == "missing-config":
        (store / "blobs" / "sha256" / manifest["config"]["digest"].split(":")[1]).unlink()
        expect = ("missing",)
    else:
        bogus = b"{not json"
        digest = put_raw_blob(store, bogus)
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest,
                               "size": len(bogus)}, "layers": []}
        tag_raw(store, ref, manifest)
        expect = ("not valid JSON",)
    spec = _spec(tmp_path / "spec.yml", ref, "onboot")
    index_before = (store / "index.json").read_bytes()
    res = _build(store, spec, tmp_path / "out")
    text = assert_clean_error(res, *expect, f"docker.io/{ref}")
    assert (store / "index.json").read_bytes() == index_before, "a failed build changed the store's index"
    listed = run_lkit(["cache", "ls"], env=lkit_env(LKIT_STORE=store))
    assert listed.rc == 0 and "docker.io/hostile/kernel:1" in listed.stdout, listed.stderr
    assert "evil" in text, f"the error must name the spec entry:\n{text}"
    assert not (tmp_path / "out" / "spec-initrd.img").exists()
    leftovers = list((store / "lkit-tmp").iterdir())
    assert not leftovers, f"temp files left in the store: {leftovers}"


# ---------------------------------------------------------------------------------- cache import

def _oci_layout_tar(path: Path, ref: str, corrupt: str) -> Path:
    """An OCI layout tar (what `linuxkit cache export` writes) with one bad blob."""
    raw = write_tar(path.parent / "l.tar", [D("bin"), F("bin/true", b"ok", 0o755)]).read_bytes()
    layer = gz(raw)

    def d(b: bytes) -> str:
        return "sha256:" + hashlib.sha256(b).hexdigest()

    config = canonical({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/true"]},
                        "rootfs": {"type": "layers", "diff_ids": [d(raw)]}})
    manifest = canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                          "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": d(config),
                                     "size": len(config)},
                          "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                      "digest": d(layer), "size": len(layer)}]})
    index = canonical({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                       "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                                      "digest": d(manifest), "size": len(manifest),
                                      "annotations": {"org.opencontainers.image.ref.name": ref},
                                      "platform": {"os": "linux", "architecture": "amd64"}}]})
    blobs = {d(layer): layer, d(config): config, d(manifest): manifest}
    if corrupt == "layer":
        blobs[d(layer)] = layer[:-7] + b"garbage"
    elif corrupt == "config":
        blobs[d(config)] = config.replace(b"amd64", b"arm64")
    elif corrupt == "missing":
        del blobs[d(layer)]

    with tarfile.open(path, "w") as tf:
        for name, data in [("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'), ("index.json", index)] + \
                [(f"blobs/sha256/{k[7:]}", v) for k, v in sorted(blobs.items())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("corrupt", ["layer", "config", "missing"])
def test_cache_import_corrupt_leaves_no_name(corrupt: str, tmp_path: Path, case) -> None:
    case("hostile image", f"lkit cache import of an OCI tar with a {corrupt} blob fault")
    store = tmp_path / "store"
    ref = f"docker.io/hostile/import-{corrupt}:1"
    archive = _oci_layout_tar(tmp_path / "bad.tar", ref, corrupt)
    env = lkit_env(LKIT_STORE=store)
    res = run_lkit(["cache", "import", archive], env=env)
    assert_clean_error(res)
    listed = run_lkit(["cache", "ls"], env=env)
    assert listed.rc == 0, listed.stderr
    assert ref not in listed.stdout, f"a half-imported image is listed:\n{listed.stdout}"
    index = json.loads((store / "index.json").read_text())
    assert index["manifests"] == []
    assert not list((store / "lkit-tmp").iterdir())


def test_cache_import_good_control(tmp_path: Path, case) -> None:
    """The same archive without a fault imports (so the corrupt cases fail for the right reason)."""
    case("hostile image", "lkit cache import of the same OCI tar intact (control)")
    store = tmp_path / "store"
    ref = "docker.io/hostile/import-ok:1"
    archive = _oci_layout_tar(tmp_path / "ok.tar", ref, "none")
    env = lkit_env(LKIT_STORE=store)
    res = run_lkit(["cache", "import", archive], env=env)
    assert res.rc == 0, res.stderr
    assert ref in run_lkit(["cache", "ls"], env=env).stdout

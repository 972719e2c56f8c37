"""arm64 images end to end: every fixtures/pkgs image built from real Debian arm64 packages (twice, into
fresh stores: the same digests), inspected (config, kernel, closure run under qemu-user), merged with
the amd64 build into one index per name; and `lkit build --arch arm64` of a spec whose images are
amd64 only refused, naming the image and the spec line.

Real parts: apt with the arm64 dpkg architecture (scripts/setup adds it), the committed
build.arm64.lock files, the store, the CLI as a subprocess. Cost with the .debs cached: ~10-20 s per
arm64 build of all fixtures (the first run downloads ~60 MB of arm64 packages).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from lkit.core.arch import ARM64
from lkit.images.store import OCI_INDEX, Store

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PKGS = ROOT / "fixtures" / "pkgs"


def lkit(*args: str, store: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "LKIT_STORE": str(store), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "lkit.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def digests(out: str) -> dict[str, str]:
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.startswith("lkit/")}


@pytest.fixture(scope="module")
def arm_store(tmp_path_factory) -> tuple[Store, dict[str, str]]:
    if ARM64.debian not in subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True,
                                          text=True).stdout.split():
        pytest.skip("the arm64 dpkg architecture is not added (run scripts/setup)")
    root = tmp_path_factory.mktemp("arm64-store")
    out = lkit("pkg", "build", "--arch", "arm64", *sorted(str(d) for d in PKGS.iterdir() if (d / "build.yml").is_file()),
               store=root).stdout
    return Store(root), digests(out)


def test_arm64_fixture_images_are_deterministic(arm_store, tmp_path):
    _store, first = arm_store
    assert len(first) == len(list(PKGS.glob("*/build.yml")))
    second = digests(lkit("pkg", "build", "--arch", "arm64", str(PKGS), store=tmp_path / "again").stdout)
    assert second == first


def test_arm64_images_are_arm64(arm_store, tmp_path):
    store, built = arm_store
    for ref in built:
        config = store.resolve(ref, ARM64.platform).config
        assert (config["architecture"], config["os"], config.get("variant")) == ("arm64", "linux", "v8"), ref
    kernel = store.resolve("lkit/kernel:6.1", ARM64.platform)
    with tarfile.open(store.uncompressed_layer(kernel.layers[0], kernel.diff_ids[0])) as tf:
        image = tf.extractfile("kernel").read(0x40)
        modules = [n for n in tf.getnames() if n == "kernel.tar"]
    assert image[0x38:0x3C] == b"ARM\x64" and modules  # Debian's uncompressed arm64 Image


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None, reason="needs qemu-user (scripts/setup installs it)")
def test_arm64_runc_runs_from_its_image_under_qemu_user(arm_store, tmp_path):
    store, _ = arm_store
    img = store.resolve("lkit/runc:1.1", ARM64.platform)
    with tarfile.open(store.uncompressed_layer(img.layers[0], img.diff_ids[0])) as tf:
        tf.extractall(tmp_path, filter="tar")
    proc = subprocess.run(["qemu-aarch64", "-L", str(tmp_path), str(tmp_path / "usr/bin/runc"), "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "runc version" in proc.stdout, proc.stderr


def test_amd64_build_after_arm64_makes_an_index_and_keeps_amd64_digests(arm_store, tmp_path):
    _store, arm = arm_store
    amd_only = digests(lkit("pkg", "build", str(PKGS / "runc"), store=tmp_path / "amd").stdout)
    both_root = tmp_path / "both"
    lkit("pkg", "build", "--arch", "arm64,amd64", str(PKGS / "runc"), store=both_root)
    both = Store(both_root)
    assert both.lookup("lkit/runc:1.1").media_type == OCI_INDEX
    assert both.resolve("lkit/runc:1.1", "linux/amd64").digest == amd_only["lkit/runc:1.1"]
    assert both.resolve("lkit/runc:1.1", "linux/arm64").digest == arm["lkit/runc:1.1"]


def test_build_for_arm64_with_amd64_only_images_is_refused_by_name(tmp_path):
    store = tmp_path / "amd64-only"
    images = ("kernel", "init", "runc", "containerd", "dhcpcd", "redis")
    lkit("pkg", "build", *(str(PKGS / name) for name in images), store=store)
    proc = lkit("build", "--arch", "arm64", "--offline", "--dir", str(tmp_path / "out"),
                str(ROOT / "suites" / "redisos.yml"), store=store, check=False)
    assert proc.returncode != 0
    err = proc.stderr
    assert "lkit/kernel:6.1" in err and "amd64" in err and "arm64" in err, err
    assert "redisos.yml:" in err and "lkit pkg build --arch arm64 fixtures/pkgs/kernel" in err, err
    assert not list((tmp_path / "out").glob("redisos-kernel*")), "nothing may be written"

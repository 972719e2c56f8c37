"""Every fixtures/pkgs image built from real Debian packages into a fresh store, then inspected.

Real parts: apt (downloads land in $XDG_CACHE_HOME/lkit/debs and are reused), the committed
build.lock files, the real store. Programs are run from the built image with the image's own
dynamic loader and libraries (no chroot needed), which proves the library closure is complete.
"""

from __future__ import annotations

import json
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from lkit.images import pkgbuild
from lkit.images.store import Store
from lkit.spec import schema
from lkit.spec.yamlmarks import YamlNode

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
PKGS = ROOT / "fixtures" / "pkgs"
EXPECTED = {"binfmt", "ca-certificates", "containerd", "dhcpcd", "efivarfs", "getty", "init", "kernel", "netutil", "nginx",
            "redis", "rngd", "runc", "sysctl"}
BUILD_STARTED: list[float] = []
VIRTIO_MODULES = ["virtio_ring", "virtio", "virtio_pci", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                  "virtio_net", "failover", "net_failover", "virtio_blk", "virtio_console", "virtio_rng",
                  "button", "evdev", "overlay", "squashfs", "isofs", "binfmt_misc", "loop"]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    store = Store(tmp_path_factory.mktemp("pkgstore"))
    BUILD_STARTED.append(time.time())
    results = {r.name: r for r in (pkgbuild.build(d, store) for d in pkgbuild.find_build_dirs([PKGS]))}
    return store, results


@pytest.fixture(scope="module")
def roots(built, tmp_path_factory):
    """Each image's layer unpacked into a directory (for running its programs)."""
    store, results = built
    out = {}
    for name, result in results.items():
        dest = tmp_path_factory.mktemp(f"root-{name}")
        img = store.resolve(result.ref)
        with tarfile.open(store.uncompressed_layer(img.layers[0], img.diff_ids[0])) as tf:
            tf.extractall(dest, filter="tar")
        out[name] = dest
    return out


def run_in_image(root: Path, program: str, *args: str) -> str:
    """Run `program` from the image with the image's ld-linux and library directories only."""
    libs = ":".join(str(root / d) for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"))
    loader = root / "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
    proc = subprocess.run([str(loader), "--inhibit-cache", "--library-path", libs, str(root / program.lstrip("/")),
                           *args], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout + proc.stderr


def test_all_fixture_images_build(built):
    _store, results = built
    assert set(results) == EXPECTED
    for r in results.values():
        assert r.digest.startswith("sha256:") and r.size > 1000, r
        print(r.line())


def test_kernel_image(built, roots):
    root = roots["kernel"]
    kernel = (root / "kernel").read_bytes()
    assert kernel[0x202:0x206] == b"HdrS" and len(kernel) > 5_000_000  # a bzImage
    with tarfile.open(root / "kernel.tar") as tf:
        names = tf.getnames()
        (dep_name,) = [n for n in names if n.endswith("/modules.dep")]
        dep = tf.extractfile(dep_name).read().decode()
    base = dep_name.rsplit("/", 1)[0]
    present = {n.rsplit("/", 1)[1][:-3].replace("-", "_") for n in names if n.endswith(".ko")}
    assert set(VIRTIO_MODULES) <= present
    assert len(present) < 40  # only what a QEMU guest needs, not the whole tree
    assert any(n.endswith("/virtio_net.ko") for n in names)
    virtio_net = next(line for line in dep.splitlines() if "/virtio_net.ko:" in line.split()[0])
    assert "net_failover.ko" in virtio_net and "virtio_ring.ko" in virtio_net
    assert (root / "kernel.tar").stat().st_size < 5_000_000
    assert base.startswith("lib/modules/6.1.")


def test_runc_and_containerd_run_from_their_images(roots):
    assert list((roots["runc"] / "usr/lib/x86_64-linux-gnu").glob("libseccomp.so.2*"))
    assert "libseccomp: 2.5" in run_in_image(roots["runc"], "/usr/bin/runc", "--version")
    for tool in ("containerd", "ctr"):
        assert "1.6" in run_in_image(roots["containerd"], f"/usr/bin/{tool}", "--version")
    assert (roots["containerd"] / "usr/bin/containerd-shim-runc-v2").is_file()


def test_init_image(roots):
    root = roots["init"]
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert (root / "bin/busybox").stat().st_mode & 0o111
    assert run_in_image(root, "/usr/bin/jq", "--version").startswith("jq-1.6")
    assert (root / "usr/bin/ps").is_file() and not (root / "usr/bin/ps").is_symlink()
    files = PKGS / "init" / "files"
    sources = [p for p in files.rglob("*") if p.is_file()]
    assert sources
    for src in sources:
        dest = root / src.relative_to(files)
        assert dest.is_file(), dest
        st = src.stat()
        if st.st_mtime < BUILD_STARTED[0]:  # other engineers edit these files while tests run
            assert dest.read_bytes() == src.read_bytes(), src
            assert dest.stat().st_mode & 0o777 == st.st_mode & 0o777, src


def test_services_run_from_their_images(roots):
    assert "Redis server v=7.0" in run_in_image(roots["redis"], "/usr/bin/redis-server", "--version")
    assert "nginx/1.22" in run_in_image(roots["nginx"], "/usr/sbin/nginx", "-v")
    assert "dhcpcd 9.4" in run_in_image(roots["dhcpcd"], "/usr/sbin/dhcpcd", "--version")
    assert os.access(roots["dhcpcd"] / "sbin/dhcpcd", os.X_OK)  # lkit's wrapper around udhcpc
    assert os.readlink(roots["dhcpcd"] / "sbin/udhcpc") == "/bin/busybox"
    assert os.access(roots["dhcpcd"] / "usr/share/udhcpc/default.script", os.X_OK)
    assert "rngd 5" in run_in_image(roots["rngd"], "/sbin/rngd", "--version")
    assert (roots["dhcpcd"] / "dhcpcd.conf").is_file()
    assert "www-data:x:33:33" in (roots["nginx"] / "etc/passwd").read_text()


def test_nginx_config_is_valid_in_its_root(roots):
    if os.geteuid() != 0:
        pytest.fail("nginx -t needs chroot: run the e2e tests as root (CI does)")
    proc = subprocess.run(["chroot", str(roots["nginx"]), "/usr/sbin/nginx", "-t"], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "test is successful" in proc.stderr, proc.stderr


def test_small_images(roots):
    certs = (roots["ca-certificates"] / "etc/ssl/certs/ca-certificates.crt").read_text()
    assert certs.count("-----BEGIN CERTIFICATE-----") > 100
    conf = (roots["sysctl"] / "etc/sysctl.d/00-lkit.conf").read_text()
    assert "kernel.panic = 10" in conf and "vm.overcommit_memory = 1" in conf
    assert ":lkit-sh:E::lksh::/bin/sh:" in (roots["binfmt"] / "etc/binfmt.d/lkit.conf").read_text()
    assert os.access(roots["getty"] / "usr/bin/rungetty.sh", os.X_OK)


def test_labels_are_json_valid_for_the_spec_schema(built):
    store, results = built
    labelled = set()
    for name, r in results.items():
        labels = store.resolve(r.ref).labels
        assert labels[pkgbuild.INPUTS_LABEL].startswith("sha256:")
        if pkgbuild.MOBY_LABEL in labels:
            label = json.loads(labels[pkgbuild.MOBY_LABEL])
            node = YamlNode.from_plain(label, f"{r.ref} label")
            schema.image_config(node, node.mapping(allowed=tuple(schema.IMAGE_FIELDS)))
            labelled.add(name)
    assert {"getty", "sysctl", "binfmt", "dhcpcd", "rngd", "nginx", "redis"} <= labelled
    nginx = store.resolve(results["nginx"].ref).config["config"]
    assert nginx["Cmd"] == ["/usr/sbin/nginx", "-g", "daemon off;"]
    rngd = json.loads(store.resolve(results["rngd"].ref).labels[pkgbuild.MOBY_LABEL])
    assert rngd["devices"][0]["major"] == 10 and rngd["devices"][0]["minor"] == 183


def test_rebuild_is_a_fast_noop_and_a_fresh_store_gets_the_same_digest(built, tmp_path):
    store, results = built
    started = time.monotonic()
    again = [pkgbuild.build(d, store) for d in pkgbuild.find_build_dirs([PKGS])]
    elapsed = time.monotonic() - started
    assert all(r.status == "unchanged" for r in again)
    assert {r.name: r.digest for r in again} == {n: r.digest for n, r in results.items()}
    assert elapsed < 10, f"warm no-op took {elapsed:.1f} s"
    fresh = pkgbuild.build(PKGS / "runc", Store(tmp_path / "fresh"))
    assert fresh.status == "built" and fresh.digest == results["runc"].digest

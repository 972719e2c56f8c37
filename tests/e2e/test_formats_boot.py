"""Every bootable output format, built from Debian's cloud kernel and a tiny busybox root, booted
under QEMU (TCG) until the root's /init prints a unique marker on the serial console.

The machine layer is written in parallel, so these tests start QEMU themselves with a plain
subprocess (killed in every path). Build time, size and boot time per format are printed at the end
(`pytest -s`) and written to $LKIT_FORMAT_METRICS if set.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkit.build.outputs._cpio import CpioWriter
from lkit.build.outputs.base import FORMAT_NAMES, SOURCE_DATE_EPOCH, BootFiles, get_format

pytestmark = pytest.mark.e2e

BOOT_TIMEOUT = 240.0      # seconds from qemu start to the marker (EFI under TCG takes ~10 s)
KERNEL_PACKAGE = "linux-image-cloud-amd64"
OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Modules the root carries so kernel+squashfs's stage 1 can find them (all from the .deb).
ROOT_MODULES = ("virtio", "virtio_ring", "virtio_pci", "virtio_pci_modern_dev", "virtio_pci_legacy_dev",
                "virtio_blk", "squashfs")
BOOTABLE = [f for f in FORMAT_NAMES if f not in ("kernel+initrd", "tar", "tar-kernel-initrd")]
# (format, how QEMU sees it): ISOs are also booted as plain disks (hybrid MBR, appended ESP).
BOOTS = [(f, "default") for f in BOOTABLE] + [(f, "disk") for f in ("iso-bios", "iso-efi", "iso-efi-initrd")]


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lkit" / "debs"


@dataclass(frozen=True)
class KernelFiles:
    version: str
    vmlinuz: Path
    modules: Path      # lib/modules/<version>


def debian_kernel() -> KernelFiles:
    """Download (once, cached) and unpack the Debian cloud kernel that linux-image-cloud-amd64 names."""
    deps = subprocess.run(["apt-cache", "depends", KERNEL_PACKAGE], capture_output=True, text=True,
                          timeout=60, check=True).stdout
    package = next(line.split(":", 1)[1].strip() for line in deps.splitlines()
                   if line.strip().startswith("Depends:") and "linux-image-6.1" in line)
    cache = _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        subprocess.run(["apt-get", "download", package], cwd=cache, capture_output=True, timeout=600,
                       check=True)
        debs = sorted(cache.glob(f"{package}_*.deb"))
    unpacked = cache / (debs[-1].stem + ".unpacked")
    if not unpacked.is_dir():
        tmp = cache / (debs[-1].stem + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], timeout=300, check=True)
        os.replace(tmp, unpacked)
    version = package.removeprefix("linux-image-")
    return KernelFiles(version, unpacked / "boot" / f"vmlinuz-{version}",
                       unpacked / "lib" / "modules" / version)


def init_script(marker: str) -> str:
    return ("#!/bin/busybox sh\n/bin/busybox mount -t proc proc /proc\n"
            f"/bin/busybox echo {marker} root=$(/bin/busybox stat -f -c %T /)\n"
            "/bin/busybox poweroff -f\n")


def root_entries(kernel: KernelFiles, marker: str) -> dict[str, tuple[int, bytes]]:
    """path -> (mode, data) of the test root's files: static busybox, /init, the stage-1 modules."""
    entries: dict[str, tuple[int, bytes]] = {
        "bin/busybox": (0o755, Path("/bin/busybox").read_bytes()),
        "init": (0o755, init_script(marker).encode()),
    }
    for ko in sorted(kernel.modules.rglob("*.ko")):
        if ko.stem in ROOT_MODULES:
            rel = ko.relative_to(kernel.modules.parent.parent.parent)
            entries[str(rel)] = (0o644, ko.read_bytes())
    return entries


def write_root(entries: dict[str, tuple[int, bytes]], kernel: Path, cmdline: str,
               work: Path) -> tuple[Path, Path]:
    """The initrd (gzip newc cpio) and the root tar (with boot/ as lkit's builder writes it)."""
    cpio = CpioWriter()
    for d in ("dev", "proc", "sys", "tmp"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    for path, (mode, data) in entries.items():
        cpio.file(path, data, mode)
    initrd = work / "initrd.img"
    initrd.write_bytes(cpio.gzip())
    tar_path = work / "rootfs.tar"
    boot = {"boot/kernel": (0o644, kernel.read_bytes()), "boot/cmdline": (0o644, cmdline.encode())}
    with tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        dirs = {"dev", "proc", "sys", "tmp", "boot"}
        for path in list(entries) + list(boot):
            parts = path.split("/")[:-1]
            dirs.update("/".join(parts[:i]) for i in range(1, len(parts) + 1))
        for d in sorted(dirs):
            info = tarfile.TarInfo(d)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, SOURCE_DATE_EPOCH
            tar.addfile(info)
        for path, (mode, data) in sorted({**entries, **boot}.items()):
            info = tarfile.TarInfo(path)
            info.size, info.mode, info.mtime = len(data), mode, SOURCE_DATE_EPOCH
            tar.addfile(info, io.BytesIO(data))
    return initrd, tar_path


@dataclass(frozen=True)
class Fixture:
    files: BootFiles
    marker: str


@pytest.fixture(scope="module")
def fixture(tmp_path_factory: pytest.TempPathFactory) -> Fixture:
    kernel = debian_kernel()
    work = tmp_path_factory.mktemp("formats-root")
    marker = f"LKIT-FORMAT-MARKER-{uuid.uuid4().hex[:12]}"
    cmdline = "console=ttyS0 panic=-1"
    initrd, tar_path = write_root(root_entries(kernel, marker), kernel.vmlinuz, cmdline, work)
    files = BootFiles(name="fmt", kernel=kernel.vmlinuz, initrd=initrd, cmdline=cmdline,
                      rootfs_tar=lambda: tar_path, workdir=work / "scratch")
    return Fixture(files, marker)


def qemu_args(fmt: str, outputs: dict[str, Path], vars_copy: Path, log: Path,
              media: str = "default") -> list[str]:
    """A plain QEMU command line booting one format (q35, TCG, serial to a file)."""
    args = ["qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-m", "512", "-smp", "1",
            "-nodefaults", "-display", "none", "-no-reboot", "-serial", f"file:{log}"]
    if get_format(fmt).efi:
        shutil.copyfile(OVMF_VARS, vars_copy)
        args += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_CODE}",
                 "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}"]
    if media == "disk":
        (img,) = outputs.values()
        args += ["-drive", f"file={img},format=raw,if=ide,snapshot=on"]
    elif fmt in ("iso-bios", "iso-efi", "iso-efi-initrd"):
        (iso,) = outputs.values()
        args += ["-drive", f"file={iso},media=cdrom,if=ide,readonly=on"]
    elif fmt in ("raw-bios", "raw-efi"):
        (img,) = outputs.values()
        args += ["-drive", f"file={img},format=raw,if=ide,snapshot=on"]
    elif fmt in ("qcow2-bios", "qcow2-efi"):
        (img,) = outputs.values()
        args += ["-drive", f"file={img},format=qcow2,if=ide,snapshot=on"]
    elif fmt == "kernel+squashfs":
        by_suffix = {p.name.split("-", 1)[1]: p for p in outputs.values()}
        args += ["-kernel", str(by_suffix["kernel"]), "-initrd", str(by_suffix["squashfs-initrd.img"]),
                 "-append", by_suffix["cmdline"].read_text(),
                 "-drive", f"file={by_suffix['squashfs.img']},format=raw,if=virtio,readonly=on"]
    else:
        raise AssertionError(f"no boot recipe for {fmt}")
    return args


def boot_until(args: list[str], log: Path, marker: str, timeout: float) -> float:
    """Run QEMU until `marker` appears in the serial log; returns seconds to the marker.
    QEMU is killed in every path."""
    start = time.monotonic()
    proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        while time.monotonic() - start < timeout:
            if log.exists() and marker in log.read_text(errors="replace"):
                return time.monotonic() - start
            if proc.poll() is not None:
                if log.exists() and marker in log.read_text(errors="replace"):
                    return time.monotonic() - start
                out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
                console = log.read_text(errors="replace")[-3000:] if log.exists() else ""
                raise AssertionError(f"qemu exited ({proc.returncode}) before the marker: {out}\n"
                                     f"console:\n{console}")
            time.sleep(0.1)
        raise AssertionError(f"no marker within {timeout} s; console tail:\n"
                             f"{log.read_text(errors='replace')[-3000:] if log.exists() else ''}")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)
        if proc.stdout:
            proc.stdout.close()


METRICS: dict[str, dict[str, float]] = {}


@pytest.fixture(scope="module", autouse=True)
def _report_metrics() -> Iterator[None]:
    yield
    if METRICS:
        print("\nformat                   build_s   size_MB   boot_s")
        for fmt, m in METRICS.items():
            print(f"{fmt:24} {m['build_s']:7.2f} {m['size_mb']:9.2f} {m['boot_s']:8.2f}")
        target = os.environ.get("LKIT_FORMAT_METRICS")
        if target:
            Path(target).write_text(json.dumps(METRICS, indent=2, sort_keys=True))


@pytest.mark.parametrize("fmt,media", BOOTS)
def test_format_boots_to_marker(fmt: str, media: str, fixture: Fixture, tmp_path: Path) -> None:
    files = dataclasses.replace(fixture.files, workdir=tmp_path / "work")
    outdir = tmp_path / "out"
    t0 = time.monotonic()
    written = get_format(fmt).write(files, outdir)
    build_s = time.monotonic() - t0
    assert sorted(p.name for p in written) == sorted(get_format(fmt).filenames("fmt"))
    outputs = {p.name: p for p in written}
    log = tmp_path / "console.log"
    boot_s = boot_until(qemu_args(fmt, outputs, tmp_path / "vars.fd", log, media), log, fixture.marker,
                        BOOT_TIMEOUT)
    console = log.read_text(errors="replace")
    line = next(ln for ln in console.splitlines() if fixture.marker in ln)
    if fmt == "kernel+squashfs":
        assert "lkit-stage1: root /dev/vda on tmpfs" in console
        assert "root=tmpfs" in line, line
    else:
        assert "root=ramfs" in line or "root=tmpfs" in line, line
    size = sum(p.stat().st_blocks * 512 if p.suffix == ".img" else p.stat().st_size for p in written)
    METRICS[fmt if media == "default" else f"{fmt} ({media})"] = {
        "build_s": round(build_s, 2), "size_mb": round(size / 1e6, 2), "boot_s": round(boot_s, 2)}

"""End to end on arm64: guests of the other architecture boot under TCG on this x86_64 host.

The guest is the machine layer's test guest built from Debian's arm64 packages (cloud kernel,
busybox-static:arm64); the EFI formats are written from it by lkit's own writers for arm64
(BOOTAA64.EFI, systemd's aa64 stub). Each boot reaches a shell, answers over the command channel
(lkit-agent on /dev/hvc0, a virtconsole port) and powers off through QMP system_powerdown (AAVMF
gives the kernel ACPI, whose GED power button reaches busybox acpid).
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from lkit.build.outputs.base import BootFiles, get_format
from lkit.core.arch import ARM64
from lkit.machine.artifacts import boot_target
from lkit.machine.channel import AgentChannel
from lkit.machine.testguest import SampleGuest, sample_guest
from lkit.machine.vm import Machine

pytestmark = pytest.mark.skipif(shutil.which(ARM64.qemu) is None,
                                reason=f"{ARM64.qemu} is not installed (Debian package {ARM64.qemu_package})")


@pytest.fixture(scope="module")
def guest() -> SampleGuest:
    return sample_guest(arch=ARM64)


def _boot_and_power_off(target, workdir: Path) -> Machine:
    with Machine(target, workdir=workdir, accel="tcg", arch=ARM64) as m:
        assert m.argv[0] == "qemu-system-aarch64"
        shell = m.wait_for_marker("shell", 120)
        assert shell.guest is not None
        assert m.succeed("uname -m") == "aarch64\n"
        assert isinstance(m.channel(), AgentChannel)           # the agent answered on /dev/hvc0
        assert "console=ttyAMA0" in m.succeed("cat /proc/cmdline").split()   # systemd-boot adds initrd=
        assert m.succeed("[ -d /sys/firmware/efi ] && echo efi") == "efi\n"   # every arm64 boot is UEFI
        result = m.shutdown(60)
        assert (result.method, result.reason) == ("powerdown", "guest-shutdown"), result
        assert "lkit: poweroff" in m.console_text()
    assert not m.running
    return m


def test_kernel_initrd_boots_runs_a_command_and_powers_off(guest: SampleGuest, tmp_path: Path) -> None:
    m = _boot_and_power_off(boot_target("kernel+initrd", guest.files(tmp_path)), tmp_path / "vm")
    assert "-kernel" in m.argv and (tmp_path / "vm" / "OVMF_VARS.raw").is_file()   # a private AAVMF VARS


@pytest.fixture(scope="module")
def efi_outputs(guest: SampleGuest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    out = tmp_path_factory.mktemp("arm64-out")
    built: dict[str, list[Path]] = {}
    for fmt in ("iso-efi", "iso-efi-initrd", "raw-efi", "qcow2-efi"):
        work = tmp_path_factory.mktemp(f"w-{fmt}")
        files = BootFiles(name="arm", kernel=guest.kernel, initrd=guest.initrd, cmdline=guest.cmdline,
                          rootfs_tar=lambda: pytest.fail("EFI formats need no root tar"), workdir=work, arch=ARM64)
        built[fmt] = get_format(fmt).write(files, out)
    return built


def test_iso_efi_is_reproducible(guest: SampleGuest, efi_outputs: dict[str, list[Path]],
                                 tmp_path: Path) -> None:
    files = BootFiles(name="arm", kernel=guest.kernel, initrd=guest.initrd, cmdline=guest.cmdline,
                      rootfs_tar=lambda: pytest.fail("no root tar"), workdir=tmp_path / "w", arch=ARM64)
    (again,) = get_format("iso-efi").write(files, tmp_path)
    (first,) = efi_outputs["iso-efi"]
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(first.read_bytes()).digest()


@pytest.mark.parametrize("fmt", ["iso-efi", "iso-efi-initrd", "raw-efi", "qcow2-efi"])
def test_efi_format_boots_under_aavmf(fmt: str, efi_outputs: dict[str, list[Path]], tmp_path: Path) -> None:
    _boot_and_power_off(boot_target(fmt, efi_outputs[fmt]), tmp_path / "vm")


def test_screendump_has_a_display(guest: SampleGuest, tmp_path: Path) -> None:
    with Machine(boot_target("kernel+initrd", guest.files(tmp_path)), workdir=tmp_path / "vm", accel="tcg",
                 arch=ARM64) as m:
        m.wait_for_marker("shell", 120)
        png = m.screendump(tmp_path / "screen.png")
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _root_tar(guest: SampleGuest, work: Path) -> Path:
    """The test guest's initrd as a root file system tar, with the modules stage 1 of kernel+squashfs
    needs (virtio_blk and squashfs from the arm64 kernel package, the virtio chain from the guest)
    under lib/modules/VERSION/ as a kernel image lays them out."""
    import gzip
    import subprocess
    import tarfile

    from lkit.build.outputs._archfiles import package_file
    from lkit.machine.testguest import _kernel_package

    pkg = _kernel_package(ARM64)                          # linux-image-6.1.0-N-cloud-arm64
    kver = pkg.removeprefix("linux-image-")
    root = work / "root"
    root.mkdir(parents=True)
    subprocess.run(["cpio", "-idm", "--quiet"], input=gzip.decompress(guest.initrd.read_bytes()), cwd=root,
                   check=True, timeout=60)
    mods = root / "lib/modules" / kver / "kernel"
    mods.mkdir(parents=True)
    for rel in ("drivers/block/virtio_blk.ko", "fs/squashfs/squashfs.ko"):
        shutil.copyfile(package_file(f"/lib/modules/{kver}/kernel/{rel}", pkg, ARM64), mods / Path(rel).name)
    for ko in (guest.kernel.parent / "modules").glob("*.ko"):
        shutil.copyfile(ko, mods / ko.name)
    tar_path = work / "root.tar"
    with tarfile.open(tar_path, "w") as tar:
        for p in sorted(root.rglob("*")):
            tar.add(p, str(p.relative_to(root)), recursive=False)
    return tar_path


def test_kernel_squashfs_boots_with_an_arm64_stage1(guest: SampleGuest, tmp_path: Path) -> None:
    """Stage 1 runs an aarch64 busybox (the root's own static one here), loads virtio_blk and
    squashfs, mounts /dev/vda and switches to the root's /init."""
    tar = _root_tar(guest, tmp_path / "src")
    files = BootFiles(name="arm", kernel=guest.kernel, initrd=guest.initrd, cmdline=guest.cmdline,
                      rootfs_tar=lambda: tar, workdir=tmp_path / "w", arch=ARM64)
    out = tmp_path / "out"
    out.mkdir()
    written = get_format("kernel+squashfs").write(files, out)
    m = _boot_and_power_off(boot_target("kernel+squashfs", written), tmp_path / "vm")
    assert "lkit-stage1: root /dev/vda on tmpfs" in m.console_text()


def test_stage1_without_a_root_busybox_takes_debians_arm64_one(tmp_path: Path) -> None:
    """No busybox in the root: stage 1 gets busybox-static:arm64 at the host's busybox-static version,
    never the host's x86_64 binary."""
    import gzip
    import subprocess
    import tarfile

    from lkit.build.outputs import kernel_squashfs

    empty = tmp_path / "root.tar"
    with tarfile.open(empty, "w"):
        pass
    with tarfile.open(empty) as tar:
        cpio = gzip.decompress(kernel_squashfs.stage1_initrd(tar, ARM64))
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=cpio, cwd=out, check=True, timeout=60)
    assert kernel_squashfs._is_static_elf((out / "bin/busybox").read_bytes(), ARM64)

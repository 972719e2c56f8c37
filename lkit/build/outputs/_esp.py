"""EFI system partition images shared by iso-efi, raw-efi and qcow2-efi (a UKI as BOOTX64.EFI)
and by iso-efi-initrd (systemd-boot with the kernel and initrd as separate files)."""

from __future__ import annotations

from pathlib import Path

from lkit.build.outputs import _bootcfg
from lkit.build.outputs._fat import FatFile, make_fat
from lkit.build.outputs._archfiles import package_file
from lkit.build.outputs._uki import STUB_PACKAGE, efi_kernel, make_uki
from lkit.build.outputs.base import BootFiles
from lkit.core.arch import Arch

BOOT_PATH = "EFI/BOOT/BOOTX64.EFI"
SYSTEMD_BOOT = "/usr/lib/systemd/boot/efi/systemd-bootx64.efi"


def systemd_boot_path(arch: Arch) -> str:
    return f"/usr/lib/systemd/boot/efi/systemd-boot{arch.efi_name}.efi"


def uki_esp(files: BootFiles, work: Path, *, hidden_sectors: int = 0) -> Path:
    """A FAT image whose only boot file is a UKI carrying kernel, initrd and command line."""
    work.mkdir(parents=True, exist_ok=True)
    boot = f"BOOT{files.arch.efi_name.upper()}"
    uki = make_uki(kernel=files.kernel, initrd=files.initrd, cmdline=files.cmdline, name=files.name,
                   out=work / f"{boot}.EFI", workdir=work / "uki", arch=files.arch)
    if files.sign is not None:      # Secure Boot variant: the UKI is the one binary the firmware verifies
        uki = files.sign(uki, work / f"{boot}.signed.EFI")
    versions = work / "boot-versions.txt"
    versions.write_text(_bootcfg.versions_txt([STUB_PACKAGE]))
    return make_fat(work / "esp.img", [FatFile(files.arch.efi_boot_file, uki), FatFile("boot-versions.txt", versions)],
                    hidden_sectors=hidden_sectors)


def systemd_boot_esp(files: BootFiles, work: Path) -> Path:
    """A FAT image with systemd-boot, a loader entry, and the kernel and initrd as plain files."""
    work.mkdir(parents=True, exist_ok=True)
    conf = work / "loader.conf"
    conf.write_text(_bootcfg.loader_conf())
    entry = work / "linuxkit.conf"
    entry.write_text(_bootcfg.loader_entry(files.cmdline))
    versions = work / "boot-versions.txt"
    versions.write_text(_bootcfg.versions_txt([STUB_PACKAGE]))
    return make_fat(work / "esp.img", [
        FatFile(files.arch.efi_boot_file, package_file(systemd_boot_path(files.arch), STUB_PACKAGE, files.arch)),
        FatFile("loader/loader.conf", conf),
        FatFile("loader/entries/linuxkit.conf", entry),
        FatFile(_bootcfg.KERNEL, efi_kernel(files.kernel, work / "kernel")),
        FatFile(_bootcfg.INITRD, files.initrd),
        FatFile("boot-versions.txt", versions),
    ])

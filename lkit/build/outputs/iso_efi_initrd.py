"""iso-efi-initrd: NAME-efi-initrd.iso, an EFI ISO with the kernel and initrd as separate files.

What sets LinuxKit's iso-efi-initrd apart from its iso-efi is that it boots kernel + initrd (not a
root filesystem on the ISO) through a boot loader with a config file. LinuxKit uses GRUB reading
/kernel and /initrd.img from the ISO 9660 tree; lkit uses Debian's systemd-boot with a Boot Loader
Specification entry, and because systemd-boot reads only FAT, the kernel and initrd sit next to it
on the El Torito FAT image (EFI/BOOT/BOOTX64.EFI, loader/entries/linuxkit.conf, /kernel,
/initrd.img) rather than in the ISO 9660 tree. As with iso-efi, that FAT image is also the GPT's
EFI system partition, so the ISO boots from a CD drive and as a disk.
"""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs import _iso
from lkit.build.outputs._deliver import deliver
from lkit.build.outputs._esp import systemd_boot_esp
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["iso-efi-initrd"].filenames(name)


def build_iso(files: BootFiles, out: Path) -> Path:
    work = files.workdir / "iso-efi-initrd"
    esp = systemd_boot_esp(files, work / "esp")
    root = _iso.stage(work / "root", {"boot.img": esp})
    return _iso.make_iso(out, root, efi=_iso.EfiBoot())


def write(files: BootFiles, outdir: Path) -> list[Path]:
    (target,) = filenames(files.name)
    return [deliver(build_iso(files, files.workdir / target), outdir, target)]


FORMAT = OutputFormat(formats.FORMATS["iso-efi-initrd"], write)

"""iso-efi: NAME-efi.iso, booted by UEFI firmware (OVMF) from an El Torito EFI entry.

LinuxKit's mkimage-iso-efi puts the root filesystem on the ISO and boots GRUB with root=/dev/sr0;
Debian's kernel has iso9660 (and the CD-ROM driver stack) only as modules, so that cannot work here.
Instead the El Torito EFI image is a FAT file system whose EFI/BOOT/BOOTX64.EFI is a unified kernel
image (systemd's stub + kernel + initrd + command line): no GRUB, no root device to find.
The FAT image is also listed in a GPT as the EFI system partition, so the same file boots under
UEFI when written to a disk or stick.
"""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs import _iso
from lkit.build.outputs._deliver import deliver
from lkit.build.outputs._esp import uki_esp
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["iso-efi"].filenames(name)


def build_iso(files: BootFiles, out: Path) -> Path:
    work = files.workdir / "iso-efi"
    esp = uki_esp(files, work / "esp")
    root = _iso.stage(work / "root", {"boot.img": esp})
    return _iso.make_iso(out, root, efi=_iso.EfiBoot())


def write(files: BootFiles, outdir: Path) -> list[Path]:
    (target,) = filenames(files.name)
    return [deliver(build_iso(files, files.workdir / target), outdir, target)]


FORMAT = OutputFormat(formats.FORMATS["iso-efi"], write)

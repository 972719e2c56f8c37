"""raw-efi: NAME-efi.img, a GPT disk image whose EFI system partition holds a unified kernel image.

LinuxKit's mkimage-raw-efi puts GRUB, the kernel and the initrd on the ESP; lkit puts one UKI at the
removable-media path EFI/BOOT/BOOTX64.EFI (systemd's stub + kernel + initrd + command line), which
OVMF boots with no boot loader configuration at all.
"""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs._disk import ALIGN, SECTOR, deliver_disk, once_per_build, write_disk
from lkit.build.outputs._esp import uki_esp
from lkit.build.outputs.base import BootFiles, OutputFormat


def filenames(name: str) -> list[str]:
    return formats.FORMATS["raw-efi"].filenames(name)


def build_disk(files: BootFiles, out: Path) -> Path:
    esp = uki_esp(files, files.workdir / "raw-efi", hidden_sectors=ALIGN // SECTOR)
    return write_disk(out, esp, scheme="gpt")


def disk(files: BootFiles) -> Path:
    return once_per_build(files, "raw-efi", build_disk)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    (target,) = filenames(files.name)
    return [deliver_disk(disk(files), files, outdir, target)]


FORMAT = OutputFormat(formats.FORMATS["raw-efi"], write)

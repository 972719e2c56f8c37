"""raw-bios: NAME-bios.img, a disk image booted by BIOS firmware through syslinux.

Layout as LinuxKit's mkimage-raw-bios: an MBR (syslinux's mbr.bin boot code) with one bootable FAT
partition holding syslinux (ldlinux.sys/ldlinux.c32), syslinux.cfg, the kernel and initrd.img.
The partition starts at 1 MiB; the FAT records that as its hidden-sector count, which is how the
syslinux boot sector finds itself. syslinux is installed with Debian's mtools-based installer, so
nothing is mounted and no root is needed.
"""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs import _bootcfg
from lkit.build.outputs._disk import ALIGN, SECTOR, deliver_disk, once_per_build, write_disk
from lkit.build.outputs._fat import FatFile, make_fat
from lkit.build.outputs._tools import data_file, run
from lkit.build.outputs.base import BootFiles, OutputFormat

MBR_BIN = "/usr/lib/syslinux/mbr/mbr.bin"
PACKAGES = _bootcfg.LOADER_PACKAGES["raw-bios"]


def filenames(name: str) -> list[str]:
    return formats.FORMATS["raw-bios"].filenames(name)


def build_disk(files: BootFiles, out: Path) -> Path:
    """Write the raw disk image to `out` (inside the workdir)."""
    work = files.workdir / "raw-bios"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "syslinux.cfg"
    cfg.write_text(_bootcfg.syslinux_cfg(files.cmdline))
    versions = work / "boot-versions.txt"
    versions.write_text(_bootcfg.versions_txt(PACKAGES))
    fat = make_fat(work / "boot.img", [
        FatFile("syslinux.cfg", cfg),
        FatFile("boot-versions.txt", versions),
        FatFile(_bootcfg.KERNEL, files.kernel),
        FatFile(_bootcfg.INITRD, files.initrd),
    ], hidden_sectors=ALIGN // SECTOR)
    run(["syslinux", "--install", fat])
    boot_code = data_file(MBR_BIN, "syslinux-common").read_bytes()
    return write_disk(out, fat, scheme="mbr", boot_code=boot_code)


def disk(files: BootFiles) -> Path:
    return once_per_build(files, "raw-bios", build_disk)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    (target,) = filenames(files.name)
    return [deliver_disk(disk(files), files, outdir, target)]


FORMAT = OutputFormat(formats.FORMATS["raw-bios"], write)

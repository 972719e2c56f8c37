"""iso-bios: NAME.iso, booted by isolinux from Debian's isolinux/syslinux-common packages.

Like LinuxKit's mkimage-iso-bios: kernel, initrd.img and an isolinux.cfg with the spec's command
line. Differences: `SERIAL 0 115200` so the loader itself talks on the serial console, the hybrid
MBR comes from xorriso's -isohybrid-mbr (no separate isohybrid run) so the ISO also boots as a disk,
and boot-versions.txt records the loader package versions.
"""

from __future__ import annotations

from pathlib import Path

from lkit.core import formats
from lkit.build.outputs import _bootcfg, _iso
from lkit.build.outputs._deliver import deliver
from lkit.build.outputs._tools import data_file
from lkit.build.outputs.base import BootFiles, OutputFormat

ISOLINUX_BIN = "/usr/lib/ISOLINUX/isolinux.bin"
ISOHDPFX_BIN = "/usr/lib/ISOLINUX/isohdpfx.bin"
LDLINUX_C32 = "/usr/lib/syslinux/modules/bios/ldlinux.c32"
PACKAGES = _bootcfg.LOADER_PACKAGES["iso-bios"]


def filenames(name: str) -> list[str]:
    return formats.FORMATS["iso-bios"].filenames(name)


def build_iso(files: BootFiles, out: Path) -> Path:
    """Write the ISO to `out` (inside the workdir)."""
    work = files.workdir / "iso-bios"
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "isolinux.cfg"
    cfg.write_text(_bootcfg.syslinux_cfg(files.cmdline))
    versions = work / "boot-versions.txt"
    versions.write_text(_bootcfg.versions_txt(PACKAGES))
    root = _iso.stage(work / "root", {
        "isolinux/isolinux.bin": data_file(ISOLINUX_BIN, "isolinux"),
        "isolinux/ldlinux.c32": data_file(LDLINUX_C32, "syslinux-common"),
        "isolinux/isolinux.cfg": cfg,
        "boot-versions.txt": versions,
        _bootcfg.KERNEL: files.kernel,
        _bootcfg.INITRD: files.initrd,
    })
    bios = _iso.BiosBoot(hybrid_mbr=data_file(ISOHDPFX_BIN, "isolinux"))
    return _iso.make_iso(out, root, bios=bios)


def write(files: BootFiles, outdir: Path) -> list[Path]:
    (target,) = filenames(files.name)
    built = build_iso(files, files.workdir / target)
    return [deliver(built, outdir, target)]


FORMAT = OutputFormat(formats.FORMATS["iso-bios"], write)

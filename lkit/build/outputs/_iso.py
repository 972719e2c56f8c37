"""ISO 9660 images with El Torito boot entries, written by xorriso from a staging directory.

xorriso is used rather than pycdlib because pycdlib's isohybrid GPT has a wrong partition-array
CRC (the GPT header's CRC32 of the partition entries does not match them, so GPT readers take the
table as corrupt). Reproducibility: SOURCE_DATE_EPOCH in the environment makes xorriso use the
fixed time for the volume dates, the volume UUID and every file date; the volume id is fixed.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from lkit.build.outputs._tools import run
from lkit.build.outputs.base import SOURCE_DATE_EPOCH

VOLUME_ID = "LINUXKIT"
_MODIFICATION_DATE = "2017041816300000"  # SOURCE_DATE_EPOCH as an ISO 9660 date (UTC)


@dataclass(frozen=True)
class BiosBoot:
    """isolinux El Torito entry; paths are inside the ISO."""

    loader: str = "isolinux/isolinux.bin"
    catalog: str = "isolinux/boot.cat"
    hybrid_mbr: Path | None = None   # isohdpfx.bin: the ISO also boots as a disk


@dataclass(frozen=True)
class EfiBoot:
    """El Torito EFI entry: a FAT image (an EFI system partition) inside the ISO tree, hidden.

    xorriso also lists that image in a GPT as the EFI system partition (--efi-boot-part
    --efi-boot-image), so the same file boots from a CD drive and as a disk. The image is kept
    inside the ISO 9660 volume (not appended after it): firmware that sees a load size of 0 (images
    over 32 MiB) extends the El Torito image to the end of the volume, and OVMF fails to boot an
    appended ESP larger than that.
    """

    image: str = "boot.img"
    catalog: str = "boot.catalog"
    gpt: bool = True


def stage(root: Path, files: dict[str, Path]) -> Path:
    """Copy files into a fresh staging tree (dest path inside the ISO -> source file), every
    file and directory with fixed modes and the fixed time (xorriso takes them from the disk)."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for dest, source in sorted(files.items()):
        target = root / dest.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for entry in filenames:
            path = os.path.join(dirpath, entry)
            os.chmod(path, 0o644)
            os.utime(path, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
        os.chmod(dirpath, 0o755)
        os.utime(dirpath, (SOURCE_DATE_EPOCH, SOURCE_DATE_EPOCH))
    return root


def make_iso(out: Path, root: Path, *, bios: BiosBoot | None = None, efi: EfiBoot | None = None) -> Path:
    """Write `root` as a Rock Ridge + Joliet ISO with the requested boot entries."""
    args: list[str | Path] = [
        "xorriso", "-as", "mkisofs", "-o", out, "-R", "-J", "-V", VOLUME_ID,
        "--modification-date=" + _MODIFICATION_DATE, "--set_all_file_dates", _MODIFICATION_DATE,
        "-uid", "0", "-gid", "0",
    ]
    if bios is not None:
        args += ["-c", bios.catalog, "-b", bios.loader, "-no-emul-boot", "-boot-load-size", "4",
                 "-boot-info-table"]
        if bios.hybrid_mbr is not None:
            args += ["-isohybrid-mbr", bios.hybrid_mbr]
    if efi is not None:
        if bios is not None:
            args += ["-eltorito-alt-boot"]
        else:
            args += ["-c", efi.catalog, "-hide", efi.catalog]
        args += ["-e", efi.image, "-no-emul-boot", "-hide", efi.image]
        if efi.gpt:
            args += ["--efi-boot-part", "--efi-boot-image"]
    out.unlink(missing_ok=True)
    run(args + [root])
    return out


def el_torito_report(iso: Path) -> str:
    """xorriso's plain-text report of the boot entries (used by checks and tests)."""
    return run(["xorriso", "-indev", iso, "-report_el_torito", "plain", "-report_system_area", "plain"])

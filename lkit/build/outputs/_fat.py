"""FAT images (EFI system partitions, syslinux boot partitions) built without mounting anything.

mkfs.vfat with `--invariant` and a fixed volume id, then mtools to create directories and copy
files; both honour SOURCE_DATE_EPOCH, so the same files give the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lkit.build.outputs._tools import run

# Fixed volume serial ("LKIT" in ASCII) and label: no randomness, no host data.
VOLUME_ID = "4c4b4954"
VOLUME_LABEL = "LINUXKIT"


@dataclass(frozen=True)
class FatFile:
    """One file to put on the image: `dest` is a path inside the FAT ("EFI/BOOT/BOOTX64.EFI")."""

    dest: str
    source: Path


def size_for(files: list[FatFile], *, headroom: int = 2 << 20) -> int:
    """Image size in bytes: the files plus FAT overhead and headroom, rounded up to 1 MiB."""
    payload = sum(f.source.stat().st_size for f in files)
    total = payload + payload // 32 + headroom
    mib = 1 << 20
    return (total + mib - 1) // mib * mib


def make_fat(image: Path, files: list[FatFile], *, size: int | None = None, hidden_sectors: int = 0,
             label: str = VOLUME_LABEL) -> Path:
    """Create `image` (must not exist) as a FAT file system holding `files`, sorted by path."""
    size = size if size is not None else size_for(files)
    if size % 1024:
        raise ValueError("FAT image size must be a multiple of 1 KiB")
    image.unlink(missing_ok=True)
    args: list[str | Path] = ["mkfs.vfat", "--invariant", "-i", VOLUME_ID, "-n", label]
    if hidden_sectors:
        args += ["-h", str(hidden_sectors)]
    run(args + ["-C", image, str(size // 1024)])
    made: set[str] = set()
    for f in sorted(files, key=lambda f: f.dest):
        dest = PurePosixPath(f.dest.lstrip("/"))
        for parent in reversed(dest.parents[:-1]):
            if str(parent) not in made:
                run(["mmd", "-i", image, f"::/{parent}"])
                made.add(str(parent))
        run(["mcopy", "-i", image, f.source, f"::/{dest}"])
    return image


def list_fat(image: Path, directory: str = "/") -> str:
    """`mdir` listing of one directory (for checks and tests)."""
    return run(["mdir", "-i", image, f"::{directory}"])

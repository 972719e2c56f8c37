"""Small helpers shared by the formats that only rearrange the boot files."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from lkit.build.outputs.base import SOURCE_DATE_EPOCH


def copy_into(src: Path, outdir: Path, name: str) -> Path:
    dest = outdir / name
    shutil.copyfile(src, dest)
    return dest


def tar_of_files(dest: Path, members: list[tuple[str, Path]]) -> Path:
    """A deterministic tar of a few host files under fixed names."""
    with tarfile.open(dest, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, path in members:
            info = tarfile.TarInfo(name)
            info.size = path.stat().st_size
            info.mtime = SOURCE_DATE_EPOCH
            info.mode = 0o644
            info.uname = info.gname = ""
            with open(path, "rb") as f:
                tar.addfile(info, f)
    return dest

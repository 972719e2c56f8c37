"""files/: the host tree copied over the image, read once, with modes that do not depend on the umask."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from lkit.errors import ImageError
from lkit.images.pkgbuild.layer import ImageFile, ImageTree


@dataclass(frozen=True)
class HostFile:
    rel: str
    kind: str        # "file", "dir", "symlink"
    mode: int
    data: bytes      # file contents or symlink target


def image_mode(host_mode: int, kind: str) -> int:
    """The mode a host file gets in the image: 0755 for directories and executables, else 0644.

    Why: a checkout's permission bits depend on the umask (002 makes them group-writable) and git
    keeps only the exec bit, so copying them would give another image digest per machine.
    """
    if kind == "dir" or host_mode & 0o111:
        return 0o755
    return 0o644


def snapshot_files(root: Path) -> list[HostFile]:
    """files/ read once, sorted: the same bytes are hashed and copied even if it changes meanwhile.

    Modes are normalised by `image_mode` (only the exec bit of a file counts).
    """
    out: list[HostFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(HostFile(rel, "symlink", 0o777, os.readlink(full).encode()))
            elif stat.S_ISDIR(st.st_mode):
                out.append(HostFile(rel, "dir", image_mode(st.st_mode, "dir"), b""))
            elif stat.S_ISREG(st.st_mode):
                out.append(HostFile(rel, "file", image_mode(st.st_mode, "file"), full.read_bytes()))
            else:
                raise ImageError(f"{full}: only files, directories and symlinks can be copied into an image")
    return out


def overlay_files(tree: ImageTree, files: list[HostFile]) -> None:
    """Copy a host tree over the image (modes from `image_mode`, owner root, fixed times)."""
    for f in files:
        if f.kind == "symlink":
            tree.add(f.rel, ImageFile("symlink", 0o777, link=f.data.decode()))
        else:
            tree.add(f.rel, ImageFile(f.kind, f.mode, f.data))

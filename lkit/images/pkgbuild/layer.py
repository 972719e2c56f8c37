"""The image's files in memory (ImageTree) and the one deterministic layer tar written from them."""

from __future__ import annotations

import io
import posixpath
import tarfile
from dataclasses import dataclass, field
from typing import Any

from lkit.core import buildtime
from lkit.images import debian

EPOCH = buildtime.EPOCH


@dataclass
class ImageFile:
    kind: str                  # "file", "dir", "symlink"
    mode: int
    data: bytes = b""
    link: str = ""
    uid: int = 0
    gid: int = 0


@dataclass
class ImageTree:
    """The image's files by relative path; later additions replace earlier ones."""

    entries: dict[str, ImageFile] = field(default_factory=dict)

    def add(self, path: str, entry: ImageFile, *, replace: bool = True) -> None:
        path = debian.norm(path)
        if not path:
            return
        if not replace and path in self.entries:
            return
        self.entries[path] = entry


def write_layer_tar(fileobj: Any, entries: dict[str, ImageFile]) -> None:
    """A deterministic GNU tar: parents added, sorted, root-owned, fixed mtime, no pax headers."""
    full = dict(entries)
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent and parent not in full:
            full[parent] = ImageFile("dir", 0o755)
            parent = posixpath.dirname(parent)
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for path in sorted(full):
            e = full[path]
            info = tarfile.TarInfo(path)
            info.mtime = EPOCH
            info.uid, info.gid, info.uname, info.gname = e.uid, e.gid, "", ""
            info.mode = e.mode & 0o7777
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.link
                tf.addfile(info)
            else:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))

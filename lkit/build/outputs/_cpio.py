"""A minimal deterministic newc cpio writer for the small stage-1 initrd kernel+squashfs needs.

(The root filesystem's own initrd is written by lkit/build/tree_archive.py; this one only has to hold
busybox, a few kernel modules and a script, so it stays self-contained here.)
"""

from __future__ import annotations

import gzip
import io
import stat
from dataclasses import dataclass, field

from lkit.build.outputs.base import SOURCE_DATE_EPOCH


@dataclass(frozen=True)
class CpioEntry:
    path: str            # without leading "/"
    mode: int            # full st_mode (type + permissions)
    data: bytes = b""    # file contents, or the target of a symlink
    rdev: tuple[int, int] = (0, 0)


@dataclass
class CpioWriter:
    """Collects entries, then writes them sorted by path with fixed owner and time."""

    entries: dict[str, CpioEntry] = field(default_factory=dict)

    def dir(self, path: str, perm: int = 0o755) -> None:
        self.entries[path] = CpioEntry(path, stat.S_IFDIR | perm)

    def file(self, path: str, data: bytes, perm: int = 0o644) -> None:
        self._parents(path)
        self.entries[path] = CpioEntry(path, stat.S_IFREG | perm, data)

    def symlink(self, path: str, target: str) -> None:
        self._parents(path)
        self.entries[path] = CpioEntry(path, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, path: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._parents(path)
        self.entries[path] = CpioEntry(path, stat.S_IFCHR | perm, rdev=(major, minor))

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/".join(parts[:i])
            if parent not in self.entries:
                self.dir(parent)

    def to_bytes(self) -> bytes:
        out = io.BytesIO()
        for ino, path in enumerate(sorted(self.entries), start=1):
            _write_entry(out, ino, self.entries[path])
        _write_entry(out, 0, CpioEntry("TRAILER!!!", 0))
        data = out.getvalue()
        return data + b"\0" * (-len(data) % 512)

    def gzip(self) -> bytes:
        return gzip.compress(self.to_bytes(), compresslevel=9, mtime=0)


def _write_entry(out: io.BytesIO, ino: int, e: CpioEntry) -> None:
    name = e.path.encode() + b"\0"
    nlink = 2 if stat.S_ISDIR(e.mode) else 1
    mtime = SOURCE_DATE_EPOCH if ino else 0
    header = "070701" + "".join(f"{v:08x}" for v in (
        ino, e.mode, 0, 0, nlink, mtime, len(e.data), 0, 0, e.rdev[0], e.rdev[1], len(name), 0))
    out.write(header.encode() + name)
    out.write(b"\0" * (-out.tell() % 4))
    out.write(e.data)
    out.write(b"\0" * (-out.tell() % 4))

"""Deterministic archive writers over a Tree: newc cpio (the initrd) and ustar/pax tar.

The initrd is written as several complete cpio archives, each gzip-compressed on its own thread:
the kernel unpacks a concatenation of compressed cpio archives, and zlib releases the GIL, so a
2-core machine compresses about twice as fast. Output depends only on the tree and the level.
"""

from __future__ import annotations

import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from lkit.build.outputs.base import SOURCE_DATE_EPOCH
from lkit.build.tree import Node, Tree

CPIO_TRAILER = "TRAILER!!!"
GZIP_LEVEL = 1            # seed initrd, 2 cores: level 1 2.1 s / 52.2 MB, 4: 3.6 s / 48.7 MB, 6: 7.4 s / 47.1 MB
CHUNK_BYTES = 8 << 20     # uncompressed bytes per cpio archive / gzip member


def _pad4(n: int) -> bytes:
    return b"\0" * ((4 - n % 4) % 4)


def cpio_header(name: str, ino: int, mode: int, uid: int, gid: int, nlink: int, size: int) -> bytes:
    encoded = name.encode() + b"\0"
    fields = (ino, mode, uid, gid, nlink, SOURCE_DATE_EPOCH, size, 0, 0, 0, 0, len(encoded), 0)
    head = b"070701" + b"".join(b"%08X" % v for v in fields)
    return head + encoded + _pad4(len(head) + len(encoded))


def _cpio_entry(path: str, node: Node, ino: int) -> Iterator[bytes]:
    mode = node.type_bits | (node.mode & 0o7777)
    if node.kind == "file":
        assert node.content is not None
        size = node.content.length
        yield cpio_header(path, ino, mode, node.uid, node.gid, 1, size)
        yield from node.content.chunks()
        yield _pad4(size)
    elif node.kind == "symlink":
        target = node.target.encode()
        yield cpio_header(path, ino, mode, node.uid, node.gid, 1, len(target))
        yield target + _pad4(len(target))
    else:
        yield cpio_header(path, ino, mode, node.uid, node.gid, 2, 0)


def _trailer() -> bytes:
    return cpio_header(CPIO_TRAILER, 0, 0, 0, 0, 1, 0)


def cpio_groups(entries: Iterable[tuple[str, Node]], chunk_bytes: int) -> Iterator[list[tuple[str, Node, int]]]:
    """Split entries into consecutive groups of about `chunk_bytes` (each becomes one archive)."""
    group: list[tuple[str, Node, int]] = []
    size = 0
    for ino, (path, node) in enumerate(entries, start=1):
        group.append((path, node, ino))
        size += 512 + (node.content.length if node.kind == "file" and node.content else 0)
        if size >= chunk_bytes:
            yield group
            group, size = [], 0
    if group:
        yield group


def _compress_group(group: list[tuple[str, Node, int]], level: int) -> bytes:
    comp = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip wrapper, mtime 0, no name
    out = [comp.compress(piece) for path, node, ino in group for piece in _cpio_entry(path, node, ino)]
    out.append(comp.compress(_trailer()))
    out.append(comp.flush())
    return b"".join(out)


def write_initrd(tree: Tree, dest: BinaryIO, *, exclude: frozenset[str] = frozenset(), level: int = GZIP_LEVEL,
                 chunk_bytes: int = CHUNK_BYTES, prefix: bytes = b"", workers: int = 2) -> None:
    """Gzip newc cpio of `tree` into `dest`; `prefix` (e.g. an uncompressed ucode cpio) goes first."""
    dest.write(prefix)
    groups = cpio_groups(tree.walk(exclude), chunk_bytes)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        pending = []
        for group in groups:
            pending.append(pool.submit(_compress_group, group, level))
            while len(pending) > workers * 2:  # bounded memory: a few compressed chunks in flight
                dest.write(pending.pop(0).result())
        for fut in pending:
            dest.write(fut.result())


def write_cpio(tree: Tree, dest: BinaryIO, *, exclude: frozenset[str] = frozenset()) -> None:
    """Uncompressed newc cpio (tests and tools that want to read it back)."""
    for ino, (path, node) in enumerate(tree.walk(exclude), start=1):
        for piece in _cpio_entry(path, node, ino):
            dest.write(piece)
    dest.write(_trailer())


class _ChunkReader(io.RawIOBase):
    """A file object over Content.chunks(), for tarfile.addfile."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._chunks)
            except StopIteration:
                break
        if n < 0:
            data, self._buf = self._buf, b""
        else:
            data, self._buf = self._buf[:n], self._buf[n:]
        return data


def write_tar(tree: Tree, dest: BinaryIO, *, exclude: frozenset[str] = frozenset(), extra: Iterable[tuple[str, Node]] = ()) -> None:
    """A tar of the tree (plus `extra` entries first), fixed mtimes, numeric owners only."""
    with tarfile.open(fileobj=dest, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        for path, node in [*extra, *tree.walk(exclude)]:
            info = tarfile.TarInfo(path)
            info.mtime = SOURCE_DATE_EPOCH
            info.mode = node.mode & 0o7777
            info.uid, info.gid = node.uid, node.gid
            info.uname = info.gname = ""
            if node.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif node.kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = node.target
                tar.addfile(info)
            else:
                assert node.content is not None
                info.size = node.content.length
                tar.addfile(info, _ChunkReader(node.content.chunks()))

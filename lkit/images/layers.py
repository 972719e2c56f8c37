"""Safe iteration over an uncompressed layer tar: hostile entries are refused before anyone uses them.

The builder never extracts a layer onto the host; it records where each file's bytes live (`offset`)
and copies ranges later. So the checks that matter are on names and link targets: nothing may escape
the image root, hardlinks must point at a regular file (of this layer or a lower one: the assembler
checks that it exists), and device
nodes have no place in a LinuxKit image except the few LinuxKit itself drops. A fifo is harmless
and LinuxKit takes it, so lkit does too.
Symlink targets are kept verbatim: absolute targets are normal in images and are resolved by the
consumer inside the build root.
"""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypedDict

from lkit.errors import ImageError

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
# Files LinuxKit drops from every image (moby/image.go's exclude list): docker creates them in a
# running container, so they appear in exported images. Special files among them are skipped quietly.
LINUXKIT_DROPPED = frozenset({".dockerenv", "Dockerfile", "dev/console", "dev/pts", "dev/shm", "etc/hostname"})
KINDS = ("file", "dir", "symlink", "hardlink", "fifo", "whiteout", "opaque")


@dataclass(frozen=True)
class LayerEntry:
    """One entry of a layer, as the builder needs it (no file data: `offset` says where it is)."""

    path: str
    kind: str
    mode: int
    uid: int
    gid: int
    size: int
    linkname: str
    offset: int
    mtime: int = 0
    # What LinuxKit copies from the layer's header into its own tar output, besides the above.
    name: str = ""  # the member name as stored
    uname: str = ""
    gname: str = ""
    pax: tuple[tuple[str, str], ...] = ()  # the member's PAX records


class _Header(TypedDict):
    """The LayerEntry fields every kind of entry takes from its tar header (typed for `**`)."""

    mode: int
    uid: int
    gid: int
    mtime: int
    name: str
    uname: str
    gname: str
    pax: tuple[tuple[str, str], ...]


def normalise_path(name: str) -> str | None:
    """'./usr//bin/' -> 'usr/bin'; None for the root itself; ValueError for '..' or NUL."""
    if "\x00" in name:
        raise ValueError("contains a NUL byte")
    parts = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            raise ValueError("has a '..' component (would escape the image root)")
        parts.append(part)
    return "/".join(parts) or None


def _check_name(name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid UTF-8") from None
    if any(c in name for c in "\n\r"):
        raise ValueError("contains a line break")


def iter_layer(tar_path: Path, image: str, *, root: bool = False) -> Iterator[LayerEntry]:
    """Yield the entries of the uncompressed layer `tar_path` of `image`, refusing hostile ones.

    `root`: also yield an entry for the root directory itself ("./"), with path ".". An entry's
    `name` is the member name as stored, a directory's final "/" included (Python's tarfile drops it).
    """
    seen_other: set[str] = set()  # paths of this layer that a hard link may not name (dirs, fifos...)
    try:
        with tarfile.open(tar_path, mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
            for info in tf:
                entry = _entry(info, image, seen_other, root)
                if entry is not None and info.isdir() and "path" not in info.pax_headers:
                    entry = _with_stored_dir_name(tf, info, entry)
                if entry is not None:
                    if entry.kind in ("file", "hardlink"):
                        seen_other.discard(entry.path)
                    else:
                        seen_other.add(entry.path)
                    yield entry
                tf.members = []  # type: ignore[attr-defined]  # stream: keep no TarInfo (not in the stubs)
    except tarfile.TarError as exc:
        raise ImageError(f"image {image}: layer {tar_path.name} is not a valid tar: {exc}",
                         hint="the layer is corrupt or truncated; rebuild or re-import the image") from None
    except OSError as exc:
        raise ImageError(f"image {image}: cannot read layer {tar_path}: {exc.strerror or exc}") from None


def _with_stored_dir_name(tf: tarfile.TarFile, info: tarfile.TarInfo, entry: LayerEntry) -> LayerEntry:
    """The directory's name as its header block stores it (ustar prefix + name, "/" kept)."""
    assert tf.fileobj is not None
    tf.fileobj.seek(info.offset_data - tarfile.BLOCKSIZE)  # tarfile seeks to the next member itself
    block = tf.fileobj.read(tarfile.BLOCKSIZE)
    name = block[0:100].split(b"\0", 1)[0]
    if block[257:263] == b"ustar\0" or block[257:263] == b"ustar ":
        prefix = block[345:500].split(b"\0", 1)[0] if block[257:263] == b"ustar\0" else b""
        name = prefix + b"/" + name if prefix else name
    stored = name.decode("utf-8", "surrogateescape")
    if stored.rstrip("/") != entry.name.rstrip("/"):
        return entry
    return dataclasses.replace(entry, name=stored)


def _refuse(image: str, raw: str, why: str) -> ImageError:
    return ImageError(f"image {image}: layer entry {raw!r} {why}",
                      hint="the image is unsafe to use; rebuild it from trusted sources")


def _entry(info: tarfile.TarInfo, image: str, seen_other: set[str], root: bool = False) -> LayerEntry | None:
    raw = info.name
    try:
        _check_name(raw)
        path = normalise_path(raw)
    except ValueError as why:
        raise _refuse(image, raw, str(why)) from None
    common = _Header(mode=info.mode & 0o7777, uid=info.uid, gid=info.gid, mtime=int(info.mtime), name=raw,
                  uname=info.uname or "", gname=info.gname or "", pax=tuple(info.pax_headers.items()))
    if path is None:  # the root directory "./" itself
        if root and info.isdir():
            return LayerEntry(path=".", kind="dir", size=0, linkname="", offset=0, **common)
        return None
    base = path.rsplit("/", 1)[-1]
    parent = path[: -len(base)].rstrip("/")

    if base == OPAQUE_MARKER:
        if not parent:
            raise _refuse(image, raw, "is an opaque whiteout of the image root")
        return LayerEntry(path=parent, kind="opaque", size=0, linkname="", offset=0, **common)
    if base.startswith(WHITEOUT_PREFIX):
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", "..") or target.startswith(WHITEOUT_PREFIX):
            raise _refuse(image, raw, "is a malformed whiteout")
        return LayerEntry(path=f"{parent}/{target}" if parent else target, kind="whiteout",
                          size=0, linkname="", offset=0, **common)

    if info.isreg():
        return LayerEntry(path=path, kind="file", size=info.size, linkname="", offset=info.offset_data, **common)
    if info.isdir():
        return LayerEntry(path=path, kind="dir", size=0, linkname="", offset=0, **common)
    if info.issym():
        target = info.linkname
        if not target or "\x00" in target:
            raise _refuse(image, raw, f"is a symlink with an invalid target {target!r}")
        try:
            _check_name(target)
        except ValueError as why:
            raise _refuse(image, raw, f"is a symlink whose target {why}") from None
        return LayerEntry(path=path, kind="symlink", size=0, linkname=target, offset=0, **common)
    if info.islnk():
        target = info.linkname
        if target.startswith("/"):
            raise _refuse(image, raw, f"is a hardlink to the absolute path {target!r} (must be relative "
                                      "to the image root)")
        try:
            _check_name(target)
            norm = normalise_path(target)
        except ValueError as why:
            raise _refuse(image, raw, f"is a hardlink whose target {target!r} {why}") from None
        if norm is None or norm in seen_other:
            raise _refuse(image, raw, f"is a hardlink to {target!r}, which is not a regular file")
        return LayerEntry(path=path, kind="hardlink", size=0, linkname=norm, offset=0, **common)
    if info.isfifo():
        return LayerEntry(path=path, kind="fifo", size=0, linkname="", offset=0, **common)
    if info.ischr() or info.isblk():
        if path in LINUXKIT_DROPPED:
            return None
        kind = "character device" if info.ischr() else "block device"
        raise _refuse(image, raw, f"is a {kind}; LinuxKit images may not contain device nodes "
                                  "(create them at boot, e.g. devtmpfs)")
    raise _refuse(image, raw, f"has unsupported tar type {info.type!r}")

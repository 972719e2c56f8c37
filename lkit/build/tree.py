"""The root filesystem being built, held in memory as metadata only.

File contents are never copied into the tree: a file refers to a byte range of an uncompressed layer
tar in the image store (or holds a few inline bytes for generated files), so a 100 MB root costs a few
MB of RAM and nothing is ever extracted on the host.

Every insertion resolves its parent directories *inside* a chosen root node with chroot semantics:
an absolute symlink points at that root, `..` stops at it, and a symlink loop is an error. So neither a
layer nor a `files` entry can reach outside the build root, whatever its paths and links say.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from lkit.core import buildtime
from lkit.errors import BuildError

MAX_SYMLINK_HOPS = 40
# LinuxKit's defaultModTime (2017-04-18 16:30 UTC): the mtime of every entry the builder makes itself.
# Entries from image layers keep their own.
DEFAULT_MTIME = buildtime.EPOCH


@dataclass(frozen=True)
class Content:
    """Where a regular file's bytes are: inline, or a range of a file on the host."""

    data: bytes | None = None
    source: Path | None = None
    offset: int = 0
    size: int = 0

    @property
    def length(self) -> int:
        return len(self.data) if self.data is not None else self.size

    def chunks(self, bufsize: int = 1 << 20) -> Iterator[bytes]:
        if self.data is not None:
            yield self.data
            return
        assert self.source is not None
        with open(self.source, "rb") as f:
            f.seek(self.offset)
            left = self.size
            while left:
                chunk = f.read(min(bufsize, left))
                if not chunk:
                    raise BuildError(f"{self.source} ended {left} bytes early", hint="the image store may be damaged: re-import the image")
                left -= len(chunk)
                yield chunk


class NodeKind(StrEnum):
    """What an FsNode is (its values are the strings used before: a NodeKind equals its value)."""

    DIR = "dir"
    FILE = "file"
    SYMLINK = "symlink"
    HARDLINK = "hardlink"
    FIFO = "fifo"


@dataclass
class FsNode:
    """One entry. A "hardlink" names its target by its path from the tree's root, as a tar does;
    LinuxKit keeps it a hard link in tar outputs and makes it a relative symlink in the initrd."""

    kind: NodeKind
    mode: int  # permission bits incl. setuid/setgid/sticky
    uid: int = 0
    gid: int = 0
    content: Content | None = None
    target: str = ""
    children: dict[str, FsNode] = field(default_factory=dict)
    mtime: int = DEFAULT_MTIME

    @property
    def type_bits(self) -> int:
        return _TYPE_BITS[self.kind]


_TYPE_BITS = {NodeKind.DIR: stat.S_IFDIR, NodeKind.FILE: stat.S_IFREG, NodeKind.SYMLINK: stat.S_IFLNK,
              NodeKind.HARDLINK: stat.S_IFLNK, NodeKind.FIFO: stat.S_IFIFO}


def split_path(path: str, *, where: str = "") -> list[str]:
    """Components of a relative-or-absolute path; `..` is refused (no legitimate entry needs it)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise BuildError(f"path {path!r} contains '..'", where=where or None, hint="use a path inside the image root")
    if any("\0" in p for p in parts):
        raise BuildError(f"path {path!r} contains a NUL byte", where=where or None)
    return parts


class Tree:
    """A directory tree with chroot-safe insertion."""

    def __init__(self) -> None:
        self.root = FsNode(NodeKind.DIR, 0o755)

    # ---- lookup -------------------------------------------------------------------------------
    def _walk_dirs(self, base: FsNode, parts: list[str], *, create: bool, hops: int = 0) -> FsNode:
        """Resolve `parts` as directories under `base` (the chroot), following symlinks inside it."""
        stack = [base]
        queue = list(parts)
        while queue:
            name = queue.pop(0)
            if name == "..":
                if len(stack) > 1:
                    stack.pop()
                continue
            cur = stack[-1]
            child = cur.children.get(name)
            if child is None:
                if not create:
                    raise KeyError(name)
                child = cur.children[name] = FsNode(NodeKind.DIR, 0o755)
            if child.kind == "symlink":
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise BuildError("too many levels of symbolic links", hint=f"at {name!r}")
                target = [p for p in child.target.split("/") if p not in ("", ".")]
                if child.target.startswith("/"):
                    stack = [base]
                queue = target + queue
                continue
            if child.kind != "dir":
                if not create:
                    raise KeyError(name)
                child = cur.children[name] = FsNode(NodeKind.DIR, 0o755)
            stack.append(child)
        return stack[-1]

    def lookup(self, path: str, base: FsNode | None = None) -> FsNode | None:
        """The node at `path` (parents' symlinks followed, the last component not), or None."""
        parts = split_path(path)
        if not parts:
            return base or self.root
        try:
            parent = self._walk_dirs(base or self.root, parts[:-1], create=False)
        except KeyError:
            return None
        return parent.children.get(parts[-1])

    def subtree(self, path: str) -> FsNode:
        """The directory at `path`, created if missing: the chroot for a container's files."""
        return self._walk_dirs(self.root, split_path(path), create=True)

    # ---- insertion ----------------------------------------------------------------------------
    def _place(self, path: str, node: FsNode, base: FsNode | None, where: str) -> FsNode:
        parts = split_path(path, where=where)
        if not parts:
            if node.kind == "dir":
                target = base or self.root
                target.mode, target.uid, target.gid, target.mtime = node.mode, node.uid, node.gid, node.mtime
                return target
            raise BuildError(f"cannot replace the root directory with a {node.kind}", where=where or None)
        parent = self._walk_dirs(base or self.root, parts[:-1], create=True)
        old = parent.children.get(parts[-1])
        if node.kind == "dir" and old is not None and old.kind == "dir":
            old.mode, old.uid, old.gid, old.mtime = node.mode, node.uid, node.gid, node.mtime  # keep its contents
            return old
        parent.children[parts[-1]] = node
        return node

    def add_dir(self, path: str, mode: int = 0o755, uid: int = 0, gid: int = 0, *, base: FsNode | None = None,
                where: str = "", mtime: int = DEFAULT_MTIME) -> FsNode:
        return self._place(path, FsNode(NodeKind.DIR, mode, uid, gid, mtime=mtime), base, where)

    def add_file(self, path: str, content: Content | bytes, mode: int = 0o644, uid: int = 0, gid: int = 0, *,
                 base: FsNode | None = None, where: str = "", mtime: int = DEFAULT_MTIME) -> FsNode:
        if isinstance(content, bytes):
            content = Content(data=content)
        return self._place(path, FsNode(NodeKind.FILE, mode, uid, gid, content=content, mtime=mtime), base, where)

    def add_symlink(self, path: str, target: str, uid: int = 0, gid: int = 0, *, base: FsNode | None = None,
                    where: str = "", mode: int = 0o777, mtime: int = DEFAULT_MTIME) -> FsNode:
        return self._place(path, FsNode(NodeKind.SYMLINK, mode, uid, gid, target=target, mtime=mtime), base, where)

    def add_node(self, path: str, node: FsNode, *, base: FsNode | None = None, where: str = "") -> FsNode:
        """Place a prepared node (a hard link or a fifo) at `path`."""
        return self._place(path, node, base, where)

    # ---- traversal ----------------------------------------------------------------------------
    def walk(self, exclude: frozenset[str] = frozenset()) -> Iterator[tuple[str, FsNode]]:
        """Every node as (relative path, node), parents before children, names sorted bytewise."""

        def visit(prefix: str, node: FsNode) -> Iterator[tuple[str, FsNode]]:
            for name in sorted(node.children, key=lambda n: n.encode()):
                child = node.children[name]
                path = f"{prefix}{name}"
                if path in exclude:
                    continue
                yield path, child
                if child.kind == "dir":
                    yield from visit(path + "/", child)

        yield from visit("", self.root)

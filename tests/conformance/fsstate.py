"""Compare build outputs by the filesystem they extract to, not by tar bytes.

fs_state(tar) replays the members in order with extraction semantics and returns one line per final
path, sorted:

    path<TAB>type<TAB>mode<TAB>uid<TAB>gid<TAB>mtime<TAB>size<TAB>detail

type is file, dir, symlink, fifo, char, block; mode is 4 octal digits (permission + setuid/setgid/sticky
bits); mtime is integer seconds; detail is the sha256 of a file's content, a symlink's target,
"major,minor" of a device, "-" otherwise. A hard link is `path<TAB>hardlink<TAB>target` (its metadata is
the target inode's). uname/gname and PAX records (LINUXKIT.source, ...) are ignored. Names are normalised
("./" and "/" prefixes, trailing "/", repeated "/" dropped; "." is the root).

Replay: a later entry for a path replaces it; a later directory entry over an existing directory only
updates its mode/uid/gid/mtime (the children stay); any other replacement of a directory drops its
children. Whiteouts get no special meaning (the outputs are flat trees).

bundle_files(tar) returns the exact bytes of every containers/<section>/<name>/config.json and
runtime.json (the last entry for a path wins).
"""

from __future__ import annotations

import hashlib
import posixpath
import sys
import tarfile
from pathlib import Path

_TYPES = {
    tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
    tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
    tarfile.FIFOTYPE: "fifo", tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block",
}


def norm(name: str) -> str:
    """Archive member name -> canonical relative path ("." for the root)."""
    name = name.lstrip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    name = posixpath.normpath(name) if name not in ("", ".") else "."
    return "." if name in ("", "/") else name


def _line(path: str, ti: tarfile.TarInfo, kind: str, data: bytes | None) -> str:
    if kind == "hardlink":
        return f"{path}\thardlink\t{norm(ti.linkname)}"
    if kind == "file":
        detail = hashlib.sha256(data or b"").hexdigest()
    elif kind == "symlink":
        detail = ti.linkname
    elif kind in ("char", "block"):
        detail = f"{ti.devmajor},{ti.devminor}"
    else:
        detail = "-"
    size = ti.size if kind == "file" else 0
    return f"{path}\t{kind}\t{ti.mode & 0o7777:04o}\t{ti.uid}\t{ti.gid}\t{int(ti.mtime)}\t{size}\t{detail}"


def _replay(tar_path: str | Path) -> dict[str, tuple[tarfile.TarInfo, str, bytes | None]]:
    state: dict[str, tuple[tarfile.TarInfo, str, bytes | None]] = {}
    with tarfile.open(tar_path, "r:") as tf:
        for ti in tf:
            kind = _TYPES.get(ti.type)
            if kind is None:
                raise ValueError(f"{tar_path}: {ti.name}: unsupported tar type {ti.type!r}")
            path = norm(ti.name)
            data = None
            if kind == "file":
                f = tf.extractfile(ti)
                data = f.read() if f else b""
            old = state.get(path)
            if old is not None and old[1] == "dir" and kind != "dir":
                prefix = path + "/"
                for child in [p for p in state if p.startswith(prefix)]:
                    del state[child]
            state[path] = (ti, kind, data)
    return state


def fs_state(tar_path: str | Path) -> list[str]:
    """The final filesystem a tar extracts to, one line per path, sorted by path."""
    state = _replay(tar_path)
    return [_line(p, *state[p]) for p in sorted(state)]


def bundle_files(tar_path: str | Path) -> dict[str, bytes]:
    """containers/<section>/<name>/{config,runtime}.json -> exact bytes (last entry wins)."""
    out: dict[str, bytes] = {}
    with tarfile.open(tar_path, "r:") as tf:
        for ti in tf:
            path = norm(ti.name)
            parts = path.split("/")
            if len(parts) == 4 and parts[0] == "containers" and parts[3] in ("config.json", "runtime.json"):
                if ti.isreg():
                    f = tf.extractfile(ti)
                    out[path] = f.read() if f else b""
                else:
                    out.pop(path, None)
    return dict(sorted(out.items()))


if __name__ == "__main__":
    for line in fs_state(sys.argv[1]):
        print(line)

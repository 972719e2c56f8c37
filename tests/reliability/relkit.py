"""Shared helpers of the reliability suite: run the real `lkit` CLI, read initrds, make OCI images.

Everything hostile is generated here at run time (nothing binary is committed): raw layer tars with
tarfile, and images either through lkit.images.oci.add_image or, for what add_image would never write
(bad digests, missing blobs), by writing blobs and manifests by hand.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EPOCH = 1492533000
CLI_TIMEOUT = 180.0  # every `lkit` subprocess is bounded


@dataclass(frozen=True)
class CliResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    seconds: float


def lkit_env(**extra: str | Path) -> dict[str, str]:
    """The environment of an `lkit` subprocess: the repo importable, extras as strings."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run_lkit(args: Sequence[str | Path], *, env: dict[str, str] | None = None, cwd: Path | None = None,
             timeout: float = CLI_TIMEOUT) -> CliResult:
    """`python -m lkit.cli ARGS` as a subprocess (argument list, bounded)."""
    import time

    argv = [sys.executable, "-m", "lkit.cli", *map(str, args)]
    t = time.monotonic()
    proc = subprocess.run(argv, env=env or lkit_env(), cwd=cwd or REPO, capture_output=True, text=True,
                          errors="replace", timeout=timeout)
    return CliResult(argv, proc.returncode, proc.stdout, proc.stderr, time.monotonic() - t)


def assert_clean_error(res: CliResult, *contains: str) -> str:
    """Non-zero exit, no traceback, exactly one `lkit: error:` message; returns that message."""
    assert res.rc != 0, f"expected failure, got rc 0\nstdout: {res.stdout}\nstderr: {res.stderr}"
    assert "Traceback" not in res.stderr, res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("lkit: error:")]
    assert len(errors) == 1, f"want exactly one error line, got:\n{res.stderr}"
    text = res.stderr[res.stderr.index("lkit: error:"):]
    for piece in contains:
        assert piece in text, f"{piece!r} not in the error:\n{text}"
    return text


# ---------------------------------------------------------------------------------- initrd reading

def initrd_names(path: Path) -> list[str]:
    """Names in a (gzip-members-of-)newc cpio initrd, in order; an uncompressed prefix is allowed."""
    return list(initrd_modes(path))


def initrd_modes(path: Path) -> dict[str, int]:
    """name -> st_mode of every entry of an initrd (see initrd_names)."""
    data = path.read_bytes()
    names: dict[str, int] = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 2] == b"\x1f\x8b":
            names.update(_cpio_names(gzip.decompress(data[pos:])))
            break
        chunk, pos = _cpio_prefix(data, pos)
        names.update(chunk)
    return names


def _cpio_prefix(data: bytes, pos: int) -> tuple[dict[str, int], int]:
    """One uncompressed cpio archive starting at `pos` (up to and including its trailer)."""
    names: dict[str, int] = {}
    while True:
        name, mode, pos, done = _cpio_entry(data, pos)
        if done:
            while pos < len(data) and data[pos] == 0:  # padding between concatenated archives
                pos += 1
            return names, pos
        names[name] = mode


def _cpio_names(data: bytes) -> dict[str, int]:
    names: dict[str, int] = {}
    pos = 0
    while pos < len(data):
        if data[pos:pos + 6] != b"070701":
            if data[pos] == 0:
                pos += 1
                continue
            raise AssertionError(f"not a newc cpio at byte {pos}: {data[pos:pos + 6]!r}")
        name, mode, pos, done = _cpio_entry(data, pos)
        if not done:
            names[name] = mode
    return names


def _cpio_entry(data: bytes, pos: int) -> tuple[str, int, int, bool]:
    head = data[pos:pos + 110]
    if head[:6] != b"070701":
        raise AssertionError(f"bad cpio magic at {pos}: {head[:6]!r}")
    mode = int(head[14:22], 16)
    filesize = int(head[54:62], 16)
    namesize = int(head[94:102], 16)
    name = data[pos + 110:pos + 110 + namesize - 1].decode("utf-8", "surrogateescape")
    pos = (pos + 110 + namesize + 3) & ~3
    pos = (pos + filesize + 3) & ~3
    return name, mode, pos, name == "TRAILER!!!"


# ---------------------------------------------------------------------------------- tars and images

@dataclass(frozen=True)
class Entry:
    """One raw tar member for a hostile layer (fields as tarfile wants them)."""

    name: str
    type: bytes = tarfile.REGTYPE
    data: bytes = b""
    linkname: str = ""
    mode: int = 0o644
    devmajor: int = 0
    devminor: int = 0


def F(name: str, data: bytes = b"x\n", mode: int = 0o644) -> Entry:
    return Entry(name, tarfile.REGTYPE, data, mode=mode)


def D(name: str, mode: int = 0o755) -> Entry:
    return Entry(name, tarfile.DIRTYPE, mode=mode)


def S(name: str, target: str) -> Entry:
    return Entry(name, tarfile.SYMTYPE, linkname=target, mode=0o777)


def H(name: str, target: str) -> Entry:
    return Entry(name, tarfile.LNKTYPE, linkname=target)


def write_tar(path: Path, entries: Iterable[Entry]) -> Path:
    """A plain ustar/GNU layer tar with exactly these members, nothing normalised away."""
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
        for e in entries:
            info = tarfile.TarInfo(e.name)
            info.type = e.type
            info.mode = e.mode
            info.mtime = EPOCH
            info.linkname = e.linkname
            info.devmajor, info.devminor = e.devmajor, e.devminor
            info.size = len(e.data) if e.type == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(e.data) if e.type == tarfile.REGTYPE else None)
    return path


def add_tar_image(store_root: Path, ref: str, tars: Sequence[Path], config: dict | None = None) -> str:
    """A real OCI image via lkit.images.oci.add_image; returns its manifest digest."""
    from lkit.images.oci import add_image
    from lkit.images.store import Store

    image = add_image(Store(store_root), ref, list(tars), config=config or {"Cmd": ["/bin/true"]})
    return image.digest


def put_raw_blob(store_root: Path, data: bytes, *, name_as: str | None = None) -> str:
    """Write bytes under blobs/sha256/<digest of data> (or of `name_as` bytes' digest: a lying blob)."""
    digest = hashlib.sha256(data).hexdigest() if name_as is None else name_as
    blobs = store_root / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    (blobs / digest).write_bytes(data)
    return "sha256:" + digest


def canonical(data: dict) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode()


def tag_raw(store_root: Path, ref: str, manifest: dict) -> str:
    """Store a hand-made manifest blob and name it in index.json (through the Store's own tagging)."""
    from lkit.images.store import OCI_MANIFEST, Descriptor, Store

    body = canonical(manifest)
    digest = put_raw_blob(store_root, body)
    Store(store_root).tag(ref, Descriptor(OCI_MANIFEST, digest, len(body),
                                          platform={"os": "linux", "architecture": "amd64"}))
    return digest


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def tree_snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """path -> (mode, size) of everything under `root` (for 'nothing was written here' checks)."""
    out: dict[str, tuple[int, int]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_mode, st.st_size)
    return out

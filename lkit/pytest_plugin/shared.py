"""What the processes of one run do once instead of twice: a spec's build and its rebuild.

Under `-n 2 --dist loadgroup` xdist sends the formats of one spec to both workers at the same
moment (the seed spec's three formats are the first groups), and each worker built the spec and
rebuilt it from scratch for the determinism check: two CPU-bound jobs fighting for the same two
cores, each taking twice as long. Now a lock per spec lets one process build while the other waits
and then finds the build's stamp valid (a no-change build); the rebuild's digests are left in the
run folder, under the same key, for the other worker.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from lkit.build.builder import Artifact, BuiltImage
from lkit.report.atomic import write_text


@contextmanager
def exclusive(path: Path) -> Iterator[None]:
    """An inter-process lock (fcntl, released when the process dies) held for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+b") as handle:
        fcntl.lockf(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.lockf(handle.fileno(), fcntl.LOCK_UN)


def save_digests(path: Path, built: BuiltImage) -> None:
    """The digests of a build (what the determinism check compares), atomically."""
    data = {"key": built.key, "name": built.name,
            "formats": {fmt: [{"name": a.path.name, "size": a.size, "sha256": a.sha256} for a in arts]
                        for fmt, arts in built.artifacts.items()}}
    write_text(path, json.dumps(data, indent=1, sort_keys=True))


def load_digests(path: Path, key: str, formats: list[str]) -> BuiltImage | None:
    """A build's digests saved by another process, if they are of build `key` and cover `formats`.

    The artifacts carry file names only: their files lived in the other process's scratch folder.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not set(formats) <= set(data.get("formats", {})):
        return None
    result = BuiltImage(name=str(data.get("name", "")), outdir=path.parent, key=key)
    for fmt, arts in data["formats"].items():
        result.artifacts[fmt] = [Artifact(Path(a["name"]), int(a["size"]), str(a["sha256"])) for a in arts]
    return result

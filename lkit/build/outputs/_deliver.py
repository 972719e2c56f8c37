"""Move finished outputs from the private workdir into the output directory, atomically.

Writers build everything in `files.workdir`; only complete files reach `outdir`. When the workdir
is on another file system, the file is first copied next to its final name and then renamed, so a
reader of `outdir` never sees a half-written image.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from lkit.build.outputs.base import publish


def deliver(built: Path, outdir: Path, filename: str) -> Path:
    """Put `built` at `outdir/filename` atomically; returns the final path."""
    outdir.mkdir(parents=True, exist_ok=True)
    final = outdir / filename
    tmp = outdir / f".{filename}.tmp-{os.getpid()}"
    try:
        if os.stat(built).st_dev == os.stat(outdir).st_dev:
            os.replace(built, tmp)
        else:
            shutil.copyfile(built, tmp)
        os.chmod(tmp, 0o644)
        return publish(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)

"""qcow2 images: the raw disk image converted with qemu-img (deterministic: no timestamps in qcow2)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from lkit.build.outputs._deliver import deliver
from lkit.build.outputs._tools import run
from lkit.build.outputs.base import BootFiles, OutputFormat
from lkit.core import formats


def to_qcow2(raw: Path, out: Path) -> Path:
    """Convert `raw` to a compact qcow2 at `out` (holes stay unallocated)."""
    out.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, out])
    return out


def qcow2_format(name: str, raw_disk: Callable[[BootFiles], Path]) -> OutputFormat:
    """The qcow2 twin of a raw disk format: the same disk (built once per build), converted."""

    def write(files: BootFiles, outdir: Path) -> list[Path]:
        (target,) = formats.FORMATS[name].filenames(files.name)
        return [deliver(to_qcow2(raw_disk(files), files.workdir / target), outdir, target)]

    return OutputFormat(formats.FORMATS[name], write)

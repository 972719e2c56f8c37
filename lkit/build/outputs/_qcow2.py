"""qcow2 images: the raw disk image converted with qemu-img (deterministic: no timestamps in qcow2)."""

from __future__ import annotations

from pathlib import Path

from lkit.build.outputs._tools import run


def to_qcow2(raw: Path, out: Path) -> Path:
    """Convert `raw` to a compact qcow2 at `out` (holes stay unallocated)."""
    out.unlink(missing_ok=True)
    run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", "-o", "compat=1.1", raw, out])
    return out

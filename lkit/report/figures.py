"""Figure names, their kind (size or time) and human formatting; robust statistics.

Figure names are dotted: `size.total`, `size.<file>` are bytes; `build.seconds` and `boot.*`
are seconds. The kind decides which threshold `compare` applies.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

# Scale from the median absolute deviation to a standard deviation for normal noise.
MAD_TO_SIGMA = 1.4826


def kind(name: str) -> str:
    """'size', 'time' or 'other' for a figure name."""
    if name.startswith("size."):
        return "size"
    if name.startswith(("boot.", "build.", "time.")) or name.endswith((".seconds", ".s")):
        return "time"
    return "other"


def human(name: str, value: float) -> str:
    """A value in the unit of its figure: '31.2 MB', '5.21 s'."""
    k = kind(name)
    if k == "size" or name.startswith("memory."):   # memory.*: peak resident bytes (no threshold)
        return human_bytes(value)
    if k == "time":
        return f"{value:.2f} s"
    return f"{value:g}"


def human_bytes(value: float) -> str:
    """Decimal units, as `ls -h --si` and the size budgets in the spec use."""
    size = float(value)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def median(values: Sequence[float]) -> float:
    """The median; the centre that one outlier boot cannot move."""
    return float(statistics.median(values))


def mad(values: Sequence[float]) -> float:
    """Median absolute deviation from the median (0 for fewer than two values)."""
    if len(values) < 2:
        return 0.0
    m = median(values)
    return float(statistics.median(abs(v - m) for v in values))

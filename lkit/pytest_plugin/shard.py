"""Shards: `--lkit-shard K/N` runs the K-th of N deterministic parts of a suite (one CI job each).

The unit of work is an xdist group: a (spec, format) with its built-in checks and the suite's tests
on that VM (a multi-machine suite is one group), never split. Every machine computes the same
partition from the same suite: groups are weighed, then dealt longest first to the lightest shard
(LPT), ties broken by name. Weights are the baseline's measured wall times when one is given
(`--lkit-baseline`), else an estimate from the format's boot path and the size of the spec's images.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lkit.core.arch import ARCHES
from lkit.core.formats import FORMATS

if TYPE_CHECKING:
    from lkit.images.store import Store
    from lkit.report.baseline import Baseline
    from lkit.report.model import RunSummary

_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
# Estimated seconds of one group without a baseline: firmware and boot path (TCG, this kind of machine),
# plus the time to copy and boot each MB of the spec's images.
BOOT_SECONDS = {"direct": 15.0, "cdrom": 20.0, "disk": 20.0, None: 3.0}
EFI_SECONDS = 6.0
SECONDS_PER_MB = 0.2
UNKNOWN_GROUP_SECONDS = 20.0
NO_GROUP = "(tests outside any spec)"   # ordinary tests in suite folders: they run in shard 1


@dataclass(frozen=True)
class Shard:
    index: int   # 1-based
    count: int

    @classmethod
    def parse(cls, text: str, where: str = "--lkit-shard") -> Shard:
        m = _SHARD.match(text)
        if not m or not 1 <= int(m.group(1)) <= int(m.group(2)):
            raise pytest.UsageError(f"{where}: {text!r} is not K/N with 1 <= K <= N (e.g. 2/3)")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class Weighed:
    group: str        # the xdist group name, "spec.yml::format"
    seconds: float
    source: str       # "baseline" or "estimate"


def partition(weights: list[Weighed], count: int) -> list[list[Weighed]]:
    """Longest processing time first onto the least loaded shard; deterministic for equal input."""
    shards: list[list[Weighed]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for w in sorted(weights, key=lambda w: (-w.seconds, w.group)):
        target = min(range(count), key=lambda i: (loads[i], i))
        shards[target].append(w)
        loads[target] += w.seconds
    return shards


def measured_seconds(reference: Baseline | RunSummary | None) -> dict[str, float]:
    """Wall seconds per group ("spec.yml::format") from a run summary's or a baseline's timing."""
    from lkit.report.baseline import Baseline

    if reference is None:
        return {}
    out: dict[str, float] = {}
    if isinstance(reference, Baseline):
        for fb in reference.formats.values():
            if fb.wall:
                out[f"{Path(fb.spec).name}::{fb.format}"] = fb.wall
        return out
    for run in reference.runs:
        if run.timing is not None and run.timing.wall > 0:
            out[f"{Path(run.spec).name}::{run.format}"] = run.timing.wall
    return out


def estimate_seconds(fmt: str, image_bytes: int) -> float:
    prefix, dot, rest = fmt.partition(".")   # another architecture's variant: arm64.iso-efi
    arch = ARCHES.get(prefix) if dot else None
    facts = FORMATS.get((rest if arch else fmt).partition("@")[0])   # a firmware variant boots its format
    boot = facts.boot if facts else "direct"
    seconds = BOOT_SECONDS.get(boot, UNKNOWN_GROUP_SECONDS) + (EFI_SECONDS if facts and facts.efi else 0.0)
    seconds *= arch.tcg_boot_factor if arch else 1.0
    return round(seconds + SECONDS_PER_MB * image_bytes / 1e6, 1)


def image_bytes(refs: list[str], store: Store | None, platform: str = "linux/amd64") -> int:
    """Compressed size of the spec's images for `platform` that the local store holds (others count 0)."""
    if store is None:
        return 0
    from lkit.errors import LkitError

    total = 0
    for ref in refs:
        try:
            image = store.resolve(ref, platform)
        except LkitError:
            continue
        total += sum(layer.size for layer in image.layers)
    return total


def plan_lines(shard: Shard, plan: list[Weighed]) -> list[str]:
    total = sum(w.seconds for w in plan)
    head = f"lkit shard {shard}: {len(plan)} group(s), about {total:.0f} s"
    if not plan:
        return [f"lkit shard {shard}: no groups in this shard (there are fewer groups than shards)"]
    return [head] + [f"  {w.group}  {w.seconds:.0f} s ({w.source})" for w in sorted(plan, key=lambda w: w.group)]

"""Baselines: the expected figures (median and spread) and check outcomes per spec and format.

A baseline combines several runs (and the N boot samples inside each), so the gate compares a new
run against a median with a noise margin rather than against one lucky or unlucky run.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lkit.report.atomic import write_text
from lkit.report.figures import mad, median
from lkit.report.model import ReportError, RunSummary, read_json

BASELINE_SCHEMA = 1


@dataclass
class FigureStats:
    """Centre and spread of one figure over every value seen."""

    median: float
    mad: float = 0.0
    n: int = 1
    min: float = 0.0
    max: float = 0.0

    @classmethod
    def of(cls, values: list[float]) -> FigureStats:
        """Statistics of a non-empty list of values."""
        return cls(median=median(values), mad=mad(values), n=len(values), min=min(values), max=max(values))


@dataclass
class FormatBaseline:
    """The baseline of one (spec, format)."""

    spec: str
    format: str
    figures: dict[str, FigureStats] = field(default_factory=dict)
    checks: dict[str, str] = field(default_factory=dict)   # check -> usual outcome
    wall: float = 0.0   # median wall seconds of the group (timing): what shards are balanced by
    manifest: dict[str, str] = field(default_factory=dict)  # {path, sha256} of its build manifest

    @property
    def key(self) -> str:
        return f"{self.spec} {self.format}"


@dataclass
class Baseline:
    """Per (spec, format) baselines built from one or more runs."""

    formats: dict[str, FormatBaseline] = field(default_factory=dict)   # key "spec format"
    sources: list[str] = field(default_factory=list)                   # run ids it was built from
    folder: Path | None = field(default=None, repr=False, compare=False)  # manifest paths are relative to it

    @classmethod
    def from_runs(cls, summaries: Iterable[RunSummary]) -> Baseline:
        """Combine runs: every figure's values (its boot samples when recorded) pooled per format."""
        values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        outcomes: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
        names: dict[str, tuple[str, str]] = {}
        walls: dict[str, list[float]] = defaultdict(list)
        sources: list[str] = []
        manifests: dict[str, dict[str, str]] = {}
        for summary in summaries:
            sources.append(summary.run_id)
            for run in summary.runs:
                names[run.key] = (run.spec, run.format)
                rel = run.properties.get("manifest")
                if rel:  # the newest run's build manifest: what the baseline's images hold
                    path = summary.folder / rel if summary.folder is not None else Path(rel)
                    manifests[run.key] = {"path": str(path), "sha256": run.properties.get("manifest.sha256", "")}
                for fig, value in run.figures.items():
                    values[run.key][fig].extend(run.samples.get(fig) or [value])
                for fig, samples in run.samples.items():
                    if fig not in run.figures and samples:
                        values[run.key][fig].extend(samples)
                for check in run.checks:
                    outcomes[run.key][check.check].append(check.outcome)
                if run.timing is not None and run.timing.wall > 0:
                    walls[run.key].append(run.timing.wall)
        formats = {}
        for key, (spec, fmt) in sorted(names.items()):
            formats[key] = FormatBaseline(
                spec=spec, format=fmt,
                figures={f: FigureStats.of(v) for f, v in sorted(values[key].items())},
                checks={c: _usual(o) for c, o in sorted(outcomes[key].items())},
                wall=round(median(walls[key]), 3) if walls[key] else 0.0,
                manifest=manifests.get(key, {}))
        return cls(formats=formats, sources=sources)

    def to_json(self) -> dict[str, Any]:
        formats = {k: asdict(v) for k, v in sorted(self.formats.items())}
        for f in formats.values():
            if not f["manifest"]:
                del f["manifest"]
        return {"schema": BASELINE_SCHEMA, "kind": "lkit-baseline", "sources": self.sources, "formats": formats}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str | None = None) -> Baseline:
        if not isinstance(d, dict) or d.get("kind") != "lkit-baseline":
            raise ReportError("not an lkit baseline (field 'kind' is not 'lkit-baseline')", where=where,
                              hint="make one with `lkit report baseline RUN_DIR... -o baseline.json`")
        if d.get("schema") != BASELINE_SCHEMA:
            raise ReportError(f"field 'schema' is {d.get('schema')!r}, this lkit reads {BASELINE_SCHEMA}",
                              where=where, hint="rebuild the baseline with this lkit")
        try:
            formats = {
                key: FormatBaseline(spec=str(f["spec"]), format=str(f["format"]),
                                    figures={n: FigureStats(**s) for n, s in f.get("figures", {}).items()},
                                    checks={str(c): str(o) for c, o in f.get("checks", {}).items()},
                                    wall=float(f.get("wall", 0.0)),
                                    manifest={str(k): str(v) for k, v in (f.get("manifest") or {}).items()})
                for key, f in d.get("formats", {}).items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"malformed baseline: {exc}", where=where) from None
        return cls(formats=formats, sources=[str(s) for s in d.get("sources", [])])

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON atomically."""
        return write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Baseline:
        p = Path(path)
        baseline = cls.from_json(read_json(p), where=str(p))
        baseline.folder = p.parent
        return baseline


def load_reference(path: str | os.PathLike[str]) -> Baseline | RunSummary:
    """A baseline.json, a summary.json or a run folder, whichever `path` is."""
    p = Path(path)
    if p.is_dir():
        return RunSummary.load(p)
    data = read_json(p)
    if isinstance(data, dict) and data.get("kind") == "lkit-baseline":
        baseline = Baseline.from_json(data, where=str(p))
        baseline.folder = p.parent
        return baseline
    summary = RunSummary.from_json(data, where=str(p))
    summary.folder = p.parent
    return summary


def _usual(outcomes: list[str]) -> str:
    """The most common outcome; a tie counts as passed (the baseline is what the image can do)."""
    counts = Counter(outcomes)
    best = max(counts.values())
    if counts.get("passed") == best:
        return "passed"
    return sorted(o for o, n in counts.items() if n == best)[0]

"""Compare a new run against a baseline (or an older run): regressions and improvements, one line each.

Sizes are judged by a relative threshold (plus a tiny absolute floor so a 3-byte change in a
10-byte file is not news). Times are noisy under TCG, so a time regression must exceed the
relative threshold AND an absolute noise floor AND k x the baseline's spread (MAD scaled to a
standard deviation) when the baseline has several samples.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from lkit.report.baseline import Baseline, FigureStats, FormatBaseline
from lkit.report.diff import BuildDiff, explain_check, explain_figure, privilege_gains
from lkit.report.figures import MAD_TO_SIGMA, human, kind, median
from lkit.report.model import FormatRun, Outcome, ReportError, RunSummary


DETAIL_INDENT = "           "   # explanations go under their REGRESSION line, aligned with its text
CHANGED_TOP = 3
BOOT_TOP = 2
EXPLAIN_TOP = 3
GROUPS_CHANGED = ("containers", "kernel", "packages", "images", "files")


@dataclass
class Thresholds:
    """When a figure change is news. Percentages are relative to the baseline median."""

    size_pct: float = 5.0
    size_floor: float = 4096.0      # bytes; smaller size changes are never reported
    time_pct: float = 20.0
    time_floor: float = 0.5         # seconds; TCG boots jitter by this much
    mad_k: float = 3.0              # margin = k * 1.4826 * MAD of the baseline samples
    other_pct: float = 10.0
    figures: dict[str, float] = field(default_factory=dict)   # figure glob -> relative % override

    KEYS = ("size", "size-floor", "time", "time-floor", "k", "other")

    @classmethod
    def parse(cls, items: list[str] | str | None) -> Thresholds:
        """From KEY=VALUE items (`--threshold`, repeatable) or one comma-separated string
        (`--lkit-thresholds 'size=5%,time=25%,time_floor=1.5s'`). Units %, s and B are accepted;
        keys: size, size-floor, time, time-floor, k, other, or a figure name/glob (percent)."""
        if items is None:
            items = []
        if isinstance(items, str):
            items = [items]
        t = cls()
        attrs = {"size": "size_pct", "size-floor": "size_floor", "time": "time_pct",
                 "time-floor": "time_floor", "k": "mad_k", "other": "other_pct"}
        for item in (part.strip() for chunk in items for part in chunk.split(",") if part.strip()):
            name, sep, raw = (x.strip() for x in item.partition("="))
            if name.replace("_", "-") in attrs:
                name = name.replace("_", "-")
            number = raw[:-1] if raw[-1:] in ("%", "s", "B") else raw
            try:
                value = float(number)
            except ValueError:
                value = -1.0
            if not sep or not name or not value >= 0:
                raise ReportError(f"threshold {item!r}: expected KEY=NUMBER (number >= 0, unit %, s or B optional)",
                                  hint=f"keys: {', '.join(cls.KEYS)} or a figure name/glob such as "
                                       "'boot.shell=10' or 'size.*=2' (percent)")
            if name in attrs:
                setattr(t, attrs[name], value)
            else:
                t.figures[name] = value
        return t

    def pct(self, figure: str) -> float:
        """The relative threshold (%) for a figure: a matching override, else its kind's."""
        for pattern, value in self.figures.items():
            if fnmatch.fnmatchcase(figure, pattern):
                return value
        return {"size": self.size_pct, "time": self.time_pct}.get(kind(figure), self.other_pct)


@dataclass
class Finding:
    """One regression, improvement or note; `line` is what people read, `id` what quarantine matches."""

    spec: str
    format: str
    item: str          # figure name, check name, or "format"
    line: str
    details: list[str] = field(default_factory=list)   # what changed that explains it, most first

    @property
    def id(self) -> str:
        return f"{self.spec}::{self.format}::{self.item}"

    def __str__(self) -> str:
        return self.line


@dataclass
class Comparison:
    """The result of `compare`."""

    regressions: list[Finding] = field(default_factory=list)
    improvements: list[Finding] = field(default_factory=list)
    notes: list[Finding] = field(default_factory=list)
    added: list[str] = field(default_factory=list)      # "spec format" keys new in this run
    removed: list[str] = field(default_factory=list)    # keys in the baseline, missing now
    changes: dict[str, BuildDiff] = field(default_factory=dict)   # "spec format" -> what changed inside

    def lines(self) -> list[str]:
        """Everything, grouped, for a terminal or a CI log."""
        out = []
        for f in self.regressions:
            out.append(f"REGRESSION {f.line}")
            out += [f"{DETAIL_INDENT}{d}" for d in f.details]
        out += [f"improved   {f.line}" for f in self.improvements]
        out += [f"note       {f.line}" for f in self.notes]
        out += [f"changed    {line}" for line in self.changed_lines()]
        return out

    def changed_lines(self, n: int = CHANGED_TOP) -> list[str]:
        """The top changes inside each spec's images, once per spec (its formats share the root), and
        the boot phases that changed most, per format."""
        out: list[str] = []
        seen: set[tuple[str, str]] = set()
        for key, d in sorted(self.changes.items()):
            spec = key.rsplit(" ", 1)[0]
            for change in d.top(n, GROUPS_CHANGED):
                if (spec, change.text) not in seen:
                    seen.add((spec, change.text))
                    out.append(f"{spec}: {change.group}: {change.text}")
            boot = sorted(d.group("boot"), key=lambda c: -abs(c.delta))[:BOOT_TOP]
            out += [f"{key}: boot: {c.text}" for c in boot]   # the boot is per format
        return out


def compare(base: RunSummary | Baseline, new: RunSummary, thresholds: Thresholds | None = None, *,
            explain: bool = True) -> Comparison:
    """Regressions and improvements of `new` against `base`, one clear line each; with `explain`,
    what changed inside the images (their build manifests, the boot phases) under each regression."""
    t = thresholds or Thresholds()
    baseline = base if isinstance(base, Baseline) else Baseline.from_runs([base])
    result = Comparison()
    new_keys = {run.key: run for run in new.runs}
    for key, fb in sorted(baseline.formats.items()):
        run = new_keys.get(key)
        if run is None and new.shard:
            # The other shards run it: a shard's gate judges what the shard ran, the merged run's gate
            # (lkit report merge, then gate) judges that every group ran.
            result.notes.append(Finding(fb.spec, fb.format, "format",
                                        f"{key}: not in shard {new.shard} (the merged run is compared in full)"))
            continue
        if run is None:
            result.removed.append(key)
            result.regressions.append(Finding(fb.spec, fb.format, "format",
                                              f"{key}: in the baseline but not in this run (format not built or tested)"))
            continue
        _compare_figures(fb, run, t, result)
        for figure in sorted(set(run.figures) - set(fb.figures)):
            result.notes.append(Finding(run.spec, run.format, figure,
                                        f"{key}: {_label(figure)} is new ({human(figure, run.figures[figure])}), "
                                        "not in the baseline"))
        _compare_checks(fb, run, result)
    for key, run in sorted(new_keys.items()):
        if key not in baseline.formats:
            result.added.append(key)
            result.notes.append(Finding(run.spec, run.format, "format",
                                        f"{key}: new format, no baseline to compare with"))
    if explain:
        _explain(baseline, new, result)
    return result


def _explain(baseline: Baseline, new: RunSummary, result: Comparison) -> None:
    """Fill `changes`, an explanation under each finding, and a finding per container that gained
    a privilege (a capability, a host namespace, write access...) since the baseline."""
    from lkit.report.manifests import format_diffs

    result.changes, notes = format_diffs(baseline, new)
    for run, line in notes:
        result.notes.append(Finding(run.spec, run.format, "manifest", line))
    for finding in [*result.regressions, *result.improvements]:
        d = result.changes.get(f"{finding.spec} {finding.format}")
        if d is None or d.empty:
            continue
        if finding.item == "format":
            continue
        if kind(finding.item) in ("size", "time") or finding.item.startswith("boot."):
            finding.details = explain_figure(d, finding.format, finding.item, EXPLAIN_TOP)
        else:
            finding.details = explain_check(d, finding.item, finding.format, EXPLAIN_TOP)
    for key, d in sorted(result.changes.items()):
        gains = privilege_gains(d)
        if not gains:
            continue
        spec, fmt = key.rsplit(" ", 1)
        failed = next((f for f in result.regressions if f.spec == spec and f.format == fmt
                       and f.item == "capabilities"), None)
        if failed is not None:
            continue  # the failing check is explained by them already
        text = "; ".join(c.text for c in gains[:EXPLAIN_TOP])
        result.regressions.append(Finding(spec, fmt, "capabilities",
                                          f"{key}: privileges gained since the baseline: {text}",
                                          details=[c.text for c in gains[EXPLAIN_TOP:]]))


def _new_value(run: FormatRun, figure: str) -> float | None:
    samples = run.samples.get(figure)
    if samples:
        return median(samples)
    return run.figures.get(figure)


def _compare_figures(fb: FormatBaseline, run: FormatRun, t: Thresholds, out: Comparison) -> None:
    for figure, stats in sorted(fb.figures.items()):
        value = _new_value(run, figure)
        if value is None:
            out.notes.append(Finding(run.spec, run.format, figure,
                                     f"{run.key}: {_label(figure)} was measured in the baseline, not in this run"))
            continue
        verdict = _judge(figure, stats, value, t)
        if verdict is None:
            continue
        is_worse, reason = verdict
        finding = Finding(run.spec, run.format, figure, f"{run.key}: {reason}")
        (out.regressions if is_worse else out.improvements).append(finding)


def _judge(figure: str, stats: FigureStats, value: float, t: Thresholds) -> tuple[bool, str] | None:
    """(worse?, reason) when the change is beyond every threshold that applies, else None."""
    base = stats.median
    delta = value - base
    pct = t.pct(figure)
    rel = (delta / base * 100.0) if base else (float("inf") if delta else 0.0)
    k = kind(figure)
    if k == "size":
        floor, margin_text = t.size_floor, ""
    elif k == "time":
        spread = t.mad_k * MAD_TO_SIGMA * stats.mad if stats.n > 1 else 0.0
        floor = max(t.time_floor, spread)
        margin_text = f" and the {floor:.2f} s noise margin"
        if spread > t.time_floor:
            margin_text += f" ({t.mad_k:g} x spread of {stats.n} baseline samples)"
    else:
        floor, margin_text = 0.0, ""
    if abs(rel) <= pct or abs(delta) <= floor:
        return None
    worse = delta > 0
    sign = "+" if worse else "-"
    rel_text = f"{sign}{abs(rel):.1f}%" if base else "new non-zero value"
    word = "over" if worse else "beyond"
    return worse, (f"{_label(figure)} {rel_text} ({human(figure, base)} -> {human(figure, value)}) "
                   f"{word} the {pct:g}% threshold{margin_text}")


def _label(figure: str) -> str:
    if figure.startswith("size."):
        return f"{figure[5:]} size"
    return figure


def _compare_checks(fb: FormatBaseline, run: FormatRun, out: Comparison) -> None:
    for check in run.checks:
        before = fb.checks.get(check.check)
        detail = f": {check.message}" if check.message else ""
        if check.failed and before == Outcome.PASSED:
            out.regressions.append(Finding(run.spec, run.format, check.check,
                                           f"{run.key}: check {check.check} passed in the baseline, now {check.outcome}{detail}"))
        elif check.outcome == Outcome.PASSED and before in (Outcome.FAILED, Outcome.ERROR):
            out.improvements.append(Finding(run.spec, run.format, check.check,
                                            f"{run.key}: check {check.check} now passes ({before} in the baseline)"))
        elif check.outcome == Outcome.SKIPPED and before == Outcome.PASSED:
            out.notes.append(Finding(run.spec, run.format, check.check,
                                     f"{run.key}: check {check.check} passed in the baseline, skipped now{detail}"))
    ran = {c.check for c in run.checks}
    for name, before in sorted(fb.checks.items()):
        if name not in ran and before == Outcome.PASSED:
            out.notes.append(Finding(run.spec, run.format, name,
                                     f"{run.key}: check {name} passed in the baseline, did not run now"))

"""lkit's own overhead per (spec, format), read from the timing of a run summary.

The guest's own time is its boot (`cont` to "services started") and the suite's test bodies; the
rest is lkit's overhead: build, QEMU start, waiting for the shell, the built-in checks, power-off,
reporting and pytest's own time between items. One table for the terminal, Markdown and HTML.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from lkit.report.model import FormatRun, RunSummary, Timing

GUEST = ("boot", "tests")
BUILD = ("build", "rebuild")
# The order phases are listed in (check.* in the order they ran, right after `ready`).
ORDER = ("build", "rebuild", "qemu", "boot", "ready", "check.*", "tests", "poweroff.guest", "poweroff",
         "report", "other")
COLUMNS = ("wall", "build", "qemu", "boot", "checks", "tests", "poweroff", "report", "other")
WHAT = {
    "build": "build of every format of the spec (run in this format's window)",
    "rebuild": "second build from scratch (the determinism proof)",
    "qemu": "QEMU start (accelerator choice, launch, QMP, sockets) to `cont`",
    "boot": "guest boot: `cont` to \"services started\" (the image's own time)",
    "ready": "after \"services started\" until the shell is ready, and boot set-up",
    "tests": "the suite's own test bodies (the suite's own time)",
    "poweroff.guest": "power-off: system_powerdown to the guest's \"lkit: poweroff\" (onshutdown, services stop)",
    "poweroff": "power-off: QMP, QEMU's exit, releasing the VM",
    "report": "recording results per item (lkit and other plugins' report hooks)",
    "other": "pytest between and around items (setup, teardown, logging)",
}


@dataclass(frozen=True)
class Overhead:
    """One format's wall time in the table's columns; `overhead` = wall - boot - tests."""

    spec: str
    format: str
    timing: Timing

    def part(self, column: str) -> float:
        phases = self.timing.phases
        if column == "wall":
            return self.timing.wall
        if column == "build":
            return sum(phases.get(p, 0.0) for p in BUILD)
        if column == "checks":
            return sum(v for k, v in phases.items() if k.startswith("check."))
        if column == "poweroff":
            return phases.get("poweroff", 0.0) + phases.get("poweroff.guest", 0.0)
        if column == "other":
            return phases.get("other", 0.0) + phases.get("ready", 0.0)
        return phases.get(column, 0.0)

    @property
    def overhead(self) -> float:
        return self.timing.wall - sum(self.timing.phases.get(p, 0.0) for p in GUEST)

    @property
    def beyond_build(self) -> float:
        return self.overhead - self.part("build")

    @property
    def host_side(self) -> float:
        """Beyond the build, without the guest's own shutdown (power button to `lkit: poweroff`):
        what lkit's host side costs."""
        return self.beyond_build - self.timing.phases.get("poweroff.guest", 0.0)

    @property
    def fraction(self) -> float:
        return self.overhead / self.timing.wall if self.timing.wall > 0 else 0.0

    @property
    def fraction_beyond_build(self) -> float:
        return self.beyond_build / self.timing.wall if self.timing.wall > 0 else 0.0


def overheads(runs: Iterable[FormatRun]) -> list[Overhead]:
    """The formats that carry timing (schema 2 summaries), in report order."""
    return [Overhead(r.spec, r.format, r.timing) for r in sorted(runs, key=lambda r: (r.spec, r.format))
            if r.timing is not None and r.timing.wall > 0]


def ordered_phases(timing: Timing, checks: Sequence[str] = ()) -> list[tuple[str, float]]:
    """The phases in ORDER, checks in the order given (the order they ran), zeros left out."""
    out: list[tuple[str, float]] = []
    rank = {f"check.{name}": index for index, name in enumerate(checks)}
    for name in ORDER:
        if name == "check.*":
            found = [(k, v) for k, v in timing.phases.items() if k.startswith("check.") and v > 0]
            out += sorted(found, key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))
        elif timing.phases.get(name, 0.0) > 0:
            out.append((name, timing.phases[name]))
    known = {n for n, _ in out}
    out += [(k, v) for k, v in timing.phases.items() if k not in known and v > 0 and not k.startswith("check.")]
    return out


def terminal_lines(summary: RunSummary) -> list[str]:
    """The end-of-run table: one line per (spec, format), then the session line."""
    rows = overheads(summary.runs)
    if not rows:
        return []
    names = [f"{o.spec} {o.format}" for o in rows]
    width = max(len(n) for n in names + ["lkit time (s)"])
    head = f"{'lkit time (s)':<{width}} " + " ".join(f"{c:>7}" for c in COLUMNS) + "  overhead  beyond build"
    lines = [head]
    for name, o in zip(names, rows):
        cells = " ".join(f"{o.part(c):>7.2f}" for c in COLUMNS)
        lines.append(f"{name:<{width}} {cells}  {o.overhead:>5.1f} {o.fraction:>3.0%}  {o.beyond_build:>5.2f} {o.fraction_beyond_build:>3.0%}")
    session = session_line(summary)
    return lines + ([session] if session else [])


def session_line(summary: RunSummary) -> str:
    """Session wall time, time inside formats per worker, and report writing."""
    t = summary.timing
    if not t.get("wall"):
        return ""
    per_worker: dict[str, float] = {}
    for o in overheads(summary.runs):
        per_worker[o.timing.worker or "main"] = per_worker.get(o.timing.worker or "main", 0.0) + o.timing.wall
    busy = ", ".join(f"{w} {s:.1f} s" for w, s in sorted(per_worker.items()))
    text = f"lkit session {t['wall']:.1f} s: in formats {busy}"
    if "reports" in t:
        text += f"; reports written in {t['reports']:.2f} s"
    return text + " (overhead = all but guest boot and test bodies)"


def markdown_table(summary: RunSummary) -> list[str]:
    rows = overheads(summary.runs)
    if not rows:
        return []
    out = ["## Time per format (s)", "", "| spec | format | " + " | ".join(COLUMNS) + " | overhead | beyond build |",
           "|---|---|" + "---:|" * (len(COLUMNS) + 2)]
    for o in rows:
        out.append(f"| {o.spec} | {o.format} | " + " | ".join(f"{o.part(c):.2f}" for c in COLUMNS)
                   + f" | {o.overhead:.2f} ({o.fraction:.0%}) | {o.beyond_build:.2f} ({o.fraction_beyond_build:.0%}) |")
    if summary.timing.get("wall"):
        out += ["", session_line(summary)]
    return out + [""]


def markdown_phases(run: FormatRun) -> list[str]:
    if run.timing is None or run.timing.wall <= 0:
        return []
    wall = run.timing.wall
    out = ["", "| phase | s | share |", "|---|---|---|"]
    out += [f"| {k} | {v:.3f} | {v / wall:.1%} |" for k, v in ordered_phases(run.timing, [c.check for c in run.checks])]
    out.append(f"| **wall** | {wall:.3f} | 100% |")
    return out


def html_table(summary: RunSummary) -> list[str]:
    rows = overheads(summary.runs)
    if not rows:
        return []
    out = ["<h2>Time per format (s)</h2>", "<table><tr><th>spec</th><th>format</th>"
           + "".join(f"<th>{c}</th>" for c in COLUMNS) + "<th>overhead</th><th>beyond build</th></tr>"]
    for o in rows:
        out.append(f"<tr><td>{escape(o.spec)}</td><td>{escape(o.format)}</td>"
                   + "".join(f"<td>{o.part(c):.2f}</td>" for c in COLUMNS)
                   + f"<td>{o.overhead:.2f} ({o.fraction:.0%})</td>"
                   f"<td>{o.beyond_build:.2f} ({o.fraction_beyond_build:.0%})</td></tr>")
    out.append("</table>")
    if summary.timing.get("wall"):
        out.append(f"<p>{escape(session_line(summary))}</p>")
    return out


def html_phases(run: FormatRun) -> list[str]:
    if run.timing is None or run.timing.wall <= 0:
        return []
    wall = run.timing.wall
    out = ["<table><tr><th>phase</th><th>s</th><th>share</th></tr>"]
    out += [f'<tr><td title="{escape(WHAT.get(k, "built-in check " + k[6:]))}">{escape(k)}</td>'
            f"<td>{v:.3f}</td><td>{v / wall:.1%}</td></tr>" for k, v in ordered_phases(run.timing, [c.check for c in run.checks])]
    out.append(f"<tr><th>wall</th><th>{wall:.3f}</th><th>100%</th></tr></table>")
    return out

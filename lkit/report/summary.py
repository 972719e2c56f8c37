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

from lkit.report.compare import Comparison
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
    """Write summary.json, junit-*.xml, report.md and report.html; return the run folder."""
    folder = run_dir(summary, root)
    write_summary(summary, root)
    write_junit(summary, folder)
    write_human(summary, folder, comparison)
    return folder

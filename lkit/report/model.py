"""The results model: what the pytest plugin fills and every writer and the gate read.

One `RunSummary` per pytest session; one `FormatRun` per (spec, output format); one
`CheckResult` per check. Serialised as versioned JSON (`"schema": 2`) in summary.json.

Schema 2 added `timing` (where each format's wall time went, and the session's); schema 1
summaries still load, without it. Optional in schema 2: `shard`, `revision`, `merged_from` (shards and
their merge) and each format's `artifacts` (file name -> sha256 of what was tested).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from lkit.core.arch import DEFAULT as DEFAULT_ARCH, NAMES as ARCH_NAMES
from lkit.errors import LkitError
from lkit.report.atomic import write_text

SCHEMA_VERSION = 2
READABLE_SCHEMAS = (1, 2)


class Outcome(StrEnum):
    """A check's outcome (the strings summary.json holds)."""

    PASSED = "passed"
    FAILED = "failed"
    ERROR = "error"
    SKIPPED = "skipped"


OUTCOMES: tuple[str, ...] = tuple(o.value for o in Outcome)


class ReportError(LkitError):
    """A results, baseline or quarantine file is missing or malformed."""


@dataclass
class CheckResult:
    """One check of one format: the unit that JUnit, Allure and the gate count."""

    check: str
    outcome: Outcome
    message: str = ""
    duration: float = 0.0
    rerun: int = 0
    quarantined: bool = False
    attachments: dict[str, str] = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        """True for a failure or an error (both break the image's promise)."""
        return self.outcome in (Outcome.FAILED, Outcome.ERROR)


@dataclass
class Timing:
    """Where one format's wall time went: `phases` (seconds) partition `wall`.

    Phase names: build, rebuild, qemu (start to `cont`), boot (`cont` to "services started"),
    ready, check.<name>, tests (the suite's test bodies), poweroff.guest, poweroff, report, other.
    """

    wall: float = 0.0
    phases: dict[str, float] = field(default_factory=dict)
    start: float = 0.0     # epoch seconds of the first item: orders formats across xdist workers
    worker: str = ""       # the xdist worker that ran it ("" when serial)


@dataclass
class FormatRun:
    """Everything measured and checked for one output format of one spec."""

    spec: str
    format: str
    figures: dict[str, float] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    timing: Timing | None = None
    artifacts: dict[str, str] = field(default_factory=dict)   # file name -> sha256 of what was tested

    @property
    def key(self) -> str:
        """The stable name of this run in reports: 'spec format' (the format is the variant, with
        its architecture unless amd64: 'suites/linuxkit.yml arm64.iso-efi')."""
        return f"{self.spec} {self.format}"

    @property
    def arch(self) -> str:
        """The architecture the format was built for and booted on (amd64 unless the variant says)."""
        prefix, dot, _ = self.format.partition(".")
        return prefix if dot and prefix in ARCH_NAMES else DEFAULT_ARCH.name

    def check(self, name: str) -> CheckResult | None:
        """The result of check `name`, or None when it did not run."""
        return next((c for c in self.checks if c.check == name), None)


@dataclass
class RunSummary:
    """One lkit run (one pytest session): the content of reports/<run_id>/summary.json."""

    run_id: str
    started: str
    finished: str
    runs: list[FormatRun] = field(default_factory=list)
    exit_status: int | None = None
    timing: dict[str, float] = field(default_factory=dict)  # session: wall, reports, ... (seconds)
    shard: str = ""       # "K/N" when the run was one shard of a suite (--lkit-shard)
    revision: str = ""    # digest of the suite folders' files (shards of one revision merge)
    merged_from: list[str] = field(default_factory=list)   # run ids of the shards `lkit report merge` joined
    # The run folder it was read from or is written to (not serialised): paths in properties, such
    # as the build manifests', are relative to it.
    folder: Path | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with sorted, stable content (same run -> same bytes)."""
        data = asdict(self)
        data.pop("folder", None)
        data["runs"] = sorted(data["runs"], key=lambda r: (r["spec"], r["format"]))
        return {"schema": SCHEMA_VERSION, "kind": "lkit-run", **data}

    @classmethod
    def from_json(cls, d: dict[str, Any], where: str | None = None) -> RunSummary:
        """Rebuild a summary; a wrong schema or shape is a ReportError naming the field."""
        if not isinstance(d, dict):
            raise ReportError("a run summary must be a JSON object", where=where)
        version = d.get("schema")
        if version not in READABLE_SCHEMAS:
            raise ReportError(
                f"field 'schema' is {version!r}, this lkit reads schema {', '.join(map(str, READABLE_SCHEMAS))}",
                where=where, hint="re-run the tests with this lkit version or use a matching lkit")
        try:
            runs = sorted((_format_run(r) for r in d.get("runs", [])), key=lambda r: (r.spec, r.format))
            return cls(run_id=str(d["run_id"]), started=str(d["started"]), finished=str(d["finished"]),
                       runs=runs, exit_status=d.get("exit_status"),
                       timing={str(k): float(v) for k, v in (d.get("timing") or {}).items()},
                       shard=str(d.get("shard", "")), revision=str(d.get("revision", "")),
                       merged_from=[str(r) for r in d.get("merged_from", [])])
        except (KeyError, TypeError, ValueError) as exc:
            raise ReportError(f"malformed run summary: {_describe(exc)}", where=where,
                              hint="summary.json is written by lkit; do not edit it by hand") from None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON atomically."""
        return write_text(path, json.dumps(self.to_json(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> RunSummary:
        """Read summary.json (or a run folder holding one)."""
        p = Path(path)
        if p.is_dir():
            p = p / "summary.json"
        summary = cls.from_json(read_json(p), where=str(p))
        summary.folder = p.parent
        return summary


def read_json(path: Path) -> Any:
    """Load a JSON file; a missing or broken file is a ReportError, not a traceback."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError(f"no such file: {path}", hint="give a run folder (reports/<run_id>) "
                          "or a summary.json / baseline.json path") from None
    except json.JSONDecodeError as exc:
        raise ReportError(f"not valid JSON: {exc.msg}", where=f"{path}:{exc.lineno}") from None


def _format_run(r: dict[str, Any]) -> FormatRun:
    checks = [_check(c) for c in r.get("checks", [])]
    return FormatRun(
        spec=str(r["spec"]), format=str(r["format"]),
        figures={str(k): float(v) for k, v in r.get("figures", {}).items()},
        samples={str(k): [float(x) for x in v] for k, v in r.get("samples", {}).items()},
        properties={str(k): str(v) for k, v in r.get("properties", {}).items()},
        checks=checks, timing=_timing(r["timing"]) if r.get("timing") else None,
        artifacts={str(k): str(v) for k, v in r.get("artifacts", {}).items()})


def _timing(t: dict[str, Any]) -> Timing:
    return Timing(wall=float(t.get("wall", 0.0)), phases={str(k): float(v) for k, v in t.get("phases", {}).items()},
                  start=float(t.get("start", 0.0)), worker=str(t.get("worker", "")))


def _check(c: dict[str, Any]) -> CheckResult:
    outcome = str(c["outcome"])
    if outcome not in OUTCOMES:
        raise ValueError(f"check {c.get('check')!r} has outcome {outcome!r}, expected one of {OUTCOMES}")
    return CheckResult(check=str(c["check"]), outcome=Outcome(outcome), message=str(c.get("message", "")),
                       duration=float(c.get("duration", 0.0)), rerun=int(c.get("rerun", 0)),
                       quarantined=bool(c.get("quarantined", False)),
                       attachments={str(k): str(v) for k, v in c.get("attachments", {}).items()})


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc.args[0]!r}"
    return str(exc)

"""Turns pytest reports into lkit's run summary, and hands it to lkit.report at the end.

Under xdist each worker writes its part (`<run>/parts/<worker>.json`); the controller merges the
parts and writes the reports once.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lkit.errors import EXIT_INFRA
from lkit.pytest_plugin.state import Group, RunState
from lkit.report.atomic import write_text
from lkit.core import arch as arch_table
from lkit.report.manifests import keep_in_run
from lkit.report.model import CheckResult, FormatRun, Outcome, RunSummary, Timing
from lkit.report.overhead import terminal_lines


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _one_line(report: pytest.TestReport) -> str:
    text = str(report.longrepr) if report.longrepr else ""
    if report.skipped and isinstance(report.longrepr, tuple):
        text = report.longrepr[2]
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:500]
    return ""


class Results:
    def __init__(self, run: RunState, worker: str | None) -> None:
        self.run = run
        self.worker = worker
        self.started = _now()
        self.started_clock = time.monotonic()
        self.checks: dict[tuple[str, str], list[CheckResult]] = {}
        self.lines: list[str] = []
        self.infra_failure = False  # QEMU or a host tool missing: the gate answers 11, not 1

    def record(self, item: pytest.Item, report: pytest.TestReport, key: tuple[str, str], *, infra: bool = False) -> None:
        self.infra_failure = self.infra_failure or infra
        if report.when == "call" or (report.when == "setup" and not report.passed) or (report.when == "teardown" and report.failed):
            name = getattr(item, "check", None) or item.name
            outcome = (Outcome.PASSED if report.passed else Outcome.SKIPPED if report.skipped else
                       Outcome.FAILED if report.when == "call" else Outcome.ERROR)
            attachments = {}
            group = self._group(key)
            if group is not None:
                console = group.console_path()
                if console.exists():
                    attachments["console"] = str(console)
                if not report.passed and (group.network_group is not group or group.machines_of()):
                    # a multi-machine failure: every machine's console
                    attachments.update({title: str(path) for title, path in group.consoles().items() if path.exists()})
                if not report.passed:
                    attachments.update({name: str(path) for name, path in group.evidence.items()})
            self.checks.setdefault(key, []).append(CheckResult(
                check=name, outcome=outcome, message="" if report.passed else _one_line(report),
                duration=round(report.duration, 3), attachments=attachments,
                rerun=max(0, (group.boot_attempts - 1)) if group is not None else 0))

    def failed(self, key: tuple[str, str]) -> bool:
        return any(c.failed for c in self.checks.get(key, []))

    def _group(self, key: tuple[str, str]):
        for group in self.run.groups.values():
            if group.record_key == key:
                return group
        return None

    def _format_runs(self) -> list[FormatRun]:
        runs = []
        for group in self.run.groups.values():   # a network's run (wall time, memory) even without tests
            if group.machines_of() and group.clock.first_start_epoch is not None:
                self.checks.setdefault(group.record_key, [])
        for key, checks in self.checks.items():
            group = self._group(key)
            spec_path = Path(key[0])
            try:
                spec_id = str(spec_path.relative_to(self.run.settings.rootdir))
            except ValueError:
                spec_id = str(spec_path)
            figures = dict(group.figures) if group else {}
            properties = dict(group.properties) if group else {}
            properties.setdefault("lkit", __import__("lkit").__version__)
            manifest = self.run.manifest(group.suite, group.arch) if group else None
            if manifest is not None:   # what the image holds: `lkit diff` and the gate explain with it
                properties.update(keep_in_run(manifest, self.run.run_dir, group.suite.spec.name
                                              + ("" if group.arch == arch_table.DEFAULT else f".{group.arch.name}")))
            samples = {k: list(v) for k, v in group.samples.items()} if group else {}
            built = self.run.built_if_any(group.suite, group.arch, signed=group.secure_boot) if group else None
            # The bytes the group booted: a machine pinned to one format boots it in every variant.
            booted = group.output_format if group else key[1]
            artifacts = {a.path.name: a.sha256 for a in built.artifacts.get(booted, [])} if built else {}
            runs.append(FormatRun(spec=spec_id, format=key[1], figures=figures, samples=samples,
                                  properties=properties, checks=checks, timing=self._timing(group),
                                  artifacts=artifacts))
        return runs

    def _timing(self, group: Group | None) -> Timing | None:
        """Where the group's wall time went (its clock's phases), for summary.json."""
        if group is None or group.network_group is not group:
            return None    # a machine's time is its network's
        group.clock.close()   # an interrupted session: the window ends here
        if group.clock.first_start_epoch is None:
            return None
        return Timing(wall=round(group.clock.wall, 3), phases=group.clock.snapshot(),
                      start=round(group.clock.first_start_epoch, 3), worker=self.worker or "")

    def finish(self, exitstatus: int) -> int | None:
        """Write this process's results; on the controller, the reports and the gate's verdict."""
        runs = self._format_runs()
        parts = self.run.run_dir / "parts"
        session = {"wall": round(time.monotonic() - self.started_clock, 3)}
        if self.worker is not None:
            if runs:
                parts.mkdir(parents=True, exist_ok=True)
                summary = RunSummary(run_id=self.run.run_id, started=self.started, finished=_now(), runs=runs,
                                     timing=session)
                write_text(parts / f"{self.worker}.json", json.dumps(summary.to_json(), indent=2, sort_keys=True))
            return None
        if parts.exists():
            for part in sorted(parts.glob("*.json")):
                worker = RunSummary.from_json(json.loads(part.read_text()))
                runs += worker.runs
                if "wall" in worker.timing:
                    session[f"{part.stem}.wall"] = worker.timing["wall"]
        if not runs and self.run.settings.shard is None:
            return None   # an empty shard still writes its (empty) summary: the merge counts shards
        shard = self.run.settings.shard
        summary = RunSummary(run_id=self.run.run_id, started=self.started, finished=_now(), runs=runs,
                             exit_status=EXIT_INFRA if self.infra_failure else exitstatus, timing=session,
                             shard=str(shard) if shard else "", revision=self.run.revision)
        from lkit.pytest_plugin.reporting import write_reports

        started = time.monotonic()
        status, lines = write_reports(summary, self.run)
        # summary.json cannot hold the time its own writing takes: it is added once the rest is written
        summary.timing["reports"] = round(time.monotonic() - started, 3)
        summary.save(self.run.run_dir / "summary.json")
        self.lines = [*terminal_lines(summary), *lines]
        return status

    def summary_lines(self) -> list[str]:
        return self.lines


# Where the session's Results live: pytest's config.stash.
RESULTS = pytest.StashKey[Results]()

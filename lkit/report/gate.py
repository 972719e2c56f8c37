"""The CI gate: one exit code from a run, its comparison with a baseline, and a quarantine file.

Exit codes (lkit/errors.py), by precedence:

    11 EXIT_INFRA       the run could not produce trustworthy results (no results at all, or the
                        session ended with the infrastructure code): neither a pass nor a failure
                        can be believed, so re-run the job rather than blame the change.
     1 EXIT_FAILED      a check failed or errored (not quarantined). Failures win over regressions:
                        a broken image is broken whatever its figures say.
    10 EXIT_REGRESSION  every check passed but a figure or a check regressed against the baseline.
     0 EXIT_OK          nothing of the above.

A quarantined failure or regression is reported (prefixed "quarantined") but does not fail the gate.
A flaky boot may be re-run up to `FlakyPolicy.max_reruns` times; the reruns are recorded on the
result, and a failure that repeats on every attempt stays a failure.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

from lkit.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, EXIT_REGRESSION, SpecError
from lkit.report.compare import DETAIL_INDENT, Comparison
from lkit.report.diff import explain_check
from lkit.report.model import CheckResult, ReportError, RunSummary
from lkit.spec.yamlmarks import YamlNode, load_yaml, load_yaml_text


@dataclass(frozen=True)
class QuarantineEntry:
    """Test ids matching `pattern` (glob over 'spec::format::check-or-figure') do not fail the gate."""

    pattern: str
    reason: str
    expires: dt.date
    where: str = ""

    def matches(self, test_id: str) -> bool:
        return fnmatch.fnmatchcase(test_id, self.pattern)


@dataclass
class Quarantine:
    """The active entries of a quarantine file, and warnings about the expired ones."""

    entries: list[QuarantineEntry] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, path: str | os.PathLike[str], today: dt.date | None = None) -> Quarantine:
        """Parse a quarantine YAML file: a list (or `quarantine:` list) of {id, reason, expires}."""
        p = Path(path)
        if not p.exists():
            raise ReportError(f"no such quarantine file: {p}")
        return cls._from_yaml(lambda: load_yaml(p), today)

    @classmethod
    def parse(cls, text: str, name: str = "<quarantine>", today: dt.date | None = None) -> Quarantine:
        return cls._from_yaml(lambda: load_yaml_text(text, name), today)

    @classmethod
    def _from_yaml(cls, read: Callable[[], YamlNode], today: dt.date | None) -> Quarantine:
        """Read through lkit.spec.yamlmarks like specs (size, alias, depth and duplicate-key guards,
        file:line); its errors become ReportErrors, the class of a bad quarantine file."""
        today = today or dt.datetime.now(dt.timezone.utc).date()
        try:
            root = read()
            if root.value is None:
                return cls()
            if isinstance(root.value, dict):
                if set(root.value) != {"quarantine"}:
                    raise ReportError("expected a list of entries or a single key 'quarantine'",
                                      where=root.where, hint=_EXAMPLE)
                root = root.value["quarantine"]
            if not isinstance(root.value, list):
                raise ReportError("expected a list of quarantine entries", where=root.where, hint=_EXAMPLE)
            entries = [_entry(node) for node in root.value]
        except SpecError as exc:
            raise ReportError(exc.message, where=exc.where, hint=exc.hint) from None
        result = cls()
        for entry in entries:
            if entry.expires < today:
                result.warnings.append(f"{entry.where}: quarantine of {entry.pattern!r} expired on "
                                       f"{entry.expires.isoformat()}; it is ignored (renew it or fix the test)")
            else:
                result.entries.append(entry)
        return result

    def match(self, test_id: str) -> QuarantineEntry | None:
        return next((e for e in self.entries if e.matches(test_id)), None)

    def apply(self, summary: RunSummary) -> list[str]:
        """Mark matching failed checks quarantined (so JUnit and HTML show them so); return their ids."""
        marked = []
        for run in summary.runs:
            for check in run.checks:
                tid = check_id(run.spec, run.format, check.check)
                if check.failed and self.match(tid):
                    check.quarantined = True
                    marked.append(tid)
        return marked


_EXAMPLE = ("- id: 'suites/linuxkit.yml::iso-efi::boot_time'\n"
            "    reason: 'OVMF is slow on CI runners, issue #12'\n"
            "    expires: 2026-12-31")


def _entry(node: YamlNode) -> QuarantineEntry:
    where = node.where
    if not isinstance(node.value, dict):
        raise ReportError("a quarantine entry must be a mapping with id, reason, expires", where=where, hint=_EXAMPLE)
    fields = node.value
    unknown = sorted(set(fields) - {"id", "reason", "expires"})
    if unknown:
        raise ReportError(f"unknown field {unknown[0]!r}", where=fields[unknown[0]].where,
                          hint="fields: id, reason, expires")
    for key in ("id", "reason", "expires"):
        value = fields.get(key)
        if value is None or value.kind != "scalar" or not str(value.value).strip():
            raise ReportError(f"field {key!r} is missing or empty", where=value.where if value else where,
                              hint=_EXAMPLE)
    raw = fields["expires"].value
    try:
        expires = dt.date.fromisoformat(str(raw))
    except ValueError:
        raise ReportError(f"field 'expires' is {str(raw)!r}, expected a date YYYY-MM-DD",
                          where=fields["expires"].where) from None
    return QuarantineEntry(pattern=str(fields["id"].value), reason=str(fields["reason"].value),
                           expires=expires, where=where)


def check_id(spec: str, fmt: str, check: str) -> str:
    """The id quarantine patterns match: 'spec::format::check'."""
    return f"{spec}::{fmt}::{check}"


@dataclass
class GateResult:
    """The gate's verdict: an exit code and the lines that explain it."""

    exit_code: int
    failures: list[str] = field(default_factory=list)
    regressions: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)
    flaky: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)   # a line above -> what explains it
    changed: list[str] = field(default_factory=list)              # top changes inside the images

    def lines(self) -> list[str]:
        out = [f"warning: {w}" for w in self.warnings]
        for prefix, items in (("FAILED     ", self.failures), ("REGRESSION ", self.regressions)):
            for line in items:
                out.append(prefix + line)
                out += [DETAIL_INDENT + d for d in self.details.get(line, [])]
        out += [f"quarantined {q}" for q in self.quarantined]
        out += [f"flaky      {f}" for f in self.flaky]
        out += [f"changed    {c}" for c in self.changed]
        verdict = {EXIT_OK: "pass", EXIT_FAILED: "checks failed", EXIT_REGRESSION: "regressions",
                   EXIT_INFRA: "infrastructure problem"}[self.exit_code]
        out.append(f"gate: {verdict} (exit {self.exit_code})")
        return out


def evaluate(new: RunSummary, comparison: Comparison | None = None,
             quarantine: Quarantine | None = None) -> GateResult:
    """Apply the exit-code policy in this module's docstring."""
    q = quarantine or Quarantine()
    result = GateResult(exit_code=EXIT_OK, warnings=list(q.warnings))
    for run in sorted(new.runs, key=lambda r: (r.spec, r.format)):
        for check in run.checks:
            tid = check_id(run.spec, run.format, check.check)
            text = f"{run.key}: {check.check} {check.outcome}" + (f": {check.message}" if check.message else "")
            if check.rerun and not check.failed:
                result.flaky.append(f"{run.key}: {check.check} passed after {check.rerun} rerun(s)")
            if not check.failed:
                continue
            entry = q.match(tid)
            if entry or check.quarantined:
                why = entry.reason if entry else "marked quarantined"
                result.quarantined.append(f"{text} ({why})")
            else:
                line = text + (f" (after {check.rerun} rerun(s))" if check.rerun else "")
                result.failures.append(line)
                changes = comparison.changes.get(run.key) if comparison is not None else None
                if changes is not None and not changes.empty:
                    result.details[line] = explain_check(changes, check.check, run.format)
    for finding in (comparison.regressions if comparison else []):
        entry = q.match(finding.id)
        if entry:
            result.quarantined.append(f"{finding.line} ({entry.reason})")
        else:
            result.regressions.append(finding.line)
            if finding.details:
                result.details[finding.line] = list(finding.details)
    if comparison is not None:
        result.changed = comparison.changed_lines()
    empty_shard = not new.runs and bool(new.shard)   # more shards than groups: nothing to gate
    if (not new.runs and not empty_shard) or new.exit_status == EXIT_INFRA:
        result.exit_code = EXIT_INFRA
        if not new.runs:
            result.failures.append("the run has no results (nothing was built or booted)")
    elif result.failures:
        result.exit_code = EXIT_FAILED
    elif result.regressions:
        result.exit_code = EXIT_REGRESSION
    return result


@dataclass(frozen=True)
class FlakyPolicy:
    """Re-run a failed boot at most `max_reruns` times; only checks in `checks` are re-run."""

    max_reruns: int = 1
    checks: tuple[str, ...] = ("boots",)

    def may_rerun(self, result: CheckResult, reruns_done: int) -> bool:
        return result.failed and result.check in self.checks and reruns_done < self.max_reruns

    def run(self, attempt: Callable[[], CheckResult]) -> CheckResult:
        """Call `attempt` until it passes or the reruns are spent; the result records the reruns.

        A failure that repeats on every attempt stays a failure (its message says how many tries).
        """
        reruns = 0
        result = attempt()
        while self.may_rerun(result, reruns):
            reruns += 1
            result = attempt()
        if reruns and result.failed:
            result = replace(result, message=f"{result.message} (failed on all {reruns + 1} attempts)".lstrip())
        return replace(result, rerun=reruns)

"""The gate: exit-code precedence, quarantine (with expiry), the flaky-boot policy, the CLI."""

from __future__ import annotations

import copy
import datetime as dt
import json
from pathlib import Path

import pytest

from lkit.cli import main
from lkit.errors import EXIT_FAILED, EXIT_INFRA, EXIT_OK, EXIT_REGRESSION
from lkit.report.compare import compare
from lkit.report.gate import FlakyPolicy, Quarantine, evaluate
from lkit.report.model import CheckResult, ReportError, RunSummary
from lkit.report.summary import write_run

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
SPEC = "suites/linuxkit.yml"
TODAY = dt.date(2026, 11, 30)


def base() -> RunSummary:
    return RunSummary.load(DATA / "run-base.json")


def fmt(summary: RunSummary, name: str):
    return next(r for r in summary.runs if r.format == name)


def failing_capabilities() -> RunSummary:
    new = copy.deepcopy(base())
    check = fmt(new, "iso-efi").check("capabilities")
    check.outcome, check.message = "failed", "rngd: extra CAP_SYS_RAWIO"
    return new


def bigger() -> RunSummary:
    new = copy.deepcopy(base())
    fmt(new, "iso-efi").figures["size.initrd"] = 40_000_000
    return new


def test_clean_run_passes():
    result = evaluate(base(), compare(base(), base()))
    assert result.exit_code == EXIT_OK and result.lines()[-1] == "gate: pass (exit 0)"


def test_regression_only_exits_10():
    result = evaluate(bigger(), compare(base(), bigger()))
    assert result.exit_code == EXIT_REGRESSION
    assert result.regressions[0].startswith(f"{SPEC} iso-efi: initrd size +27.4%")


def test_failures_win_over_regressions():
    new = failing_capabilities()
    fmt(new, "iso-efi").figures["size.initrd"] = 40_000_000
    result = evaluate(new, compare(base(), new))
    assert result.exit_code == EXIT_FAILED
    assert result.failures == [f"{SPEC} iso-efi: capabilities failed: rngd: extra CAP_SYS_RAWIO"]
    assert len(result.regressions) == 2


def test_failure_without_baseline_exits_1():
    assert evaluate(failing_capabilities()).exit_code == EXIT_FAILED


def test_infrastructure_wins():
    new = failing_capabilities()
    new.exit_status = EXIT_INFRA
    assert evaluate(new).exit_code == EXIT_INFRA
    empty = RunSummary("e", "2026-11-30T00:00:00Z", "2026-11-30T00:00:01Z", [])
    result = evaluate(empty)
    assert result.exit_code == EXIT_INFRA and "no results" in result.failures[0]


def test_quarantined_failure_is_reported_but_passes():
    q = Quarantine.load(DATA / "quarantine.yml", today=TODAY)
    result = evaluate(failing_capabilities(), None, q)
    assert result.exit_code == EXIT_OK
    assert result.quarantined == [f"{SPEC} iso-efi: capabilities failed: rngd: extra CAP_SYS_RAWIO "
                                  "(rngd gained CAP_SYS_RAWIO upstream, issue #7)"]


def test_expired_quarantine_is_ignored_with_a_warning():
    q = Quarantine.load(DATA / "quarantine.yml", today=TODAY)
    assert [e.pattern for e in q.entries] == [f"{SPEC}::iso-efi::capabilities"]
    assert q.warnings == [f"{DATA / 'quarantine.yml'}:6: quarantine of '{SPEC}::*::boot.shell' expired on "
                          "2020-01-01; it is ignored (renew it or fix the test)"]
    slow = copy.deepcopy(base())
    fmt(slow, "iso-efi").samples["boot.shell"] = [20.0, 20.0, 20.0]
    result = evaluate(slow, compare(base(), slow), q)
    assert result.exit_code == EXIT_REGRESSION          # the expired entry does not hide it
    assert result.lines()[0].startswith("warning: ") and "expired" in result.lines()[0]


def test_quarantine_before_expiry_hides_a_figure_regression():
    q = Quarantine.parse("- id: '*::iso-efi::size.*'\n  reason: known\n  expires: 2026-12-01\n", today=TODAY)
    result = evaluate(bigger(), compare(base(), bigger()), q)
    assert result.exit_code == EXIT_OK and result.quarantined[0].endswith("(known)")
    later = Quarantine.parse("- id: '*::iso-efi::size.*'\n  reason: known\n  expires: 2026-12-01\n",
                             today=dt.date(2026, 12, 2))
    assert evaluate(bigger(), compare(base(), bigger()), later).exit_code == EXIT_REGRESSION


@pytest.mark.parametrize("text, where, words", [
    ("- id: x\n  reason: r\n", "<q>:1", "'expires' is missing"),
    ("- id: x\n  reason: r\n  expires: soon\n", "<q>:3", "expected a date"),
    ("- id: x\n  reason: r\n  expires: 2030-01-01\n  owner: me\n", "<q>:4", "unknown field 'owner'"),
    ("things: []\n", "<q>:1", "single key 'quarantine'"),
    ("- [a, b\n", "<q>:2", "YAML syntax error"),
])
def test_quarantine_file_errors_name_line_and_field(text, where, words):
    with pytest.raises(ReportError) as exc:
        Quarantine.parse(text, "<q>", TODAY)
    assert exc.value.where == where and words in exc.value.message


QUARANTINE_BOMB = """a: &a ["x","x","x","x","x","x","x","x","x","x"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]
quarantine: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]
"""


@pytest.mark.parametrize("text, line, words", [
    (QUARANTINE_BOMB, 4, "aliases expand to more than"),
    ("- id: x\n  reason: r\n  id: y\n  expires: 2030-01-01\n", 3, "duplicate key 'id' (first at line 1)"),
    ("quarantine: []\nquarantine: []\n", 2, "duplicate key 'quarantine'"),
    ("- " + "[" * 100 + "]" * 100 + "\n", 1, "nesting deeper than"),
])
def test_hostile_quarantine_file_is_a_clean_error_with_file_and_line(tmp_path, text, line, words):
    path = tmp_path / "quarantine.yml"
    path.write_text(text)
    with pytest.raises(ReportError) as exc:
        Quarantine.load(path, today=TODAY)
    assert exc.value.where == f"{path}:{line}" and words in exc.value.message


def test_oversized_quarantine_file_is_refused(tmp_path):
    path = tmp_path / "quarantine.yml"
    path.write_text("# " + "x" * (8 * 1024 * 1024) + "\n")
    with pytest.raises(ReportError, match="larger than 8 MiB"):
        Quarantine.load(path, today=TODAY)


def test_apply_marks_matching_failures_for_the_reports():
    q = Quarantine.load(DATA / "quarantine.yml", today=TODAY)
    new = failing_capabilities()
    assert q.apply(new) == [f"{SPEC}::iso-efi::capabilities"]
    assert fmt(new, "iso-efi").check("capabilities").quarantined
    assert not fmt(new, "kernel+initrd").check("capabilities").quarantined


def test_marked_quarantined_check_does_not_fail():
    new = failing_capabilities()
    fmt(new, "iso-efi").check("capabilities").quarantined = True
    assert evaluate(new).exit_code == EXIT_OK


def test_flaky_boot_passing_on_rerun_is_recorded():
    outcomes = iter(["failed", "passed"])
    result = FlakyPolicy(max_reruns=2).run(lambda: CheckResult("boots", next(outcomes), "x"))
    assert result.outcome == "passed" and result.rerun == 1
    summary = copy.deepcopy(base())
    fmt(summary, "iso-efi").checks[2] = result
    gate = evaluate(summary)
    assert gate.exit_code == EXIT_OK and gate.flaky == [f"{SPEC} iso-efi: boots passed after 1 rerun(s)"]


def test_repeated_boot_failure_stays_a_failure():
    calls = []

    def attempt() -> CheckResult:
        calls.append(1)
        return CheckResult("boots", "failed", "no 'shell ready' within 60 s")

    result = FlakyPolicy(max_reruns=2).run(attempt)
    assert len(calls) == 3 and result.outcome == "failed" and result.rerun == 2
    assert result.message == "no 'shell ready' within 60 s (failed on all 3 attempts)"


def test_only_boot_checks_are_rerun():
    calls = []

    def attempt() -> CheckResult:
        calls.append(1)
        return CheckResult("capabilities", "failed")

    assert FlakyPolicy(max_reruns=3).run(attempt).rerun == 0 and len(calls) == 1


def run_cli(*argv: str) -> int:
    return main(["report", *argv])


def test_cli_compare_exit_codes(tmp_path, capsys):
    base_dir = write_run(base(), tmp_path)
    worse = bigger()
    worse.run_id = "worse"
    worse_dir = write_run(worse, tmp_path)
    assert run_cli("compare", str(base_dir), str(base_dir)) == EXIT_OK
    assert run_cli("compare", str(base_dir), str(worse_dir)) == EXIT_REGRESSION
    out = capsys.readouterr().out
    assert f"REGRESSION {SPEC} iso-efi: initrd size +27.4% (31.4 MB -> 40.0 MB) over the 5% threshold" in out
    assert run_cli("compare", str(base_dir), str(worse_dir), "--threshold", "size=50",
                   "--threshold", "size.initrd=50") == EXIT_OK
    failed = failing_capabilities()
    failed.run_id = "failed"
    assert run_cli("compare", str(base_dir), str(write_run(failed, tmp_path))) == EXIT_FAILED
    q = DATA / "quarantine.yml"
    capsys.readouterr()
    assert run_cli("gate", str(tmp_path / "failed"), "--quarantine", str(q)) == EXIT_OK
    captured = capsys.readouterr()
    assert "quarantined " in captured.out and "expired on 2020-01-01" in captured.err


def test_cli_baseline_then_compare_and_show(tmp_path, capsys):
    dirs = []
    for i in range(3):
        s = copy.deepcopy(base())
        s.run_id = f"r{i}"
        dirs.append(str(write_run(s, tmp_path)))
    out = tmp_path / "baseline.json"
    assert run_cli("baseline", *dirs, "-o", str(out)) == 0
    assert json.loads(out.read_text())["kind"] == "lkit-baseline"
    assert run_cli("compare", str(out), dirs[0], "--write-reports") == EXIT_OK
    assert "Compared with the baseline" in (Path(dirs[0]) / "report.md").read_text()
    capsys.readouterr()
    assert run_cli("show", dirs[1]) == 0
    assert f"## {SPEC} `iso-efi`" in capsys.readouterr().out


def test_cli_user_mistakes_are_one_line_errors(tmp_path, capsys):
    assert run_cli("compare", str(tmp_path / "nope"), str(tmp_path / "nope2")) == 2
    err = capsys.readouterr().err
    assert err.startswith("lkit: error: no such file") and "Traceback" not in err
    assert run_cli("compare", str(DATA / "run-base.json"), str(DATA / "run-base.json"),
                   "--threshold", "size") == 2
    assert "KEY=NUMBER" in capsys.readouterr().err

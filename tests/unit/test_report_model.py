"""summary.json round trip, schema check, run folder, and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lkit.report.atomic import atomic_open, write_text
from lkit.report.model import CheckResult, FormatRun, ReportError, RunSummary, Timing
from lkit.report.summary import run_dir, write_run, write_summary

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"


def base() -> RunSummary:
    return RunSummary.load(DATA / "run-base.json")


def test_round_trip_is_lossless_and_stable(tmp_path):
    summary = base()
    assert len(summary.runs) == 2 and summary.runs[0].checks[0].check == "build"
    path = summary.save(tmp_path / "summary.json")
    again = RunSummary.load(path)
    assert again == summary
    assert path.read_bytes() == again.save(tmp_path / "second.json").read_bytes()
    assert json.loads(path.read_text())["schema"] == 2   # run-base.json is schema 1: still read, saved as 2


def test_timing_round_trips_and_schema_1_has_none(tmp_path):
    assert all(r.timing is None for r in base().runs) and base().timing == {}
    run = FormatRun(spec="suites/x.yml", format="iso-efi",
                    timing=Timing(wall=10.0, phases={"boot": 7.5, "check.files": 0.5, "other": 2.0},
                                  start=1796400000.5, worker="gw1"))
    summary = RunSummary("r2", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", [run], timing={"wall": 12.0})
    loaded = RunSummary.load(summary.save(tmp_path / "summary.json"))
    assert loaded == summary and loaded.runs[0].timing.phases["check.files"] == 0.5


def test_plugin_style_construction_serialises(tmp_path):
    run = FormatRun(spec="suites/x.yml", format="raw-bios", figures={"size.total": 1.0})
    run.checks.append(CheckResult("boots", "failed", "no 'shell ready' within 60 s", rerun=1))
    summary = RunSummary("r1", "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z", [run], exit_status=1)
    loaded = RunSummary.load(write_summary(summary, tmp_path))
    assert loaded.runs[0].check("boots").rerun == 1
    assert loaded.runs[0].check("boots").failed


def test_wrong_schema_is_a_clear_error(tmp_path):
    data = base().to_json()
    data["schema"] = 99
    (tmp_path / "summary.json").write_text(json.dumps(data))
    with pytest.raises(ReportError) as exc:
        RunSummary.load(tmp_path)
    assert "schema" in str(exc.value) and str(tmp_path / "summary.json") in str(exc.value)


def test_bad_outcome_and_missing_field_are_named(tmp_path):
    data = base().to_json()
    data["runs"][0]["checks"][0]["outcome"] = "exploded"
    (tmp_path / "a.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match="exploded"):
        RunSummary.load(tmp_path / "a.json")
    data["runs"][0]["checks"][0]["outcome"] = "passed"
    del data["run_id"]
    (tmp_path / "b.json").write_text(json.dumps(data))
    with pytest.raises(ReportError, match="missing field 'run_id'"):
        RunSummary.load(tmp_path / "b.json")


def test_broken_json_reports_file_and_line(tmp_path):
    (tmp_path / "summary.json").write_text('{\n "schema": 1,\n oops\n}')
    with pytest.raises(ReportError) as exc:
        RunSummary.load(tmp_path)
    assert exc.value.where == f"{tmp_path / 'summary.json'}:3"


def test_atomic_write_leaves_no_partial_file_on_exception(tmp_path):
    target = tmp_path / "summary.json"
    write_text(target, "old complete content\n")
    with pytest.raises(RuntimeError):
        with atomic_open(target) as handle:
            handle.write("half of the new")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old complete content\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]


def test_atomic_write_of_new_file_on_exception_creates_nothing(tmp_path):
    class Boom:
        def __str__(self) -> str:
            raise RuntimeError("cannot serialise")

    summary = base()
    summary.runs[0].properties["bad"] = Boom()  # type: ignore[assignment]
    with pytest.raises(TypeError):
        summary.save(tmp_path / "summary.json")
    assert list(tmp_path.iterdir()) == []


def test_run_folder_holds_every_report(tmp_path):
    folder = write_run(base(), tmp_path)
    assert folder == tmp_path / "20261130T070000Z-base01"
    names = sorted(p.name for p in folder.iterdir())
    assert names == ["junit-linuxkit-iso-efi.xml", "junit-linuxkit-kernel_initrd.xml",
                     "report.html", "report.md", "summary.json"]


def test_run_id_must_be_a_plain_name(tmp_path):
    with pytest.raises(ReportError, match="plain name"):
        run_dir("../escape", tmp_path)


names = st.text(st.characters(min_codepoint=33, max_codepoint=0x2FF), min_size=1, max_size=12)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
checks = st.builds(CheckResult, check=names, outcome=st.sampled_from(["passed", "failed", "error", "skipped"]),
                   message=st.text(max_size=40), duration=finite, rerun=st.integers(0, 3),
                   quarantined=st.booleans(), attachments=st.dictionaries(names, names, max_size=2))
runs = st.builds(FormatRun, spec=names, format=names, figures=st.dictionaries(names, finite, max_size=4),
                 samples=st.dictionaries(names, st.lists(finite, max_size=3), max_size=2),
                 properties=st.dictionaries(names, st.text(max_size=10), max_size=3),
                 checks=st.lists(checks, max_size=4))


@settings(max_examples=60, deadline=None)
@given(st.lists(runs, max_size=3, unique_by=lambda r: (r.spec, r.format)), st.sampled_from([None, 0, 1, 10, 11]))
def test_any_summary_round_trips_through_json(run_list, status):
    summary = RunSummary("r", "2017-04-18T16:30:00Z", "2017-04-18T16:31:00Z", run_list, status)
    again = RunSummary.from_json(json.loads(json.dumps(summary.to_json())))
    assert again.to_json() == summary.to_json()


def test_finish_run_writes_everything_and_returns_the_verdict(tmp_path):
    from lkit.report.baseline import Baseline
    from lkit.report.summary import finish_run

    baseline = Baseline.from_runs([base()]).save(tmp_path / "baseline.json")
    new = base()
    iso = next(r for r in new.runs if r.format == "iso-efi")
    iso.check("capabilities").outcome = "failed"          # quarantined in the fixture file
    iso.figures["size.initrd"] = 40_000_000                # a regression
    folder = tmp_path / "run"
    result = finish_run(new, folder, baseline=baseline, quarantine=DATA / "quarantine.yml",
                        thresholds="size=5%,time=25%,time_floor=1.5s")
    assert result.exit_code == 10
    assert iso.check("capabilities").quarantined
    assert "quarantined: " in (folder / "junit-linuxkit-iso-efi.xml").read_text()
    assert "initrd size +27.4%" in (folder / "report.html").read_text()
    assert RunSummary.load(folder).runs[0].check("capabilities").quarantined

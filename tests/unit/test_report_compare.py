"""compare(): each kind of regression caught with a clear line, noise not flagged, improvements shown."""

from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest

from lkit.report.baseline import Baseline, load_reference
from lkit.report.compare import Thresholds, compare
from lkit.report.model import CheckResult, ReportError, RunSummary

DATA = Path(__file__).resolve().parents[1] / "data" / "reports"
SPEC = "suites/linuxkit.yml"


def base() -> RunSummary:
    return RunSummary.load(DATA / "run-base.json")


def variant(run_id: str = "new") -> RunSummary:
    new = copy.deepcopy(base())
    new.run_id = run_id
    return new


def fmt(summary: RunSummary, name: str):
    return next(r for r in summary.runs if r.format == name)


def test_identical_runs_have_no_findings():
    result = compare(base(), variant())
    assert result.regressions == [] and result.improvements == [] and result.notes == []


def test_bigger_initrd_is_a_regression_with_a_clear_line():
    new = variant()
    run = fmt(new, "iso-efi")
    run.figures["size.initrd"] = 35_000_000
    run.figures["size.total"] = 45_100_000
    result = compare(base(), new)
    lines = [f.line for f in result.regressions]
    assert f"{SPEC} iso-efi: initrd size +11.5% (31.4 MB -> 35.0 MB) over the 5% threshold" in lines
    assert any(line.startswith(f"{SPEC} iso-efi: total size +8.7%") for line in lines)
    assert len(lines) == 2
    assert result.regressions[0].id.startswith(f"{SPEC}::iso-efi::size.")


def test_small_size_growth_under_threshold_is_quiet():
    new = variant()
    fmt(new, "iso-efi").figures["size.initrd"] *= 1.03
    assert compare(base(), new).regressions == []


def test_slower_boot_is_a_regression_naming_threshold_and_margin():
    new = variant()
    run = fmt(new, "kernel+initrd")
    run.figures["boot.shell"] = 9.0
    run.samples["boot.shell"] = [8.9, 9.0, 9.3]
    [finding] = compare(base(), new).regressions
    assert finding.line.startswith(f"{SPEC} kernel+initrd: boot.shell +73.1% (5.20 s -> 9.00 s) over the 20% threshold")
    assert "noise margin" in finding.line


def test_time_change_below_absolute_floor_is_noise():
    """+40% but only 0.4 s: under the 0.5 s floor, TCG jitter, not a regression."""
    new = variant()
    run = fmt(new, "kernel+initrd")
    run.figures["boot.kernel"] = 1.8 + 0.4
    assert compare(base(), new).regressions == []
    assert compare(base(), new, Thresholds(time_floor=0.1)).regressions[0].item == "boot.kernel"


def test_extra_capability_failing_is_a_regression():
    new = variant()
    check = fmt(new, "iso-efi").check("capabilities")
    check.outcome = "failed"
    check.message = "rngd: expected {CAP_SYS_ADMIN}, found extra CAP_SYS_RAWIO"
    [finding] = compare(base(), new).regressions
    assert finding.line == (f"{SPEC} iso-efi: check capabilities passed in the baseline, now failed: "
                            "rngd: expected {CAP_SYS_ADMIN}, found extra CAP_SYS_RAWIO")
    assert finding.id == f"{SPEC}::iso-efi::capabilities"


def test_missing_service_is_a_regression():
    new = variant()
    check = fmt(new, "kernel+initrd").check("services_running")
    check.outcome = "failed"
    check.message = "service rngd: expected running, not found"
    lines = [f.line for f in compare(base(), new).regressions]
    assert lines == [f"{SPEC} kernel+initrd: check services_running passed in the baseline, now failed: "
                     "service rngd: expected running, not found"]


def test_improvements_are_shown():
    new = variant()
    run = fmt(new, "iso-efi")
    run.figures["size.initrd"] = 25_000_000
    run.figures["boot.shell"] = 4.0
    run.samples["boot.shell"] = [3.9, 4.0, 4.1]
    result = compare(base(), new)
    assert result.regressions == []
    lines = sorted(f.line for f in result.improvements)
    assert f"{SPEC} iso-efi: initrd size -20.4% (31.4 MB -> 25.0 MB) beyond the 5% threshold" in lines
    assert any(line.startswith(f"{SPEC} iso-efi: boot.shell -49.4% (7.90 s -> 4.00 s)") for line in lines)


def test_check_fixed_is_an_improvement():
    old = variant("old")
    fmt(old, "iso-efi").check("shutdown").outcome = "failed"
    [finding] = compare(old, base()).improvements
    assert finding.line == f"{SPEC} iso-efi: check shutdown now passes (failed in the baseline)"


def test_new_and_removed_formats_are_reported():
    new = variant()
    removed = new.runs.pop()          # after sorting: kernel+initrd
    added = copy.deepcopy(new.runs[0])
    added.format = "raw-bios"
    new.runs.append(added)
    result = compare(base(), new)
    assert result.removed == [removed.key] and result.added == [f"{SPEC} raw-bios"]
    assert [f.line for f in result.regressions] == [
        f"{SPEC} kernel+initrd: in the baseline but not in this run (format not built or tested)"]
    assert f"{SPEC} raw-bios: new format, no baseline to compare with" in [f.line for f in result.notes]


def noisy_runs(count: int, seed: int = 7) -> list[RunSummary]:
    """Runs whose boot figures wobble by TCG-like noise (+-8%) around the same medians."""
    rng = random.Random(seed)
    runs = []
    for i in range(count):
        s = variant(f"run{i}")
        for run in s.runs:
            for name in ("boot.kernel", "boot.init", "boot.services", "build.seconds"):
                run.figures[name] *= rng.uniform(0.92, 1.08)
            centre = run.figures["boot.shell"]
            run.samples["boot.shell"] = [centre * rng.uniform(0.92, 1.08) for _ in range(3)]
            run.figures["boot.shell"] = sorted(run.samples["boot.shell"])[1]
        runs.append(s)
    return runs


def test_five_noisy_runs_raise_no_false_alarm_against_their_baseline():
    runs = noisy_runs(5)
    baseline = Baseline.from_runs(runs)
    stats = baseline.formats[f"{SPEC} iso-efi"].figures["boot.shell"]
    assert stats.n == 15 and stats.mad > 0
    for run in runs + noisy_runs(5, seed=99):
        result = compare(baseline, run)
        assert result.regressions == [], [f.line for f in result.regressions]
        assert result.improvements == []


def test_spread_widens_the_margin_for_noisy_figures():
    runs = noisy_runs(5)
    for s in runs:   # a very noisy boot: +-30%
        for i, run in enumerate(s.runs):
            run.samples["boot.shell"] = [run.figures["boot.shell"] * f for f in (0.7, 1.0, 1.3 - 0.01 * i)]
    baseline = Baseline.from_runs(runs)
    new = variant()
    fmt(new, "iso-efi").samples["boot.shell"] = [7.9 * 1.25] * 3      # +25%: over 20% but inside the spread
    assert compare(baseline, new).regressions == []
    fmt(new, "iso-efi").samples["boot.shell"] = [7.9 * 3.0] * 3       # three times as slow: beyond the noise
    [finding] = compare(baseline, new).regressions
    assert "x spread of 15 baseline samples" in finding.line


def test_baseline_save_load_and_reference_detection(tmp_path):
    baseline = Baseline.from_runs(noisy_runs(3))
    path = baseline.save(tmp_path / "baseline.json")
    assert Baseline.load(path) == baseline
    assert isinstance(load_reference(path), Baseline)
    assert isinstance(load_reference(DATA / "run-base.json"), RunSummary)
    assert baseline.sources == ["run0", "run1", "run2"]


def test_baseline_check_outcome_is_the_usual_one():
    runs = noisy_runs(3)
    fmt(runs[0], "iso-efi").check("shutdown").outcome = "failed"
    baseline = Baseline.from_runs(runs)
    assert baseline.formats[f"{SPEC} iso-efi"].checks["shutdown"] == "passed"


def test_threshold_parsing():
    t = Thresholds.parse(["size=2", "time-floor=1", "k=4", "boot.shell=50"])
    assert (t.size_pct, t.time_floor, t.mad_k) == (2.0, 1.0, 4.0)
    assert t.pct("boot.shell") == 50 and t.pct("boot.kernel") == 20 and t.pct("size.initrd") == 2
    lead = Thresholds.parse("size=5%,time=25%,time_floor=1.5s, size_floor=100B")
    assert (lead.size_pct, lead.time_pct, lead.time_floor, lead.size_floor) == (5, 25, 1.5, 100)
    assert Thresholds.parse(None) == Thresholds()
    for bad in ("size", "size=x", "=3", "time=-1", "time=nan", "size="):
        with pytest.raises(ReportError, match="KEY=NUMBER"):
            Thresholds.parse([bad])


def test_per_figure_override_applies():
    new = variant()
    fmt(new, "iso-efi").figures["size.initrd"] *= 1.03
    assert compare(base(), new, Thresholds.parse(["size.initrd=2"])).regressions[0].item == "size.initrd"


def test_new_check_failing_without_baseline_entry_is_not_a_regression_but_a_failure():
    new = variant()
    fmt(new, "iso-efi").checks.append(CheckResult("ports", "failed", "port 22 closed"))
    assert compare(base(), new).regressions == []   # the gate reports it as a failure (exit 1)


def test_new_figure_is_a_note():
    new = variant()
    fmt(new, "iso-efi").figures["size.esp"] = 2_000_000
    result = compare(base(), new)
    assert result.regressions == []
    assert [f.line for f in result.notes] == [f"{SPEC} iso-efi: esp size is new (2.0 MB), not in the baseline"]


def test_a_shard_is_not_blamed_for_groups_the_other_shards_run():
    """A shard's gate judges its own groups; the merged run is compared in full."""
    new = variant()
    new.runs = [r for r in new.runs if r.format == "iso-efi"]
    alone = compare(base(), new)
    assert alone.regressions and all("not in this run" in f.line for f in alone.regressions)
    new.shard = "1/3"
    sharded = compare(base(), new)
    assert sharded.regressions == [] and sharded.removed == []
    assert any("not in shard 1/3" in f.line for f in sharded.notes)
    fmt(new, "iso-efi").figures["size.initrd"] *= 2
    assert {f.item for f in compare(base(), new).regressions} >= {"size.initrd"}

#!/usr/bin/env python3
"""Suite benchmark: wall time of `pytest suites/` serially and with `-n 2`, median of N runs.

    python bench/suite.py [--runs 3] [--case NAME]

Cases (builds are cached after the first run, as in a developer's loop or a CI with a cache):
  seed serial   : pytest suites/ -k linuxkit           (the seed spec: kernel+initrd, iso-bios, iso-efi)
  suite serial  : pytest suites/
  suite -n 2    : pytest suites/ -n 2 --dist loadgroup
Targets (issue 4, this 2-core machine): seed serial under 90 s; the whole suite faster with -n 2.
Issue 17: `-n 2` / serial toward 0.5. With both suite cases, the last pair of runs is profiled from
their summary.json: each worker's time inside formats and outside them (start-up, collection,
waiting for the other worker), and each phase summed over all formats, serial against -n 2, so
the difference shows what keeps the ratio above 0.5 (contention slows the guests, duplicated work).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lkit.report.model import RunSummary  # noqa: E402
from lkit.report.overhead import COLUMNS, overheads  # noqa: E402

BASE = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--lkit-accel", "tcg"]
CASES = {
    "seed serial": BASE + ["-k", "linuxkit"],
    "suite serial": BASE,
    "suite -n 2": BASE + ["-n", "2", "--dist", "loadgroup"],
}


def timed(argv: list[str], report_dir: Path | None = None) -> tuple[float, int, RunSummary | None]:
    """(wall seconds, exit code, the run's summary if it wrote one into report_dir)."""
    extra = ["--lkit-report-dir", str(report_dir)] if report_dir else []
    before = set(report_dir.glob("*/")) if report_dir else set()
    start = time.monotonic()
    proc = subprocess.run(argv + extra, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    seconds = time.monotonic() - start
    new = sorted(set(report_dir.glob("*/")) - before) if report_dir else []
    summary = RunSummary.load(new[-1]) if new and (new[-1] / "summary.json").exists() else None
    return seconds, proc.returncode, summary


def profile(serial: tuple[float, RunSummary], parallel: tuple[float, RunSummary]) -> list[str]:
    """Where -n 2 loses against half the serial time."""
    (s_wall, s_sum), (p_wall, p_sum) = serial, parallel
    out = [f"\nprofile of the last pair: serial {s_wall:.1f} s, -n 2 {p_wall:.1f} s (ratio {p_wall / s_wall:.2f}; "
           f"0.50 would be {s_wall / 2:.1f} s)"]
    busy: dict[str, float] = {}
    for o in overheads(p_sum.runs):
        busy[o.timing.worker or "main"] = busy.get(o.timing.worker or "main", 0.0) + o.timing.wall
    for worker, seconds in sorted(busy.items()):
        out.append(f"  {worker}: {seconds:.1f} s inside formats, {p_wall - seconds:.1f} s outside "
                   "(start-up, collection, waiting for the other worker, reports)")
    serial_busy = sum(o.timing.wall for o in overheads(s_sum.runs))
    out.append(f"  serial: {serial_busy:.1f} s inside formats, {s_wall - serial_busy:.1f} s outside")
    out.append(f"  {'phase (sum over formats)':<26} {'serial':>8} {'-n 2':>8} {'-n 2 - serial':>14}")
    for column in COLUMNS:
        a = sum(o.part(column) for o in overheads(s_sum.runs))
        b = sum(o.part(column) for o in overheads(p_sum.runs))
        out.append(f"  {column:<26} {a:>8.1f} {b:>8.1f} {b - a:>+14.1f}")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--case", choices=list(CASES), action="append")
    args = parser.parse_args()
    timed(BASE + ["--collect-only"])  # warm imports and the build cache's stamps
    reports = Path(tempfile.mkdtemp(prefix="lkit-bench-suite."))
    results: dict[str, list[float]] = {}
    last: dict[str, tuple[float, RunSummary]] = {}
    failures = 0
    for _ in range(args.runs):
        for name in args.case or list(CASES):
            seconds, rc, summary = timed(CASES[name], reports)
            results.setdefault(name, []).append(seconds)
            if summary is not None:
                last[name] = (seconds, summary)
            failures += rc != 0
    print(f"{'case':<14} {'median s':>9}   runs")
    for name, values in results.items():
        print(f"{name:<14} {statistics.median(values):>9.1f}   {' '.join(f'{v:.1f}' for v in values)}")
    if "suite serial" in results and "suite -n 2" in results:
        ratio = statistics.median(results["suite -n 2"]) / statistics.median(results["suite serial"])
        print(f"-n 2 / serial: {ratio:.2f}")
        if "suite serial" in last and "suite -n 2" in last:
            print("\n".join(profile(last["suite serial"], last["suite -n 2"])))
    if failures:
        print(f"note: {failures} run(s) had failing tests; times still count")
    return 0


if __name__ == "__main__":
    sys.exit(main())

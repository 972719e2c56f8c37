#!/usr/bin/env python3
"""Overhead benchmark: lkit's own time per (spec, format), median of N runs of `pytest suites/`.

    python bench/overhead.py [--runs 3] [-k EXPR] [-n 2]
    python bench/overhead.py --from reports/RUN1 reports/RUN2 ...   # figures of runs already made

Overhead is everything but the guest's own boot (`cont` to "services started") and the suite's
test bodies: build, QEMU start, the built-in checks, power-off, reporting, pytest between items.
Each run's summary.json holds the split (schema 2 `timing`); this prints, per (spec, format), the
median overhead in seconds and as a fraction of the format's wall time, with and without the build
(the build of a spec is paid by its first format), and lkit's host side alone (also without the
guest's own shutdown, power button to "lkit: poweroff"), then the median of every phase as a profile.
Targets (issue 17): overhead beyond the build <= 2 s per (spec, format); <= 10% of the wall time
for each format of the seed spec (suites/linuxkit.yml).
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
from lkit.report.overhead import COLUMNS, Overhead, overheads  # noqa: E402

SEED = "suites/linuxkit.yml"
LIMIT_SECONDS = 2.0
LIMIT_FRACTION = 0.10


def run_suites(report_dir: Path, extra: list[str]) -> Path:
    """One `pytest suites/` run into its own report folder; returns the run folder."""
    argv = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--lkit-accel", "tcg",
            "--lkit-report-dir", str(report_dir), *extra]
    before = set(report_dir.glob("*/"))
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=3600)
    print(f"  run {len(before) + 1}: {time.monotonic() - start:.1f} s, exit {proc.returncode}", flush=True)
    new = sorted(set(report_dir.glob("*/")) - before)
    if not new or not (new[-1] / "summary.json").exists():
        raise SystemExit(f"no summary.json from: {' '.join(argv)}\n{proc.stdout[-3000:]}")
    return new[-1]


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--from", dest="runs_from", nargs="+", type=Path, help="run folders (or summary.json) to read")
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    parser.add_argument("-n", dest="workers", help="pytest-xdist workers (adds --dist loadgroup)")
    args = parser.parse_args()
    if args.runs_from:
        folders = args.runs_from
    else:
        extra = (["-k", args.keyword] if args.keyword else []) + \
            (["-n", args.workers, "--dist", "loadgroup"] if args.workers else [])
        tmp = Path(tempfile.mkdtemp(prefix="lkit-bench-overhead."))
        print(f"{args.runs} run(s) of pytest suites/ {' '.join(extra)} (reports in {tmp})", flush=True)
        folders = [run_suites(tmp, extra) for _ in range(args.runs)]
    summaries = [RunSummary.load(f) for f in folders]
    per_key: dict[tuple[str, str], list[Overhead]] = {}
    for summary in summaries:
        for o in overheads(summary.runs):
            per_key.setdefault((o.spec, o.format), []).append(o)
    if not per_key:
        print("no timing in these summaries (schema 1, from an lkit before the overhead accounting)")
        return 1

    print(f"\nmedian of {len(summaries)} run(s), seconds; overhead = wall - boot - tests")
    width = max(len(f"{s} {f}") for s, f in per_key)
    print(f"{'spec format':<{width}} " + " ".join(f"{c:>8}" for c in COLUMNS)
          + f" {'overhead':>9} {'share':>6} {'beyond build':>13} {'share':>6} {'host side':>10} {'share':>6}")
    verdicts: list[str] = []
    for (spec, fmt), rows in sorted(per_key.items()):
        cells = " ".join(f"{median([o.part(c) for o in rows]):>8.2f}" for c in COLUMNS)
        over, share = median([o.overhead for o in rows]), median([o.fraction for o in rows])
        beyond, share_beyond = median([o.beyond_build for o in rows]), median([o.fraction_beyond_build for o in rows])
        host = median([o.host_side for o in rows])
        share_host = median([o.host_side / o.timing.wall for o in rows])
        print(f"{spec + ' ' + fmt:<{width}} {cells} {over:>9.2f} {share:>6.1%} {beyond:>13.2f} {share_beyond:>6.1%}"
              f" {host:>10.2f} {share_host:>6.1%}")
        verdicts.append(f"{'met   ' if beyond <= LIMIT_SECONDS else 'MISSED'} {spec} {fmt}: "
                        f"overhead beyond the build {beyond:.2f} s (target <= {LIMIT_SECONDS:.0f} s)")
        if spec == SEED:
            verdicts.append(f"{'met   ' if share_beyond <= LIMIT_FRACTION else 'MISSED'} {spec} {fmt}: "
                            f"{share_beyond:.1%} of the wall time beyond the build, {share:.1%} with it "
                            f"(target <= {LIMIT_FRACTION:.0%})")

    print("\nprofile: median seconds per phase")
    phases: dict[str, dict[tuple[str, str], float]] = {}
    for key, rows in per_key.items():
        for name in {n for o in rows for n in o.timing.phases}:
            phases.setdefault(name, {})[key] = median([o.timing.phases.get(name, 0.0) for o in rows])
    keys = sorted(per_key)
    print(f"{'phase':<24} " + " ".join(f"{s.split('/')[-1].removesuffix('.yml')[:8] + ' ' + f[:8]:>18}" for s, f in keys))
    for name in sorted(phases, key=lambda n: -max(phases[n].values())):
        if max(phases[name].values()) >= 0.005:
            print(f"{name:<24} " + " ".join(f"{phases[name].get(k, 0.0):>18.3f}" for k in keys))

    walls = [s.timing.get("wall", 0.0) for s in summaries if s.timing]
    reports = [s.timing.get("reports", 0.0) for s in summaries if s.timing]
    if walls:
        inside = median([sum(o.timing.wall for o in overheads(s.runs)) for s in summaries])
        print(f"\nsession (median): {median(walls):.1f} s in the plugin, {inside:.1f} s inside formats, "
              f"reports written in {median(reports):.2f} s")
    print("\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

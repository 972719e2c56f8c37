"""Sharding benchmark: the shipped suites as 1, 2 and 3 shards run one after another on this machine.

Prints, per N: the sum of the shard wall times against the single run (the cost of sharding: pytest
start-up, accelerator probe and builds repeated per shard; target <= 1.10) and the balance of the
shards (max / mean shard time; target <= 1.25 when balanced by a baseline, which the single run gives).

    python bench/shards.py [--max-shards 3] [-k EXPR]
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


def run(report_dir: Path, *args: str) -> float:
    started = time.monotonic()
    res = subprocess.run([sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider",
                          "--lkit-report-dir", str(report_dir), *args], cwd=ROOT, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if res.returncode not in (0, 5):
        sys.exit(f"pytest {' '.join(args)} failed ({res.returncode}):\n{res.stdout[-3000:]}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-shards", type=int, default=3)
    parser.add_argument("-k", dest="keyword", help="pytest -k expression")
    args = parser.parse_args()
    extra = ["-k", args.keyword] if args.keyword else []
    with tempfile.TemporaryDirectory(prefix="lkit-bench-shards.") as tmp:
        work = Path(tmp)
        single = run(work / "single", *extra)
        (run_dir,) = (work / "single").iterdir()
        baseline = work / "baseline.json"
        subprocess.run([sys.executable, "-m", "lkit.cli", "report", "baseline", str(run_dir), "-o", str(baseline)],
                       check=True, capture_output=True)
        print(f"single run: {single:.1f} s")
        print(f"{'N':>2} {'sum of shards':>14} {'vs single':>10} {'max/mean':>9}  shard times (s)")
        for n in range(2, args.max_shards + 1):
            times = [run(work / f"n{n}-{k}", "--lkit-shard", f"{k}/{n}", "--lkit-baseline", str(baseline),
                         "--lkit-thresholds", "size=100%,time=1000%", *extra) for k in range(1, n + 1)]
            total = sum(times)
            balance = max(times) / statistics.mean(times)
            print(f"{n:>2} {total:>13.1f}s {total / single:>9.2f}x {balance:>9.2f}  "
                  + " ".join(f"{t:.1f}" for t in times))
    return 0


if __name__ == "__main__":
    sys.exit(main())

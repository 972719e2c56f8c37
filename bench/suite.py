#!/usr/bin/env python3
"""Suite benchmark: wall time of `pytest suites/` serially and with `-n 2`, median of N runs.

    python bench/suite.py [--runs 3] [--case NAME]

Cases (builds are cached after the first run, as in a developer's loop or a CI with a cache):
  seed serial   : pytest suites/ -k linuxkit           (the seed spec: kernel+initrd, iso-bios, iso-efi)
  suite serial  : pytest suites/
  suite -n 2    : pytest suites/ -n 2 --dist loadgroup
Targets (issue 4, this 2-core machine): seed serial under 90 s; the whole suite faster with -n 2.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASE = [sys.executable, "-m", "pytest", "suites/", "-q", "-p", "no:cacheprovider", "--lkit-accel", "tcg"]
CASES = {
    "seed serial": BASE + ["-k", "linuxkit"],
    "suite serial": BASE,
    "suite -n 2": BASE + ["-n", "2", "--dist", "loadgroup"],
}


def timed(argv: list[str]) -> tuple[float, int]:
    start = time.monotonic()
    proc = subprocess.run(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    return time.monotonic() - start, proc.returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--case", choices=list(CASES), action="append")
    args = parser.parse_args()
    timed(BASE + ["--collect-only"])  # warm imports and the build cache's stamps
    results: dict[str, list[float]] = {}
    failures = 0
    for _ in range(args.runs):
        for name in args.case or list(CASES):
            seconds, rc = timed(CASES[name])
            results.setdefault(name, []).append(seconds)
            failures += rc != 0
    print(f"{'case':<14} {'median s':>9}   runs")
    for name, values in results.items():
        print(f"{name:<14} {statistics.median(values):>9.1f}   {' '.join(f'{v:.1f}' for v in values)}")
    if "suite serial" in results and "suite -n 2" in results:
        ratio = statistics.median(results["suite -n 2"]) / statistics.median(results["suite serial"])
        print(f"-n 2 / serial: {ratio:.2f}")
    if failures:
        print(f"note: {failures} run(s) had failing tests; times still count")
    return 0


if __name__ == "__main__":
    sys.exit(main())

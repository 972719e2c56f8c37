#!/usr/bin/env python3
"""Build benchmark: cold, warm and no-change builds of a spec, median of N, with peak memory.

    python bench/build.py [--spec suites/linuxkit.yml] [--format kernel+initrd] [--runs 5]

cold      : build cache and the store's derived caches (uncompressed layers) removed; blobs kept
warm      : derived caches kept, build cache and outputs removed
no-change : everything kept: the stamp says nothing changed

Each build runs `lkit build` in a child process; peak RSS is that child's (wait4 rusage).
Targets (issue 2, this 2-core machine): cold < 3 s, no-change < 0.3 s, peak < 300 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lkit.images.store import Store  # noqa: E402

DERIVED = ("lkit-uncompressed", "lkit-embedded")


def timed_build(spec: Path, fmt: str, outdir: Path, cache: Path) -> tuple[float, float, float]:
    """(wall seconds, seconds inside the build as lkit reports it, peak RSS in MB)."""
    env = {**os.environ, "LKIT_BUILD_CACHE": str(cache)}
    code = ("import sys, time; t=time.monotonic(); from lkit.cli import main; rc=main(sys.argv[1:]); "
            "print('inner', time.monotonic()-t); sys.exit(rc)")
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code, "build", "-f", fmt, "--dir", str(outdir), str(spec)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    out = proc.stdout.read().decode() if proc.stdout else ""
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"build failed:\n{out}\n{err}")
    inner = next((float(line.split()[1]) for line in out.splitlines() if line.startswith("inner ")), wall)
    return wall, inner, usage.ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "suites" / "linuxkit.yml")
    parser.add_argument("--format", default="kernel+initrd")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    store = Store.default()
    results: dict[str, list[tuple[float, float, float]]] = {"cold": [], "warm": [], "no-change": []}
    with tempfile.TemporaryDirectory(prefix="lkit-bench.") as tmp:
        out, cache = Path(tmp) / "out", Path(tmp) / "cache"
        for _ in range(args.runs):
            for name in DERIVED:
                shutil.rmtree(store.root / name, ignore_errors=True)
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            results["cold"].append(timed_build(args.spec, args.format, out, cache))
            shutil.rmtree(out, ignore_errors=True)
            shutil.rmtree(cache, ignore_errors=True)
            results["warm"].append(timed_build(args.spec, args.format, out, cache))
            results["no-change"].append(timed_build(args.spec, args.format, out, cache))
        size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"spec {args.spec.name}, format {args.format}, {args.runs} runs, outputs {size / 1e6:.1f} MB")
    print(f"{'build':<10} {'wall s (median)':>16} {'in-process s':>13} {'peak RSS MB':>12}   all wall s")
    for name, rows in results.items():
        wall = statistics.median(r[0] for r in rows)
        inner = statistics.median(r[1] for r in rows)
        rss = max(r[2] for r in rows)
        print(f"{name:<10} {wall:>16.3f} {inner:>13.3f} {rss:>12.0f}   {' '.join(f'{r[0]:.2f}' for r in rows)}")
    cold = statistics.median(r[1] for r in results["cold"])
    nochange = statistics.median(r[1] for r in results["no-change"])
    print(f"ratio cold/no-change (in process): {cold / max(nochange, 1e-6):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())

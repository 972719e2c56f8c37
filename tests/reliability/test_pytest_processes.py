"""Whole pytest processes under stress: a killed xdist worker takes its QEMU with it; two runs at once
share one image store, build dir and build cache without corrupting each other."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


def qemu_children_of(pids: set[int]) -> dict[int, int]:
    """qemu pid -> parent pid, for QEMUs whose parent is in `pids`."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            comm = stat[stat.index("(") + 1: stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if comm.startswith("qemu-system") and ppid in pids:
            found[int(entry.name)] = ppid
    return found


def children_of(pid: int) -> set[int]:
    out = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                    out.add(int(entry.name))
            except (OSError, ValueError):
                continue
    return out


def test_killed_xdist_worker_leaves_no_qemu(tmp_path: Path, case) -> None:
    case("host fault", "an xdist worker killed (SIGKILL) while its VM boots")
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "suites/", "-k", "minimal", "-n", "2", "--dist", "loadgroup",
         "-p", "no:cacheprovider", "--lkit-accel", "tcg", "--lkit-reruns", "0",
         "--lkit-report-dir", str(tmp_path / "reports"), "-x"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        victim = qemu = None
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and qemu is None:
            found = qemu_children_of(children_of(proc.pid))
            if found:
                qemu, victim = next(iter(found.items()))
            time.sleep(0.5)
        assert qemu is not None, "no worker ever started a QEMU"
        os.kill(victim, signal.SIGKILL)
        gone_by = time.monotonic() + 15
        while time.monotonic() < gone_by and Path(f"/proc/{qemu}").exists():
            time.sleep(0.2)
        assert not Path(f"/proc/{qemu}").exists() or "zombie" in Path(f"/proc/{qemu}/status").read_text().lower(), \
            "the killed worker's QEMU outlived it"
        out, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode != 0
    assert "crashed" in out.lower(), out[-2000:]
    assert not qemu_children_of({proc.pid} | children_of(proc.pid))


def test_two_pytest_runs_share_store_and_build_dir(tmp_path: Path, case) -> None:
    case("concurrency", "two pytest runs at once sharing the image store, build dir and build cache")
    argv = [sys.executable, "-m", "pytest", "suites/", "-k", "minimal", "-p", "no:cacheprovider", "--lkit-accel", "tcg",
            "--lkit-build-dir", str(tmp_path / "build")]
    procs = [subprocess.Popen([*argv, "--lkit-report-dir", str(tmp_path / f"reports{i}")], cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-2500:]
        assert "10 passed" in out
    # Both runs left one complete, valid set of outputs and their own reports.
    built = sorted(p.name for p in (tmp_path / "build" / "minimal").iterdir() if p.is_file())
    assert built == ["minimal-cmdline", "minimal-initrd.img", "minimal-kernel"]
    for i in range(2):
        assert len(list((tmp_path / f"reports{i}").glob("*/summary.json"))) == 1

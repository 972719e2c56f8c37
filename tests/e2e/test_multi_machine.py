"""Multi-machine suites for real: a server that never boots is named; Ctrl-C leaves nothing behind.

(The link cut and its restoration are the shipped suite's own test, run by `pytest suites/`:
suites/webnet/test_webnet.py::test_cut_link_makes_the_client_fail_and_restoring_it_makes_it_pass.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
WEBNET = ROOT / "suites" / "webnet"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every descendant of `pid`."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat[stat.rindex(")") + 2:].split()[1])
            except (OSError, ValueError):
                continue
    found: dict[int, str] = {}
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier and child not in found}
        for child in frontier:
            try:
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")).decode(errors="replace")
            except OSError:
                found[child] = ""
    return found


def _alive(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except OSError:
        return False


def _processes_mentioning(*texts: str) -> list[str]:
    """Command lines of live processes that mention any of `texts` (leaked ones are no longer children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if any(t in cmd for t in texts) and _alive(int(entry.name)):
                found.append(cmd)
    return found


def _lan_dirs() -> set[str]:
    return {p.name for p in Path("/tmp").glob("lkit-lan-*")}


def _suite_copy(tmp_path: Path) -> Path:
    suites = tmp_path / "suites"
    shutil.copytree(WEBNET, suites / "webnet", ignore=shutil.ignore_patterns("__pycache__"))
    return suites


def _pytest(tmp_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--lkit-accel", "tcg",
            "--lkit-formats", "kernel+initrd", "--lkit-reruns", "0", f"--lkit-report-dir={tmp_path / 'reports'}",
            f"--lkit-build-dir={tmp_path / 'build'}", f"--rootdir={tmp_path}", "-c", str(tmp_path / "pytest.ini"),
            *args]


def test_a_server_that_never_boots_is_named_and_the_client_runs_on(tmp_path: Path) -> None:
    suites = _suite_copy(tmp_path)
    spec = suites / "webnet" / "webnet.yml"
    # the kernel finds no init: it panics at once (fatal badness ends the wait early)
    spec.write_text(spec.read_text().replace('cmdline: "console=ttyS0"', 'cmdline: "console=ttyS0 rdinit=/no-such-init"'))
    (suites / "webnet" / "test_uses.py").write_text(
        "import pytest\npytestmark = pytest.mark.lkit_spec('webnet.yml')\n\n"
        "def test_uses_server(machines):\n    machines['server'].succeed('true')\n\n"
        "def test_uses_client_only(machines):\n    assert machines['client'].succeed('echo hi').strip() == 'hi'\n")
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    before = _lan_dirs()
    proc = subprocess.run(_pytest(tmp_path, "suites/", "-k", "boots or uses"), cwd=tmp_path, env=_env(),
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "2 failed, 2 passed" in out, out[-3000:]
    assert "FAILED suites/webnet/webnet.yml::server::kernel+initrd::boots" in out
    assert "FAILED suites/webnet/test_uses.py::test_uses_server[kernel+initrd]" in out
    assert "machine 'server' (webnet.yml, kernel+initrd) did not boot" in out, out[-3000:]
    assert "webnet.yml machine server [kernel+initrd] boots:" in out
    # the others' consoles are named with the failure, and kept
    assert "console of client:" in out and "webnet-kernel+initrd-client.log" in out
    assert not _processes_mentioning(str(tmp_path), *(_lan_dirs() - before)), "a QEMU or hub outlived the run"
    assert _lan_dirs() <= before, "the segment's socket folder was left behind"


def test_ctrl_c_with_the_machines_booting_leaves_no_qemu_hub_or_socket(tmp_path: Path) -> None:
    suites = _suite_copy(tmp_path)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    before = _lan_dirs()
    proc = subprocess.Popen(_pytest(tmp_path, str(suites)), cwd=tmp_path, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        seen: dict[int, str] = {}
        while time.monotonic() < deadline and proc.poll() is None:
            seen = _descendants(proc.pid)
            qemus = [p for p, cmd in seen.items() if "qemu-system" in cmd]
            hubs = [p for p, cmd in seen.items() if "lanhub.py" in cmd]
            if len(qemus) == 2 and hubs:
                break
            time.sleep(0.3)
        assert len([p for p, cmd in seen.items() if "qemu-system" in cmd]) == 2, "the two machines never started"
        new_dirs = _lan_dirs() - before
        assert new_dirs, "no segment folder while the machines run"
        time.sleep(2)                      # booting: QEMU and the hub up, the guests not ready yet
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, text[-2000:]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(_alive(p) for p in seen):
        time.sleep(0.2)
    left = {p: cmd for p, cmd in seen.items() if _alive(p)}
    assert not left, f"outlived the interrupted pytest: {left}"
    assert not (new_dirs & _lan_dirs()), "socket folders left behind"
    assert not _processes_mentioning(str(tmp_path), *new_dirs)
    assert not [p for p in Path("/tmp").glob("lkit-*") if p.is_socket()]

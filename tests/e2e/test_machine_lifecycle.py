"""End to end: no leaks on failure or Ctrl-C, graceful shutdown, start-up errors, panics reported early,
accel auto."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
import warnings
from pathlib import Path

import pytest

from lkit.errors import InfraError, MachineError
from lkit.machine import accel, vm as vm_mod
from lkit.machine.artifacts import boot_target
from lkit.machine.testguest import SampleGuest, sample_guest
from lkit.machine.vm import Machine


@pytest.fixture(scope="module")
def guest() -> SampleGuest:
    return sample_guest()


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_failure_inside_with_leaves_no_qemu_and_frees_the_port(guest: SampleGuest, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="test failed"):
        with Machine(boot_target("kernel+initrd", guest.files(tmp_path)), workdir=tmp_path / "vm", accel="tcg",
                     ports=[80]) as m:
            pid, port = m.pid, m.forward_port(80)
            assert pid is not None and not _gone(pid) and not _port_free(port)
            raise RuntimeError("test failed")
    assert _gone(pid) and _port_free(port)


def test_ctrl_c_during_a_wait_leaves_no_qemu(guest: SampleGuest, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # also: the first host port offered is taken, so QEMU's forwarding fails and start() retries
    blocker = socket.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    taken = blocker.getsockname()[1]
    offered: list[int] = []
    real_free_port = vm_mod.free_port

    def flaky_free_port() -> int:
        port = taken if not offered else real_free_port()
        offered.append(port)
        return port

    monkeypatch.setattr(vm_mod, "free_port", flaky_free_port)
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    try:
        with pytest.raises(KeyboardInterrupt):
            with Machine(boot_target("kernel+initrd", guest.files(tmp_path)), workdir=tmp_path / "vm",
                         accel="tcg", ports=[80]) as m:
                pid, port = m.pid, m.forward_port(80)
                timer.start()
                m.wait_for_console_text("this never appears", 300)
    finally:
        timer.cancel()
        blocker.close()
    assert offered[0] == taken and port != taken          # retried with a new port
    assert _gone(pid) and _port_free(port)


def test_graceful_shutdown_runs_the_guest_poweroff(guest: SampleGuest, tmp_path: Path) -> None:
    with Machine(boot_target("kernel+initrd", guest.files(tmp_path)), workdir=tmp_path / "vm", accel="tcg") as m:
        m.succeed("true")
        result = m.shutdown()
        assert result.method == "powerdown" and result.reason == "guest-shutdown" and result.returncode == 0
        names = [e.name for e in m.events]
        assert names.index("POWERDOWN") < names.index("SHUTDOWN")
        assert m.timeline.get("poweroff") is not None and not m.running


def test_kernel_panic_is_reported_early(guest: SampleGuest, tmp_path: Path) -> None:
    with Machine(boot_target("kernel+initrd", guest.files(tmp_path)), workdir=tmp_path / "vm", accel="tcg") as m:
        m.succeed("true")
        t = time.monotonic()
        with pytest.raises(MachineError, match="kernel-panic|QEMU exited"):
            m.run("echo c > /proc/sysrq-trigger; sleep 1000", timeout=300)
        assert time.monotonic() - t < 60             # not the 300 s timeout
        assert any(b.name == "kernel-panic" for b in m.badness)
        with pytest.raises(MachineError, match="kernel-panic"):
            m.wait_for_console_text("never printed", 300)


def test_startup_failures_are_infra_errors(guest: SampleGuest, tmp_path: Path) -> None:
    target = boot_target("kernel+initrd", guest.files(tmp_path))
    with pytest.raises(InfraError, match="QEMU not found"):
        with Machine(target, workdir=tmp_path / "a", accel="tcg", qemu="/nonexistent/qemu-system-x86_64"):
            pass
    with pytest.raises(InfraError, match="failed to start") as err:
        with Machine(target, workdir=tmp_path / "b", accel="tcg", memory_mb=-5):
            pass
    assert "-m -5" in str(err.value)          # the command line is part of the message


def test_accel_auto_lands_on_tcg_with_one_warning(guest: SampleGuest, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel, "_warned", False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))   # force a real probe
    target = boot_target("kernel+initrd", guest.files(tmp_path))
    t = time.monotonic()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with Machine(target, workdir=tmp_path / "vm", accel="auto") as m:
            assert m.accel == "tcg" and m.multiplier == accel.MULTIPLIERS["tcg"]
            assert m.succeed("echo up") == "up\n"
        with Machine(target, workdir=tmp_path / "vm2", accel="auto") as m2:
            assert m2.accel == "tcg" and m2.succeed("echo up") == "up\n"
    assert time.monotonic() - t < 300
    assert len([w for w in caught if issubclass(w.category, accel.AccelWarning)]) == 1
    assert (tmp_path / "cache" / "lkit" / "accel.json").is_file()


def _dead_or_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def test_a_killed_harness_leaves_no_orphan_qemu(guest: SampleGuest, tmp_path: Path) -> None:
    import subprocess
    import sys
    files = [str(p) for p in guest.files(tmp_path)]
    script = (
        "import sys, time\n"
        f"sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})\n"
        "from pathlib import Path\n"
        "from lkit.machine import Machine, boot_target\n"
        f"m = Machine(boot_target('kernel+initrd', {files!r}), workdir=Path({str(tmp_path / 'vm')!r}),"
        " accel='tcg', ports=[80])\n"
        "m.start()\n"
        "print(m.pid, m.forward_port(80), flush=True)\n"
        "time.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid, port = map(int, proc.stdout.readline().split())
        assert not _dead_or_zombie(pid)
    finally:
        proc.kill()          # SIGKILL: no finally, no __exit__ runs in the harness
        proc.wait(timeout=30)
    deadline = time.monotonic() + 15
    while not _dead_or_zombie(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _dead_or_zombie(pid)
    while not _port_free(port) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _port_free(port)

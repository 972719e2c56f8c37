"""Faults in the guest, on real QEMU (TCG), with images built by `lkit build` from tests/reliability/specs/.

Each case ends within its bound with the right error and a console excerpt: a kernel panic (sysrq through
the command channel; a command line that cannot find init), a hung onboot container, a failing onboot and
a service that crashes at start, a guest flooding its console, a guest rebooting in a loop. The last
case boots again in the same session and must work normally.
"""

from __future__ import annotations

import re
import resource
import time
from pathlib import Path

import pytest
from relkit import run_lkit

from lkit.errors import MachineError
from lkit.machine.artifacts import BootTarget, boot_target, expand_prefix
from lkit.machine.vm import Machine
from lkit.machine.facts import gather

pytestmark = pytest.mark.e2e

SPECS = Path(__file__).resolve().parent / "specs"
BOOT_BOUND = 150.0     # seconds from QEMU start to the command channel on a loaded 2-core host (TCG)


@pytest.fixture(scope="module")
def targets(fixture_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> dict[str, BootTarget]:
    """Every spec in specs/ built once with the real `lkit build`."""
    out = tmp_path_factory.mktemp("guest-faults")
    found = {}
    for spec in sorted(SPECS.glob("*.yml")):
        res = run_lkit(["build", "--offline", "--dir", out, spec], env=fixture_env)
        assert res.rc == 0, f"{spec.name}: {res.stderr}"
        found[spec.stem] = boot_target("kernel+initrd", expand_prefix(out / spec.stem))
    return found


def _machine(target: BootTarget, workdir: Path, **kw) -> Machine:
    kw.setdefault("exit_shutdown_timeout", 5)
    return Machine(target, workdir=workdir, accel="tcg", timeout_multiplier=1.0, memory_mb=512, **kw)


def _boot_to_channel(m: Machine) -> float:
    t = time.monotonic()
    assert m.succeed("echo up", timeout=30).strip() == "up"
    return time.monotonic() - t


def test_panic_via_sysrq(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("guest fault", "kernel panic (echo c > /proc/sysrq-trigger through the channel)")
    with _machine(targets["base"], tmp_path / "vm") as m:
        m.channel(BOOT_BOUND)
        t = time.monotonic()
        with pytest.raises(MachineError) as info:
            m.run("echo 1 > /proc/sys/kernel/sysrq; echo c > /proc/sysrq-trigger; sleep 100", timeout=120)
        elapsed = time.monotonic() - t
        pid = m.pid
    text = str(info.value)
    assert elapsed < 30, f"the panic was noticed only after {elapsed:.1f}s"
    assert "kernel-panic" in text and "sysrq triggered crash" in text, text
    assert any(b.name == "kernel-panic" for b in m.badness)
    assert "Kernel panic - not syncing" in m.console_text()
    assert pid is not None and not m.running


def test_panic_from_cmdline(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("guest fault", "kernel panic at boot (cmdline: no init, no root)")
    base = targets["base"]
    assert base.kernel is not None and base.initrd is not None
    target = boot_target("kernel+initrd", [base.kernel, base.initrd],
                         cmdline="console=ttyS0 rdinit=/no/such/init root=/dev/nonexistent")
    t = time.monotonic()
    with _machine(target, tmp_path / "vm") as m:
        with pytest.raises(MachineError) as info:
            m.wait_for_console_text(r"lkit: shell ready", BOOT_BOUND)
    elapsed = time.monotonic() - t
    text = str(info.value)
    assert "kernel-panic" in text and "VFS: Unable to mount root fs" in text, text
    assert elapsed < BOOT_BOUND * 0.6, f"the boot panic was noticed only after {elapsed:.1f}s"


def test_hung_onboot(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("guest fault", "hung init: an onboot container that never exits")
    bound = 25.0
    with _machine(targets["hung_onboot"], tmp_path / "vm") as m:
        m.wait_for_console_text(r"lkit: init start", BOOT_BOUND)
        t = time.monotonic()
        with pytest.raises(MachineError) as info:
            m.wait_for_console_text(r"lkit: services started", bound)
        elapsed = time.monotonic() - t
        ps = m.succeed("ps -o pid,args", timeout=60)  # the agent runs before onboot: we can look inside
        shut = m.shutdown(timeout=20)
    text = str(info.value)
    assert bound <= elapsed < bound + 10, f"waited {elapsed:.1f}s for a {bound}s bound"
    assert "timed out" in text and "services started" in text, text
    assert "lkit: onboot sleeper exit" not in m.console_text()
    assert "sleep 100000" in ps, ps
    assert shut.seconds < 60 and not m.running


def test_failing_onboot_and_crashing_service(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("guest fault", "onboot container exiting 3")
    case("guest fault", "service crashing at start (exit 7)")
    with _machine(targets["crash_service"], tmp_path / "vm") as m:
        m.wait_for_console_text(r"lkit: services started", BOOT_BOUND)
        onboot = re.search(r"lkit: onboot failer exit (\d+)", m.console_text())
        log = m.succeed("cat /var/log/crasher.log /var/log/onboot.failer.log", timeout=60)
        containers = gather(m).containers
    assert onboot and onboot.group(1) == "3", m.console_text()[-2000:]
    assert "failing on purpose" in m.console_text(), "the onboot output reaches the console"
    assert "crashing on purpose" in log and "failing on purpose" in log
    assert "crasher" in containers and containers["crasher"].status != "running", containers


def test_console_flood(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("guest fault", "guest flooding its console for 15 s")
    flood_seconds = 15
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with _machine(targets["base"], tmp_path / "vm") as m:
        m.channel(BOOT_BOUND)
        size0 = len(m.console_bytes())
        m.succeed("setsid yes FLOOD-FLOOD-FLOOD-FLOOD-FLOOD-FLOOD-FLOOD-FLOOD >/dev/ttyS0 </dev/null 2>&1 &",
                  timeout=30)
        time.sleep(flood_seconds)
        t = time.monotonic()
        answer = m.succeed("echo still-here", timeout=60)
        answer_seconds = time.monotonic() - t
        flooded = len(m.console_bytes()) - size0
        m.succeed("pkill -f 'FLOOD-FLOOD' || true", timeout=60)
        t = time.monotonic()
        shut = m.shutdown(timeout=30)
        shutdown_seconds = time.monotonic() - t
    rss_growth_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    print(f"\nconsole flood: {flooded / 1e6:.1f} MB in ~{flood_seconds}s, command answered in "
          f"{answer_seconds:.1f}s, shutdown {shutdown_seconds:.1f}s ({shut.method}), host RSS +{rss_growth_mb:.0f} MB")
    assert answer.strip() == "still-here"
    assert flooded > 100_000, f"the flood did not reach the console ({flooded} bytes)"
    assert answer_seconds < 30, f"the channel took {answer_seconds:.1f}s to answer during the flood"
    assert shutdown_seconds < 60 and not m.running
    assert (tmp_path / "vm" / "console.log").stat().st_size > 100_000


def test_reboot_loop(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("guest fault", "guest rebooting in a loop (onboot runs reboot -f)")
    bound = 60.0
    t = time.monotonic()
    with _machine(targets["reboot_loop"], tmp_path / "vm") as m:
        with pytest.raises(MachineError) as info:
            m.wait_for_console_text(r"lkit: services started", bound)
        resets = [e for e in m.events if e.name == "RESET"]
        banners = m.console_text().count("Welcome to LinuxKit")
    elapsed = time.monotonic() - t
    assert elapsed < bound + 30, f"took {elapsed:.1f}s"
    # Stopped by the reset count (Machine.MAX_GUEST_RESETS), not by the wait's timeout.
    assert "reset itself" in str(info.value) and "reboot loop" in str(info.value), str(info.value)
    assert banners >= 3 and len(resets) >= 3, f"{len(resets)} resets, {banners} banners"
    assert not m.running


def test_two_vms_at_once(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    case("concurrency", "two VMs booting at once: distinct ports and sockets")
    with _machine(targets["base"], tmp_path / "a", ports=(8080,)) as a, \
            _machine(targets["base"], tmp_path / "b", ports=(8080,)) as b:
        sockets = [set(re.findall(r"(?:unix:|path=)([^,]+)", " ".join(m.argv))) for m in (a, b)]
        ha, hb = a.forwards[8080], b.forwards[8080]
        a.channel(BOOT_BOUND)
        b.channel(BOOT_BOUND)
        ra = a.succeed("hostname; cat /proc/uptime", timeout=60)
        rb = b.succeed("hostname; cat /proc/uptime", timeout=60)
        pids = (a.pid, b.pid)
    assert ha != hb, "both VMs got the same host port"
    assert len(sockets[0]) == 3 and not sockets[0] & sockets[1], sockets
    assert ra and rb and pids[0] != pids[1]
    assert "lkit: init start" in (tmp_path / "a" / "console.log").read_text()
    assert "lkit: init start" in (tmp_path / "b" / "console.log").read_text()
    assert not a.running and not b.running


def test_next_boot_still_works(targets: dict[str, BootTarget], tmp_path: Path, case) -> None:
    """After every fault above, a normal boot in the same session works end to end."""
    case("guest fault", "a normal boot after the faults, same session")
    t = time.monotonic()
    with _machine(targets["base"], tmp_path / "vm") as m:
        m.wait_for_console_text(r"lkit: shell ready", BOOT_BOUND)
        assert m.succeed("cat /proc/cmdline", timeout=60).strip() == "console=ttyS0"
        shut = m.shutdown(timeout=60)
    assert shut.method == "powerdown", shut
    assert "lkit: poweroff" in m.console_text()
    assert time.monotonic() - t < BOOT_BOUND + 60

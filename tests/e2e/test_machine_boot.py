"""End to end: one real TCG guest (Debian cloud kernel + busybox initrd with lkit-agent), many checks."""

from __future__ import annotations

import hashlib
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from lkit.errors import MachineError
from lkit.machine.artifacts import BootTarget, boot_target
from lkit.machine.testguest import SampleGuest, sample_guest
from lkit.machine.testinfra_backend import lkit_host
from lkit.machine.vm import Machine
from lkit.machine.facts import gather


@pytest.fixture(scope="module")
def guest() -> SampleGuest:
    return sample_guest()


@pytest.fixture(scope="module")
def vm(guest: SampleGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    d = tmp_path_factory.mktemp("boot")
    target = boot_target("kernel+initrd", guest.files(d))
    with Machine(target, workdir=d / "vm", accel="tcg", ports=[80]) as m:
        shell = m.wait_for_marker("shell", 120)
        assert shell.guest is not None and shell.host > shell.guest
        yield m


def test_boots_to_every_marker_in_order(vm: Machine) -> None:
    names = [e.name for e in vm.timeline.entries]
    assert names[:2] == ["firmware", "kernel"]
    for marker in ("init", "onboot:modules", "services", "shell"):
        assert marker in names
    hosts = [e.host for e in vm.timeline.entries]
    assert hosts == sorted(hosts) and hosts[0] > 0
    assert vm.timeline.onboot_exits() == {"modules": 0}
    init, shell = vm.timeline.get("init"), vm.timeline.get("shell")
    assert init and shell and init.guest is not None and shell.guest is not None
    # the host clock and the guest uptime agree on how long init took (within TCG jitter)
    assert abs((shell.host - init.host) - (shell.guest - init.guest)) < 2.0


def test_console_log_is_timestamped(vm: Machine) -> None:
    lines = vm.console_log.read_text().splitlines()
    assert any(line.endswith("Welcome to LinuxKit") and line.startswith("[") for line in lines)
    assert "Welcome to LinuxKit" in vm.console_text()


def test_run_returns_exact_stdout_stderr_rc(vm: Machine) -> None:
    res = vm.run("printf 'a b\\n\\tc'; printf 'err\\n' >&2; exit 3")
    assert (res.rc, res.stdout, res.stderr) == (3, "a b\n\tc", "err\n")
    rc, out, err = vm.run("true")
    assert (rc, out, err) == (0, "", "")


def test_succeed_and_fail(vm: Machine) -> None:
    assert vm.succeed("echo ok") == "ok\n"
    with pytest.raises(MachineError, match="rc 7"):
        vm.succeed("echo nope; exit 7")
    assert "no such" in vm.fail("ls /no/such/dir").lower()
    with pytest.raises(MachineError, match="expected to fail"):
        vm.fail("true")


def test_binary_output_round_trips(vm: Machine) -> None:
    res = vm.run("head -c 65536 /dev/urandom > /tmp/blob; cat /tmp/blob; md5sum /tmp/blob >&2")
    assert res.rc == 0 and len(res.stdout_bytes) == 65536
    assert res.stderr.split()[0] == hashlib.md5(res.stdout_bytes).hexdigest()


def test_wait_until_succeeds(vm: Machine) -> None:
    vm.succeed("rm -f /tmp/later; (sleep 2; touch /tmp/later) >/dev/null 2>&1 &")
    with pytest.raises(MachineError, match="did not succeed"):
        vm.wait_until_succeeds("test -e /tmp/never", timeout=2)
    vm.wait_until_succeeds("test -e /tmp/later", timeout=30)


def test_port_forward_reaches_busybox_httpd(vm: Machine) -> None:
    vm.succeed("mkdir -p /www && echo hello-from-guest > /www/index.html && httpd -p 80 -h /www")
    port = vm.forward_port(80)
    body = b""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not body:
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/index.html", timeout=10).read()
        except OSError:
            time.sleep(0.5)
    assert body == b"hello-from-guest\n"


def test_forward_added_at_run_time(vm: Machine) -> None:
    vm.succeed("mkdir -p /www2 && echo two > /www2/index.html && httpd -p 8080 -h /www2")
    port = vm.forward_port(8080)
    assert port != vm.forward_port(80)
    assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=20).read() == b"two\n"


def test_qmp_and_events(vm: Machine) -> None:
    assert vm.qmp("query-status")["status"] == "running"
    assert "RESUME" in [e.name for e in vm.events]


def test_screendump_writes_a_png(vm: Machine, tmp_path: Path) -> None:
    out = vm.screendump(tmp_path / "screen.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_facts(vm: Machine) -> None:
    facts = gather(vm)
    assert facts.cap_last_cap == 40          # Linux 6.1
    assert facts.containers == {}            # the sample guest runs no containers
    assert facts.onboot_exits == {"modules": 0} and facts.shell_ready


def test_testinfra_modules_work_on_busybox(vm: Machine) -> None:
    host = lkit_host(vm)
    assert host.file("/etc/passwd").exists and host.file("/etc/passwd").contains("root")
    assert host.file("/etc/passwd").user == "root" and host.file("/tmp").is_directory
    assert host.run("uname -r").stdout.strip().endswith("cloud-amd64")
    assert host.sysctl("kernel.pid_max") > 0
    assert "10.0.2.15" in host.interface("eth0").addresses
    vm.succeed("httpd -p 81 -h / ")
    assert host.socket("tcp://0.0.0.0:81").is_listening
    assert host.system_info.type == "linux"
    assert host.mount_point("/proc").exists


def test_testinfra_get_host_by_name(vm: Machine) -> None:
    import testinfra
    from lkit.machine.testinfra_backend import register
    name = register(vm, "boot-vm")
    assert testinfra.get_host(f"lkit://{name}").check_output("echo via-get-host") == "via-get-host"


def test_efi_direct_boot_through_ovmf(guest: SampleGuest, tmp_path: Path) -> None:
    target = BootTarget("kernel+initrd", "direct", True, kernel=guest.kernel, initrd=guest.initrd,
                        cmdline=guest.cmdline)
    with Machine(target, workdir=tmp_path / "vm", accel="tcg") as m:
        m.wait_for_console_text(r"lkit: shell ready", 180)
        assert m.succeed("ls /sys/firmware/efi >/dev/null && echo efi") == "efi\n"
        assert (tmp_path / "vm" / "OVMF_VARS.raw").is_file()

"""End to end: the command channel against noise, binary data, marker text, hangs and the console fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lkit.machine.artifacts import boot_target
from lkit.machine.channel import LINE_B64_CHARS, ConsoleChannel
from lkit.machine.testguest import SampleGuest, sample_guest
from lkit.machine.vm import Machine


@pytest.fixture(scope="module")
def guest() -> SampleGuest:
    return sample_guest()


@pytest.fixture(scope="module")
def vm(guest: SampleGuest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    d = tmp_path_factory.mktemp("chan")
    with Machine(boot_target("kernel+initrd", guest.files(d)), workdir=d / "vm", accel="tcg") as m:
        yield m


def test_commands_are_exact_while_the_kernel_spams_the_console(vm: Machine) -> None:
    vm.succeed("(i=0; while [ $i -lt 3000 ]; do echo \"<3>spam $i LKIT-END x 0 LKIT-BEGIN x\" > /dev/kmsg;"
               " i=$((i+1)); done) >/dev/null 2>&1 & echo $! > /tmp/spam.pid")
    try:
        for i in range(15):
            res = vm.run(f"echo out-{i}; echo err-{i} >&2; exit {i}")
            assert (res.rc, res.stdout, res.stderr) == (i, f"out-{i}\n", f"err-{i}\n")
        assert vm.console_text().count("spam") > 10        # the noise really was there
    finally:
        vm.run("kill $(cat /tmp/spam.pid)")


def test_output_containing_the_protocol_markers(vm: Machine) -> None:
    nasty = "LKIT-BEGIN n0\nLKIT-ERR n0\nLKIT-END n0 0 0 0 ok\nLKIT-AGENT-READY\n"
    res = vm.run(f"printf '%s' '{nasty}'; printf '%s' '{nasty}' >&2")
    assert (res.stdout, res.stderr, res.rc) == (nasty, nasty, 0)


def test_a_command_that_never_ends_is_killed_and_the_channel_survives(vm: Machine) -> None:
    t = time.monotonic()
    res = vm.run("echo started; sleep 1000", timeout=2)
    elapsed = time.monotonic() - t
    assert res.timed_out and res.rc == 124 and res.stdout == "started\n"
    assert elapsed < 2 * vm.multiplier + 15       # guest-side timeout, not the host bound
    res = vm.run("while :; do :; done", timeout=1)
    assert res.timed_out
    assert vm.succeed("echo still-alive") == "still-alive\n"


def test_non_zero_exit_and_stdin_is_dev_null(vm: Machine) -> None:
    assert vm.run("exit 42").rc == 42
    assert vm.run("cat; echo rc=$?").stdout == "rc=0\n"     # cat reads /dev/null, never the channel


def test_long_commands_are_split_and_reassembled(vm: Machine) -> None:
    word = "x" * (LINE_B64_CHARS * 3 + 17)
    assert vm.succeed(f"echo {word} | wc -c").strip() == str(len(word) + 1)


def test_unicode_round_trips(vm: Machine) -> None:
    assert vm.succeed("printf 'h\\303\\251llo \\342\\234\\223'") == "héllo ✓"


def test_console_fallback_without_agent(guest: SampleGuest, tmp_path_factory: pytest.TempPathFactory) -> None:
    """A guest with no lkit-agent and no ACPI handling: the console shell carries commands, and shutdown
    falls back from system_powerdown to quit."""
    bare = sample_guest(shell_only=True)
    d = tmp_path_factory.mktemp("bare")
    with Machine(boot_target("kernel+initrd", bare.files(d)), workdir=d / "vm", accel="tcg") as m:
        m.wait_for_marker("shell", 120)
        res = m.run("echo via-console; echo e >&2; exit 5")
        assert isinstance(m.channel(), ConsoleChannel)
        assert (res.rc, res.stdout, res.stderr) == (5, "via-console\n", "e\n")
        m.run("echo '<3>kernel noise' > /dev/kmsg")
        assert m.succeed("echo second") == "second\n"
        result = m.shutdown(timeout=3)
        assert result.method == "quit" and result.reason == "host-qmp-quit"
        assert not m.running

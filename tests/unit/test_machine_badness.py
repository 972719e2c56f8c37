"""Kernel badness patterns (kola's list) and the ignore list."""

from __future__ import annotations

import pytest

from lkit.machine.badness import BadnessScanner


@pytest.mark.parametrize(("line", "name", "fatal"), [
    ("[   12.3] Kernel panic - not syncing: sysrq triggered crash", "kernel-panic", True),
    ("[    5.1] Oops: 0002 [#1] PREEMPT SMP NOPTI", "oops", False),
    ("[    5.1] WARNING: CPU: 0 PID: 1 at kernel/foo.c:12 bar+0x1/0x2", "warning", False),
    ("[    5.1] BUG: unable to handle page fault for address: 0000", "bug", False),
    ("[    5.1] sh invoked oom-killer: gfp_mask=0x0", "oom", False),
    ("[    5.1] app[123]: segfault at 0 ip 000 sp 000 error 4", "segfault", False),
    ("[    5.1] Call Trace:", "call-trace", False),
    ("Segmentation fault (core dumped)", "core-dump", False),
    ("panic: runtime error: invalid memory address", "go-panic", False),
    # the TCG SMP livelock seen here: a short lockup may be host load, a minute is a hung guest
    ("[   37.5] watchdog: BUG: soft lockup - CPU#0 stuck for 26s! [runc:246]", "bug", False),
    ("[   65.4] watchdog: BUG: soft lockup - CPU#0 stuck for 60s! [runc:246]", "cpu-stuck", True),
    ("[  250.1] watchdog: BUG: soft lockup - CPU#1 stuck for 223s! [exe:245]", "cpu-stuck", True),
])
def test_each_pattern_is_recognised(line: str, name: str, fatal: bool) -> None:
    found = BadnessScanner().scan(line, 1.5)
    assert found is not None and found.name == name and found.fatal is fatal and found.host_time == 1.5


@pytest.mark.parametrize("line", [
    "lkit: onboot x exit 0", "Welcome to LinuxKit", "WARNING: something harmless", "debug: no BUGs here",
    "[    0.1] panic=-1 in the command line: Kernel command line: console=ttyS0 panic=-1",
])
def test_clean_lines_pass(line: str) -> None:
    assert BadnessScanner().scan(line) is None


def test_ignore_by_name_and_by_regex() -> None:
    s = BadnessScanner(ignore=["call-trace", r"segfault at .* in libfoo"])
    assert s.scan("Call Trace:") is None
    assert s.scan("x[1]: segfault at 0 ip 0 sp 0 error 4 in libfoo.so") is None
    assert s.scan("x[1]: segfault at 0 ip 0 sp 0 error 4 in libbar.so") is not None


def test_scan_text() -> None:
    text = "ok\nKernel panic - not syncing: x\nfine\n"
    assert [b.name for b in BadnessScanner().scan_text(text)] == ["kernel-panic"]

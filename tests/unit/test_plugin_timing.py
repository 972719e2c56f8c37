"""Overhead accounting: a group's phases partition its wall time (to 1%), with fakes for the VM."""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lkit.machine.timeline import Timeline
from lkit.pytest_plugin.state import Group
from lkit.pytest_plugin.timing import OTHER, PhaseClock
from lkit.report.human import html
from lkit.report.model import CheckResult, FormatRun, RunSummary, Timing
from lkit.report.overhead import COLUMNS, Overhead, markdown_table, ordered_phases, terminal_lines

pytest_plugins = ["pytester"]
SUITES = Path(__file__).resolve().parents[2] / "suites"


class FakeClock:
    """A monotonic clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def adds_up(clock: PhaseClock) -> None:
    assert sum(clock.phases.values()) == pytest.approx(clock.wall, rel=0.01)


def test_nested_phases_keep_their_own_time_and_other_takes_the_rest() -> None:
    t = FakeClock()
    clock = PhaseClock(clock=t)
    clock.open()
    t.advance(1)                          # pytest between items: other
    with clock.span("check.boots"):
        t.advance(0.5)                    # the check's own work
        with clock.span("ready"):
            with clock.span("qemu"):
                t.advance(0.2)
            t.advance(10)
            clock.record("boot", t.now - 10, t.now - 0.3)   # cont -> services, stamped by the guest
        t.advance(0.25)
    clock.close()
    assert clock.phases == pytest.approx({OTHER: 1.0, "check.boots": 0.75, "ready": 0.3, "qemu": 0.2, "boot": 9.7})
    assert clock.wall == pytest.approx(11.95)
    adds_up(clock)


def test_outside_the_window_nothing_is_counted_and_windows_add() -> None:
    t = FakeClock()
    clock = PhaseClock(clock=t)
    with clock.span("build"):             # before the group's first item: not its time
        t.advance(5)
    clock.record("boot", t.now - 1, t.now)
    assert clock.phases == {} and not clock.running
    clock.open()
    t.advance(2)
    clock.close()
    t.advance(100)                        # another group ran
    clock.open()
    with clock.span("tests"):
        t.advance(3)
    clock.close()
    assert clock.wall == pytest.approx(5) and clock.phases == pytest.approx({OTHER: 2, "tests": 3})


def test_a_record_never_overlaps_an_earlier_child_nor_the_future() -> None:
    t = FakeClock()
    clock = PhaseClock(clock=t)
    clock.open()
    with clock.span("ready"):
        with clock.span("qemu"):
            t.advance(1)
        clock.record("boot", t.now - 5, t.now + 5)    # clamped to [end of qemu, now] = nothing yet
        t.advance(2)
        clock.record("boot", t.now - 5, t.now + 5)    # clamped to the 2 s since qemu
    clock.close()
    assert clock.phases == pytest.approx({"qemu": 1, "boot": 2, "ready": 0, OTHER: 0})
    adds_up(clock)


def test_closing_mid_span_ends_every_phase() -> None:
    t = FakeClock()
    clock = PhaseClock(clock=t)
    clock.open()
    with clock.span("check.ports"):
        t.advance(1)
        clock.close()                     # an interrupted session
        t.advance(7)
    assert clock.wall == pytest.approx(1) and clock.phases["check.ports"] == pytest.approx(1)
    adds_up(clock)


@st.composite
def programs(draw):
    """Random nested spans, records and waits: any of them must still add up."""
    return draw(st.lists(st.tuples(st.sampled_from(["span", "record", "wait", "end"]),
                                   st.floats(0, 5), st.sampled_from(["build", "boot", "check.x", "tests"])),
                         max_size=40))


@settings(max_examples=200, deadline=None)
@given(programs())
def test_any_sequence_of_phases_adds_up_to_the_wall_time(program) -> None:
    t = FakeClock()
    clock = PhaseClock(clock=t)
    clock.open()
    spans = []
    for op, seconds, name in program:
        if op == "span":
            spans.append(clock.span(name))
            spans[-1].__enter__()
        elif op == "end" and spans:
            spans.pop().__exit__(None, None, None)
        elif op == "record":
            clock.record(name, t.now - seconds, t.now + seconds)
        t.advance(seconds)
    while spans:
        spans.pop().__exit__(None, None, None)
    clock.close()
    assert all(v >= 0 for v in clock.phases.values())
    assert sum(clock.phases.values()) == pytest.approx(clock.wall, rel=0.01, abs=1e-9)


# ---- a Group with a fake VM: QEMU start, guest boot and power-off carved where they happen -----------
@dataclass
class FakeVM:
    t: FakeClock
    qemu: float = 0.3
    boot: float = 20.0          # cont -> "services started"
    shell: float = 0.1          # services -> "shell ready"
    guest_off: float = 3.0      # system_powerdown -> "lkit: poweroff"
    qemu_exit: float = 0.2
    cont_time: float | None = None
    timeline: Timeline = field(default_factory=Timeline)

    def __enter__(self) -> FakeVM:
        self.t.advance(self.qemu)
        self.cont_time = self.t.now
        return self

    stopped: bool = False

    def stop(self, *, graceful: bool = True) -> None:
        if not self.stopped:
            self.stopped = True
            self.t.advance(0.05)     # quit

    def __exit__(self, *exc) -> None:
        self.stop(graceful=False)

    def wait_for_console_text(self, regex: str, timeout: float) -> None:
        pass

    def wait_for_marker(self, name: str, timeout: float) -> None:
        self.t.advance(self.boot)
        self.timeline.feed("lkit: services started", self.t.now - self.cont_time)
        self.t.advance(self.shell)
        self.timeline.feed("lkit: shell ready", self.t.now - self.cont_time)

    def shutdown(self) -> str:
        self.t.advance(self.guest_off)
        self.timeline.feed("lkit: poweroff", self.t.now - self.cont_time)
        self.t.advance(self.qemu_exit)
        return "powerdown"


def fake_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, t: FakeClock) -> tuple[Group, FakeVM]:
    vm = FakeVM(t)
    image = SimpleNamespace(artifacts={"kernel+initrd": []})
    builds: list[object] = []

    def built(suite: object, **_kw: object) -> object:   # the first build takes 4 s, later calls hit the cache
        if not builds:
            t.advance(4)
            builds.append(image)
        return image

    run = SimpleNamespace(run_dir=tmp_path, settings=SimpleNamespace(reruns=0, accel="tcg", timeout_multiplier=None,
                                                                     boots=1, cpus=None),
                          release_others=lambda g: t.advance(0.5), vm_dir=lambda key: tmp_path / "vm",
                          built=built)
    exp = SimpleNamespace(memory=1024, tpm=False, ports=[], markers=["Welcome to LinuxKit"], boot_timeout=60, badness_ignore=[],
                          cpus=None)
    suite = SimpleNamespace(id="seed.yml", spec=SimpleNamespace(name="seed"), expectations=exp)
    group = Group(suite=suite, format="kernel+initrd", run=run, clock=PhaseClock(clock=t))  # type: ignore[arg-type]
    monkeypatch.setattr("lkit.machine.artifacts.boot_target", lambda fmt, paths: "target")
    monkeypatch.setattr("lkit.machine.vm.Machine", lambda *a, **k: vm)
    return group, vm


def test_a_group_splits_into_build_qemu_boot_checks_tests_poweroff(tmp_path, monkeypatch) -> None:
    t = FakeClock()
    group, vm = fake_group(tmp_path, monkeypatch, t)
    clock = group.clock
    clock.open()
    with clock.span("check.build"):
        group.built()
        t.advance(0.1)                    # comparing digests
    with clock.span("check.boots"):
        group.machine()
        t.advance(0.02)
    with clock.span("check.services_running"):
        t.advance(0.6)
    with clock.span("tests"):
        t.advance(2.5)
    t.advance(0.4)                        # pytest between items
    with clock.span("check.shutdown"):
        group.shutdown()
    clock.close()
    p = clock.phases
    assert p["build"] == pytest.approx(4) and p["check.build"] == pytest.approx(0.1)
    assert p["qemu"] == pytest.approx(vm.qemu) and p["boot"] == pytest.approx(vm.boot)
    assert p["ready"] == pytest.approx(vm.shell)
    assert p["poweroff.guest"] == pytest.approx(vm.guest_off)
    assert p["poweroff"] == pytest.approx(0.5 + vm.qemu_exit + 0.05)   # release of others, QEMU's exit, quit
    assert p["check.boots"] == pytest.approx(0.02) and p["tests"] == pytest.approx(2.5)
    assert p[OTHER] == pytest.approx(0.4)
    adds_up(clock)
    overhead = Overhead("suites/seed.yml", "kernel+initrd", Timing(wall=clock.wall, phases=clock.snapshot()))
    assert overhead.overhead == pytest.approx(clock.wall - vm.boot - 2.5, abs=0.01)
    assert overhead.beyond_build == pytest.approx(overhead.overhead - 4, abs=0.01)
    assert overhead.host_side == pytest.approx(overhead.beyond_build - vm.guest_off, abs=0.01)
    # the table's columns partition the wall time too
    assert sum(overhead.part(c) for c in COLUMNS if c != "wall") == pytest.approx(overhead.part("wall"), rel=0.01)


def test_a_boot_that_never_says_services_started_is_guest_time_until_it_fails(tmp_path, monkeypatch) -> None:
    from lkit.errors import MachineError

    t = FakeClock()
    group, vm = fake_group(tmp_path, monkeypatch, t)

    def hang(name: str, timeout: float) -> None:
        t.advance(60)
        raise MachineError("no shell within 60 s")

    vm.wait_for_marker = hang   # type: ignore[method-assign]
    vm.screendump = lambda path: None   # type: ignore[attr-defined]
    group.clock.open()
    with group.clock.span("check.boots"), pytest.raises(MachineError):
        group.machine()
    group.clock.close()
    assert group.clock.phases["boot"] == pytest.approx(60) and group.clock.phases["qemu"] == pytest.approx(vm.qemu)
    adds_up(group.clock)


def test_tables_name_each_format_and_keep_checks_in_run_order() -> None:
    timing = Timing(wall=30.0, phases={"boot": 20.0, "build": 5.0, "check.ports": 0.5, "check.boots": 0.1,
                                       "other": 4.4}, worker="gw0")
    run = FormatRun(spec="suites/linuxkit.yml", format="iso-efi", timing=timing)
    run.checks = [CheckResult("boots", "passed"), CheckResult("ports", "passed")]
    assert [k for k, _ in ordered_phases(timing, ["boots", "ports"])] == ["build", "boot", "check.boots",
                                                                         "check.ports", "other"]
    summary = RunSummary("r", "s", "f", [run], timing={"wall": 31.0, "reports": 0.05})
    lines = terminal_lines(summary)
    assert len(lines) == 3 and "suites/linuxkit.yml iso-efi" in lines[1] and "33%" in lines[1]
    assert "gw0 30.0 s" in lines[2] and "reports written in 0.05 s" in lines[2]
    assert any("| suites/linuxkit.yml | iso-efi |" in line for line in markdown_table(summary))
    page = html(summary)
    assert "<h2>Time per format (s)</h2>" in page and '<td title="guest boot' in page and ">check.ports<" in page
    assert terminal_lines(RunSummary("r", "s", "f", [FormatRun("a.yml", "tar")])) == []   # schema 1: no table


# ---- the plugin's hooks over a real pytest session (fake build and checks, no VM) ----------------
def test_a_pytest_session_writes_phases_that_add_up(pytester: pytest.Pytester, monkeypatch) -> None:
    from lkit.pytest_plugin import checks
    from lkit.pytest_plugin.state import RunState

    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    for name in ("minimal.yml", "minimal.test.yml"):
        shutil.copy(SUITES / name, suites / name)
    (suites / "test_minimal.py").write_text(
        "import time\n\ndef test_body(lkit_group):\n    time.sleep(0.05)\n")
    built = SimpleNamespace(artifacts={"kernel+initrd": []}, total_size=lambda fmt: 0)
    monkeypatch.setattr(RunState, "built", lambda self, suite, **_kw: (time.sleep(0.03), built)[1])
    monkeypatch.setattr(RunState, "rebuilt", lambda self, suite, **_kw: (time.sleep(0.02), built)[1])
    for name in checks.CHECKS:
        monkeypatch.setitem(checks.CHECKS, name, lambda group: time.sleep(0.01))
    monkeypatch.setitem(checks.CHECKS, "build", lambda group: (group.built(), group.rebuilt()))
    result = pytester.runpytest_inprocess("suites/", "-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=11)
    assert any(line.startswith("suites/minimal.yml kernel+initrd") for line in result.outlines)
    summary = json.loads(next(pytester.path.glob("reports/*/summary.json")).read_text())
    assert summary["schema"] == 2 and summary["timing"]["reports"] > 0
    timing = summary["runs"][0]["timing"]
    phases = timing["phases"]
    assert sum(phases.values()) == pytest.approx(timing["wall"], rel=0.01)
    # and the window holds every item's own time that pytest measured
    assert timing["wall"] >= sum(c["duration"] for c in summary["runs"][0]["checks"])
    assert phases["build"] >= 0.03 and phases["rebuild"] >= 0.02 and phases["tests"] >= 0.05
    assert all(phases[f"check.{c}"] >= 0.01 for c in checks.CHECKS if c not in ("build", "secureboot", "tpm"))   # those two: only when asked for
    assert timing["wall"] <= summary["timing"]["wall"]

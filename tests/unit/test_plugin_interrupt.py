"""A second Ctrl-C while the session finishes: VMs killed, exit status 2, no traceback."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from lkit.pytest_plugin import plugin
from lkit.pytest_plugin.results import RESULTS
from lkit.pytest_plugin.state import RUN


class FakeRun:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.settings = SimpleNamespace(shard=None)

    def close(self) -> None:
        self.calls.append("close")
        if self.calls.count("close") == 1:
            raise KeyboardInterrupt   # the user pressed Ctrl-C again while VMs were being released

    def kill(self) -> None:
        self.calls.append("kill")
        self.close()


class FakeResults:
    def __init__(self, interrupt: bool = False) -> None:
        self.interrupt = interrupt
        self.finished_with: int | None = None
        self.lines: list[str] = []

    def finish(self, exitstatus: int) -> int | None:
        self.finished_with = exitstatus
        if self.interrupt:
            raise KeyboardInterrupt
        return None


def _session(run: FakeRun, results: FakeResults) -> SimpleNamespace:
    config = SimpleNamespace(stash={RUN: run, RESULTS: results})
    return SimpleNamespace(config=config, exitstatus=pytest.ExitCode.OK)


def test_second_ctrl_c_while_releasing_vms_kills_them() -> None:
    run, results = FakeRun(), FakeResults()
    session = _session(run, results)
    plugin.pytest_sessionfinish(session, pytest.ExitCode.OK)   # must not raise
    assert run.calls == ["close", "kill", "close"]
    assert session.exitstatus == pytest.ExitCode.INTERRUPTED
    assert results.finished_with == pytest.ExitCode.INTERRUPTED   # reports still say what happened


def test_ctrl_c_while_writing_reports_is_reported_not_raised() -> None:
    run, results = FakeRun(), FakeResults(interrupt=True)
    run.calls.append("close")          # the first close passes this time
    session = _session(run, results)
    plugin.pytest_sessionfinish(session, pytest.ExitCode.TESTS_FAILED)
    assert session.exitstatus == pytest.ExitCode.INTERRUPTED
    assert results.lines == ["lkit: interrupted before the reports were written"]

"""QEMU's child-side hook only calls prctl: libc is loaded at import, never after fork.

Why: `ctypes.CDLL` in a preexec_fn (dlopen, malloc) can deadlock a child forked while threads run.
"""

from __future__ import annotations

import ctypes
import signal
import subprocess
import sys

import pytest

from lkit.machine import vm


def test_child_hook_loads_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[int, ...]] = []

    def no_dlopen(*args: object, **kwargs: object) -> None:
        pytest.fail("ctypes.CDLL called in the child hook")

    monkeypatch.setattr(ctypes, "CDLL", no_dlopen)
    monkeypatch.setattr(vm, "_PRCTL", lambda *args: calls.append(args) or 0)
    vm._die_with_parent()
    assert calls == [(1, signal.SIGKILL, 0, 0, 0)]


def test_child_gets_the_parent_death_signal() -> None:
    """A real child started with the hook reads PR_GET_PDEATHSIG (2) back: SIGKILL."""
    probe = ("import ctypes; libc = ctypes.CDLL(None); sig = ctypes.c_int(); "
             "libc.prctl(2, ctypes.byref(sig), 0, 0, 0); print(sig.value)")
    out = subprocess.run([sys.executable, "-c", probe], preexec_fn=vm._die_with_parent,
                         capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.strip() == str(int(signal.SIGKILL))

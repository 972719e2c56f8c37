"""Where a (spec, format) group's wall time goes: phases that partition it.

A group's window runs from the start of its first item to the end of its last (the VM's release
included). Phases nest (the `boots` check boots the VM: the boot is carved out of the check), each
keeps only its own time, and what no phase claims is `other`, so the phases add up to the wall time
by construction; tests/unit/test_plugin_timing.py holds that to 1%.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

OTHER = "other"


@dataclass
class _Open:
    """A phase being timed: its start, and the time its children (spans, records) took."""

    name: str
    start: float
    children: float = 0.0
    last_end: float = 0.0   # where the last child ended: a record never overlaps an earlier child


@dataclass
class PhaseClock:
    """Monotonic accounting of one group's window; the clock is injectable for tests."""

    clock: Callable[[], float] = time.monotonic
    phases: dict[str, float] = field(default_factory=dict)
    wall: float = 0.0
    first_start: float | None = None        # monotonic time the window first opened
    first_start_epoch: float | None = None  # the same as epoch seconds (orders groups across workers)
    _stack: list[_Open] = field(default_factory=list)
    _window_start: float | None = None

    @property
    def running(self) -> bool:
        return self._window_start is not None

    def open(self) -> None:
        """Start (or resume) the window; idempotent while it runs."""
        if self.running:
            return
        now = self.clock()
        if self.first_start is None:
            self.first_start, self.first_start_epoch = now, time.time()
        self._window_start = now
        self._stack = [_Open(OTHER, now, last_end=now)]

    def close(self) -> None:
        """End the window: open phases end now, the window's wall time is added; idempotent."""
        if not self.running:
            return
        while len(self._stack) > 1:
            self._pop()
        now = self.clock()
        root = self._stack.pop()
        self._add(OTHER, now - root.start - root.children)
        assert self._window_start is not None
        self.wall += now - self._window_start
        self._window_start = None

    @contextmanager
    def span(self, name: str) -> Iterator[None]:
        """Time the block as phase `name` (minus its own children); a no-op outside the window."""
        if not self.running:
            yield
            return
        now = self.clock()
        self._stack.append(_Open(name, now, last_end=now))
        depth = len(self._stack)
        try:
            yield
        finally:
            # close() may have ended the window inside the block (a session interrupted mid-item)
            if self.running and len(self._stack) >= depth:
                while len(self._stack) > depth:
                    self._pop()
                self._pop()

    def record(self, name: str, start: float, end: float) -> None:
        """Carve [start, end] (monotonic) out of the current phase as `name`: for intervals stamped
        elsewhere, such as the guest's boot from `cont` to its "services started" line."""
        if not self.running:
            return
        top = self._stack[-1]
        start = max(start, top.last_end)
        end = min(end, self.clock())
        if end <= start:
            return
        self._add(name, end - start)
        top.children += end - start
        top.last_end = end

    def _pop(self) -> None:
        now = self.clock()
        done = self._stack.pop()
        elapsed = now - done.start
        self._add(done.name, elapsed - done.children)
        parent = self._stack[-1]
        parent.children += elapsed
        parent.last_end = now

    def _add(self, name: str, seconds: float) -> None:
        self.phases[name] = self.phases.get(name, 0.0) + max(0.0, seconds)

    def snapshot(self) -> dict[str, float]:
        """The phases rounded to the millisecond (what the reports keep), still adding up to the
        rounded wall time: the rounding residue (a few ms at most) goes to the largest phase."""
        out = {name: round(value, 3) for name, value in self.phases.items()}
        if out:
            largest = max(out, key=out.__getitem__)
            out[largest] = round(out[largest] + round(self.wall, 3) - sum(out.values()), 3)
        return out

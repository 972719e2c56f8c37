"""A serial port read by a thread into a buffer, so nothing the guest prints is ever lost.

QEMU exposes each serial port as a unix socket (`-chardev socket,server=on`). One thread per port
drains it into an in-memory buffer (and optionally a timestamped log file) and wakes waiters; every
wait is bounded and also ends early when `abort_check` says the VM is gone or broken.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

from lkit.errors import MachineError

LineHook = Callable[[str, float], None]   # (line without newline, host monotonic time)
AbortCheck = Callable[[], str | None]     # returns a reason to stop waiting, or None


class SerialStream:
    """Reader of one serial port socket: buffer + condition + per-line hooks + optional log."""

    def __init__(self, sock: socket.socket, *, name: str, log: IO[str] | None = None,
                 t0: Callable[[], float | None] = lambda: None) -> None:
        self.name = name
        self._sock = sock
        self._log = log
        self._t0 = t0
        self._buf = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        self._partial = bytearray()
        self._hooks: list[LineHook] = []
        self._thread = threading.Thread(target=self._pump, name=f"lkit-serial-{name}", daemon=True)

    def add_line_hook(self, hook: LineHook) -> None:
        self._hooks.append(hook)

    def start(self) -> None:
        self._thread.start()

    # -- reading ---------------------------------------------------------------------------------
    def _pump(self) -> None:
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                now = time.monotonic()
                self._split_lines(data, now)   # hooks first: a waiter woken below sees their effects
                with self._cond:
                    self._buf += data
                    self._cond.notify_all()
        finally:
            if self._partial:
                self._emit(bytes(self._partial), time.monotonic())
                self._partial.clear()
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _split_lines(self, data: bytes, now: float) -> None:
        self._partial += data
        while True:
            nl = self._partial.find(b"\n")
            if nl < 0:
                break
            line = bytes(self._partial[:nl])
            del self._partial[: nl + 1]
            self._emit(line, now)

    def _emit(self, raw: bytes, now: float) -> None:
        line = raw.decode("utf-8", "replace").rstrip("\r")
        if self._log is not None:
            t0 = self._t0()
            stamp = f"[{now - t0:9.3f}] " if t0 is not None else "[  prelaunch] "
            try:
                self._log.write(stamp + line + "\n")
                self._log.flush()
            except ValueError:  # log closed during teardown
                pass
        for hook in self._hooks:
            hook(line, now)

    # -- access ----------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def position(self) -> int:
        with self._cond:
            return len(self._buf)

    def data(self, start: int = 0) -> bytes:
        with self._cond:
            return bytes(self._buf[start:])

    def text(self, start: int = 0) -> str:
        return self.data(start).decode("utf-8", "replace")

    def send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise MachineError(f"cannot write to serial port {self.name}: {exc}") from exc

    def wait_for(self, pattern: re.Pattern[bytes], *, start: int, timeout: float,
                 abort_check: AbortCheck | None = None, what: str = "") -> re.Match[bytes]:
        """Wait until `pattern` matches the buffer from `start`; bounded; aborts early on a reason."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                match = pattern.search(self._buf, start)
                if match is not None:
                    return match
                reason = abort_check() if abort_check is not None else None
                if reason is not None:
                    raise MachineError(f"{what or 'waiting for ' + pattern.pattern.decode(errors='replace')} "
                                       f"on {self.name}: {reason}")
                if self._closed:
                    raise MachineError(f"{self.name} closed (QEMU exited?) while "
                                       f"{what or 'waiting for ' + repr(pattern.pattern)}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise MachineError(f"timed out after {timeout:.1f}s "
                                       f"{what or 'waiting for ' + repr(pattern.pattern)} on {self.name}")
                self._cond.wait(min(left, 0.25))

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=5)

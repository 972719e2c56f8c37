"""A serial port read by a thread into a buffer, so nothing the guest prints is ever lost.

QEMU exposes each serial port as a unix socket (`-chardev socket,server=on`). The socket I/O goes
through pexpect (`fdpexpect.fdspawn` on the socket's descriptor): one thread per port drains it with
short `read_nonblocking` calls into an in-memory buffer (and optionally a timestamped log file) and
wakes waiters. Waits search that buffer rather than pexpect's own expect buffer, because several
readers (boot markers, the command channel, tests) look at the same output from positions of their
own, and a consumed expect buffer would lose text for the others. Every wait is bounded and also
ends early when `abort_check` says the VM is gone or broken.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Callable
from typing import IO

from pexpect import EOF, TIMEOUT
from pexpect.fdpexpect import fdspawn

from lkit.errors import MachineError

LineHook = Callable[[str, float], None]   # (line without newline, host monotonic time)
AbortCheck = Callable[[], str | None]     # returns a reason to stop waiting, or None

_READ_SIZE = 65536
_POLL = 0.25                              # seconds per read_nonblocking: bounds noticing close()


class SerialStream:
    """Reader of one serial port socket: buffer + condition + per-line hooks + optional log."""

    def __init__(self, sock: socket.socket, *, name: str, log: IO[str] | None = None,
                 t0: Callable[[], float | None] = lambda: None) -> None:
        self.name = name
        self._sock = sock
        # encoding=None: bytes in and out (the buffer is raw bytes); poll() works for any fd number.
        self._child: fdspawn[bytes] = fdspawn(sock, timeout=_POLL, maxread=_READ_SIZE, use_poll=True)  # no encoding: bytes
        self._send_lock = threading.Lock()
        self._stopping = threading.Event()
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
            while not self._stopping.is_set():
                try:
                    data = self._child.read_nonblocking(_READ_SIZE, timeout=_POLL)
                except TIMEOUT:
                    continue
                except (EOF, OSError, ValueError):   # QEMU gone, or the socket closed under us
                    break
                if not data:
                    continue
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
        """Write all of `data` (pexpect's send is one write(2), which may be partial)."""
        view = memoryview(data)
        with self._send_lock:
            try:
                while view:
                    written = self._child.send(bytes(view))
                    view = view[written:]
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
        """Stop the reader (shutdown wakes its poll with EOF), join it, then close the socket.

        The descriptor belongs to the socket object, so it is closed once, by the socket (never by
        fdspawn.close(), which would close the same number a second time)."""
        self._stopping.set()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._sock.close()
        self._child.child_fd = -1
        self._child.closed = True

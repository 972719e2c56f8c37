"""QMP through `qemu.qmp` (QEMU's own asyncio client), driven from synchronous code.

Why the asyncio `QMPClient` rather than `qemu.qmp.legacy.QEMUMonitorProtocol`: the legacy client
only sees events when it is polled, while lkit waits for SHUTDOWN during power-down and needs
GUEST_PANICKED the moment it happens. The asyncio client runs on an event loop in one daemon thread
per client; an event listener task records every event with the host clock as it arrives, a watcher
task notices the disconnect (QEMU exiting is normal at shutdown), and every call from the caller's
thread is a `run_coroutine_threadsafe` with a bounded wait.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import socket
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from qemu.qmp import EventListener, ExecInterruptedError, ExecuteError, QMPClient, QMPError, Runstate

from lkit.errors import MachineError

_T = TypeVar("_T")
_STOP_TIMEOUT = 5.0          # bound for disconnect and for joining the loop thread in close()

# qemu.qmp logs a hang-up during a handshake or flush as an error; QEMU exiting is a normal end for
# lkit (reported through MachineError). Records still reach configured handlers (pytest's capture),
# but never Python's last-resort stderr handler in the `lkit` CLI.
logging.getLogger("qemu.qmp").addHandler(logging.NullHandler())


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: dict[str, Any]
    host_time: float            # seconds since cont (or since start before cont)
    timestamp: dict[str, int] = field(default_factory=dict)


class QmpError(MachineError):
    """QEMU answered a QMP command with an error."""


class QmpClient:
    """One QMP connection; same surface as before: connect, command, wait_event, events, closed, close."""

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._cond = threading.Condition()
        self.events: list[QmpEvent] = []
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: QMPClient | None = None
        self._tasks: list[asyncio.Task[None]] = []

    # -- the loop thread ---------------------------------------------------------------------------
    def _start_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=self._run_loop, args=(loop,), name="lkit-qmp", daemon=True)
        self._thread.start()

    @staticmethod
    def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            with contextlib.suppress(RuntimeError):
                loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    def _call(self, coro: Coroutine[Any, Any, _T], timeout: float, what: str) -> _T:
        """Run `coro` on the loop thread and wait at most `timeout` seconds (cancelled after that)."""
        loop = self._loop
        try:   # queued even if the thread has not entered run_forever yet
            if loop is None:
                raise RuntimeError("no event loop")
            future = asyncio.run_coroutine_threadsafe(coro, loop)
        except RuntimeError:   # the loop was closed by close()
            coro.close()
            raise MachineError(f"QMP {what}: the QMP connection is closed") from None
        try:
            return future.result(timeout=max(timeout, 0.0))
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise MachineError(f"QMP {what}: no answer after {timeout:.0f}s") from None

    # -- connecting --------------------------------------------------------------------------------
    def connect(self, timeout: float, alive: Callable[[], str | None]) -> None:
        """Connect (QEMU creates the socket shortly after start), read the greeting, negotiate."""
        deadline = time.monotonic() + timeout
        sock = self._connect_socket(deadline, timeout, alive)
        self._start_loop()
        try:
            self._call(self._open(sock), max(1.0, deadline - time.monotonic()), "connect")
        except BaseException as exc:
            self.close()
            sock.close()
            if isinstance(exc, MachineError):
                raise
            if isinstance(exc, (QMPError, OSError, EOFError)):
                raise MachineError(f"QMP handshake with QEMU failed: {exc}") from None
            raise

    def _connect_socket(self, deadline: float, timeout: float, alive: Callable[[], str | None]) -> socket.socket:
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self._path))
                return sock
            except OSError:
                sock.close()
                reason = alive()
                if reason is not None:
                    raise MachineError(f"QEMU exited before its QMP socket was ready: {reason}") from None
                if time.monotonic() > deadline:
                    raise MachineError(f"QMP socket {self._path} not ready after {timeout:.0f}s") from None
                time.sleep(0.02)

    async def _open(self, sock: socket.socket) -> None:
        """On the loop: greeting + qmp_capabilities (inside QMPClient.connect), then the two tasks."""
        client = QMPClient(name=self._path.name)
        self._client = client
        await client.connect(sock)
        # The default all-events listener, drained at once by the record task.
        self._tasks = [asyncio.create_task(self._record(client.events), name="lkit-qmp-events"),
                       asyncio.create_task(self._watch(client), name="lkit-qmp-watch")]

    async def _record(self, listener: EventListener) -> None:
        """Append each event the moment it is dispatched, stamped with the host clock."""
        async for msg in listener:
            host_time = self._clock()
            data, stamp = msg.get("data"), msg.get("timestamp")
            event = QmpEvent(str(msg["event"]), dict(data) if isinstance(data, dict) else {}, host_time,
                             dict(stamp) if isinstance(stamp, dict) else {})
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    async def _watch(self, client: QMPClient) -> None:
        """Mark the client closed once the connection drops (EOF when QEMU exits).

        qemu.qmp has already interrupted pending commands by then; the session is finished by the
        one `disconnect()` in close(), which the rest of lkit always calls."""
        while client.runstate == Runstate.RUNNING:
            await client.runstate_changed()
        await asyncio.sleep(0)            # let the event task take events read just before EOF
        self._mark_closed()

    def _mark_closed(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    # -- use ---------------------------------------------------------------------------------------
    def command(self, name: str, /, *, timeout: float = 30.0, **args: Any) -> Any:
        """Execute `name` with `args`; bounded. QmpError on an error reply, MachineError if QEMU is gone."""
        client = self._client
        if client is None:
            raise MachineError("QMP is not connected")
        if self.closed:
            raise MachineError(f"QMP {name}: QEMU closed the connection")
        try:
            return self._call(client.execute(name, args or None), timeout, name)
        except ExecuteError as exc:
            raise QmpError(f"QMP {name} failed: {exc.error_class}: {exc}") from None
        except (ExecInterruptedError, EOFError, OSError) as exc:
            raise MachineError(f"QMP {name}: QEMU closed the connection ({exc or type(exc).__name__})") from None
        except QMPError as exc:   # StateError: disconnecting; other protocol faults
            raise MachineError(f"QMP {name}: {type(exc).__name__}: {exc}") from None

    def wait_event(self, name: str, timeout: float, *, after: int = 0) -> QmpEvent | None:
        """The first event `name` at index >= `after` within `timeout`; None if none (bounded)."""
        def find() -> QmpEvent | None:
            return next((e for e in self.events[after:] if e.name == name), None)
        with self._cond:
            self._cond.wait_for(lambda: find() is not None or self._closed, timeout)
            return find()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def close(self) -> None:
        """Disconnect (bounded), stop the loop and join its thread; idempotent."""
        self._mark_closed()
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(MachineError):
            self._call(self._shutdown(), _STOP_TIMEOUT, "disconnect")
        with contextlib.suppress(RuntimeError):     # already closed
            loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=_STOP_TIMEOUT)
        self._loop = None

    async def _shutdown(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        client = self._client
        if client is not None and client.runstate != Runstate.IDLE:
            with contextlib.suppress(Exception):   # re-raises what ended the session (EOFError)
                await client.disconnect()

"""A small synchronous QMP client with a reader thread, so events are recorded the moment they arrive.

(qemu.qmp's asyncio client would need an event loop thread of its own; QMP over a unix socket is
line-delimited JSON, which this does in a few lines with bounded waits.)
"""

from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lkit.errors import MachineError


@dataclass(frozen=True)
class QmpEvent:
    name: str
    data: dict[str, Any]
    host_time: float            # seconds since cont (or since start before cont)
    timestamp: dict[str, int] = field(default_factory=dict)


class QmpError(MachineError):
    """QEMU answered a QMP command with an error."""


class QmpClient:
    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._clock = clock
        self._sock: socket.socket | None = None
        self._cond = threading.Condition()
        self._replies: dict[str, dict[str, Any]] = {}
        self.events: list[QmpEvent] = []
        self._ids = itertools.count(1)
        self._closed = False
        self._thread: threading.Thread | None = None
        self._send_lock = threading.Lock()

    def connect(self, timeout: float, alive: Callable[[], str | None]) -> None:
        """Connect (QEMU creates the socket shortly after start), negotiate capabilities."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(str(self._path))
                break
            except OSError:
                sock.close()
                reason = alive()
                if reason is not None:
                    raise MachineError(f"QEMU exited before its QMP socket was ready: {reason}") from None
                if time.monotonic() > deadline:
                    raise MachineError(f"QMP socket {self._path} not ready after {timeout:.0f}s") from None
                time.sleep(0.02)
        self._sock = sock
        self._thread = threading.Thread(target=self._pump, name="lkit-qmp", daemon=True)
        self._thread.start()
        self._wait_greeting(max(1.0, deadline - time.monotonic()))
        self.command("qmp_capabilities", timeout=max(1.0, deadline - time.monotonic()))

    def _wait_greeting(self, timeout: float) -> None:
        with self._cond:
            if not self._cond.wait_for(lambda: "greeting" in self._replies or self._closed, timeout):
                raise MachineError("no QMP greeting from QEMU")

    def _pump(self) -> None:
        assert self._sock is not None
        buf = b""
        try:
            while True:
                try:
                    data = self._sock.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        self._dispatch(json.loads(line))
        finally:
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    def _dispatch(self, msg: dict[str, Any]) -> None:
        with self._cond:
            if "QMP" in msg:
                self._replies["greeting"] = msg
            elif "event" in msg:
                self.events.append(QmpEvent(msg["event"], msg.get("data", {}), self._clock(),
                                            msg.get("timestamp", {})))
            elif "id" in msg:
                self._replies[str(msg["id"])] = msg
            self._cond.notify_all()

    def command(self, name: str, *, timeout: float = 30.0, **args: Any) -> Any:
        if self._sock is None:
            raise MachineError("QMP is not connected")
        ident = f"lkit-{next(self._ids)}"
        msg: dict[str, Any] = {"execute": name, "id": ident}
        if args:
            msg["arguments"] = args
        with self._send_lock:
            try:
                self._sock.sendall(json.dumps(msg).encode() + b"\n")
            except OSError as exc:
                raise MachineError(f"QMP {name}: QEMU is gone ({exc})") from exc
        with self._cond:
            ok = self._cond.wait_for(lambda: ident in self._replies or self._closed, timeout)
            reply = self._replies.pop(ident, None)
        if reply is None:
            raise MachineError(f"QMP {name}: " + ("QEMU closed the connection" if ok else
                                                  f"no answer after {timeout:.0f}s"))
        if "error" in reply:
            err = reply["error"]
            raise QmpError(f"QMP {name} failed: {err.get('class')}: {err.get('desc')}")
        return reply.get("return")

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
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None:
            self._thread.join(timeout=5)

"""QmpClient (on qemu.qmp) against a fake QMP server on a unix socket: greeting, capabilities
negotiation, commands, errors, events recorded as they arrive, EOF, bounded waits, clean close."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lkit.errors import MachineError
from lkit.machine.qmp import QmpClient, QmpError

GREETING = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": "Debian"},
                    "capabilities": ["oob"]}}
Handler = Callable[["FakeQmp", dict[str, Any]], dict[str, Any] | None]


class FakeQmp:
    """A QMP server speaking the wire protocol on one connection; `handler` answers each command."""

    def __init__(self, path: Path, handler: Handler | None = None, *, greeting: bool = True) -> None:
        self.path = path
        self.handler = handler
        self.greeting = greeting
        self.received: list[dict[str, Any]] = []
        self.conn: socket.socket | None = None
        self.connected = threading.Event()
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._srv.bind(str(path))
        self._srv.listen(1)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def send(self, msg: dict[str, Any]) -> None:
        assert self.conn is not None
        with self._lock:
            self.conn.sendall(json.dumps(msg).encode() + b"\r\n")

    def event(self, name: str, data: dict[str, Any] | None = None) -> None:
        msg: dict[str, Any] = {"event": name, "timestamp": {"seconds": 1492533000, "microseconds": 5}}
        if data is not None:
            msg["data"] = data
        self.send(msg)

    def hang_up(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(OSError):
                self.conn.shutdown(socket.SHUT_RDWR)

    def _serve(self) -> None:
        self._srv.settimeout(10)
        try:
            conn, _ = self._srv.accept()
        except OSError:
            return
        self.conn = conn
        self.connected.set()
        if self.greeting:
            self.send(GREETING)
        buf = ""
        decoder = json.JSONDecoder()
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buf += data.decode()
                while buf.strip():   # QMP input is a JSON stream: qemu.qmp sends no newline
                    try:
                        msg, end = decoder.raw_decode(buf.lstrip())
                    except json.JSONDecodeError:
                        break        # incomplete: read more
                    buf = buf.lstrip()[end:]
                    self._answer(msg)

    def _answer(self, msg: dict[str, Any]) -> None:
        self.received.append(msg)
        reply: dict[str, Any] | None
        if msg["execute"] == "qmp_capabilities":
            reply = {"return": {}}
        elif self.handler is not None:
            reply = self.handler(self, msg)
        else:
            reply = {"return": {}}
        if reply is not None:   # QEMU echoes the id when there is one (qemu.qmp negotiates without)
            self.send({**reply, **({"id": msg["id"]} if "id" in msg else {})})

    def close(self) -> None:
        self.hang_up()
        self._srv.close()
        self._thread.join(timeout=5)


@pytest.fixture
def sockpath(tmp_path: Path) -> Iterator[Path]:
    # AF_UNIX paths are limited to 108 bytes; pytest's tmp_path can be longer.
    with contextlib.ExitStack() as stack:
        import tempfile
        d = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lkit-qmp-", dir="/tmp")))
        yield d / "qmp.sock"


def _qmp_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "lkit-qmp"]


@contextlib.contextmanager
def connected(path: Path, handler: Handler | None = None,
              clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[FakeQmp, QmpClient]]:
    server = FakeQmp(path, handler)
    client = QmpClient(path, clock=clock)
    try:
        client.connect(5.0, lambda: None)
        yield server, client
    finally:
        client.close()
        server.close()


def test_greeting_negotiation_and_command(sockpath: Path) -> None:
    def handler(fake: FakeQmp, msg: dict[str, Any]) -> dict[str, Any]:
        if msg["execute"] == "query-status":
            return {"return": {"status": "prelaunch", "running": False}}
        return {"return": {"echo": msg.get("arguments")}}

    with connected(sockpath, handler) as (server, client):
        assert server.received[0]["execute"] == "qmp_capabilities"
        assert server.received[0].get("arguments") == {"enable": ["oob"]}   # offered in the greeting
        assert client.command("query-status") == {"status": "prelaunch", "running": False}
        hmp: dict[str, Any] = {"command-line": "info version"}
        out = client.command("human-monitor-command", **hmp)
        assert out == {"echo": {"command-line": "info version"}}
        assert "arguments" not in server.received[1]            # no arguments -> none sent
        assert not client.closed


def test_error_reply_is_qmp_error(sockpath: Path) -> None:
    def handler(fake: FakeQmp, msg: dict[str, Any]) -> dict[str, Any]:
        return {"error": {"class": "CommandNotFound", "desc": f"The command {msg['execute']} has not been found"}}

    with connected(sockpath, handler) as (_, client):
        with pytest.raises(QmpError, match="CommandNotFound: The command nope has not been found"):
            client.command("nope")
        assert not client.closed    # an error reply does not end the session


def test_events_recorded_as_they_arrive_without_polling(sockpath: Path) -> None:
    now = [100.0]
    with connected(sockpath, clock=lambda: now[0]) as (server, client):
        server.event("RESUME")
        deadline = time.monotonic() + 5
        while not client.events and time.monotonic() < deadline:   # nobody calls into the client
            time.sleep(0.01)
        assert [e.name for e in client.events] == ["RESUME"]
        assert client.events[0].host_time == 100.0
        assert client.events[0].timestamp == {"seconds": 1492533000, "microseconds": 5}
        assert client.events[0].data == {}

        now[0] = 107.5
        mark = len(client.events)
        threading.Timer(0.2, server.event, ("SHUTDOWN", {"guest": True, "reason": "guest-shutdown"})).start()
        t = time.monotonic()
        ev = client.wait_event("SHUTDOWN", 5, after=mark)
        assert ev is not None and time.monotonic() - t < 3
        assert ev.data == {"guest": True, "reason": "guest-shutdown"}
        assert ev.host_time == 107.5
        assert [e.name for e in client.events] == ["RESUME", "SHUTDOWN"]
    assert client.closed


def test_wait_event_is_bounded_and_respects_after(sockpath: Path) -> None:
    with connected(sockpath) as (server, client):
        server.event("STOP")
        assert client.wait_event("STOP", 5) is not None
        t = time.monotonic()
        assert client.wait_event("STOP", 0.3, after=len(client.events)) is None
        assert 0.25 <= time.monotonic() - t < 2


def test_event_before_reply_is_recorded_when_command_returns(sockpath: Path) -> None:
    def handler(fake: FakeQmp, msg: dict[str, Any]) -> dict[str, Any]:
        fake.event("POWERDOWN")
        return {"return": {}}

    with connected(sockpath, handler) as (_, client):
        client.command("system_powerdown")
        assert client.wait_event("POWERDOWN", 2) is not None


def test_eof_marks_closed_and_commands_fail_fast(sockpath: Path) -> None:
    with connected(sockpath) as (server, client):
        server.event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
        server.hang_up()                                   # QEMU exiting
        t = time.monotonic()
        assert client.wait_event("NEVER", 5) is None       # ends early: the connection closed
        assert time.monotonic() - t < 3
        assert client.closed
        assert [e.name for e in client.events] == ["SHUTDOWN"]   # the event read before EOF is kept
        with pytest.raises(MachineError, match="QMP query-status: QEMU closed the connection"):
            client.command("query-status")


def test_eof_while_command_pending_raises(sockpath: Path) -> None:
    def handler(fake: FakeQmp, msg: dict[str, Any]) -> None:
        fake.hang_up()                                      # `quit`-like: gone before answering
        return None

    with connected(sockpath, handler) as (_, client):
        t = time.monotonic()
        with pytest.raises(MachineError, match="QMP quit: QEMU closed the connection"):
            client.command("quit", timeout=10)
        assert time.monotonic() - t < 5


def test_command_timeout_is_bounded(sockpath: Path) -> None:
    with connected(sockpath, lambda fake, msg: None) as (_, client):
        t = time.monotonic()
        with pytest.raises(MachineError, match="no answer after"):
            client.command("query-status", timeout=0.3)
        assert time.monotonic() - t < 3
        assert not client.closed


def test_close_stops_the_loop_thread_and_is_idempotent(sockpath: Path) -> None:
    before = len(_qmp_threads())
    server = FakeQmp(sockpath)
    client = QmpClient(sockpath)
    try:
        client.connect(5.0, lambda: None)
        assert len(_qmp_threads()) == before + 1
        client.close()
        client.close()
        assert len(_qmp_threads()) == before
        assert client.closed
        with pytest.raises(MachineError, match="QMP"):
            client.command("query-status")
        server._thread.join(timeout=5)
        assert not server._thread.is_alive()              # the server saw the client hang up
    finally:
        client.close()
        server.close()


def test_connect_waits_for_the_socket_to_appear(sockpath: Path) -> None:
    client = QmpClient(sockpath)
    holder: list[FakeQmp] = []
    timer = threading.Timer(0.3, lambda: holder.append(FakeQmp(sockpath)))
    timer.start()
    try:
        client.connect(5.0, lambda: None)
        assert client.command("query-status") == {}
    finally:
        timer.join()
        client.close()
        for s in holder:
            s.close()


def test_connect_gives_up_when_qemu_exited(sockpath: Path) -> None:
    client = QmpClient(sockpath)
    with pytest.raises(MachineError, match="QEMU exited before its QMP socket was ready: boom"):
        client.connect(5.0, lambda: "boom")
    assert not _qmp_threads()


def test_connect_times_out(sockpath: Path) -> None:
    client = QmpClient(sockpath)
    t = time.monotonic()
    with pytest.raises(MachineError, match="not ready after"):
        client.connect(0.3, lambda: None)
    assert time.monotonic() - t < 3


def test_no_greeting_is_a_bounded_machine_error(sockpath: Path) -> None:
    server = FakeQmp(sockpath, greeting=False)
    client = QmpClient(sockpath)
    try:
        t = time.monotonic()
        with pytest.raises(MachineError, match="QMP connect: no answer"):
            client.connect(1.0, lambda: None)
        assert time.monotonic() - t < 4
        assert not _qmp_threads()                           # a failed connect leaves no thread
    finally:
        client.close()
        server.close()


def test_hang_up_during_handshake(sockpath: Path) -> None:
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sockpath))
    srv.listen(1)

    def accept_and_drop() -> None:
        conn, _ = srv.accept()
        conn.close()

    th = threading.Thread(target=accept_and_drop, daemon=True)
    th.start()
    client = QmpClient(sockpath)
    try:
        with pytest.raises(MachineError, match="QMP handshake with QEMU failed"):
            client.connect(5.0, lambda: None)
        assert not _qmp_threads()
    finally:
        th.join(timeout=5)
        srv.close()
        client.close()

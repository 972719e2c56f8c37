"""The ports check's TCP probe: a refused port fails, an accepting one passes without the 1 s wait
when user-mode networking already says ESTABLISHED (QEMU's `info usernet`, captured below)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from lkit.errors import MachineError
from lkit.pytest_plugin.checks import _probe_port, _slirp_established

USERNET = """Hub -1 (net0):
  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ
  TCP[{state}]   21       127.0.0.1 38923       10.0.2.15  6379     0     0
  TCP[HOST_FORWARD]  11       127.0.0.1 38923       10.0.2.15  6379     0     0
  TCP[HOST_FORWARD]  10       127.0.0.1 51613       10.0.2.15    81     0     0
"""


class FakeVM:
    def __init__(self, state: str | None = None, error: bool = False) -> None:
        self.state, self.error = state, error

    def qmp(self, command: str, **args: str) -> str:
        assert command == "human-monitor-command" and args == {"command-line": "info usernet"}
        if self.error:
            raise MachineError("QEMU is gone")
        return USERNET.format(state=self.state) if self.state else USERNET.split("  TCP[{state}]")[0]


def test_established_reads_the_connection_of_this_host_and_guest_port() -> None:
    assert _slirp_established(FakeVM("ESTABLISHED"), 38923, 6379)()
    assert not _slirp_established(FakeVM("SYN_SENT"), 38923, 6379)()
    assert not _slirp_established(FakeVM("FIN_WAIT_1"), 38923, 6379)()
    assert not _slirp_established(FakeVM("ESTABLISHED"), 51613, 81)()      # only HOST_FORWARD there
    assert not _slirp_established(FakeVM("ESTABLISHED"), 3892, 6379)()      # not a prefix match
    assert not _slirp_established(FakeVM(error=True), 38923, 6379)()


@contextmanager
def server(behaviour: str) -> Iterator[int]:
    """A loopback listener: 'silent' keeps connections open, 'close' closes them at once, 'talk' greets."""
    listener = socket.create_server(("127.0.0.1", 0))
    conns: list[socket.socket] = []

    def serve() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            if behaviour == "close":
                conn.close()
                continue
            if behaviour == "talk":
                conn.sendall(b"+OK\r\n")
            conns.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        listener.close()
        for conn in conns:
            conn.close()


def timed(port: int, established=None, deadline: float = 5.0) -> tuple[str | None, float]:
    start = time.monotonic()
    error = _probe_port(port, None, None, deadline=start + deadline, established=established)
    return error, time.monotonic() - start


def test_a_silent_service_passes_as_soon_as_slirp_says_established() -> None:
    calls = []

    def established() -> bool:
        calls.append(1)
        return len(calls) >= 2

    with server("silent") as port:
        error, seconds = timed(port, established)
    assert error is None and seconds < 0.5


def test_without_that_word_a_silent_service_still_passes_after_a_second() -> None:
    with server("silent") as port:
        error, seconds = timed(port, lambda: False)
    assert error is None and 0.9 <= seconds < 3


def test_a_service_that_talks_first_passes_at_once() -> None:
    with server("talk") as port:
        error, seconds = timed(port)
    assert error is None and seconds < 0.5


def test_a_refusing_guest_fails() -> None:
    with server("close") as port:
        error, _ = timed(port, lambda: False, deadline=1.5)
    assert error == "closed at once"

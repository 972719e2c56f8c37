"""SerialStream (socket I/O through pexpect's fdspawn) over a socketpair: nothing lost, line hooks,
timestamped log, bounded waits, abort and EOF, full writes, clean close."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pexpect.fdpexpect import fdspawn

from lkit.errors import MachineError
from lkit.machine.stream import SerialStream


@contextlib.contextmanager
def pair(*, log: io.StringIO | None = None, t0: float | None = None,
         start: bool = True) -> Iterator[tuple[SerialStream, socket.socket]]:
    host, guest = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    stream = SerialStream(host, name="ttyS0", log=log, t0=lambda: t0)
    try:
        if start:
            stream.start()
        yield stream, guest
    finally:
        stream.close()
        guest.close()


def _stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("lkit-serial-")]


def test_io_goes_through_pexpect() -> None:
    with pair() as (stream, _):
        assert isinstance(stream._child, fdspawn)


def test_nothing_lost_under_a_burst() -> None:
    payload = bytes(range(256)) * 8192          # 2 MiB, binary, arrives in many chunks
    with pair() as (stream, guest):
        sender = threading.Thread(target=guest.sendall, args=(payload,))
        sender.start()
        stream.wait_for(re.compile(re.escape(payload[-64:])), start=len(payload) - 64, timeout=20)
        sender.join(timeout=10)
        assert stream.data() == payload
        assert stream.position() == len(payload)


def test_line_hooks_and_log_with_timestamps() -> None:
    log = io.StringIO()
    seen: list[tuple[str, float]] = []
    with pair(log=log, start=False) as (stream, guest):
        stream.add_line_hook(lambda line, now: seen.append((line, now)))
        stream.start()
        before = time.monotonic()
        guest.sendall(b"Linux version 6.1\r\nlkit: init ")   # a line split over two writes
        stream.wait_for(re.compile(rb"init "), start=0, timeout=5)
        guest.sendall(b"start uptime=1.00\n")
        stream.wait_for(re.compile(rb"uptime=1\.00\n"), start=0, timeout=5)
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
    assert [line for line, _ in seen] == ["Linux version 6.1", "lkit: init start uptime=1.00"]
    assert all(now >= before for _, now in seen)
    assert log.getvalue() == ("[  prelaunch] Linux version 6.1\n"
                              "[  prelaunch] lkit: init start uptime=1.00\n")


def test_log_stamps_are_relative_to_t0() -> None:
    log = io.StringIO()
    with pair(log=log, t0=time.monotonic() - 12.0) as (stream, guest):
        guest.sendall(b"hello\n")
        stream.wait_for(re.compile(rb"hello\n"), start=0, timeout=5)
        time.sleep(0.05)
    stamp = re.match(r"\[\s*(\d+\.\d{3})\] hello\n$", log.getvalue())
    assert stamp is not None, log.getvalue()
    assert 12.0 <= float(stamp.group(1)) < 20.0


def test_partial_last_line_is_emitted_at_eof() -> None:
    seen: list[str] = []
    with pair(start=False) as (stream, guest):
        stream.add_line_hook(lambda line, now: seen.append(line))
        stream.start()
        guest.sendall(b"Kernel panic - not syncing")
        guest.shutdown(socket.SHUT_RDWR)              # QEMU exits mid-line
        deadline = time.monotonic() + 5
        while not stream.closed and time.monotonic() < deadline:
            time.sleep(0.01)
        assert stream.closed
    assert seen == ["Kernel panic - not syncing"]


def test_wait_for_respects_start_and_is_bounded() -> None:
    with pair() as (stream, guest):
        guest.sendall(b"marker one\n")
        first = stream.wait_for(re.compile(rb"marker"), start=0, timeout=5)
        assert first.start() == 0
        t = time.monotonic()
        with pytest.raises(MachineError, match=r"timed out after 0\.3s waiting for the second marker on ttyS0"):
            stream.wait_for(re.compile(rb"marker"), start=first.end(), timeout=0.3,
                            what="waiting for the second marker")
        assert 0.25 <= time.monotonic() - t < 2
        threading.Timer(0.2, guest.sendall, (b"marker two\n",)).start()
        second = stream.wait_for(re.compile(rb"marker (\w+)"), start=first.end(), timeout=5)
        assert second.group(1) == b"two"


def test_wait_for_aborts_early_with_the_reason() -> None:
    reason: list[str] = []
    with pair() as (stream, _):
        threading.Timer(0.2, reason.append, ("QEMU exited with code -9",)).start()
        t = time.monotonic()
        with pytest.raises(MachineError, match="QEMU exited with code -9"):
            stream.wait_for(re.compile(rb"never"), start=0, timeout=30,
                            abort_check=lambda: reason[0] if reason else None)
        assert time.monotonic() - t < 3


def test_wait_for_ends_when_the_port_closes() -> None:
    with pair() as (stream, guest):
        threading.Timer(0.2, guest.shutdown, (socket.SHUT_RDWR,)).start()
        t = time.monotonic()
        with pytest.raises(MachineError, match=r"ttyS0 closed \(QEMU exited\?\)"):
            stream.wait_for(re.compile(rb"never"), start=0, timeout=30)
        assert time.monotonic() - t < 3


def test_send_writes_everything() -> None:
    payload = b"x" * (3 * 1024 * 1024) + b"\n"     # larger than the socket buffer: partial writes
    received = bytearray()

    def drain(sock: socket.socket) -> None:
        while len(received) < len(payload):
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            received.extend(chunk)

    with pair() as (stream, guest):
        reader = threading.Thread(target=drain, args=(guest,))
        reader.start()
        stream.send(payload)
        reader.join(timeout=20)
    assert bytes(received) == payload


def test_send_after_peer_gone_is_a_machine_error() -> None:
    with pair() as (stream, guest):
        guest.close()
        with pytest.raises(MachineError, match="cannot write to serial port ttyS0"):
            for _ in range(50):                        # the first write may still be buffered
                stream.send(b"root\n" * 1000)


def test_close_joins_the_reader_and_closes_the_socket_once() -> None:
    before = len(_stream_threads())
    host, guest = socket.socketpair()
    stream = SerialStream(host, name="ttyS1")
    stream.start()
    assert len(_stream_threads()) == before + 1
    t = time.monotonic()
    stream.close()
    assert time.monotonic() - t < 3
    assert len(_stream_threads()) == before
    assert host.fileno() == -1
    assert stream.closed
    stream.close()                                     # idempotent
    guest.close()


def test_close_before_start() -> None:
    host, guest = socket.socketpair()
    stream = SerialStream(host, name="ttyS1")
    stream.close()
    assert host.fileno() == -1
    guest.close()

"""The command channel: run a shell command in the guest and get back exact stdout, stderr and rc.

Protocol (docs/architecture.md): the host sends `<nonce> <timeout> <base64 command>` (long commands as
`<nonce> + <chunk>` continuation lines first); the guest answers

    LKIT-BEGIN <nonce> / base64 stdout / LKIT-ERR <nonce> / base64 stderr /
    LKIT-END <nonce> <rc> [<stdout bytes> <stderr bytes> <ok|timeout>]

The optional byte counts let the host detect a corrupted answer. Anything outside a frame with our
nonce (kernel messages, a getty, stale answers to earlier commands) is ignored, and base64 payload
lines are only taken if they are pure base64, so output containing the marker text cannot confuse it.

Two transports share the framing: `AgentChannel` (lkit-agent on ttyS1) and `ConsoleChannel`
(images without the agent: a root shell on the ttyS0 console, set up with `dmesg -n 1`, `stty -echo`).
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from lkit.errors import MachineError
from lkit.machine.stream import AbortCheck, SerialStream

LINE_B64_CHARS = 3072     # base64 characters per request line (a multiple of 4)
HOST_GRACE = 10.0         # the host waits this much longer than the guest-side timeout
_B64_LINE = re.compile(rb"^[A-Za-z0-9+/=]*$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A login or shell prompt at the end of the console output (busybox ash may add a cursor query ESC[6n).
PROMPT = re.compile(rb"(login: ?|[#$] ?)(\x1b\[[0-9;?]*[A-Za-z])*$")


class ChannelMode(StrEnum):
    """Which command channel a Machine uses: the agent on ttyS1, the console's shell, or auto (the
    agent if it announces itself, else the console)."""

    AUTO = "auto"
    AGENT = "agent"
    CONSOLE = "console"


@dataclass(frozen=True)
class CommandResult:
    rc: int
    stdout: str
    stderr: str
    timed_out: bool = False
    stdout_bytes: bytes = b""
    stderr_bytes: bytes = b""

    def __iter__(self) -> Iterator[Any]:  # allows `rc, out, err = machine.run(...)`
        return iter((self.rc, self.stdout, self.stderr))


def new_nonce() -> str:
    return "n" + secrets.token_hex(8)


def encode_request(nonce: str, command: str, timeout: int) -> bytes:
    """The request lines for one command (continuations first, then the line that runs it)."""
    if not _NONCE.match(nonce):
        raise ValueError(f"bad nonce {nonce!r}")
    payload = base64.b64encode(command.encode()).decode("ascii")
    chunks = [payload[i:i + LINE_B64_CHARS] for i in range(0, len(payload), LINE_B64_CHARS)] or [""]
    lines = [f"{nonce} + {chunk}\n" for chunk in chunks[:-1]]
    lines.append(f"{nonce} {max(1, int(timeout))} {chunks[-1]}\n")
    return "".join(lines).encode("ascii")


def end_pattern(nonce: str) -> re.Pattern[bytes]:
    return re.compile(rb"(?m)^[^\n]*?LKIT-END " + re.escape(nonce.encode()) + rb" (-?\d+)[^\n]*$")


def parse_response(data: bytes, nonce: str) -> CommandResult | None:
    """Find the complete answer for `nonce` in a byte stream; None if it is not complete yet.

    Tolerates CR LF line ends, noise before/after/between frames and lines that are not base64.
    Raises MachineError when the frame is complete but its byte counts do not match (corruption).
    """
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n")]
    n = nonce.encode()
    begin, err, end = b"LKIT-BEGIN " + n, b"LKIT-ERR " + n, b"LKIT-END " + n + b" "
    # The last BEGIN with our nonce that is followed by ERR and END.
    state = None
    out: list[bytes] = []
    errl: list[bytes] = []
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped == begin:
            state, out, errl = "out", [], []
            continue
        if state is None:
            continue
        if stripped == err and state == "out":
            state = "err"
            continue
        if state == "err" and stripped.startswith(end):
            if i == len(lines) - 1:          # the END line itself may not be complete yet
                return None
            fields = stripped[len(end):].split()
            try:
                rc = int(fields[0])
            except (IndexError, ValueError):
                state = None
                continue
            stdout_b = _decode(out)
            stderr_b = _decode(errl)
            if len(fields) >= 3:
                want_out, want_err = int(fields[1]), int(fields[2])
                if (want_out, want_err) != (len(stdout_b), len(stderr_b)):
                    raise MachineError(
                        f"command answer {nonce} corrupted: got {len(stdout_b)}/{len(stderr_b)} bytes of "
                        f"stdout/stderr, the guest sent {want_out}/{want_err}")
            timed_out = len(fields) >= 4 and fields[3] == b"timeout"
            return CommandResult(rc=rc, stdout=stdout_b.decode("utf-8", "replace"),
                                 stderr=stderr_b.decode("utf-8", "replace"), timed_out=timed_out,
                                 stdout_bytes=stdout_b, stderr_bytes=stderr_b)
        if _B64_LINE.match(stripped) and stripped:
            (out if state == "out" else errl).append(stripped)
    return None


def _decode(lines: list[bytes]) -> bytes:
    try:
        return base64.b64decode(b"".join(lines), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise MachineError(f"command answer is not valid base64: {exc}") from exc


class Channel(Protocol):
    def run(self, command: str, timeout: float) -> CommandResult: ...


class AgentChannel:
    """lkit-agent on a serial port the kernel never writes to (ttyS1)."""

    READY = re.compile(rb"LKIT-AGENT-READY")

    def __init__(self, stream: SerialStream, *, abort_check: AbortCheck | None = None,
                 grace: float = HOST_GRACE) -> None:
        self.stream = stream
        self.abort_check = abort_check
        self.grace = grace

    def wait_ready(self, timeout: float) -> None:
        self.stream.wait_for(self.READY, start=0, timeout=timeout, abort_check=self.abort_check,
                             what="waiting for lkit-agent (LKIT-AGENT-READY)")

    def run(self, command: str, timeout: float) -> CommandResult:
        nonce = new_nonce()
        start = self.stream.position()
        self.stream.send(encode_request(nonce, command, int(timeout + 0.999)))
        return _await(self.stream, nonce, start, timeout + self.grace, self.abort_check, command)


def _await(stream: SerialStream, nonce: str, start: int, bound: float,
           abort_check: AbortCheck | None, command: str) -> CommandResult:
    deadline = time.monotonic() + bound
    pattern = end_pattern(nonce)
    pos = start
    while True:
        left = deadline - time.monotonic()
        try:
            match = stream.wait_for(pattern, start=pos, timeout=max(left, 0.0), abort_check=abort_check,
                                    what=f"running {command[:60]!r}")
        except MachineError as exc:
            raise MachineError(f"{exc.message}", hint="the command channel got no answer; the guest may "
                               "be hung or the agent not running") from None
        # wait until the END line is terminated, then parse
        nl = stream.wait_for(re.compile(rb"\n"), start=match.end(), timeout=max(deadline - time.monotonic(), 1.0),
                             abort_check=abort_check, what="reading the end of a command answer")
        result = parse_response(stream.data(start)[: nl.end() - start], nonce)
        if result is not None:
            return result
        pos = nl.end()


# Shell snippet run on a console shell (no agent): same framing as the agent, guest-side timeout.
_CONSOLE_RUNNER = (
    "d=/tmp/.lkit-{n}; mkdir -p $d; printf %s {b64} | base64 -d > $d/c; "
    "timeout -s KILL {t} sh $d/c </dev/null >$d/o 2>$d/e; rc=$?; "
    "printf 'LKIT-BEGIN %s\\n' {n}; base64 $d/o; printf 'LKIT-ERR %s\\n' {n}; base64 $d/e; "
    "printf 'LKIT-END %s %s %s %s ok\\n' {n} $rc $(wc -c <$d/o) $(wc -c <$d/e); rm -rf $d\n"
)


class ConsoleChannel:
    """Fallback for images without lkit-agent: drive the root shell (or getty login) on ttyS0."""

    def __init__(self, stream: SerialStream, *, abort_check: AbortCheck | None = None,
                 grace: float = HOST_GRACE) -> None:
        self.stream = stream
        self.abort_check = abort_check
        self.grace = grace
        self._ready = False

    def setup(self, timeout: float) -> None:
        """Log in if a `login:` prompt shows, quiet the kernel, turn off echo, prove the shell answers."""
        deadline = time.monotonic() + timeout
        start = self.stream.position()
        self.stream.send(b"\n")
        match = self.stream.wait_for(PROMPT, start=start, timeout=timeout, abort_check=self.abort_check,
                                     what="waiting for a shell or login prompt on the console")
        if match.group(0).startswith(b"login"):
            self.stream.send(b"root\n")
            time.sleep(0.5)
        self.stream.send(b"stty -echo; dmesg -n 1; export PS1='' PS2=''\n")
        self._ready = True
        probe = self.run("echo lkit-console-ok", max(5.0, deadline - time.monotonic()))
        if probe.stdout.strip() != "lkit-console-ok":
            raise MachineError(f"console shell did not answer a probe command: {probe}")

    def run(self, command: str, timeout: float) -> CommandResult:
        nonce = new_nonce()
        payload = base64.b64encode(command.encode()).decode("ascii")
        start = self.stream.position()
        self.stream.send(_CONSOLE_RUNNER.format(n=nonce, b64=payload, t=max(1, int(timeout + 0.999))).encode())
        # The shell may still echo the request (echo not yet off); the END pattern needs a number after
        # the nonce, which the echoed request does not have, so the echo cannot end the wait.
        return _await(self.stream, nonce, start, timeout + self.grace, self.abort_check, command)

"""`Machine`: one QEMU guest as a context manager (lifecycle after QEMU's python/qemu/machine and the
NixOS test driver).

Start-up: QEMU is launched paused (-S); the host connects QMP and both serial sockets, then sends `cont`
(t0 of the timeline), so nothing is lost. Every wait is bounded and ends early when QEMU exits or the
console shows a fatal kernel badness. `__exit__` always ends the process: graceful shutdown on a clean
exit, `quit` then SIGKILL when leaving by an exception; no QEMU outlives the `with` block.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import InfraError, MachineError
from lkit.machine import accel as accel_mod
from lkit.machine.artifacts import BootTarget
from lkit.machine.badness import Badness, BadnessPolicy, BadnessScanner
from lkit.machine.channel import PROMPT, AgentChannel, ChannelMode, CommandResult, ConsoleChannel
from lkit.core.secureboot import KeySet, default_keys_dir
from lkit.machine.firmware import enrolled_vars, find_ovmf
from lkit.machine.lan import LanPort
from lkit.machine.qemu import PortForward, QemuConfig, Sockets, build_argv, default_cpus, free_port, uses_uefi
from lkit.machine.qmp import QmpClient, QmpEvent
from lkit.machine.stream import SerialStream
from lkit.machine.timeline import MARKERS, Timeline, TimelineEntry
from lkit.machine.tpm import SwTpm

BOOT_TIMEOUT = 120.0          # base seconds for the guest to get its command channel up (x multiplier)
_FORWARD_FAILED = re.compile(r"Could not set up host forwarding rule|could not set up host forwarding",
                             re.I)


@dataclass(frozen=True)
class ShutdownResult:
    method: str               # powerdown | quit | kill | exited (QEMU was already gone)
    reason: str | None        # the SHUTDOWN event's reason, if one came
    returncode: int | None
    seconds: float


LKIT_INIT = re.compile(re.escape(MARKERS["init"]).encode())


class Machine:
    """A booted guest: console, QMP, command channel, timeline, events, badness."""

    # A guest that resets this often is looping (a panic with reboot, a failing init): waits stop.
    MAX_GUEST_RESETS = 3

    def __init__(self, target: BootTarget, *, workdir: Path, accel: str = accel_mod.AUTO, memory_mb: int = 1024,
                 cpus: int | None = None, ports: Sequence[int] = (), timeout_multiplier: float | None = None,
                 console_log: Path | None = None, qemu: str | None = None,
                 channel: str = ChannelMode.AUTO, badness_ignore: Sequence[str] = (),
                 fail_on_badness: str = BadnessPolicy.FATAL, publish: dict[int, int] | None = None,
                 exit_shutdown_timeout: float = 15, lan: LanPort | None = None, user_net: bool = True,
                 name: str | None = None, address: str | None = None, secure_boot: bool = False,
                 keys: KeySet | None = None, tpm: bool = False, arch: Arch = arch_table.DEFAULT) -> None:
        if channel not in tuple(ChannelMode):
            raise ValueError("channel must be auto, agent or console")
        if fail_on_badness not in tuple(BadnessPolicy):
            raise ValueError("fail_on_badness must be fatal, any or never")
        self.target = target
        self.workdir = Path(workdir)
        self.requested_accel = accel
        self.memory_mb = memory_mb
        self.requested_cpus = cpus
        self.cpus = cpus or 1              # settled by start() once the accelerator is known
        self.guest_ports = tuple(ports)
        self.publish = dict(publish or {})    # guest port -> fixed host port (`lkit run --publish`)
        self._multiplier_override = timeout_multiplier
        self.console_log = Path(console_log) if console_log else self.workdir / "console.log"
        self.arch = arch                   # the guest's architecture: QEMU binary, machine, firmware, devices
        self.qemu = qemu or arch.qemu
        self.channel_mode = ChannelMode(channel)
        self.fail_on_badness = BadnessPolicy(fail_on_badness)
        self.exit_shutdown_timeout = exit_shutdown_timeout   # graceful power-down bound in __exit__
        self.scanner = BadnessScanner(badness_ignore)
        self.lan = lan                     # the private segment's NIC, if any (block/unblock cut it)
        self.user_net = user_net
        self.name = name                   # the machine's name in a multi-machine suite
        self.address = address             # its declared address on the suite's network (informative)
        self.crashed = False
        if secure_boot and keys is None:
            raise ValueError("secure_boot needs the keys to enrol (lkit.core.secureboot.KeySet)")
        self.secure_boot = secure_boot     # EFI targets: Secure Boot firmware with `keys` enrolled
        self.keys = keys
        self.tpm = tpm                     # a software TPM 2.0 (swtpm) for this VM, state in workdir/tpm
        self._swtpm: SwTpm | None = None
        self.boots: list[Timeline] = []    # the timelines of boots before the current one (reboot())
        self._boot_start = 0               # console offset where the current boot began

        self.accel = accel_mod.Accel.TCG
        self.multiplier = 1.0
        self.argv: list[str] = []
        self.timeline = Timeline()
        self.badness: list[Badness] = []
        self.forwards: dict[int, int] = {}   # guest port -> host port
        self._proc: subprocess.Popen[bytes] | None = None
        self._qmp: QmpClient | None = None
        self._console: SerialStream | None = None
        self._chan_stream: SerialStream | None = None
        self._channel: AgentChannel | ConsoleChannel | None = None
        self._stack = contextlib.ExitStack()
        self._t0: float | None = None
        self._cmd_lock = threading.Lock()
        self._qemu_log: Path = self.workdir / "qemu.log"
        self._shutdown: ShutdownResult | None = None

    # -- lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> "Machine":
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            self.stop(graceful=exc_type is None)
        finally:
            self.close()

    def start(self) -> None:
        """Launch paused, connect QMP and both serial sockets, then `cont` (t0 of the timeline)."""
        if self._proc is not None:
            raise MachineError("machine already started")
        self.workdir.mkdir(parents=True, exist_ok=True)
        choice = accel_mod.resolve(self.requested_accel, kernel=self.target.kernel, qemu=self.qemu,
                                   multiplier=self._multiplier_override, arch=self.arch)
        self.accel, self.multiplier = choice.accel, choice.multiplier
        self.cpus = self.requested_cpus or default_cpus(self.accel)
        if shutil.which(self.qemu) is None and not Path(self.qemu).is_file():
            raise InfraError(f"QEMU not found: {self.qemu}",
                             hint=f"install the Debian package {self.arch.qemu_package}")
        with contextlib.ExitStack() as stack:
            stack.callback(self.close)      # undone by pop_all() once everything is up
            for attempt in range(3):
                try:
                    self._launch()
                    break
                except _ForwardRace:
                    self._teardown_process()
                    if self.publish:
                        raise InfraError("QEMU could not forward the published host ports "
                                         + ", ".join(f"{h}->{g}" for g, h in self.publish.items()),
                                         hint="a published host port is probably in use") from None
                    if attempt == 2:
                        raise InfraError("QEMU could not set up host port forwarding three times in a row",
                                         hint="another process keeps taking the free ports; retry") from None
            stack.pop_all()

    def _launch(self) -> None:
        sockdir = Path(tempfile.mkdtemp(prefix="lkit-", dir="/tmp"))
        self._stack.callback(shutil.rmtree, sockdir, True)
        sockets = Sockets.in_dir(sockdir)
        fw_code = fw_vars = None
        if uses_uefi(self.target, self.arch):
            fw = find_ovmf(secure_boot=self.secure_boot, arch=self.arch)
            template = None
            if self.secure_boot:
                assert self.keys is not None
                template = enrolled_vars(fw, self.keys, default_keys_dir() / "enrolled-vars")
            fw_code, fw_vars = fw.code, fw.copy_vars(self.workdir, template)
        tpm_argv: tuple[str, ...] = ()
        if self.tpm:
            if self._swtpm is not None:     # a retried launch: the last one's swtpm goes first
                self._swtpm.stop()
            self._swtpm = SwTpm(self.workdir / "tpm", sockdir / "tpm")
            self._stack.callback(self._swtpm.stop)
            self._swtpm.start()
            tpm_argv = tuple(self._swtpm.argv())
        self.forwards = {g: free_port() for g in self.guest_ports if g not in self.publish}
        self.forwards.update(self.publish)
        cfg = QemuConfig(self.target, sockets, accel=self.accel, memory_mb=self.memory_mb, cpus=self.cpus,
                         forwards=tuple(PortForward(h, g) for g, h in self.forwards.items()),
                         firmware_code=fw_code, firmware_vars=fw_vars, qemu=self.qemu,
                         user_net=self.user_net, lan=self.lan, secure_boot=self.secure_boot and self.target.efi,
                         tpm=tpm_argv, arch=self.arch)
        self.argv = build_argv(cfg)
        qlog = self._stack.enter_context(open(self._qemu_log, "wb"))
        try:
            self._proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=qlog, stderr=qlog,
                                          start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise InfraError(f"cannot start {self.qemu}: {exc}",
                             hint=f"install {self.arch.qemu_package}") from exc
        self._qmp = QmpClient(sockets.qmp, clock=self._since_t0)
        try:
            self._qmp.connect(10.0 * self.multiplier, self._exit_reason)
        except MachineError:
            self._raise_startup_failure()
            raise
        self._stack.callback(self._qmp.close)
        log = self._stack.enter_context(open(self.console_log, "w", encoding="utf-8"))
        chan_log = self._stack.enter_context(open(self.workdir / "channel.log", "w", encoding="utf-8"))
        self._console = self._open_stream(sockets.console, self.arch.console, log)
        self._chan_stream = self._open_stream(sockets.channel, self.arch.channel, chan_log)
        self._console.add_line_hook(self._on_console_line)
        self._console.start()
        self._chan_stream.start()
        status = self._qmp.command("query-status")
        if status.get("status") != "prelaunch":
            raise MachineError(f"QEMU is not paused before start (status {status.get('status')})")
        self._qmp.command("cont")
        self._t0 = time.monotonic()

    def _open_stream(self, path: Path, name: str, log: IO[str]) -> SerialStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._stack.callback(sock.close)
        deadline = time.monotonic() + 10.0 * self.multiplier
        while True:
            try:
                sock.connect(str(path))
                break
            except OSError as exc:
                if self._exit_reason() is not None or time.monotonic() > deadline:
                    self._raise_startup_failure()
                    raise MachineError(f"cannot connect to serial socket {path}: {exc}") from None
                time.sleep(0.02)
        stream = SerialStream(sock, name=name, log=log, t0=lambda: self._t0)
        self._stack.callback(stream.close)
        return stream

    def _raise_startup_failure(self) -> None:
        if self._proc is None:
            return
        try:   # QEMU may have closed QMP a moment before exiting: give it a bounded moment
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return
        text = self._qemu_output()
        if _FORWARD_FAILED.search(text):
            raise _ForwardRace(text)
        raise InfraError(f"QEMU failed to start (exit {self._proc.returncode}): {text.strip()[-800:]}",
                         hint="command line: " + " ".join(self.argv))

    def close(self) -> None:
        """Release everything; kill QEMU if it is still running (idempotent)."""
        self._teardown_process()
        self._stack.close()

    def kill(self) -> None:
        """Kill QEMU now, without asking the guest or QMP (close() still releases the rest)."""
        self._teardown_process()

    def _teardown_process(self) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        if self._swtpm is not None:     # it exits with QEMU's connection (--terminate); never rely on it
            self._swtpm.stop()

    # -- state -------------------------------------------------------------------------------------
    @property
    def cont_time(self) -> float | None:
        """time.monotonic() when `cont` was sent: t0 of the timeline (None before start)."""
        return self._t0

    def _since_t0(self) -> float:
        return time.monotonic() - self._t0 if self._t0 is not None else 0.0

    def _qemu_output(self) -> str:
        try:
            return self._qemu_log.read_text(errors="replace")
        except OSError:
            return ""

    def _exit_reason(self) -> str | None:
        if self._proc is None or self._proc.poll() is None:
            return None
        tail = self.console_text()[-1500:] if self._console else ""
        return (f"QEMU exited with code {self._proc.returncode}\n  command: {' '.join(self.argv)}\n"
                f"  qemu output: {self._qemu_output().strip()[-600:] or '(none)'}\n"
                f"  console tail:\n{tail}")

    def _abort_reason(self) -> str | None:
        if self.fail_on_badness != BadnessPolicy.NEVER:
            for b in self.badness:
                if b.fatal or self.fail_on_badness == BadnessPolicy.ANY:
                    return f"kernel badness on the console ({b.name}) at {b.host_time:.1f}s: {b.line.strip()}"
        # One reboot can give several RESET events in a burst: count bursts (2 s apart).
        resets: list[QmpEvent] = []
        for event in self.events:
            if event.name == "RESET" and event.data.get("guest", True):
                if not resets or event.host_time - resets[-1].host_time > 2.0:
                    resets.append(event)
        if len(resets) >= self.MAX_GUEST_RESETS:
            return (f"the guest reset itself {len(resets)} times (a reboot loop?); "
                    f"first at {resets[0].host_time:.1f}s after start")
        return self._exit_reason()

    def _on_console_line(self, line: str, now: float) -> None:
        host = now - self._t0 if self._t0 is not None else 0.0
        self.timeline.feed(line, host)
        found = self.scanner.scan(line, host)
        if found is not None:
            self.badness.append(found)

    @property
    def events(self) -> list[QmpEvent]:
        return list(self._qmp.events) if self._qmp else []

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def swtpm_pid(self) -> int | None:
        """The pid of this VM's swtpm (None without a TPM)."""
        return self._swtpm.pid if self._swtpm is not None else None

    def console_text(self) -> str:
        return self._console.text() if self._console else ""

    def _require(self) -> tuple[QmpClient, SerialStream, SerialStream]:
        if self.crashed:
            raise MachineError(f"machine {self.name or ''} crashed (crash() was called): it no longer runs".replace("  ", " "))
        if self._qmp is None or self._console is None or self._chan_stream is None:
            raise MachineError("machine not started")
        return self._qmp, self._console, self._chan_stream

    # -- console -----------------------------------------------------------------------------------
    def wait_for_console_text(self, regex: str, timeout: float, *, start: int = 0) -> re.Match[str]:
        """First match of `regex` in the console output (from byte `start`); bounded, aborts early."""
        _, console, _ = self._require()
        pattern = re.compile(regex.encode(), re.M)
        console.wait_for(pattern, start=start, timeout=timeout * self.multiplier,
                             abort_check=self._abort_reason, what=f"waiting for {regex!r} on the console")
        text = console.data(start).decode("utf-8", "replace")
        sm = re.compile(regex, re.M).search(text)
        if sm is None:  # the byte pattern matched across an invalid UTF-8 sequence
            raise MachineError(f"console matched {regex!r} only as bytes (invalid UTF-8 around it)")
        return sm

    def wait_for_marker(self, name: str, timeout: float) -> "TimelineEntry":
        """Wait for a boot-contract marker line (init, services, shell, poweroff, onboot:NAME, ...) and
        return its timeline entry (host seconds since cont, guest uptime)."""
        kind, _, sub = name.partition(":")
        if kind in ("onboot", "onshutdown") and sub:
            text = f"{re.escape(MARKERS[kind])} {re.escape(sub)} exit"
        elif kind in MARKERS and kind not in ("onboot", "onshutdown"):
            text = re.escape(MARKERS[kind])
        else:
            raise ValueError(f"unknown marker {name!r}")
        self.wait_for_console_text(text + r"[^\n]*\n", timeout, start=self._boot_start)   # the whole line
        entry = self.timeline.get(name)
        if entry is None:
            raise MachineError(f"marker {name!r} seen on the console but not parsed into the timeline")
        return entry

    def send_console(self, data: str | bytes) -> None:
        self._require()[1].send(data.encode() if isinstance(data, str) else data)

    def console_bytes(self, start: int = 0) -> bytes:
        """Raw console output from byte `start` (for attaching a terminal)."""
        return self._console.data(start) if self._console else b""

    # -- commands ----------------------------------------------------------------------------------
    def channel(self, timeout: float = BOOT_TIMEOUT) -> AgentChannel | ConsoleChannel:
        """The command channel, set up on first use: lkit-agent if it announces itself, else the console."""
        if self._channel is not None:
            return self._channel
        _, console, chan = self._require()
        deadline = time.monotonic() + timeout * self.multiplier
        agent = AgentChannel(chan, abort_check=self._abort_reason)
        if self.channel_mode == ChannelMode.AGENT:
            agent.wait_ready(timeout * self.multiplier)
            self._channel = agent
            return agent
        prompt_seen: float | None = None
        while self.channel_mode == ChannelMode.AUTO:
            if AgentChannel.READY.search(chan.data()):
                self._channel = agent
                return agent
            reason = self._abort_reason()
            if reason:
                raise MachineError(f"guest never offered a command channel: {reason}")
            now = time.monotonic()
            if prompt_seen is None and PROMPT.search(console.data()):
                prompt_seen = now
            # lkit's init always starts the agent: on a loaded host give it longer than a foreign image.
            patience = 30.0 if LKIT_INIT.search(console.data()) else 5.0
            if prompt_seen is not None and now - prompt_seen > patience * self.multiplier:
                break
            if now > deadline:
                raise MachineError(f"no command channel after {timeout * self.multiplier:.0f}s: neither "
                                   f"LKIT-AGENT-READY on {self.arch.channel} nor a shell prompt on the console",
                                   hint="console tail:\n" + self.console_text()[-1000:])
            time.sleep(0.1)
        fallback = ConsoleChannel(console, abort_check=self._abort_reason)
        fallback.setup(max(10.0, deadline - time.monotonic()))
        self._channel = fallback
        return fallback

    def run(self, command: str, timeout: float = 60) -> CommandResult:
        """Run `command` with `sh` in the guest; (rc, stdout, stderr). Killed in the guest at the timeout."""
        with self._cmd_lock:
            return self.channel().run(command, timeout * self.multiplier)

    def succeed(self, command: str, timeout: float = 60) -> str:
        result = self.run(command, timeout)
        if result.rc != 0:
            raise MachineError(f"command failed with rc {result.rc}: {command}\n  stdout: {result.stdout[-2000:]}"
                               f"\n  stderr: {result.stderr[-2000:]}")
        return result.stdout

    def fail(self, command: str, timeout: float = 60) -> str:
        result = self.run(command, timeout)
        if result.rc == 0:
            raise MachineError(f"command succeeded but was expected to fail: {command}\n"
                               f"  stdout: {result.stdout[-2000:]}")
        return result.stdout + result.stderr

    def wait_until_succeeds(self, command: str, timeout: float) -> str:
        deadline = time.monotonic() + timeout * self.multiplier
        last: CommandResult | None = None
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise MachineError(f"command did not succeed within {timeout * self.multiplier:.0f}s: {command}"
                                   + (f"\n  last rc {last.rc}, stderr: {last.stderr[-1000:]}" if last else ""))
            with self._cmd_lock:
                last = self.channel().run(command, max(1.0, min(left, 30.0)))
            if last.rc == 0:
                return last.stdout
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    # -- QMP ---------------------------------------------------------------------------------------
    def qmp(self, command: str, /, **args: Any) -> Any:
        return self._require()[0].command(command, **args)

    def forward_port(self, guest_port: int) -> int:
        """The 127.0.0.1 port forwarded to `guest_port` (added at run time through QMP if needed)."""
        if guest_port in self.forwards:
            return self.forwards[guest_port]
        if not self.user_net:
            raise MachineError(f"cannot forward guest port {guest_port}: this machine has no user-mode NIC",
                               hint="set `network: {host: true}` in the suite's NAME.test.yml")
        for _ in range(3):
            host = free_port()
            out = self.qmp("human-monitor-command",
                           **{"command-line": f"hostfwd_add net0 tcp:127.0.0.1:{host}-:{guest_port}"})
            if not out or not _FORWARD_FAILED.search(str(out)):
                self.forwards[guest_port] = host
                return host
        raise InfraError(f"could not forward a host port to guest port {guest_port}: {out}")

    # -- reboot with state -----------------------------------------------------------------------------
    def reboot(self, timeout: float = BOOT_TIMEOUT) -> Timeline:
        """Boot the guest again in the same QEMU, keeping its state: the guest syncs its disks, then a
        hardware reset (QMP system_reset). The disk (and its snapshot overlay), the EFI variables (this
        VM's VARS copy) and the TPM (the same swtpm; the reset clears its PCRs as a real one does)
        survive; RAM does not. Waits (bounded) for the shell and the command channel of the new boot,
        and returns the new boot's timeline; the earlier ones are in `boots`."""
        qmp, console, chan = self._require()
        with contextlib.suppress(MachineError):   # a guest that cannot sync is rebooted all the same
            self.run("sync", timeout=30)
        with self._cmd_lock:
            was_agent = isinstance(self._channel, AgentChannel)
            chan_mark = len(chan.data())
            self.boots.append(self.timeline)
            self.timeline = Timeline()
            self._boot_start = len(console.data())
            self._channel = None
            qmp.command("system_reset")
            self._t0 = time.monotonic()
        self.wait_for_marker("shell", timeout)
        if was_agent:
            agent = AgentChannel(chan, abort_check=self._abort_reason)
            chan.wait_for(AgentChannel.READY, start=chan_mark, timeout=timeout * self.multiplier,
                          abort_check=self._abort_reason, what="waiting for lkit-agent after the reboot")
            self._channel = agent
        return self.timeline

    # -- TPM -----------------------------------------------------------------------------------------
    def pcrs(self, bank: str = "sha256", indices: Sequence[int] = range(24)) -> dict[int, str]:
        """PCR values as the guest's kernel reads them from its TPM (/sys/class/tpm/tpm0/pcr-BANK/N,
        kernels 5.12+), lower-case hex; MachineError if the guest has no TPM or no such bank."""
        if not re.fullmatch(r"sha(1|256|384|512)", bank):
            raise ValueError(f"unknown PCR bank {bank!r}")
        wanted = " ".join(str(int(i)) for i in indices)
        out = self.succeed(f"cd /sys/class/tpm/tpm0/pcr-{bank} && for i in {wanted}; do echo $i $(cat $i); done")
        values: dict[int, str] = {}
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 2:
                values[int(parts[0])] = parts[1].lower()
        return values

    # -- faults (multi-machine suites) ---------------------------------------------------------------
    def block(self) -> None:
        """Cut this machine's link to its private segment (QMP set_link down: the guest sees no carrier,
        frames are dropped both ways); the user-mode NIC is untouched."""
        self._set_lan_link(False)

    def unblock(self) -> None:
        """Restore the link that block() cut."""
        self._set_lan_link(True)

    def _set_lan_link(self, up: bool) -> None:
        if self.lan is None:
            raise MachineError("this machine has no private network link to " + ("restore" if up else "cut"),
                               hint="machines of a multi-machine suite (`machines:` in NAME.test.yml) have one")
        self.qmp("set_link", name=self.lan.netdev_id, up=up)

    def crash(self) -> ShutdownResult:
        """Simulate a power failure: QEMU quits at once (no onshutdown, no power-off), as the NixOS
        driver's crash(). The other machines of a segment see this one vanish."""
        self.crashed = True
        return self.stop(graceful=False) or ShutdownResult("exited", None, None, 0.0)

    def screendump(self, path: Path) -> Path:
        """A PNG of the display (QMP screendump, format png), written atomically."""
        path = Path(path)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.qmp("screendump", filename=str(tmp), format="png")
        os.replace(tmp, path)
        return path

    # -- shutdown ----------------------------------------------------------------------------------
    def shutdown(self, timeout: float = 60) -> ShutdownResult:
        """system_powerdown (the guest runs its onshutdown) -> SHUTDOWN event -> quit -> kill, each bounded."""
        if self._shutdown is not None:
            return self._shutdown
        t = time.monotonic()
        proc, qmp = self._proc, self._qmp
        if proc is None or qmp is None:
            raise MachineError("machine not started")
        if proc.poll() is not None:
            self._shutdown = ShutdownResult("exited", self._shutdown_reason(), proc.returncode, 0.0)
            return self._shutdown
        mark = len(qmp.events)
        try:
            qmp.command("system_powerdown", timeout=10)
            event = qmp.wait_event("SHUTDOWN", timeout * self.multiplier, after=mark)
        except MachineError:
            event = None
        if event is not None:
            try:
                proc.wait(timeout=10 * self.multiplier)
                self._shutdown = ShutdownResult("powerdown", event.data.get("reason"), proc.returncode,
                                                time.monotonic() - t)
                return self._shutdown
            except subprocess.TimeoutExpired:
                pass
        return self._quit_or_kill(t)

    def stop(self, *, graceful: bool = True) -> ShutdownResult | None:
        """Stop the VM, bounded: `graceful` powers the guest off (its onshutdown runs, see shutdown()),
        otherwise QMP `quit`, then kill. Idempotent; None if it never started."""
        if self._shutdown is not None or self._proc is None:
            return self._shutdown
        if graceful:
            return self.shutdown(self.exit_shutdown_timeout)
        return self._quit_or_kill(time.monotonic())

    def _quit_or_kill(self, t: float) -> ShutdownResult:
        proc, qmp = self._proc, self._qmp
        assert proc is not None
        if qmp is not None and not qmp.closed and proc.poll() is None:
            with contextlib.suppress(MachineError):
                qmp.command("quit", timeout=5)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
                self._shutdown = ShutdownResult("quit", self._shutdown_reason(), proc.returncode,
                                                time.monotonic() - t)
                return self._shutdown
        if proc.poll() is None:
            self._teardown_process()
            self._shutdown = ShutdownResult("kill", None, proc.returncode, time.monotonic() - t)
        else:
            self._shutdown = ShutdownResult("exited", self._shutdown_reason(), proc.returncode,
                                            time.monotonic() - t)
        return self._shutdown

    def _shutdown_reason(self) -> str | None:
        ev = next((e for e in reversed(self.events) if e.name == "SHUTDOWN"), None)
        return ev.data.get("reason") if ev else None


def _load_prctl() -> Any:
    """libc's prctl, looked up once at import (None off glibc/Linux).

    Why here: the lookup (dlopen, allocations) is unsafe in a child forked while other threads run
    (see subprocess's preexec_fn warning); the child only makes the call.
    """
    try:
        import ctypes
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        prctl.restype = ctypes.c_int
        return prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL QEMU if the harness dies without cleaning up (crash, kill -9),
    so no orphan keeps a forwarded port. (Linux prctl PR_SET_PDEATHSIG; tied to the starting thread.)
    Only the call runs here: libc was loaded at import."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class _ForwardRace(MachineError):
    """QEMU lost the race for a free host port (retried with new ports)."""

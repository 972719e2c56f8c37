"""A private L2 segment between VMs: QEMU `dgram` netdevs over unix sockets and a small hub process.

Every VM on a segment gets a second NIC (virtio-net, after the user-mode one) whose netdev is

    -netdev dgram,id=lan0,local.type=unix,local.path=DIR/pN,remote.type=unix,remote.path=DIR/hub

QEMU sends each Ethernet frame the guest transmits as one datagram to the hub's socket and receives
frames on its own socket. The hub (lkit/machine/lanhub.py, one process per segment) forwards
every frame it receives from a port to every other port, as an Ethernet hub does. Why a hub even for
two VMs (a `dgram` pair would do there): one code path for any number of machines, exercised by every
multi-machine run; the hub knows its ports, so a frame from any other socket is dropped; and it counts
frames per port, which the reports show. Nothing leaves the private directory: no multicast, no IP
address, no root, no bridge or tap.

Lifetime: the hub starts before its VMs and is stopped after them by the `Segment` context manager
(SIGTERM, then SIGKILL, bounded), which removes the directory (sockets, counters). It also stops
when its parent dies (PR_SET_PDEATHSIG sends it SIGTERM, and it polls its parent id once a second),
and removes the directory itself then.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from lkit.errors import InfraError
from lkit.machine.lanhub import HUB_NAME

MAC_PREFIX = "52:54:00:4c:4b"   # 4c:4b = "LK": the private NIC of machine N gets ...:{N+1:02x}


def mac_for(index: int) -> str:
    """The private NIC's MAC address of the machine at `index` on its segment (0-based)."""
    if not 0 <= index < 255:
        raise ValueError("a segment holds at most 255 machines")
    return f"{MAC_PREFIX}:{index + 1:02x}"


@dataclass(frozen=True)
class LanPort:
    """One VM's attachment to a segment: what QEMU needs on its command line."""

    local: Path        # the VM's own datagram socket (QEMU binds it)
    hub: Path          # the hub's socket (QEMU sends there)
    mac: str
    netdev_id: str = "lan0"

    def argv(self) -> list[str]:
        def q(p: Path) -> str:
            return str(p).replace(",", ",,")
        return ["-netdev", f"dgram,id={self.netdev_id},local.type=unix,local.path={q(self.local)},"
                           f"remote.type=unix,remote.path={q(self.hub)}",
                "-device", f"virtio-net-pci,netdev={self.netdev_id},mac={self.mac},romfile=,id={self.netdev_id}-nic"]


class Segment:
    """A private segment: its directory, its hub process and one port per machine.

        with Segment(["server", "client"]) as seg:
            port = seg.port("server")        # LanPort for Machine(..., lan=port)
    """

    def __init__(self, names: list[str], *, python: str = sys.executable, start_timeout: float = 10.0) -> None:
        if len(set(names)) != len(names) or not names:
            raise ValueError("machine names on a segment must be unique and not empty")
        self.names = list(names)
        self.python = python
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self.counters: dict[str, dict[str, int]] = {}

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> Segment:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        if self._proc is not None:
            raise InfraError("segment already started")
        self.dir = Path(tempfile.mkdtemp(prefix="lkit-lan-", dir="/tmp"))
        try:
            if len(str(self.dir / "counters.json")) > 100:
                raise InfraError(f"socket directory {self.dir} is too long for unix sockets")
            from lkit.machine.vm import _PR_SET_PDEATHSIG, _PRCTL   # libc's prctl, looked up at import

            def term_with_parent() -> None:
                """In the hub before exec: SIGTERM when pytest dies without cleaning up (the hub then
                removes its folder itself; QEMU gets SIGKILL, see vm._die_with_parent)."""
                if _PRCTL is not None:
                    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)

            # the hub is a stdlib-only script run in isolated mode: no lkit import, a fast start
            argv = [self.python, "-I", str(Path(__file__).with_name("lanhub.py")), str(self.dir),
                    *[self._port_path(n).name for n in self.names]]
            with open(self.dir / "hub.log", "wb") as log:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                              start_new_session=True, preexec_fn=term_with_parent)
            assert self._proc.stdout is not None
            ready, _, _ = select.select([self._proc.stdout], [], [], self.start_timeout)
            line = self._proc.stdout.readline() if ready else b""
            if line.strip() != b"ready":
                text = (self.dir / "hub.log").read_text(errors="replace")[-800:]
                raise InfraError(f"the network hub did not start within {self.start_timeout:.0f} s: {text.strip() or '(no output)'}",
                                 hint=" ".join(argv))
        except BaseException:
            self.stop()
            raise

    def _port_path(self, name: str) -> Path:
        assert self.dir is not None
        return self.dir / f"p{self.names.index(name)}"

    def port(self, name: str) -> LanPort:
        """The attachment of machine `name` (its MAC follows its place in `names`)."""
        if self.dir is None:
            raise InfraError("segment not started")
        return LanPort(local=self._port_path(name), hub=self.dir / HUB_NAME, mac=mac_for(self.names.index(name)))

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the hub (SIGTERM: it writes its counters; SIGKILL after 5 s), remove the directory."""
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()
        if self.dir is not None:
            with contextlib.suppress(OSError, ValueError):
                raw = json.loads((self.dir / "counters.json").read_text())
                self.counters = {self.names[int(k[1:])]: v for k, v in raw.items() if k[1:].isdigit()
                                 and int(k[1:]) < len(self.names)}
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

"""The private segment's hub (lkit.machine.lan / lanhub.py), with plain datagram sockets as VMs."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lkit.machine.lan import LanPort, Segment, mac_for
from lkit.machine.qemu import QemuConfig, Sockets, build_argv
from lkit.machine.artifacts import BootTarget


def _vm_socket(port: LanPort) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(port.local))
    sock.settimeout(5)
    return sock


def test_hub_forwards_to_every_other_port_and_counts() -> None:
    with Segment(["a", "b", "c"]) as seg:
        socks = {n: _vm_socket(seg.port(n)) for n in seg.names}
        socks["a"].sendto(b"frame-from-a", str(seg.port("a").hub))
        assert socks["b"].recv(100) == b"frame-from-a"
        assert socks["c"].recv(100) == b"frame-from-a"
        socks["a"].settimeout(0.3)
        with pytest.raises(TimeoutError):
            socks["a"].recv(100)            # never echoed to its sender
        socks["c"].sendto(b"x" * 1500, str(seg.port("c").hub))
        assert socks["a"].recv(2000) == b"x" * 1500
        assert socks["b"].recv(2000) == b"x" * 1500
        for s in socks.values():
            s.close()
        folder = seg.dir
    assert folder is not None and not folder.exists()
    assert seg.counters["a"] == {"in": 1, "out": 1, "dropped": 0}
    assert seg.counters["c"]["in"] == 1 and seg.counters["b"]["out"] == 2


def test_hub_drops_strangers_and_ports_not_up_yet() -> None:
    with Segment(["a", "b"]) as seg:
        a = _vm_socket(seg.port("a"))
        stranger = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        assert seg.dir is not None
        stranger.bind(str(seg.dir / "intruder"))
        stranger.sendto(b"not ours", str(seg.port("a").hub))   # not a port of the segment: dropped
        a.sendto(b"to nobody", str(seg.port("a").hub))          # b is not bound: dropped, counted
        a.settimeout(0.3)
        with pytest.raises(TimeoutError):
            a.recv(100)
        a.close()
        stranger.close()
    assert seg.counters["b"]["dropped"] == 1 and seg.counters["a"]["in"] == 1


def test_segment_stop_leaves_no_process_and_is_idempotent() -> None:
    seg = Segment(["a", "b"])
    seg.start()
    pid = seg.pid
    assert pid is not None and seg.running
    seg.stop()
    seg.stop()
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()


def test_hub_dies_with_its_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL (no clean-up) takes its hub with it."""
    script = tmp_path / "parent.py"
    script.write_text("import sys, time\nfrom lkit.machine.lan import Segment\n"
                      "seg = Segment(['a', 'b']); seg.start(); print(seg.pid, seg.dir, flush=True); time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert proc.stdout is not None
    pid_text, folder = proc.stdout.readline().split()
    hub = int(pid_text)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(f"/proc/{hub}").exists():
        if "zombie" in Path(f"/proc/{hub}/status").read_text().lower():
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{hub}").exists() or "zombie" in Path(f"/proc/{hub}/status").read_text().lower()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and Path(folder).exists():
        time.sleep(0.1)
    assert not Path(folder).exists(), "the orphaned hub removes its socket folder"


def test_unique_names_and_macs() -> None:
    with pytest.raises(ValueError):
        Segment(["a", "a"])
    assert mac_for(0) == "52:54:00:4c:4b:01" and mac_for(9) == "52:54:00:4c:4b:0a"


def test_qemu_argv_has_the_private_nic_after_the_user_one(tmp_path: Path) -> None:
    target = BootTarget(format="kernel+initrd", kind="direct", efi=False, kernel=tmp_path / "k", initrd=tmp_path / "i")
    port = LanPort(local=tmp_path / "p0", hub=tmp_path / "hub", mac=mac_for(0))
    argv = build_argv(QemuConfig(target, Sockets.in_dir(tmp_path), lan=port))
    text = " ".join(argv)
    assert text.index("user,id=net0") < text.index("dgram,id=lan0")
    assert f"local.path={tmp_path / 'p0'}" in text and f"remote.path={tmp_path / 'hub'}" in text
    assert "mac=52:54:00:4c:4b:01" in text
    alone = " ".join(build_argv(QemuConfig(target, Sockets.in_dir(tmp_path), lan=port, user_net=False)))
    assert "user,id=net0" not in alone and "dgram,id=lan0" in alone

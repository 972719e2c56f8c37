"""The hub of a private segment (see lkit.machine.lan), run as `python -I lanhub.py DIR PORT...`.

Standard library only, so that it starts fast in isolated mode. It binds DIR/hub (a unix datagram
socket) and forwards every datagram that comes from DIR/PORT to every other DIR/PORT, as an Ethernet
hub forwards frames; anything from another socket, or larger than MAX_FRAME, is dropped. Sends never
block: a port that is not bound yet, gone or full loses the frame (counted). It stops on SIGTERM (which its
parent's death also sends it, PR_SET_PDEATHSIG) or within a second of the parent's death; orphaned,
it removes DIR itself (nobody else will), otherwise it writes its counters to DIR/counters.json.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

MAX_FRAME = 65536          # QEMU sends one Ethernet frame per datagram
HUB_NAME = "hub"


def serve(directory: Path, ports: list[str]) -> int:
    """Forward every datagram from one port's socket to all other ports; stop on SIGTERM or when the
    parent goes away. Counters (frames in/out/dropped per port) go to counters.json on exit."""
    parent = os.getppid()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(directory / HUB_NAME))
    sock.setblocking(False)
    peers = {str(directory / p): p for p in ports}
    counters = {p: {"in": 0, "out": 0, "dropped": 0} for p in ports}
    stopping = False

    def on_term(_sig: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # Ctrl-C goes to pytest; it stops the hub itself
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    last_parent_check = time.monotonic()
    while not stopping:
        try:
            readable, _, _ = select.select([sock], [], [], 1.0)
        except InterruptedError:
            continue
        if time.monotonic() - last_parent_check >= 1.0:
            last_parent_check = time.monotonic()
            if os.getppid() != parent:   # orphaned: nobody will read the counters or clean up
                sock.close()
                shutil.rmtree(directory, ignore_errors=True)
                return 0
        if not readable:
            continue
        for _ in range(256):     # drain a burst, then look at the signals again
            try:
                frame, sender = sock.recvfrom(MAX_FRAME + 1)
            except BlockingIOError:
                break
            except OSError:
                break
            origin = peers.get(sender) if isinstance(sender, str) else None
            if origin is None or len(frame) > MAX_FRAME:
                continue          # not one of our machines, or not a frame
            counters[origin]["in"] += 1
            for path, name in peers.items():
                if name == origin:
                    continue
                try:
                    sock.sendto(frame, path)
                    counters[name]["out"] += 1
                except OSError as exc:
                    # the VM is not up yet or gone (ENOENT, ECONNREFUSED), or its queue is full: drop
                    if exc.errno not in (errno.ENOENT, errno.ECONNREFUSED, errno.EAGAIN, errno.ENOBUFS):
                        sys.stderr.write(f"hub: send to {name}: {exc}\n")
                    counters[name]["dropped"] += 1
    sock.close()
    if os.getppid() != parent:    # stopped by the parent's death (PR_SET_PDEATHSIG): clean up alone
        shutil.rmtree(directory, ignore_errors=True)
        return 0
    tmp = directory / "counters.json.tmp"
    tmp.write_text(json.dumps(counters))
    os.replace(tmp, directory / "counters.json")
    return 0


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.stderr.write("usage: python -I lanhub.py DIR PORT...\n")
        sys.exit(2)
    sys.exit(serve(Path(sys.argv[1]), sys.argv[2:]))

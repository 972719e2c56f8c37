"""`lkit run`: boot built artifacts for a person, console attached to the terminal (like `linuxkit run qemu`).

Keys: Ctrl-A X quits (the VM is killed cleanly), Ctrl-A Ctrl-A sends a literal Ctrl-A; other keys go to
the guest. Without a terminal, SIGINT/SIGTERM quit. The run also ends when the guest powers off.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import select
import signal
import sys
import tempfile
import termios
import tty
from collections.abc import Iterator
from pathlib import Path

from lkit.core import arch as arch_table
from lkit.errors import MachineError
from lkit.machine import accel
from lkit.machine.artifacts import FORMAT_KINDS, boot_target, expand_prefix, guess_format
from lkit.machine.vm import Machine

CTRL_A = b"\x01"


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    p = subparsers.add_parser("run", help="boot built artifacts under QEMU with the console attached",
                              description=__doc__)
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="output files or a NAME prefix (e.g. out/linuxkit -> out/linuxkit-kernel, ...)")
    p.add_argument("--format", choices=sorted(FORMAT_KINDS), help="format (default: from the file names)")
    p.add_argument("--publish", action="append", default=[], metavar="HOST:GUEST",
                   help="forward 127.0.0.1:HOST to the guest's TCP port GUEST (repeatable)")
    p.add_argument("--mem", type=int, default=1024, help="memory in MB (default 1024)")
    p.add_argument("--cpus", type=int, help="virtual CPUs (default: 2 under KVM, 1 under TCG)")
    p.add_argument("--accel", choices=accel.CHOICES, default=accel.AUTO, help="accelerator (default auto)")
    p.add_argument("--workdir", type=Path, help="keep console.log and QEMU's log here (default: a temp dir)")
    p.add_argument("--secure-boot", action="store_true",
                   help="EFI formats: UEFI firmware (OVMF; AAVMF with --arch arm64) with Secure Boot on and "
                        "lkit's test keys enrolled (an image built with `lkit build --sign` boots; an unsigned "
                        "one is refused)")
    p.add_argument("--sign-keys", type=Path, metavar="DIR", help="enrol DIR/pk.crt, kek.crt, db.crt instead")
    p.add_argument("--tpm", action="store_true", help="give the VM a software TPM 2.0 (swtpm)")
    p.add_argument("--arch", choices=arch_table.NAMES, default=arch_table.DEFAULT.name,
                   help="the guest's architecture (default amd64; arm64 runs under TCG on an x86_64 host)")
    p.set_defaults(func=run_command)


def parse_publish(specs: list[str]) -> dict[int, int]:
    """['8080:80'] -> {80: 8080} (guest -> host)."""
    out: dict[int, int] = {}
    for spec in specs:
        host, sep, guest = spec.partition(":")
        if not sep or not host.isdigit() or not guest.isdigit() or not (0 < int(host) < 65536) \
                or not (0 < int(guest) < 65536):
            raise MachineError(f"--publish {spec!r}: expected HOST:GUEST port numbers, e.g. 8080:80")
        out[int(guest)] = int(host)
    return out


def resolve_files(images: list[str]) -> list[Path]:
    files: list[Path] = []
    for image in images:
        found = expand_prefix(Path(image))
        if not found:
            raise MachineError(f"{image}: no such file, and no files start with that name",
                               hint="pass the built files or their NAME prefix (e.g. out/linuxkit)")
        files += found
    return files


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Raw mode on a terminal (restored on every exit path); yields whether `fd` is a terminal."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield True
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def run_command(args: argparse.Namespace) -> int:
    files = resolve_files(args.images)
    fmt = args.format or guess_format(files)
    target = boot_target(fmt, files)
    publish = parse_publish(args.publish)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lkit-run-")))
        print(f"lkit: booting {fmt} ({', '.join(f.name for f in files)}); Ctrl-A X to quit", file=sys.stderr)
        keys = None
        if args.secure_boot or args.sign_keys:
            from lkit.core.secureboot import generated_keys, keys_in

            keys = keys_in(args.sign_keys) if args.sign_keys else generated_keys()
        machine = stack.enter_context(Machine(target, workdir=workdir, accel=args.accel, memory_mb=args.mem,
                                              cpus=args.cpus, publish=publish, secure_boot=keys is not None,
                                              keys=keys, tpm=args.tpm, arch=arch_table.get(args.arch)))
        for guest, host in sorted(machine.forwards.items()):
            print(f"lkit: 127.0.0.1:{host} -> guest port {guest}", file=sys.stderr)
        stop = {"flag": False}

        def on_signal(signum: int, frame: object) -> None:
            stop["flag"] = True

        old_term = signal.signal(signal.SIGTERM, on_signal)
        stack.callback(signal.signal, signal.SIGTERM, old_term)
        stdin_fd = sys.stdin.fileno()
        is_tty = stack.enter_context(raw_terminal(stdin_fd))
        _pump(machine, stdin_fd if is_tty else None, stop)
        if machine.running:
            machine.stop(graceful=False)   # a person asked to quit: no graceful power-down wait
    print("\r\nlkit: VM stopped", file=sys.stderr)
    return 0


def _pump(machine: Machine, stdin_fd: int | None, stop: dict[str, bool]) -> None:
    """Copy console output to stdout and keys to the guest until Ctrl-A X, a signal or power-off."""
    out = sys.stdout.buffer
    pos = 0
    escape = False
    while not stop["flag"] and machine.running:
        data = machine.console_bytes(pos)
        if data:
            pos += len(data)
            out.write(data)
            out.flush()
        readable = [stdin_fd] if stdin_fd is not None else []
        ready, _, _ = select.select(readable, [], [], 0.05)
        if not ready:
            continue
        keys = os.read(stdin_fd, 1024)  # type: ignore[arg-type]
        if not keys:
            return
        send = bytearray()
        for byte in keys:
            b = bytes([byte])
            if escape:
                escape = False
                if b in (b"x", b"X"):
                    return
                send += b   # Ctrl-A Ctrl-A -> one Ctrl-A; Ctrl-A other -> other
                continue
            if b == CTRL_A:
                escape = True
                continue
            send += b
        if send:
            machine.send_console(bytes(send))
    data = machine.console_bytes(pos)
    if data:
        out.write(data)
        out.flush()

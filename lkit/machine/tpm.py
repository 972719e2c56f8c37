"""A software TPM 2.0 per VM: swtpm (Debian's swtpm package) bound to the VM's lifetime.

swtpm runs with `--terminate` (it exits when QEMU's control connection closes), in its own session
with PR_SET_PDEATHSIG (it dies with the harness), and `stop()` ends it (SIGTERM, then SIGKILL,
bounded) on every path out of the Machine, like QEMU. Its state lives in the VM's private folder, so
a reboot of the same VM (`Machine.reboot`) keeps it; a new VM starts with a fresh TPM.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from lkit.errors import InfraError

STARTUP_TIMEOUT = 10.0


class SwTpm:
    """One swtpm process: `with SwTpm(state_dir, socket) as tpm:` -> tpm.argv() for QEMU."""

    def __init__(self, state_dir: Path, socket_path: Path, *, binary: str = "swtpm") -> None:
        self.state_dir = Path(state_dir)
        self.socket_path = Path(socket_path)
        self.binary = binary
        self.log = self.state_dir.parent / "swtpm.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> "SwTpm":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        """Start swtpm and wait (bounded) for its control socket."""
        from lkit.machine.vm import _die_with_parent   # one PR_SET_PDEATHSIG helper for every child

        if shutil.which(self.binary) is None:
            raise InfraError(f"{self.binary} not found: `tpm: true` needs a software TPM",
                             hint="install the Debian package swtpm (and swtpm-tools)")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.socket_path.unlink(missing_ok=True)
        argv = [self.binary, "socket", "--tpm2", "--terminate",
                "--tpmstate", f"dir={self.state_dir},mode=0600",
                "--ctrl", f"type=unixio,path={self.socket_path},mode=0600",
                "--log", f"file={self.log},level=1"]
        with open(self.log, "ab") as out:
            try:
                self._proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                              start_new_session=True, preexec_fn=_die_with_parent)
            except OSError as exc:
                raise InfraError(f"cannot start {self.binary}: {exc}", hint="install the Debian package swtpm") from exc
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not self.socket_path.exists():
            if self._proc.poll() is not None or time.monotonic() > deadline:
                code = self._proc.poll()
                self.stop()
                text = self.log.read_text(errors="replace")[-600:] if self.log.exists() else ""
                raise InfraError(f"swtpm did not offer its socket {self.socket_path} within {STARTUP_TIMEOUT:.0f}s"
                                 + (f" (exit {code})" if code is not None else "") + (f": {text.strip()}" if text else ""))
            time.sleep(0.02)

    def argv(self, ident: str = "tpm0") -> list[str]:
        """QEMU's side: a chardev to the control socket, the emulator backend, a TIS device."""
        path = str(self.socket_path).replace(",", ",,")
        return ["-chardev", f"socket,id=chr{ident},path={path}",
                "-tpmdev", f"emulator,id={ident},chardev=chr{ident}",
                "-device", f"tpm-tis,tpmdev={ident}"]

    def stop(self, timeout: float = 5.0) -> None:
        """End swtpm (idempotent): SIGTERM to its session, then SIGKILL; always reaped."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=wait)
                return

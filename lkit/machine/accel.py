"""Choosing the accelerator: `auto|kvm|tcg`.

"/dev/kvm exists" is not "KVM works": on some hosts guests hang in early kernel boot under KVM. So
`auto` proves KVM with a bounded probe boot (the kernel must reach its root-mount stage within a few
seconds; the probe is killed otherwise), caches the verdict on disk keyed by QEMU version + host kernel
+ /dev/kvm presence, and warns once per process when it falls back to TCG.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import tempfile
import time
import warnings
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import InfraError, LkitError


class Accel(StrEnum):
    """The accelerator a guest runs under."""

    KVM = "kvm"
    TCG = "tcg"


AUTO = "auto"                            # not an accelerator: the request to probe KVM, else TCG
CHOICES: tuple[str, ...] = (AUTO, *Accel)  # what --accel / --lkit-accel accept
MULTIPLIERS = {Accel.KVM: 1.0, Accel.TCG: 2.0}   # every wait's timeout is multiplied by this
MULTIPLIER_ENV = "LKIT_TIMEOUT_MULTIPLIER"
PROBE_TIMEOUT = 8.0
_PROBE_DONE = re.compile(rb"(VFS: |Run /init|Kernel panic|Freeing unused kernel)")
_warned = False


class AccelWarning(UserWarning):
    """KVM was asked for implicitly (auto) but is not usable: running under TCG (slower)."""


@dataclass(frozen=True)
class AccelChoice:
    accel: Accel
    multiplier: float
    reason: str


def cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lkit" / "accel.json"


def qemu_version(qemu: str) -> str:
    arch = next((a for a in arch_table.ARCHES.values() if a.qemu == Path(qemu).name), arch_table.DEFAULT)
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=10, check=True)
    except FileNotFoundError:
        raise InfraError(f"QEMU not found: {qemu}",
                         hint=f"install the Debian package {arch.qemu_package} "
                              f"(apt-get install {arch.qemu_package})") from None
    except (subprocess.SubprocessError, OSError) as exc:
        raise InfraError(f"cannot run {qemu} --version: {exc}") from exc
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


def cache_key(qemu: str, arch: Arch = arch_table.DEFAULT) -> str:
    key = "|".join((qemu_version(qemu), os.uname().release, str(os.access("/dev/kvm", os.R_OK | os.W_OK))))
    return key if arch == arch_table.DEFAULT else f"{key}|{arch.name}"


def default_probe_kernel(arch: Arch = arch_table.DEFAULT) -> Path | None:
    """A kernel to probe with when the target has none of its own (ISO/disk formats)."""
    env = os.environ.get("LKIT_PROBE_KERNEL")
    candidates = [Path(env)] if env else []
    candidates.append(Path(f"/boot/vmlinuz-{os.uname().release}"))
    from lkit.machine.testguest import cached_kernel  # cached Debian cloud kernel, if downloaded
    cached = cached_kernel(arch)
    if cached is not None:
        candidates.append(cached)
    return next((c for c in candidates if c.is_file() and os.access(c, os.R_OK)), None)


def probe_kvm(kernel: Path, qemu: str = "qemu-system-x86_64", timeout: float = PROBE_TIMEOUT,
              arch: Arch = arch_table.DEFAULT) -> tuple[bool, str]:
    """Boot `kernel` under KVM with no root: True if it gets to mounting root within `timeout`."""
    with tempfile.TemporaryDirectory(prefix="lkit-probe-") as tmp:
        log = Path(tmp) / "console"
        machine = f"{arch.qemu_machine},accel=kvm" + (",gic-version=host" if arch.qemu_machine == "virt" else "")
        argv = [qemu, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
                "-machine", machine, "-cpu", "host", "-m", "256",
                "-chardev", f"file,id=c0,path={str(log).replace(',', ',,')}", "-serial", "chardev:c0",
                "-kernel", str(kernel), "-append", f"console={arch.console} panic=-1 root=/dev/nonexistent"]
        with subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE) as proc:
            try:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    if log.exists() and _PROBE_DONE.search(log.read_bytes()):
                        return True, f"probe boot reached the root mount under KVM in " \
                                     f"{timeout - (deadline - time.monotonic()):.1f}s"
                    if proc.poll() is not None:
                        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
                        return False, f"QEMU exited with {proc.returncode} under KVM: {err[-300:]}"
                    time.sleep(0.1)
                return False, f"probe boot under KVM printed nothing useful within {timeout:.0f}s (guest hangs)"
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait(timeout=10)


def env_multiplier(text: str) -> float:
    """LKIT_TIMEOUT_MULTIPLIER's value as a number; a user error (no traceback) when it is not one."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise LkitError(f"environment variable {MULTIPLIER_ENV} is {text!r}, not a positive number",
                        hint=f"set {MULTIPLIER_ENV} to a positive number such as 1.5 or 3 (every guest "
                             f"timeout is multiplied by it), or unset it for the default "
                             f"(x{MULTIPLIERS[Accel.KVM]:g} under KVM, x{MULTIPLIERS[Accel.TCG]:g} under TCG)")
    return value


def resolve(requested: str = "auto", *, kernel: Path | None = None, qemu: str | None = None,
            multiplier: float | None = None, use_cache: bool = True,
            arch: Arch = arch_table.DEFAULT) -> AccelChoice:
    """The accelerator to use and its timeout multiplier (LKIT_TIMEOUT_MULTIPLIER overrides).

    KVM runs only guests of the host's own architecture: for another one (arm64 on an x86_64 host)
    `auto` is TCG without a probe or a warning, and an explicit `kvm` is an InfraError."""
    qemu = qemu or arch.qemu
    env_mult = os.environ.get(MULTIPLIER_ENV)
    if multiplier is None and env_mult:
        multiplier = env_multiplier(env_mult)
    requested = (requested or AUTO).lower()
    if requested not in CHOICES:
        raise InfraError(f"unknown accelerator {requested!r}", hint="use auto, kvm or tcg")
    host = arch_table.host()
    if arch != host:
        if requested == Accel.KVM:
            raise InfraError(f"KVM cannot run {arch.name} guests on this {host.name} host",
                             hint="use --accel tcg (or auto), or run on a host of that architecture")
        return AccelChoice(Accel.TCG, multiplier or MULTIPLIERS[Accel.TCG],
                           f"{arch.name} guest on a {host.name} host: TCG emulation")
    if requested != AUTO:
        return AccelChoice(Accel(requested), multiplier or MULTIPLIERS[Accel(requested)], "requested")
    ok, reason = _kvm_verdict(qemu, kernel, use_cache, arch)
    accel = Accel.KVM if ok else Accel.TCG
    if not ok:
        _warn_once(reason)
    return AccelChoice(accel, multiplier or MULTIPLIERS[accel], reason)


def _kvm_verdict(qemu: str, kernel: Path | None, use_cache: bool,
                 arch: Arch = arch_table.DEFAULT) -> tuple[bool, str]:
    if not os.path.exists("/dev/kvm"):
        return False, "/dev/kvm does not exist"
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is not readable and writable by this user"
    key = cache_key(qemu, arch)
    path = cache_path()
    if use_cache:
        try:
            cached = json.loads(path.read_text())
            if cached.get("key") == key:
                return bool(cached["kvm"]), str(cached["reason"]) + " (cached verdict)"
        except (OSError, ValueError, KeyError):
            pass
    probe_kernel = kernel or default_probe_kernel(arch)
    if probe_kernel is None:
        return False, "no kernel available to prove KVM works (set LKIT_PROBE_KERNEL)"
    ok, reason = probe_kvm(probe_kernel, qemu) if arch == arch_table.DEFAULT else \
        probe_kvm(probe_kernel, qemu, arch=arch)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"key": key, "kvm": ok, "reason": reason}))
        os.replace(tmp, path)
    except OSError:
        pass
    return ok, reason


def _warn_once(reason: str) -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(AccelWarning(f"lkit: KVM not usable ({reason}); running guests under TCG emulation "
                               f"(slower; timeouts x{MULTIPLIERS[Accel.TCG]:g}). Use --accel tcg to silence this."),
                  stacklevel=3)

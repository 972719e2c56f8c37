"""Host tools and data files the bootable formats need, run reproducibly.

Every tool is looked up with the Debian package that provides it, so a missing tool is an
`InfraError` that says what to install rather than a FileNotFoundError. Every command runs from an
argument list (never a shell string), with a bounded timeout and an environment that pins the
things which would otherwise leak the host into the output (time, time zone, locale).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from lkit.build.outputs.base import SOURCE_DATE_EPOCH
from lkit.errors import BuildError, InfraError

# tool -> Debian package providing it
TOOL_PACKAGES: dict[str, str] = {
    "xorriso": "xorriso",
    "mkfs.vfat": "dosfstools",
    "mmd": "mtools",
    "mcopy": "mtools",
    "mdir": "mtools",
    "objcopy": "binutils",
    "aarch64-linux-gnu-objcopy": "binutils-aarch64-linux-gnu",   # arm64 PE files (binutils' objcopy is x86 only)
    "objdump": "binutils",
    "syslinux": "syslinux",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "qemu-img": "qemu-utils",
}

# Where tools live when PATH is minimal (sbin is not always on a user's PATH).
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")

DEFAULT_TIMEOUT = 600.0


def tool(name: str) -> str:
    """Absolute path of a host tool, or an InfraError naming the Debian package to install."""
    found = shutil.which(name) or shutil.which(name, path=os.pathsep.join(_EXTRA_DIRS))
    if found is None:
        package = TOOL_PACKAGES.get(name, name)
        raise InfraError(f"host tool {name!r} not found", hint=f"install it: apt-get install {package}")
    return found


def data_file(path: str | Path, package: str) -> Path:
    """A file shipped by a Debian package (boot loaders, stubs), or an InfraError naming it."""
    p = Path(path)
    if not p.is_file():
        raise InfraError(f"{p} not found", hint=f"install it: apt-get install {package}")
    return p


def package_version(package: str) -> str:
    """Installed Debian version of a package, recorded so outputs say which loader they carry."""
    dpkg = shutil.which("dpkg-query")
    if dpkg is None:
        return "unknown"
    proc = subprocess.run(
        [dpkg, "-W", "-f", "${Version}", package],
        capture_output=True, text=True, timeout=30, check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else "unknown"


def reproducible_env(*, drop: Sequence[str] = ()) -> dict[str, str]:
    """Environment that makes xorriso, mtools and mkfs.vfat use the fixed build time.

    `drop` removes variables for tools that refuse them next to explicit options (mksquashfs
    rejects SOURCE_DATE_EPOCH together with -all-time/-mkfs-time).
    """
    env = dict(os.environ)
    env.update(
        SOURCE_DATE_EPOCH=str(SOURCE_DATE_EPOCH),
        TZ="UTC",
        LC_ALL="C",
        MTOOLS_SKIP_CHECK="1",
        MTOOLSRC="/dev/null",
    )
    for name in drop:
        env.pop(name, None)
    return env


def run(
    args: Sequence[str | Path],
    *,
    cwd: Path | None = None,
    stdin_path: Path | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    drop_env: Sequence[str] = (),
) -> str:
    """Run one host command (first element is a tool name); return stdout, raise BuildError on failure."""
    argv = [tool(str(args[0]))] + [str(a) for a in args[1:]]
    try:
        with open(stdin_path if stdin_path else os.devnull, "rb") as stdin:
            proc = subprocess.run(
                argv, cwd=cwd, stdin=stdin, capture_output=True, env=reproducible_env(drop=drop_env),
                timeout=timeout, check=False,
            )
    except subprocess.TimeoutExpired as exc:
        raise InfraError(f"{args[0]} did not finish within {timeout:.0f} s",
                         hint="the host may be overloaded or out of disk space") from exc
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()[-2000:]
        raise BuildError(f"{args[0]} failed with exit code {proc.returncode}: {err}",
                         hint="command: " + " ".join(argv))
    return proc.stdout.decode(errors="replace")

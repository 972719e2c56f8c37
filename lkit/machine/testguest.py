"""A tiny self-made test guest (Debian cloud kernel + busybox initrd) for the machine layer's own tests
and the boot benchmark's floor. Downloads are cached under $XDG_CACHE_HOME/lkit/test-guest.

The initrd follows lkit's guest boot contract closely enough to exercise the machine layer: the
console markers, lkit-agent on ttyS1, a root shell on ttyS0, virtio-net up as 10.0.2.15, and busybox
acpid powering off on the ACPI power button.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from lkit.core import buildtime
from lkit.errors import InfraError

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "fixtures/pkgs/init/files/usr/sbin/lkit-agent"
NET_MODULES = ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci",
               "failover", "net_failover", "virtio_net")
OTHER_MODULES = ("button", "evdev", "pvpanic", "pvpanic-mmio")
EPOCH = buildtime.EPOCH

INIT = r"""#!/bin/sh
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /run /tmp
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
up() { read -r u _ </proc/uptime; echo "$u"; }
echo "Welcome to LinuxKit"
echo "lkit: init start uptime=$(up)"
rc=0
for m in $(cat /etc/lkit-modules); do insmod "/lib/modules/$m.ko" 2>/dev/null || rc=1; done
echo "lkit: onboot modules exit $rc uptime=$(up)"
ip link set lo up
if [ -e /sys/class/net/eth0 ]; then
    ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0; ip route add default via 10.0.2.2
fi
hostname lkit-test
[ "$LKIT_SHELL_ONLY" = 1 ] || acpid -c /etc/acpi
[ "$LKIT_SHELL_ONLY" = 1 ] || /usr/sbin/lkit-agent /dev/ttyS1 &
echo "lkit: services started uptime=$(up)"
echo "lkit: shell ready uptime=$(up)"
while :; do setsid cttyhack sh -l; sleep 1; done
"""

POWEROFF = r"""#!/bin/sh
read -r u _ </proc/uptime
echo "lkit: poweroff uptime=$u" >/dev/console
poweroff -f
"""


@dataclass(frozen=True)
class SampleGuest:
    kernel: Path
    initrd: Path
    cmdline: str = "console=ttyS0 panic=-1 loglevel=6"

    def files(self, tmp: Path, name: str = "test") -> list[Path]:
        """kernel+initrd outputs under LinuxKit's names (symlinks into the cache)."""
        out = []
        for suffix, src in (("-kernel", self.kernel), ("-initrd.img", self.initrd)):
            dst = tmp / f"{name}{suffix}"
            if not dst.exists():
                dst.symlink_to(src)
            out.append(dst)
        cmd = tmp / f"{name}-cmdline"
        cmd.write_text(self.cmdline + "\n")
        return out + [cmd]


def cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lkit" / "test-guest"


def cached_kernel() -> Path | None:
    d = cache_dir()
    found = sorted(d.glob("*/vmlinuz")) if d.is_dir() else []
    return found[-1] if found else None


def _kernel_package() -> str:
    try:
        out = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise InfraError(f"apt-cache depends linux-image-cloud-amd64 failed: {exc}",
                         hint="run on Debian 12 with apt sources for bookworm") from exc
    m = re.search(r"Depends: (linux-image-\S+-cloud-amd64)", out)
    if not m:
        raise InfraError("cannot find the cloud kernel package behind linux-image-cloud-amd64")
    return m.group(1)


def _download(packages: list[str], dest: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="lkit-dl-") as tmp:
        os.chmod(tmp, 0o755)
        unpack = Path(tmp) / "x"
        try:
            subprocess.run(["apt-get", "download", *packages], cwd=tmp, capture_output=True, timeout=600,
                           check=True)
            for deb in Path(tmp).glob("*.deb"):
                subprocess.run(["dpkg-deb", "-x", str(deb), str(unpack)], check=True, timeout=300)
        except (OSError, subprocess.SubprocessError) as exc:
            raise InfraError(f"apt-get download {' '.join(packages)} failed: {exc}") from exc
        _install_parts(unpack, dest)


def _install_parts(unpack: Path, dest: Path) -> None:
    """Copy vmlinuz, busybox and the wanted modules from unpacked packages into `dest`, atomically.

    Why a staging folder: `dest` appears whole or not at all; a failed copy removes it, so the cache
    never keeps half a guest nor a stray `.staging-*` folder.
    """
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=dest.parent))
    try:
        kernels = sorted((unpack / "boot").glob("vmlinuz-*"))
        kver_dirs = sorted((unpack / "lib/modules").glob("*"))
        busybox = unpack / "bin/busybox"
        if not kernels or not kver_dirs or not busybox.is_file():
            raise InfraError(f"the downloaded packages lack boot/vmlinuz-*, lib/modules/* or bin/busybox "
                             f"(unpacked in {unpack})", hint="check the apt sources (Debian 12, bookworm)")
        shutil.copy2(kernels[0], staging / "vmlinuz")
        shutil.copy2(busybox, staging / "busybox")
        mods = staging / "modules"
        mods.mkdir()
        for ko in kver_dirs[0].rglob("*.ko"):
            if ko.stem in NET_MODULES + OTHER_MODULES:
                shutil.copy2(ko, mods / ko.name)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise InfraError(f"copying the test guest into {dest.parent} failed: {exc}") from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    try:
        os.replace(staging, dest)
    except OSError:  # another process won the race
        shutil.rmtree(staging, ignore_errors=True)


def ensure_parts() -> Path:
    """The cache dir holding vmlinuz, busybox and modules/ (downloaded once)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    existing = sorted(root.glob("*/vmlinuz"))
    try:
        pkg = _kernel_package()
    except InfraError:
        if existing:
            return existing[-1].parent
        raise
    dest = root / pkg
    if not (dest / "vmlinuz").exists():
        _download([pkg, "busybox-static"], dest)
    return dest


class _Cpio:
    """Minimal deterministic newc writer (the builder has its own; this one only serves tests)."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 1

    def add(self, name: str, mode: int, data: bytes = b"") -> None:
        nb = name.encode() + b"\0"
        hdr = "070701" + "".join(f"{v:08x}" for v in (self.ino, mode, 0, 0, 1, EPOCH, len(data), 0, 0, 0, 0,
                                                      len(nb), 0))
        self.ino += 1
        self.buf.write(hdr.encode() + nb)
        self.buf.write(b"\0" * ((4 - (110 + len(nb)) % 4) % 4))
        self.buf.write(data)
        self.buf.write(b"\0" * ((4 - len(data) % 4) % 4))

    def finish(self) -> bytes:
        self.add("TRAILER!!!", 0)
        return self.buf.getvalue()


def build_initrd(parts: Path, *, shell_only: bool = False, extra_init: str = "") -> bytes:
    busybox = (parts / "busybox").read_bytes()
    applets = subprocess.run([str(parts / "busybox"), "--list-full"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split()
    c = _Cpio()
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "etc",
            "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "root", "var", "var/log"}
    for d in sorted(dirs):
        c.add(d, 0o40755)
    c.add("bin/busybox", 0o100755, busybox)
    for applet in sorted(set(applets)):
        if applet != "bin/busybox":
            c.add(applet, 0o120777, b"/bin/busybox")
    init = INIT.replace('echo "lkit: services started', extra_init + '\necho "lkit: services started')
    if shell_only:
        init = init.replace("export PATH=", "LKIT_SHELL_ONLY=1\nexport PATH=")
    c.add("init", 0o100755, init.encode())
    c.add("etc/acpi/PWRF/00000080", 0o100755, POWEROFF.encode())
    c.add("etc/passwd", 0o100644, b"root:x:0:0:root:/root:/bin/sh\n")
    c.add("etc/group", 0o100644, b"root:x:0:\n")
    mods = [] if shell_only else [m for m in NET_MODULES + OTHER_MODULES if (parts / "modules" / f"{m}.ko").exists()]
    c.add("etc/lkit-modules", 0o100644, ("\n".join(mods) + "\n").encode())
    for m in mods:
        c.add(f"lib/modules/{m}.ko", 0o100644, (parts / "modules" / f"{m}.ko").read_bytes())
    c.add("usr/sbin/lkit-agent", 0o100755, AGENT.read_bytes())
    return gzip.compress(c.finish(), compresslevel=6, mtime=EPOCH)


def sample_guest(*, shell_only: bool = False, extra_init: str = "") -> SampleGuest:
    """The cached test guest (kernel + initrd built once per content)."""
    parts = ensure_parts()
    key = hashlib.sha256(f"{shell_only}|{extra_init}|{INIT}|{POWEROFF}".encode() + AGENT.read_bytes()).hexdigest()[:16]
    initrd = parts / f"initrd-{key}.img"
    if not initrd.exists():
        tmp = initrd.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(build_initrd(parts, shell_only=shell_only, extra_init=extra_init))
        os.replace(tmp, initrd)
    return SampleGuest(parts / "vmlinuz", initrd)

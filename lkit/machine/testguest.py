"""A tiny self-made test guest (Debian cloud kernel + busybox initrd) for the machine layer's own tests
and the boot benchmark's floor. Downloads are cached under $XDG_CACHE_HOME/lkit/test-guest.

The initrd follows lkit's guest boot contract closely enough to exercise the machine layer: the
console markers, lkit-agent on the channel device (ttyS1; hvc0 on arm64), a root shell on the console
(ttyS0; ttyAMA0 on arm64), virtio-net up as 10.0.2.15, and busybox acpid powering off on the ACPI
power button.

Architectures: `sample_guest(arch=ARM64)` builds the same guest from Debian's arm64 packages
(linux-image-cloud-arm64, busybox-static:arm64, fetched with `apt-get download PKG:arm64`), so the
machine layer boots arm64 before any arm64 image exists. A foreign busybox cannot run on the host to
list its applets: its init installs the applet links itself (`busybox --install -s`).
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

from lkit.core import arch as arch_table
from lkit.core import buildtime
from lkit.core.arch import Arch
from lkit.errors import InfraError

REPO = Path(__file__).resolve().parents[2]
AGENT = REPO / "fixtures/pkgs/init/files/usr/sbin/lkit-agent"
NET_MODULES = ("virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci",
               "failover", "net_failover", "virtio_net")
OTHER_MODULES = ("button", "evdev", "pvpanic", "pvpanic-mmio")
# arm64: the channel is a virtconsole port (virtio_console); the power button arrives as an ACPI event
# (built-in `button`) under UEFI, hence evdev for acpid.
ARCH_MODULES = {"arm64": ("virtio_console", "evdev")}


def modules_for(arch: Arch) -> tuple[str, ...]:
    """The modules the test guest loads, in load order."""
    return NET_MODULES + ARCH_MODULES.get(arch.name, OTHER_MODULES)
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
[ "$LKIT_SHELL_ONLY" = 1 ] || /usr/sbin/lkit-agent @CHANNEL@ &
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
    arch: Arch = arch_table.DEFAULT

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


def cached_kernel(arch: Arch = arch_table.DEFAULT) -> Path | None:
    d = cache_dir()
    found = sorted(p for p in d.glob("*/vmlinuz") if p.parent.name.endswith(f"-{arch.debian}")) \
        if d.is_dir() else []
    return found[-1] if found else None


def _apt_name(package: str, arch: Arch) -> str:
    """`apt-get download` name: PKG for the host's architecture, PKG:ARCH for another one."""
    return package if arch == arch_table.host() else f"{package}:{arch.debian}"


def _kernel_package(arch: Arch = arch_table.DEFAULT) -> str:
    meta = _apt_name(f"linux-image-cloud-{arch.debian}", arch)
    try:
        out = subprocess.run(["apt-cache", "depends", meta], capture_output=True,
                             text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise InfraError(f"apt-cache depends {meta} failed: {exc}",
                         hint="run on Debian 12 with apt sources for bookworm"
                              + (f" and `dpkg --add-architecture {arch.debian}`" if ":" in meta else "")) from exc
    m = re.search(rf"Depends: (linux-image-\S+-cloud-{arch.debian})", out)
    if not m:
        raise InfraError(f"cannot find the cloud kernel package behind {meta}")
    return m.group(1)


def _download(packages: list[str], dest: Path, arch: Arch = arch_table.DEFAULT) -> None:
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
        _install_parts(unpack, dest, arch)


def _install_parts(unpack: Path, dest: Path, arch: Arch = arch_table.DEFAULT) -> None:
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
            if ko.stem in modules_for(arch):
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


def ensure_parts(arch: Arch = arch_table.DEFAULT) -> Path:
    """The cache dir holding vmlinuz, busybox and modules/ (downloaded once per architecture)."""
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    existing = sorted(p for p in root.glob("*/vmlinuz") if p.parent.name.endswith(f"-{arch.debian}"))
    try:
        pkg = _kernel_package(arch)
    except InfraError:
        if existing:
            return existing[-1].parent
        raise
    dest = root / pkg
    if not (dest / "vmlinuz").exists():
        _download([_apt_name(pkg, arch), _apt_name("busybox-static", arch)], dest, arch)
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


def init_script(arch: Arch, *, native: bool, shell_only: bool = False, extra_init: str = "") -> str:
    """The test guest's /init for `arch` (what its cache key hashes: a change here makes a new initrd)."""
    init = INIT.replace('echo "lkit: services started', extra_init + '\necho "lkit: services started')
    init = init.replace("@CHANNEL@", f"/dev/{arch.channel}")
    if not native:   # the applet links, made by the guest's own busybox (it needs /proc for that)
        init = init.replace("export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n",
                            "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\n/bin/busybox mount -t proc proc /proc\n"
                            "/bin/busybox --install -s\n/bin/busybox umount /proc\n", 1)
    if arch.channel.startswith("hvc"):   # a virtio console: its node appears once virtio_console binds
        # (not in a shell-only guest: it loads no module, so the node never comes and the wait, 10 s,
        # would be all of bench/boot.py's arm64 floor)
        init = init.replace("[ \"$LKIT_SHELL_ONLY\" = 1 ] || /usr/sbin/lkit-agent",
                            f"[ \"$LKIT_SHELL_ONLY\" = 1 ] || {{ i=0; while [ ! -c /dev/{arch.channel} ] && "
                            f"[ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; }}\n"
                            f"[ \"$LKIT_SHELL_ONLY\" = 1 ] || /usr/sbin/lkit-agent", 1)
    if shell_only:
        init = init.replace("export PATH=", "LKIT_SHELL_ONLY=1\nexport PATH=")
    return init


def build_initrd(parts: Path, *, shell_only: bool = False, extra_init: str = "",
                 arch: Arch = arch_table.DEFAULT) -> bytes:
    busybox = (parts / "busybox").read_bytes()
    native = arch == arch_table.host()
    applets = subprocess.run([str(parts / "busybox"), "--list-full"], capture_output=True, text=True,
                             check=True, timeout=30).stdout.split() if native else ["bin/sh"]
    c = _Cpio()
    dirs = {"bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "tmp", "etc",
            "etc/acpi", "etc/acpi/PWRF", "lib", "lib/modules", "root", "var", "var/log"}
    for d in sorted(dirs):
        c.add(d, 0o40755)
    c.add("bin/busybox", 0o100755, busybox)
    for applet in sorted(set(applets)):
        if applet != "bin/busybox":
            c.add(applet, 0o120777, b"/bin/busybox")
    init = init_script(arch, native=native, shell_only=shell_only, extra_init=extra_init)
    c.add("init", 0o100755, init.encode())
    c.add("etc/acpi/PWRF/00000080", 0o100755, POWEROFF.encode())
    c.add("etc/passwd", 0o100644, b"root:x:0:0:root:/root:/bin/sh\n")
    c.add("etc/group", 0o100644, b"root:x:0:\n")
    mods = [] if shell_only else [m for m in modules_for(arch) if (parts / "modules" / f"{m}.ko").exists()]
    c.add("etc/lkit-modules", 0o100644, ("\n".join(mods) + "\n").encode())
    for m in mods:
        c.add(f"lib/modules/{m}.ko", 0o100644, (parts / "modules" / f"{m}.ko").read_bytes())
    c.add("usr/sbin/lkit-agent", 0o100755, AGENT.read_bytes())
    return gzip.compress(c.finish(), compresslevel=6, mtime=EPOCH)


def sample_guest(*, shell_only: bool = False, extra_init: str = "",
                 arch: Arch = arch_table.DEFAULT) -> SampleGuest:
    """The cached test guest of `arch` (kernel + initrd built once per content)."""
    parts = ensure_parts(arch)
    script = init_script(arch, native=arch == arch_table.host(), shell_only=shell_only, extra_init=extra_init)
    key = hashlib.sha256(f"{shell_only}|{script}|{POWEROFF}|{arch.name}".encode()
                         + AGENT.read_bytes()).hexdigest()[:16]
    initrd = parts / f"initrd-{key}.img"
    if not initrd.exists():
        tmp = initrd.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(build_initrd(parts, shell_only=shell_only, extra_init=extra_init, arch=arch))
        os.replace(tmp, initrd)
    return SampleGuest(parts / "vmlinuz", initrd, f"console={arch.console} panic=-1 loglevel=6", arch)

"""End to end: lkit's init files boot a real initrd under QEMU (TCG) and keep LinuxKit's boot contract.

The initrd is assembled here from real Debian packages (busybox-static, runc, jq, procps, containerd,
the bookworm cloud kernel's modules) plus fixtures/pkgs/init/files, WITHOUT the rest of lkit, so the
init scripts are tested on their own. Two hand-made bundles in LinuxKit's layout exercise both rootfs
kinds: a writable onboot (lower/ + runtime.json tmpfs and overlay mounts) and a readonly service.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import gzip
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INIT_FILES = REPO / "fixtures" / "pkgs" / "init" / "files"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "lkit" / "test-init"
EPOCH = 1492533000  # 2017-04-18 16:30 UTC, LinuxKit's fixed build time
MAC = "52:54:00:12:34:56"
BOOT_TIMEOUT = float(os.environ.get("LKIT_TEST_BOOT_TIMEOUT", "180"))

BASE_PACKAGES = [
    "busybox-static", "libc6", "runc", "libseccomp2", "jq", "libjq1", "libonig5", "procps",
    "libproc2-0", "libncursesw6", "libtinfo6", "libsystemd0", "libcap2", "libgcrypt20", "liblz4-1",
    "liblzma5", "libzstd1", "libgpg-error0",
]
CONTAINERD_FILES = ["usr/bin/containerd", "usr/bin/ctr", "usr/bin/containerd-shim-runc-v2"]
# The modules the guest needs here: the virtio chain for the NIC (in the dependency order of
# modules.sh's $first list), the power button.
MODULES = [
    "virtio_ring", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio", "virtio_pci", "failover",
    "net_failover", "virtio_net", "virtio-rng", "button", "evdev", "overlay", "binfmt_misc",
]
BUSYBOX_LINKS_IN_CONTAINER = ["sh", "echo", "cat", "sleep", "touch", "ls", "id", "grep"]


# ---------------------------------------------------------------- Debian packages -> a staging root

def _apt_download(names: list[str], dest: Path) -> None:
    """Fetch .debs into dest (apt-get download); one `apt-get update` if the lists are stale."""
    dest.mkdir(parents=True, exist_ok=True)
    cmd = ["apt-get", "download", *names]
    res = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, check=False)
        res = subprocess.run(cmd, cwd=dest, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"apt-get download {names} failed: {res.stderr}"


def _kernel_package() -> str:
    """The versioned image package behind linux-image-cloud-amd64 (the .deb holding vmlinuz + modules)."""
    res = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True,
                         timeout=120)
    for line in res.stdout.splitlines():
        m = re.match(r"\s*Depends: (linux-image-\S+-cloud-amd64)$", line)
        if m:
            return m.group(1)
    subprocess.run(["apt-get", "update"], capture_output=True, timeout=600, check=False)
    res = subprocess.run(["apt-cache", "depends", "linux-image-cloud-amd64"], capture_output=True, text=True,
                         timeout=120)
    found = re.findall(r"Depends: (linux-image-\S+-cloud-amd64)", res.stdout)
    assert found, f"no kernel package behind linux-image-cloud-amd64: {res.stdout} {res.stderr}"
    return found[0]


@dataclasses.dataclass(frozen=True)
class Staging:
    """Extracted packages: everything the initrds take from Debian, cached between runs."""

    root: Path  # dpkg-deb -x of every package
    kernel: Path  # vmlinuz
    kver: str


@contextlib.contextmanager
def _cache_lock() -> Iterator[None]:
    """xdist workers share CACHE: one prepares it while the others wait."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _staging() -> Staging:
    with _cache_lock():
        return _staging_locked()


def _staging_locked() -> Staging:
    stamp = CACHE / "staging.done"
    root = CACHE / "root"
    if not stamp.exists():
        debs = CACHE / "debs"
        _apt_download([*BASE_PACKAGES, "containerd", _kernel_package()], debs)
        tmp = CACHE / "root.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(tmp)], check=True, timeout=300)
        shutil.rmtree(root, ignore_errors=True)
        os.replace(tmp, root)
        stamp.write_text("ok\n")
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    assert kernels, f"no vmlinuz in {root}/boot"
    kernel = kernels[-1]
    return Staging(root=root, kernel=kernel, kver=kernel.name.removeprefix("vmlinuz-"))


# ---------------------------------------------------------------- the guest root tree

def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_symlink():
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(os.readlink(src))
    else:
        shutil.copy2(src, dst)


def _copy_tree(src: Path, dst: Path, skip: set[str] = frozenset()) -> None:
    """Copy src over dst keeping modes and symlinks; relative paths in skip are left out."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        dirnames[:] = sorted(d for d in dirnames if str(rel / d) not in skip)
        (dst / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames):
            if str(rel / name) in skip:
                continue
            _copy(Path(dirpath) / name, dst / rel / name)
        for name in dirnames:
            if (Path(dirpath) / name).is_symlink():
                _copy(Path(dirpath) / name, dst / rel / name)


def _busybox_links(root: Path, busybox: Path, only: list[str] | None = None) -> None:
    """Applet links as `busybox --install` would make them, never over a real program (procps ps)."""
    out = subprocess.run([str(busybox), "--list-full"], capture_output=True, text=True, check=True).stdout
    for rel in out.split():
        if only is not None and Path(rel).name not in only:
            continue
        link = root / rel
        if link.exists() or link.is_symlink():
            continue
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to("/bin/busybox")


def _needed(elf: Path) -> list[str]:
    res = subprocess.run(["readelf", "-d", str(elf)], capture_output=True, text=True)
    return re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", res.stdout)


def _check_libraries(root: Path, programs: list[str]) -> None:
    """Every shared library the programs need (transitively) is in the tree: fail early, not in the VM."""
    libdirs = [root / d for d in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "lib")]
    todo = [root / p for p in programs]
    seen: set[str] = set()
    while todo:
        elf = todo.pop()
        for lib in _needed(elf):
            if lib in seen:
                continue
            seen.add(lib)
            hits = [d / lib for d in libdirs if (d / lib).exists()]
            assert hits, f"{elf.relative_to(root)} needs {lib}, which no Debian package in the list provides"
            todo.append(hits[0].resolve())


def _spec(args: list[str], readonly: bool, caps: list[str]) -> dict:
    """A config.json as `runc spec` writes it (what lkit's builder emits for such an entry)."""
    capset = sorted(caps)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False, "user": {"uid": 0, "gid": 0}, "args": args,
            "env": ["PATH=/usr/sbin:/usr/bin:/sbin:/bin"], "cwd": "/",
            "capabilities": {k: capset for k in ("bounding", "effective", "permitted", "inheritable")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": readonly},
        "hostname": "",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
        ],
        "linux": {
            "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "ipc"}, {"type": "uts"}],
            "maskedPaths": ["/proc/kcore", "/proc/keys", "/sys/firmware"],
            "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
        },
    }


WRITABLE_RUNTIME = {
    "mounts": [
        {"destination": "tmp", "type": "tmpfs", "source": "tmpfs", "options": ["rw", "nosuid", "nodev", "mode=755"]},
        {"destination": "rootfs", "type": "overlay", "source": "overlay",
         "options": ["rw", "lowerdir=lower", "upperdir=tmp/upper", "workdir=tmp/work"]},
    ],
    "mkdir": ["/run/lkit-test/made-by-runtime"],
}


def _bundle(root: Path, where: str, args: list[str], staging: Staging, *, readonly: bool,
            runtime: dict | None = None) -> None:
    """A busybox container in LinuxKit's layout: writable ones unpack into lower/ with empty tmp/, rootfs/."""
    b = root / "containers" / where
    fs = b / ("rootfs" if readonly else "lower")
    for d in ("bin", "dev", "proc", "sys", "etc", "tmp"):
        (fs / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(staging.root / "bin" / "busybox", fs / "bin" / "busybox")
    for name in BUSYBOX_LINKS_IN_CONTAINER:
        (fs / "bin" / name).symlink_to("busybox")
    if not readonly:
        (b / "tmp").mkdir()
        (b / "rootfs").mkdir()
    (b / "config.json").write_text(json.dumps(_spec(args, readonly, ["CAP_CHOWN", "CAP_SYS_ADMIN"]), indent=2))
    (b / "runtime.json").write_text(json.dumps(runtime if runtime is not None else {}))


def _root_tree(dest: Path, staging: Staging, containerd: bool) -> None:
    """The guest's / : what lkit's init image + runc/containerd images + kernel.tar + bundles flatten to."""
    src = staging.root
    for rel in ("bin/busybox", "usr/bin/jq", "bin/ps"):
        _copy(src / rel, dest / rel)
    for rel in ("usr/sbin/runc",):
        _copy(src / rel, dest / rel)
        _copy(src / rel, dest / "usr/bin/runc")
    if containerd:
        for rel in CONTAINERD_FILES:
            _copy(src / rel, dest / rel)
    _copy_tree(src / "lib64", dest / "lib64")
    for libdir in ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu"):
        for f in sorted((src / libdir).iterdir()):
            if f.name.endswith((".so", ".so.0", ".so.1", ".so.2", ".so.5", ".so.6")) or ".so." in f.name:
                if f.is_file() or f.is_symlink():
                    _copy(f, dest / libdir / f.name)
    kmods = src / "lib/modules" / staging.kver
    for name in MODULES:
        hits = sorted(kmods.rglob(f"{name}.ko*"))
        assert hits, f"module {name} not in {kmods}"
        _copy(hits[0], dest / hits[0].relative_to(src))
    for extra in ("modules.order", "modules.builtin", "modules.builtin.modinfo"):
        if (kmods / extra).exists():
            _copy(kmods / extra, dest / "lib/modules" / staging.kver / extra)
    _copy_tree(INIT_FILES, dest)
    _busybox_links(dest, dest / "bin" / "busybox")
    for d in ("dev", "proc", "sys", "run", "tmp", "var", "root", "newroot"):
        (dest / d).mkdir(exist_ok=True)
    _check_libraries(dest, ["usr/sbin/runc", "usr/bin/jq", "bin/ps"])
    _bundle(dest, "onboot/000-hello",
            ["sh", "-c", "echo hello-from-onboot; touch /written && ls /written && id -u"],
            staging, readonly=False, runtime=WRITABLE_RUNTIME)
    # The service exits on SIGTERM (a bare `sleep` as PID 1 of its namespace would ignore it).
    _bundle(dest, "services/sleeper",
            ["sh", "-c", "echo sleeper-up; trap 'echo sleeper-term; exit 0' TERM; while :; do sleep 1; done"],
            staging, readonly=True)
    # A bare `sleep` as PID 1 of its namespace: SIGTERM cannot reach it, so stop kills it at once.
    _bundle(dest, "services/deaf", ["sleep", "100000"], staging, readonly=True)
    _bundle(dest, "onshutdown/000-bye", ["sh", "-c", "echo goodbye-from-onshutdown"], staging, readonly=True)


def _cpio_gz(tree: Path, out: Path) -> None:
    """gzip newc cpio, sorted entries, fixed mtimes: what lkit's kernel+initrd output is."""
    for dirpath, dirnames, filenames in os.walk(tree):
        for name in dirnames + filenames:
            os.utime(Path(dirpath) / name, (EPOCH, EPOCH), follow_symlinks=False)
    names = ["."]
    for dirpath, dirnames, filenames in os.walk(tree):
        dirnames.sort()
        rel = Path(dirpath).relative_to(tree)
        names += [str(rel / n) for n in sorted(dirnames + filenames)]
    listing = "\n".join(n.removeprefix("./") for n in names) + "\n"
    tmp = out.with_suffix(".tmp")
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=1, mtime=EPOCH) as gz:
        proc = subprocess.Popen(["cpio", "-o", "-H", "newc", "--reproducible", "--quiet"], cwd=tree,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None
        writer = threading.Thread(target=lambda: (proc.stdin.write(listing.encode()), proc.stdin.close()))
        writer.start()
        shutil.copyfileobj(proc.stdout, gz, 1 << 20)
        writer.join()
        assert proc.wait(timeout=300) == 0
    os.replace(tmp, out)


@dataclasses.dataclass(frozen=True)
class Initrd:
    kernel: Path
    initrd: Path


def _initrd(containerd: bool) -> Initrd:
    staging = _staging()
    out = CACHE / f"initrd-{'containerd' if containerd else 'runc'}.img"
    with _cache_lock(), tempfile.TemporaryDirectory(prefix="lkit-init-") as tmp:
        tree = Path(tmp) / "root"
        _root_tree(tree, staging, containerd)
        _cpio_gz(tree, out)
    return Initrd(kernel=staging.kernel, initrd=out)


@pytest.fixture(scope="session")
def initrd_runc() -> Initrd:
    return _initrd(containerd=False)


@pytest.fixture(scope="session")
def initrd_containerd() -> Initrd:
    return _initrd(containerd=True)


# ---------------------------------------------------------------- a minimal VM driver (no lkit.machine)

class Serial:
    """A QEMU serial port on a unix socket, drained by a thread into a buffer (nothing is lost)."""

    def __init__(self, path: Path, log: Path) -> None:
        self.sock = _connect(path)
        self.buf = b""
        self.cond = threading.Condition()
        self.log = open(log, "wb")
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except OSError:
                data = b""
            with self.cond:
                if not data:
                    self.closed = True
                    self.cond.notify_all()
                    return
                self.buf += data
                self.log.write(data)
                self.log.flush()
                self.cond.notify_all()

    closed = False

    def text(self) -> str:
        with self.cond:
            return self.buf.decode(errors="replace")

    def wait_for(self, pattern: str, timeout: float, start: int = 0) -> re.Match[str]:
        rx = re.compile(pattern, re.M)
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                m = rx.search(self.buf.decode(errors="replace"), start)
                if m:
                    return m
                left = deadline - time.monotonic()
                if left <= 0 or self.closed:
                    raise AssertionError(f"{pattern!r} not seen in {timeout}s; output so far:\n{self.text_tail()}")
                self.cond.wait(min(left, 1.0))

    def text_tail(self) -> str:
        return self.buf.decode(errors="replace")[-4000:]

    def write(self, data: bytes) -> None:
        self.sock.sendall(data)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        self.thread.join(timeout=5)
        self.log.close()


def _connect(path: Path, timeout: float = 10.0) -> socket.socket:
    deadline = time.monotonic() + timeout
    while True:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(path))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Qmp:
    """Just enough QMP: capabilities negotiation and commands, over the unix socket."""

    def __init__(self, path: Path) -> None:
        self.sock = _connect(path)
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict:
        line = self.file.readline()
        if not line:
            raise EOFError("QMP closed")
        return json.loads(line)

    def cmd(self, name: str) -> dict:
        self.file.write(json.dumps({"execute": name}).encode() + b"\n")
        self.file.flush()
        while True:
            msg = self._read()
            if "return" in msg or "error" in msg:
                return msg

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
            self.sock.close()


@dataclasses.dataclass
class Vm:
    proc: subprocess.Popen
    console: Serial
    channel: Serial
    qmp: Qmp
    started: float  # time.monotonic() at `cont`

    def run(self, command: str, timeout: int = 30) -> tuple[int, str]:
        """Run a command through lkit-agent on ttyS1 (the documented framing); (rc, stdout)."""
        nonce = secrets.token_hex(6)
        start = len(self.channel.buf)
        self.channel.write(f"{nonce} {timeout} {base64.b64encode(command.encode()).decode()}\n".encode())
        m = self.channel.wait_for(rf"(?s)LKIT-BEGIN {nonce}\r?\n(.*?)LKIT-ERR {nonce}\r?\n(.*?)LKIT-END {nonce} (\d+)[ \r\n]",
                                  timeout + 30, start)
        out = base64.b64decode("".join(m.group(1).split())).decode(errors="replace")
        return int(m.group(3)), out

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@contextlib.contextmanager
def boot(initrd: Initrd, workdir: Path, cmdline_extra: str = "", mem: str = "1536") -> Iterator[Vm]:
    """QEMU under TCG with the console on ttyS0, lkit-agent's channel on ttyS1, QMP; killed on every path."""
    con, chan, qmp_path = workdir / "console.sock", workdir / "channel.sock", workdir / "qmp.sock"
    cmd = [
        "qemu-system-x86_64", "-machine", "pc", "-accel", "tcg", "-m", mem, "-smp", "1",
        "-nodefaults", "-no-user-config", "-display", "none", "-S",
        "-kernel", str(initrd.kernel), "-initrd", str(initrd.initrd),
        "-append", f"console=ttyS0 panic=-1 {cmdline_extra}".strip(),
        "-chardev", f"socket,id=con,path={con},server=on,wait=off", "-serial", "chardev:con",
        "-chardev", f"socket,id=chan,path={chan},server=on,wait=off", "-serial", "chardev:chan",
        "-qmp", f"unix:{qmp_path},server=on,wait=off",
        "-device", "virtio-rng-pci",
        "-netdev", "user,id=n0", "-device", f"virtio-net-pci,netdev=n0,mac={MAC},romfile=",
        "-no-reboot",
    ]
    with contextlib.ExitStack() as stack:
        qemu_log = stack.enter_context(open(workdir / "qemu.log", "wb"))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=qemu_log, stderr=subprocess.STDOUT)

        def kill() -> None:
            if proc.poll() is None:
                proc.kill()
            proc.wait(timeout=30)

        stack.callback(kill)
        qmp = Qmp(qmp_path)
        stack.callback(qmp.close)
        console = Serial(con, workdir / "console.log")
        stack.callback(console.close)
        channel = Serial(chan, workdir / "channel.log")
        stack.callback(channel.close)
        qmp.cmd("cont")
        yield Vm(proc=proc, console=console, channel=channel, qmp=qmp, started=time.monotonic())


def _marker_times(text: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"^lkit: (.*?) uptime=([0-9.]+)\r?\n", text, re.M)}


def _boot_to_shell(vm: Vm) -> float:
    """Wait for the whole boot; return host seconds from `cont` to `services started`."""
    m = vm.console.wait_for(r"^lkit: services started uptime=[0-9.]+\r?\n", BOOT_TIMEOUT)
    services_at = vm.elapsed()
    vm.console.wait_for(r"^lkit: shell ready uptime=[0-9.]+\r?\n", 60, m.start())
    vm.channel.wait_for(r"LKIT-AGENT-READY", 30)
    return services_at


def _stage1_seconds(text: str) -> float:
    """Guest seconds from the kernel starting /init to `lkit: init start` (the root switch + mounts)."""
    run_init = re.search(r"\[\s*([0-9.]+)\] Run /init as init process", text)
    assert run_init, "kernel did not report running /init"
    return _marker_times(text)["init start"] - float(run_init.group(1))


def _assert_boot_contract(text: str) -> None:
    """Markers in the documented order, each on its own line; onboot output on the console."""
    order = [
        r"^Welcome to LinuxKit\r?\n",
        r"^lkit: init start uptime=[0-9.]+\r?\n",
        r"^hello-from-onboot\r?\n",
        r"^lkit: onboot hello exit 0 uptime=[0-9.]+\r?\n",
        r"^lkit: services started uptime=[0-9.]+\r?\n",
        r"^lkit: shell ready uptime=[0-9.]+\r?\n",
    ]
    pos = 0
    for pattern in order:
        m = re.compile(pattern, re.M).search(text, pos)
        assert m, f"{pattern!r} missing after offset {pos} in console:\n{text[-4000:]}"
        pos = m.end()
    times = _marker_times(text)
    assert times["init start"] <= times["onboot hello exit 0"] <= times["services started"] <= times["shell ready"]


def _assert_clean_poweroff(vm: Vm, start: int) -> None:
    """onshutdown ran, services stopped, `lkit: poweroff` printed, and QEMU left on its own."""
    vm.console.wait_for(r"goodbye-from-onshutdown\r?\n", 120, start)
    vm.console.wait_for(r"^lkit: onshutdown bye exit 0 uptime=[0-9.]+\r?\n", 120, start)
    vm.console.wait_for(r"^lkit: poweroff uptime=[0-9.]+\r?\n", 120, start)
    assert vm.proc.wait(timeout=60) == 0, "QEMU did not exit by itself after the guest powered off"
    text = vm.console.text()[start:]
    assert re.search(r"^lkit-init: service sleeper stopped by SIGTERM\r?\n", text, re.M), \
        f"the service (which exits on SIGTERM) was not stopped by SIGTERM:\n{text[-2000:]}"
    assert re.search(r"^lkit-init: service deaf stopped by SIGKILL \(PID 1 of its namespace without a SIGTERM "
                     r"handler\)\r?\n", text, re.M), \
        f"the service without a SIGTERM handler was not killed at once:\n{text[-2000:]}"
    times = _marker_times(text)
    assert times["onshutdown bye exit 0"] <= times["poweroff"]
    assert "Kernel panic" not in vm.console.text()


def _guest_checks(vm: Vm) -> None:
    """Facts of the boot contract read inside the guest through the agent."""
    rc, mounts = vm.run("cat /proc/mounts")
    assert rc == 0
    table = {f[1]: (f[2], f[3]) for f in (line.split() for line in mounts.splitlines()) if len(f) >= 4}
    for path, fstype in [("/proc", "proc"), ("/sys", "sysfs"), ("/dev", "devtmpfs"), ("/dev/pts", "devpts"),
                         ("/dev/shm", "tmpfs"), ("/dev/mqueue", "mqueue"), ("/sys/fs/cgroup", "cgroup2"),
                         ("/run", "tmpfs"), ("/tmp", "tmpfs"), ("/var", "tmpfs"),
                         ("/proc/sys/fs/binfmt_misc", "binfmt_misc")]:
        assert path in table and table[path][0] == fstype, f"{path} is not {fstype}: {table.get(path)}"
    assert "nsdelegate" in table["/sys/fs/cgroup"][1]
    rc, ctl = vm.run("cat /sys/fs/cgroup/cgroup.subtree_control")
    assert rc == 0 and {"cpu", "memory", "pids", "io"} <= set(ctl.split()), ctl
    rc, name = vm.run("hostname")
    assert name.strip() == "linuxkit-" + MAC.replace(":", ""), name
    rc, out = vm.run("ip -o link show lo; ip -o link show eth0")
    assert rc == 0 and "LOOPBACK,UP" in out and "eth0" in out, out
    rc, log = vm.run("cat /var/log/onboot.hello.log")
    assert rc == 0 and "hello-from-onboot" in log and "/written" in log, log
    rc, _ = vm.run("test -d /run/lkit-test/made-by-runtime")
    assert rc == 0, "runtime.json mkdir entry not created"
    rc, out = vm.run("tr '\\0' ' ' </proc/1/cmdline")
    assert rc == 0 and out.split()[-1:] == ["init"], f"PID 1 is not busybox init: {out!r}"
    rc, out = vm.run("grep -c . /var/log/sleeper.log; cat /var/log/sleeper.log")
    assert "sleeper-up" in out, out


# ---------------------------------------------------------------- the tests

TIMINGS: dict[str, float] = {}


def _record(name: str, seconds: float, record_property, vm: Vm | None = None) -> None:
    """Timing figures as JUnit properties (and on stdout with -s): wall seconds, guest stage-1 seconds."""
    TIMINGS[name] = round(seconds, 2)
    record_property(name, round(seconds, 2))
    print(f"\n[timing] {name}: {seconds:.2f}s")
    if vm is not None:
        stage1 = _stage1_seconds(vm.console.text())
        record_property(f"{name}_stage1", round(stage1, 2))
        print(f"[timing] {name} stage1 (Run /init -> init start, guest): {stage1:.2f}s")


def test_runc_services_bind_root_and_acpi_powerdown(initrd_runc: Initrd, tmp_path: Path, record_property) -> None:
    """Default (bind) root, no containerd: service under runc -d; QMP power button shuts down cleanly."""
    with boot(initrd_runc, tmp_path) as vm:
        services_at = _boot_to_shell(vm)
        _record("services_started_bind_runc", services_at, record_property, vm)
        _assert_boot_contract(vm.console.text())
        rc, out = vm.run("runc list")
        assert rc == 0 and re.search(r"^sleeper\s+\d+\s+running\s", out, re.M), out
        rc, out = vm.run("dmesg | grep lkit-init:")
        assert "root=bind" in out, f"stage 1 did not take the bind way: {out!r}"
        rc, out = vm.run("cat /run/lkit/sleeper.pid")
        assert rc == 0 and out.strip().isdigit()
        rc, out = vm.run("grep ' / ' /proc/mounts; grep -c rootfs /proc/mounts")
        assert rc == 0
        rc, out = vm.run("grep -E ' /containers/onboot/000-hello/(rootfs|tmp) ' /proc/mounts")
        assert "overlay" in out and "tmpfs" in out, f"writable bundle mounts missing: {out}"
        _guest_checks(vm)
        start = len(vm.console.text())
        vm.qmp.cmd("system_powerdown")
        _assert_clean_poweroff(vm, start)


def test_containerd_services_and_typed_poweroff(initrd_containerd: Initrd, tmp_path: Path, record_property) -> None:
    """With /usr/bin/containerd: the service runs under containerd (services.linuxkit, id = name);
    `poweroff` typed at the root shell takes the same shutdown path."""
    with boot(initrd_containerd, tmp_path) as vm:
        services_at = _boot_to_shell(vm)
        _record("services_started_bind_containerd", services_at, record_property, vm)
        _assert_boot_contract(vm.console.text())
        rc, out = vm.run("ctr -n services.linuxkit task ls")
        assert rc == 0 and re.search(r"^sleeper\s+\d+\s+RUNNING", out, re.M), out
        rc, out = vm.run("runc list")
        assert "sleeper" not in out, f"service ran under plain runc although containerd is present: {out}"
        _guest_checks(vm)
        start = len(vm.console.text())
        vm.console.write(b"poweroff\n")
        _assert_clean_poweroff(vm, start)
        text = vm.console.text()[start:]
        rc_stop = text.find("lkit: poweroff")
        assert text.find("lkit: onshutdown bye") < rc_stop


def test_copy_root_runc(initrd_runc: Initrd, tmp_path: Path, record_property) -> None:
    """LinuxKit's way (copy into a tmpfs + switch_root), kept selectable with lkit.root=copy."""
    with boot(initrd_runc, tmp_path, "lkit.root=copy") as vm:
        services_at = _boot_to_shell(vm)
        _record("services_started_copy_runc", services_at, record_property, vm)
        _assert_boot_contract(vm.console.text())
        rc, out = vm.run("awk '$2 == \"/\" { print $3 }' /proc/mounts")
        assert rc == 0 and "tmpfs" in out.split(), out
        rc, out = vm.run("dmesg | grep lkit-init:")
        assert "root=copy" in out, out
        rc, out = vm.run("runc list")
        assert rc == 0 and re.search(r"^sleeper\s+\d+\s+running\s", out, re.M), out
        start = len(vm.console.text())
        vm.qmp.cmd("system_powerdown")
        _assert_clean_poweroff(vm, start)


def test_copy_root_containerd(initrd_containerd: Initrd, tmp_path: Path, record_property) -> None:
    """Copy mode with containerd's ~80 MB in the initrd: the case the bind default exists for."""
    with boot(initrd_containerd, tmp_path, "lkit.root=copy") as vm:
        services_at = _boot_to_shell(vm)
        _record("services_started_copy_containerd", services_at, record_property, vm)
        rc, out = vm.run("ctr -n services.linuxkit task ls")
        assert rc == 0 and re.search(r"^sleeper\s+\d+\s+RUNNING", out, re.M), out
        start = len(vm.console.text())
        vm.qmp.cmd("system_powerdown")
        _assert_clean_poweroff(vm, start)

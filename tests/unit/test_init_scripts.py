"""Unit tests of lkit's init files (fixtures/pkgs/init/files) on the host: no VM.

The scripts are busybox sh; here they are parsed, their wiring checked (inittab -> files, modes), and
the parts with logic (runtime.json preparation, module order, container names) run against stub
`mount`/`modprobe` commands that record what they were asked to do.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

FILES = Path(__file__).resolve().parents[2] / "fixtures" / "pkgs" / "init" / "files"
LIB = FILES / "usr" / "lib" / "lkit"
BUSYBOX = shutil.which("busybox")
# Syntax is checked with busybox sh (the guest's shell) when the host has it.
PARSE_CMD = [BUSYBOX, "sh"] if BUSYBOX else ["sh"]
# Scripts with stub commands run under dash: busybox sh runs its own applets (mount, modprobe) before
# anything on PATH, which would touch the host.
DASH = shutil.which("dash")
SH_CMD = [DASH or "/bin/sh"]

EXECUTABLES = [
    "init", "etc/init.d/rcS", "etc/acpi/PWRF/00000080",
    *(f"usr/lib/lkit/{n}.sh" for n in ("mounts", "modules", "binfmt", "network", "acpi", "agent", "shell",
                                       "containers", "shutdown")),
]
SOURCED = ["usr/lib/lkit/lib.sh", "usr/lib/lkit/prepare.sh"]


def _stub(bindir: Path, name: str, body: str = 'echo "$0 $*" >>"$STUB_LOG"') -> None:
    p = bindir / name
    p.write_text(f"#!/bin/sh\n{body}\n")
    p.chmod(0o755)


def _env(tmp_path: Path, stubs: list[str]) -> dict[str, str]:
    assert DASH, "dash is needed to run the init scripts against stub commands"
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    for name in stubs:
        _stub(bindir, name)
    env = dict(os.environ)
    env.update(PATH=f"{bindir}:{env['PATH']}", STUB_LOG=str(tmp_path / "calls.log"), LKIT_STATE=str(tmp_path / "state"))
    return env


def _calls(tmp_path: Path) -> list[str]:
    log = tmp_path / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


@pytest.mark.parametrize("rel", EXECUTABLES + SOURCED)
def test_script_parses(rel: str) -> None:
    res = subprocess.run([*PARSE_CMD, "-n", str(FILES / rel)], capture_output=True, text=True)
    assert res.returncode == 0, f"{rel}: {res.stderr}"


@pytest.mark.parametrize("rel", EXECUTABLES)
def test_executables_have_exec_mode(rel: str) -> None:
    mode = stat.S_IMODE((FILES / rel).stat().st_mode)
    assert mode == 0o755, f"{rel} has mode {oct(mode)}: the init image copies modes as they are"
    assert (FILES / rel).read_text().startswith("#!/bin/sh\n")


def test_inittab_runs_existing_programs() -> None:
    actions = {}
    for line in (FILES / "etc" / "inittab").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        tty, _runlevels, action, process = line.split(":", 3)
        actions[action] = (tty, process)
        prog = process.split()[0].lstrip("-")
        assert (FILES / prog.lstrip("/")).exists() or prog == "/bin/busybox", f"inittab runs missing {prog}"
    assert actions["sysinit"][1] == "/etc/init.d/rcS"
    assert actions["shutdown"][1] == "/usr/lib/lkit/shutdown.sh"
    assert actions["respawn"][0] == "ttyS0"


def test_rcs_prints_markers_in_contract_order() -> None:
    """rcS: init start before the agent and onboot, services started after services."""
    text = (FILES / "etc" / "init.d" / "rcS").read_text()
    order = ["mounts.sh", "banner", "lkit: init start", "agent.sh", "modules.sh", "containers.sh onboot",
             "containers.sh services", "lkit: services started"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)


def _prepare(tmp_path: Path, runtime: object) -> tuple[subprocess.CompletedProcess, Path]:
    bundle = tmp_path / "containers" / "onboot" / "000-x"
    bundle.mkdir(parents=True)
    (bundle / "runtime.json").write_text(runtime if isinstance(runtime, str) else json.dumps(runtime))
    script = f'warn() {{ echo "WARN $*"; }}; . {LIB}/prepare.sh; prepare_bundle "$1"; echo "NS=$(namespace_of "$1")"'
    res = subprocess.run([*SH_CMD, "-c", script, "sh", str(bundle)], capture_output=True, text=True,
                         env=_env(tmp_path, ["mount"]))
    return res, bundle


def test_prepare_writable_bundle_mounts_tmpfs_then_overlay(tmp_path: Path) -> None:
    runtime = {
        "mounts": [
            {"destination": "tmp", "type": "tmpfs", "source": "tmpfs", "options": ["rw", "mode=755"]},
            {"destination": "rootfs", "type": "overlay", "source": "overlay",
             "options": ["rw", "lowerdir=lower", "upperdir=tmp/upper", "workdir=tmp/work"]},
        ],
        "mkdir": [str(tmp_path / "made" / "deep")],
        "cgroups": [],
    }
    res, b = _prepare(tmp_path, runtime)
    assert res.returncode == 0, res.stderr
    calls = _calls(tmp_path)
    assert [c.split()[2] for c in calls] == ["tmpfs", "overlay"], calls
    assert calls[0].endswith(f"-o rw,mode=755 tmpfs {b}/tmp")
    assert calls[1].endswith(
        f"-o rw,lowerdir={b}/lower,upperdir={b}/tmp/upper,workdir={b}/tmp/work overlay {b}/rootfs"), calls[1]
    assert (b / "tmp" / "upper").is_dir() and (b / "tmp" / "work").is_dir()
    assert (tmp_path / "made" / "deep").is_dir()
    assert "WARN" not in res.stdout


def test_prepare_absolute_and_bind_mounts(tmp_path: Path) -> None:
    target = tmp_path / "abs"
    runtime = {"mounts": [
        {"destination": str(target), "type": "bind", "source": "lower/etc", "options": ["rbind", "ro"]},
        {"destination": "rootfs", "type": "tmpfs", "source": "", "options": []},
    ]}
    res, b = _prepare(tmp_path, runtime)
    assert res.returncode == 0, res.stderr
    calls = _calls(tmp_path)
    assert calls[0].endswith(f"-t bind -o rbind,ro {b}/lower/etc {target}"), calls
    assert calls[1].endswith(f"-t tmpfs tmpfs {b}/rootfs"), calls
    assert target.is_dir()


def test_prepare_reports_what_it_skips(tmp_path: Path) -> None:
    runtime = {"interfaces": [{"name": "eth1", "add": "veth", "peer": "eth2"}], "namespace": "custom.ns",
               "bindNS": {"net": "/run/netns/x"}}
    res, _ = _prepare(tmp_path, runtime)
    assert res.returncode == 0
    assert "WARN" in res.stdout and "interfaces (eth1)" in res.stdout
    assert "NS=custom.ns" in res.stdout
    assert _calls(tmp_path) == []


@pytest.mark.parametrize("bad", ["[1, 2]", "{not json"])
def test_prepare_bad_runtime_json_warns_and_continues(tmp_path: Path, bad: str) -> None:
    res, _ = _prepare(tmp_path, bad)
    assert res.returncode == 0
    assert "WARN" in res.stdout and "ignored" in res.stdout
    assert _calls(tmp_path) == []


def test_prepare_without_runtime_json_does_nothing(tmp_path: Path) -> None:
    b = tmp_path / "b"
    b.mkdir()
    script = f'warn() {{ echo "WARN $*"; }}; . {LIB}/prepare.sh; prepare_bundle "$1"; echo done'
    res = subprocess.run([*SH_CMD, "-c", script, "sh", str(b)], capture_output=True, text=True,
                         env=_env(tmp_path, ["mount"]))
    assert res.stdout.strip() == "done"
    assert _calls(tmp_path) == []


def test_modules_virtio_chain_first_every_module_once(tmp_path: Path) -> None:
    """modules.dep present -> one modprobe with the virtio-net chain first, then modules.order, then the rest."""
    mods = tmp_path / "modules"
    for rel in ["kernel/drivers/net/virtio_net.ko", "kernel/drivers/virtio/virtio.ko",
                "kernel/drivers/virtio/virtio_pci.ko", "kernel/drivers/virtio/virtio_ring.ko",
                "kernel/net/core/failover.ko", "kernel/drivers/net/net_failover.ko",
                "kernel/drivers/char/hw_random/virtio-rng.ko", "kernel/fs/zzz.ko", "kernel/fs/aaa.ko"]:
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(b"")
    (mods / "modules.dep").write_text("kernel/fs/aaa.ko:\n")
    (mods / "modules.order").write_text("kernel/fs/zzz.ko\n")
    env = _env(tmp_path, ["modprobe", "insmod", "depmod"])
    env["LKIT_MODULES_DIR"] = str(mods)
    # binfmt.sh is called by absolute path in the guest; it is harmless on the host (no mount done).
    res = subprocess.run([*SH_CMD, str(LIB / "modules.sh")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    calls = [c for c in _calls(tmp_path) if "/modprobe " in c]
    assert len(calls) == 1, _calls(tmp_path)
    names = calls[0].split()[2:]
    assert names == ["virtio_ring", "virtio", "virtio_pci", "failover", "net_failover", "virtio_net", "virtio_rng",
                     "zzz", "aaa"], names


def test_modules_without_modules_dep_insmods_in_rounds(tmp_path: Path) -> None:
    """No modules.dep and no working depmod: insmod retries until dependencies have loaded."""
    mods = tmp_path / "modules"
    for rel in ["a/a_dep.ko", "b/z_base.ko"]:
        (mods / rel).parent.mkdir(parents=True, exist_ok=True)
        (mods / rel).write_bytes(b"")
    env = _env(tmp_path, ["modprobe", "depmod"])
    # insmod stub: a_dep.ko (first in name order) only loads once z_base.ko has.
    _stub(tmp_path / "bin", "insmod", 'echo "insmod $1" >>"$STUB_LOG"\n'
          'case "$1" in *a_dep.ko) grep -q "insmod .*z_base.ko" "$STUB_LOG" || exit 1 ;; esac')
    env["LKIT_MODULES_DIR"] = str(mods)
    res = subprocess.run([*SH_CMD, str(LIB / "modules.sh")], capture_output=True, text=True, env=env)
    assert res.returncode == 0, res.stderr
    loads = [c.split()[1].rsplit("/", 1)[1] for c in _calls(tmp_path) if c.startswith("insmod")]
    assert loads == ["a_dep.ko", "z_base.ko", "a_dep.ko"], loads


def _function(script: str, name: str) -> str:
    """The text of one shell function of a lib script, to run it alone."""
    text = (LIB / script).read_text()
    start = text.index(f"{name}() {{")
    return text[start:text.index("\n}\n", start) + 3]


@pytest.mark.parametrize(("dirname", "name"), [("000-hello", "hello"), ("012-a-b", "a-b"), ("sleeper", "sleeper"),
                                                ("7up", "7up")])
def test_container_names_strip_order_prefix(tmp_path: Path, dirname: str, name: str) -> None:
    script = f'{_function("containers.sh", "name_of")}\nname_of "/containers/onboot/{dirname}"'
    res = subprocess.run([*SH_CMD, "-c", script], capture_output=True, text=True)
    assert res.stdout.strip() == name


def test_containers_usage_error(tmp_path: Path) -> None:
    env = _env(tmp_path, [])
    env.update(LKIT_CONTAINERS=str(tmp_path), LKIT_LIB=str(LIB))
    res = subprocess.run([*SH_CMD, str(LIB / "containers.sh"), "bogus"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "usage" in res.stderr


def test_prepare_keeps_callers_variables(tmp_path: Path) -> None:
    """containers.sh keeps kind/dir/name across prepare_bundle (a clobbered kind once broke the marker)."""
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "runtime.json").write_text(json.dumps({"mkdir": [str(tmp_path / "m")], "cgroups": []}))
    script = (f'warn() {{ :; }}; . {LIB}/prepare.sh; kind=onboot dir=/d name=n; prepare_bundle "$1"; '
              'echo "$kind $dir $name"')
    res = subprocess.run([*SH_CMD, "-c", script, "sh", str(bundle)], capture_output=True, text=True,
                         env=_env(tmp_path, ["mount"]))
    assert res.stdout.strip() == "onboot /d n"


def test_banner_is_linuxkits_welcome_on_its_own_line(tmp_path: Path) -> None:
    console = tmp_path / "console"
    env = _env(tmp_path, [])
    env["LKIT_CONSOLES"] = str(console)
    res = subprocess.run([*SH_CMD, "-c", f". {LIB}/lib.sh; banner"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    lines = console.read_text().splitlines()
    assert lines[1] == "Welcome to LinuxKit"
    assert any("\\______ o" in line for line in lines), lines


def test_say_writes_one_line_per_console(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    env = _env(tmp_path, [])
    env["LKIT_CONSOLES"] = f"{a} {b}"
    subprocess.run([*SH_CMD, "-c", f'. {LIB}/lib.sh; say "lkit: init start uptime=1.23"'], env=env, check=True)
    assert a.read_text() == b.read_text() == "lkit: init start uptime=1.23\n"


def _zombie() -> subprocess.Popen:
    """A child that has exited and is not reaped yet (until its .wait())."""
    child = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while not re.search(r"^State:\s*Z", Path(f"/proc/{child.pid}/status").read_text(), re.M):
        assert time.monotonic() < deadline, "the child did not exit"
        time.sleep(0.001)
    return child


def test_alive_running_zombie_and_gone() -> None:
    alive = _function("containers.sh", "alive")
    zombie = _zombie()
    try:
        res = subprocess.run([*SH_CMD, "-c", f'{alive}\nfor p in "$@"; do alive "$p" && echo yes || echo no; done',
                              "sh", str(os.getpid()), str(zombie.pid), "", "0"], capture_output=True, text=True)
    finally:
        zombie.wait()
    assert res.stdout.split() == ["yes", "no", "no", "no"], res.stderr


def test_alive_never_sees_a_zombie_reaped_mid_check() -> None:
    """A service's PID 1 can be reaped while stop_services looks at it: CI once saw a service that had
    exited on SIGTERM reported as "stopped by SIGKILL after 10s". Each round reaps a zombie while a loop
    checks it; the earlier test-then-read alive() answered "alive" in every round."""
    alive = _function("containers.sh", "alive")
    loop = f'{alive}\nn=0; while [ -e "/proc/$1" ] && [ "$n" -lt 5000 ]; do alive "$1" && echo alive; n=$((n + 1)); done'
    for _ in range(10):
        zombie = _zombie()
        checker = subprocess.Popen([*SH_CMD, "-c", loop, "sh", str(zombie.pid)], stdout=subprocess.PIPE, text=True)
        time.sleep(0.05)
        zombie.wait()
        out, _ = checker.communicate(timeout=60)
        assert "alive" not in out


def test_shutdown_runs_once_when_asked_at_once(tmp_path: Path) -> None:
    """The power button (acpid) and a `poweroff` at the shell can ask together: one shutdown runs."""
    lib = tmp_path / "lib"
    lib.mkdir()
    shutil.copy(LIB / "lib.sh", lib / "lib.sh")
    _stub(lib, "containers.sh")
    env = _env(tmp_path, ["poweroff", "mount", "umount", "killall", "sync"])
    env.update(LKIT_LIB=str(lib), LKIT_CONSOLES=os.devnull)
    runs = [subprocess.Popen([*SH_CMD, str(LIB / "shutdown.sh")], env=env) for _ in range(4)]
    assert [r.wait(timeout=30) for r in runs] == [0] * 4
    calls = _calls(tmp_path)
    assert [c.split(" ", 1)[1] for c in calls if "containers.sh" in c] == ["onshutdown", "stop"], calls
    assert sum(c.split()[0].endswith("/poweroff") for c in calls) == 1, calls


def test_stop_services_signals_by_pid_and_escalates(tmp_path: Path) -> None:
    """Power-off stop: services found by PID (runc's pid file, containerd's init.pid) get SIGTERM with no
    ctr/runc call; one that ignores SIGTERM gets SIGKILL after the stop timeout."""
    env = _env(tmp_path, ["runc", "ctr"])
    _stub(tmp_path / "bin", "usleep", 'sleep "$(awk -v u="$1" \'BEGIN { print u / 1000000 }\')"')
    state = tmp_path / "state"
    state.mkdir()
    env.update(LKIT_LIB=str(LIB), LKIT_CONSOLES="/dev/stderr", LKIT_STOP_TIMEOUT="1")
    polite = subprocess.Popen(["sleep", "60"])
    stubborn = subprocess.Popen([*SH_CMD, "-c", 'trap "" TERM; while :; do sleep 0.1; done'])
    try:
        (state / "polite.pid").write_text(f"{polite.pid}\n")
        (state / "stubborn.pid").write_text(f"{stubborn.pid}\n")
        (state / "services.list").write_text("runc polite\nrunc stubborn\n")
        res = subprocess.run([*SH_CMD, str(LIB / "containers.sh"), "stop"], env=env, capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0, res.stderr
        assert polite.wait(timeout=5) == -15 and stubborn.wait(timeout=5) == -9
    finally:
        for p in (polite, stubborn):
            p.kill()
            p.wait()
    lines = res.stderr.splitlines()
    assert lines == ["lkit-init: service polite stopped by SIGTERM",
                     "lkit-init: service stubborn stopped by SIGKILL after 1s"], lines
    assert _calls(tmp_path) == [], "a service with a known PID needs no ctr/runc call"
    assert (state / "services.list").read_text() == ""

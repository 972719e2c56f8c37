"""swtpm follows QEMU's rules: whatever way a VM ends (a normal run, QEMU failing to start, a boot
that fails, Ctrl-C to a pytest run of a suite with `tpm: true`), no swtpm and no QEMU is left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from relkit import REPO, lkit_env

from lkit.errors import InfraError, LkitError
from lkit.machine.artifacts import BootTarget, boot_target, expand_prefix
from lkit.machine.vm import Machine

SPECS = Path(__file__).resolve().parent / "specs"
needs_swtpm = pytest.mark.skipif(not Path("/usr/bin/swtpm").exists(), reason="swtpm (Debian package swtpm)")


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _children(pid: int, comm: str) -> list[int]:
    """Processes named `comm` whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1: stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2:].split()[1])
        if ppid == pid and name.startswith(comm):
            found.append(int(entry.name))
    return found


@needs_swtpm
def test_swtpm_stops_when_qemu_fails_to_start(tmp_path: Path, case) -> None:
    case("qemu fault", "QEMU exits at once on a VM with a TPM (swtpm already started)")
    fake = tmp_path / "fake-qemu"
    fake.write_text("#!/bin/sh\necho 'qemu: something is wrong' >&2\nexit 1\n")
    fake.chmod(0o755)
    kernel = tmp_path / "k"
    kernel.write_bytes(b"not a kernel")
    target = BootTarget("kernel+initrd", "direct", False, kernel=kernel, initrd=kernel, cmdline="console=ttyS0")
    vm = Machine(target, workdir=tmp_path / "vm", accel="tcg", qemu=str(fake), tpm=True, timeout_multiplier=1.0)
    with pytest.raises(InfraError, match="QEMU failed to start"):
        vm.start()
    assert vm.swtpm_pid is not None and not _alive(vm.swtpm_pid)
    assert (tmp_path / "vm" / "swtpm.log").exists()


@pytest.fixture(scope="module")
def base_target(fixture_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> BootTarget:
    from relkit import run_lkit

    out = tmp_path_factory.mktemp("swtpm")
    res = run_lkit(["build", "--offline", "--dir", out, SPECS / "base.yml"], env=fixture_env)
    assert res.rc == 0, res.stderr
    return boot_target("kernel+initrd", expand_prefix(out / "base"))


@needs_swtpm
@pytest.mark.e2e
def test_normal_run_leaves_no_swtpm(base_target: BootTarget, tmp_path: Path, case) -> None:
    case("host fault", "a VM with a TPM booted and shut down normally")
    with Machine(base_target, workdir=tmp_path / "vm", accel="tcg", tpm=True) as vm:
        vm.wait_for_marker("shell", 240)
        assert vm.succeed("ls /dev/tpm0 /dev/tpmrm0").split() == ["/dev/tpm0", "/dev/tpmrm0"]
        qemu, swtpm = vm.pid, vm.swtpm_pid
        assert _alive(swtpm)
    assert vm.stop() is not None and vm.stop().method == "powerdown"
    assert not _alive(qemu) and not _alive(swtpm)


@needs_swtpm
@pytest.mark.e2e
def test_failed_boot_leaves_no_swtpm(base_target: BootTarget, tmp_path: Path, case) -> None:
    case("guest fault", "a VM with a TPM whose boot fails (no initrd: kernel panic)")
    garbage = tmp_path / "initrd"
    garbage.write_bytes(b"\0" * 4096)
    target = BootTarget("kernel+initrd", "direct", False, kernel=base_target.kernel, initrd=garbage,
                        cmdline="console=ttyS0 panic=-1")
    with pytest.raises(LkitError):
        with Machine(target, workdir=tmp_path / "vm", accel="tcg", tpm=True) as vm:
            qemu, swtpm = vm.pid, vm.swtpm_pid
            vm.wait_for_marker("shell", 240)
    assert not _alive(qemu) and not _alive(swtpm)


@needs_swtpm
@pytest.mark.e2e
def test_sigint_to_a_tpm_suite_leaves_no_swtpm(store_copy: Path, tmp_path: Path, case) -> None:
    case("host fault", "Ctrl-C (SIGINT) to pytest running a suite with `tpm: true`")
    suites = tmp_path / "suites"
    suites.mkdir()
    (suites / "minimal.yml").write_text((REPO / "suites" / "minimal.yml").read_text())
    (suites / "minimal.test.yml").write_text((REPO / "suites" / "minimal.test.yml").read_text() + "tpm: true\n")
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={tmp_path}",
            f"--lkit-store={store_copy}", f"--lkit-build-dir={tmp_path / 'build'}",
            f"--lkit-report-dir={tmp_path / 'reports'}", "--lkit-accel=tcg", "--lkit-no-determinism"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=lkit_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    swtpm: list[int] = []
    qemu: list[int] = []
    try:
        deadline = time.monotonic() + 180
        while not (swtpm and qemu) and time.monotonic() < deadline and proc.poll() is None:
            swtpm, qemu = _children(proc.pid, "swtpm"), _children(proc.pid, "qemu-system")
            time.sleep(0.2)
        assert swtpm and qemu, "the plugin never started swtpm and QEMU"
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        for pid in swtpm + qemu:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, f"rc {proc.returncode}:\n{text[-3000:]}"
    assert not any(_alive(p) for p in swtpm), "swtpm outlived the interrupted pytest"
    assert not any(_alive(p) for p in qemu), "QEMU outlived the interrupted pytest"


def test_swtpm_dies_with_its_parent(tmp_path: Path, case) -> None:
    """PR_SET_PDEATHSIG: a harness killed with SIGKILL (no cleanup at all) takes swtpm with it."""
    case("host fault", "the process that started swtpm is killed (SIGKILL)")
    if not Path("/usr/bin/swtpm").exists():
        pytest.skip("swtpm")
    script = tmp_path / "holder.py"
    script.write_text(textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from pathlib import Path
        from lkit.machine.tpm import SwTpm
        tpm = SwTpm(Path({str(tmp_path / 'tpm')!r}), Path({str(tmp_path / 'sock')!r}))
        tpm.start()
        print(tpm.pid, flush=True)
        time.sleep(600)
    """))
    holder = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        swtpm = int(holder.stdout.readline())
        assert _alive(swtpm)
        holder.kill()
        holder.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive(swtpm) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not _alive(swtpm), "swtpm outlived the process that started it"
    finally:
        if holder.poll() is None:
            holder.kill()

"""Faults around QEMU: missing, fake (wrong version, exits at once, hangs), no OVMF, killed mid-boot, QMP
socket closed, and Ctrl-C to a pytest run that has a VM up.

Each ends within its bound with lkit's own error (InfraError: the host's fault; MachineError: the guest's),
and no QEMU (or fake) process outlives the case.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from relkit import REPO, lkit_env

from lkit.errors import InfraError, LkitError, MachineError
from lkit.machine import firmware
from lkit.machine.artifacts import BootTarget, boot_target, expand_prefix
from lkit.machine.vm import Machine

SPECS = Path(__file__).resolve().parent / "specs"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is as good as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _dummy_target(tmp: Path, efi: bool = False) -> BootTarget:
    kernel = tmp / "k"
    kernel.write_bytes(b"not a kernel")
    if efi:
        return BootTarget("iso-efi", "cdrom", True, cdrom=kernel)
    return BootTarget("kernel+initrd", "direct", False, kernel=kernel, initrd=kernel, cmdline="console=ttyS0")


def _fake_qemu(tmp: Path, body: str) -> Path:
    script = tmp / "fake-qemu"
    script.write_text("#!/bin/sh\n" + textwrap.dedent(body))
    script.chmod(0o755)
    return script


def test_qemu_missing(tmp_path: Path, case) -> None:
    case("qemu fault", "QEMU binary missing (qemu=/nonexistent)")
    t = time.monotonic()
    with pytest.raises(InfraError) as info:
        with Machine(_dummy_target(tmp_path), workdir=tmp_path / "vm", accel="tcg", qemu="/nonexistent"):
            pass
    assert "/nonexistent" in str(info.value) and "qemu-system-x86" in str(info.value)
    assert time.monotonic() - t < 10


def test_qemu_missing_auto_accel(tmp_path: Path, case) -> None:
    case("qemu fault", "QEMU binary missing with accel=auto (KVM probe path)")
    with pytest.raises(InfraError) as info:
        with Machine(_dummy_target(tmp_path), workdir=tmp_path / "vm", accel="auto", qemu="/nonexistent"):
            pass
    assert "/nonexistent" in str(info.value)


@pytest.mark.parametrize("kind", ["wrong-version", "exits-at-once", "hangs-silently"])
def test_fake_qemu(kind: str, tmp_path: Path, case) -> None:
    case("qemu fault", f"fake qemu that {kind.replace('-', ' ')}")
    pidfile = tmp_path / "fake.pid"
    bodies = {
        "wrong-version": 'echo "QEMU emulator version 0.0.1 (not really)"; exit 0\n',
        "exits-at-once": 'echo "qemu: could not load PC BIOS" >&2; exit 1\n',
        "hangs-silently": f'echo $$ > {pidfile}\nexec sleep 1000\n',
    }
    fake = _fake_qemu(tmp_path, bodies[kind])
    t = time.monotonic()
    with pytest.raises(LkitError) as info:
        with Machine(_dummy_target(tmp_path), workdir=tmp_path / "vm", accel="tcg", qemu=str(fake),
                     timeout_multiplier=1.0):
            pass
    elapsed = time.monotonic() - t
    text = str(info.value)
    assert "Traceback" not in text
    if kind == "exits-at-once":
        assert isinstance(info.value, InfraError) and "could not load PC BIOS" in text, text
    elif kind == "wrong-version":
        assert isinstance(info.value, InfraError) and "exit 0" in text, text
    else:
        assert isinstance(info.value, MachineError), text
        assert pidfile.exists()
        pid = int(pidfile.read_text())
        assert not _alive(pid), "the hung fake QEMU was left running"
    assert elapsed < 30, f"took {elapsed:.1f}s"


def test_ovmf_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case) -> None:
    case("qemu fault", "OVMF missing (empty firmware descriptor folder)")
    empty = tmp_path / "descriptors"
    empty.mkdir()
    monkeypatch.setattr("lkit.machine.vm.find_ovmf", functools.partial(firmware.find_ovmf, [empty]))
    with pytest.raises(InfraError) as info:
        with Machine(_dummy_target(tmp_path, efi=True), workdir=tmp_path / "vm", accel="tcg"):
            pass
    assert "ovmf" in str(info.value).lower() and str(empty) in str(info.value)


def test_ovmf_descriptor_names_missing_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, case) -> None:
    case("qemu fault", "OVMF descriptor naming firmware files that do not exist")
    d = tmp_path / "descriptors"
    d.mkdir()
    (d / "60-fake.json").write_text(json.dumps({
        "interface-types": ["uefi"], "features": [],
        "mapping": {"device": "flash", "executable": {"filename": str(tmp_path / "nope_CODE.fd")},
                    "nvram-template": {"filename": str(tmp_path / "nope_VARS.fd")}},
        "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}]}))
    (d / "10-broken.json").write_text("{not json")
    monkeypatch.setattr("lkit.machine.vm.find_ovmf", functools.partial(firmware.find_ovmf, [d]))
    with pytest.raises(InfraError) as info:
        with Machine(_dummy_target(tmp_path, efi=True), workdir=tmp_path / "vm", accel="tcg"):
            pass
    assert "names missing files" in str(info.value)


# ---------------------------------------------------------------------------------- real QEMU

@pytest.fixture(scope="module")
def base_target(fixture_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> BootTarget:
    from relkit import run_lkit

    out = tmp_path_factory.mktemp("qemu-faults")
    res = run_lkit(["build", "--offline", "--dir", out, SPECS / "base.yml"], env=fixture_env)
    assert res.rc == 0, res.stderr
    return boot_target("kernel+initrd", expand_prefix(out / "base"))


@pytest.mark.e2e
def test_qemu_killed_mid_boot(base_target: BootTarget, tmp_path: Path, case) -> None:
    case("qemu fault", "QEMU killed (SIGKILL) mid-boot")
    with Machine(base_target, workdir=tmp_path / "vm", accel="tcg", timeout_multiplier=1.0) as m:
        m.wait_for_console_text(r"Linux version", 120)
        pid = m.pid
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        t = time.monotonic()
        with pytest.raises(MachineError) as info:
            m.wait_for_console_text(r"lkit: shell ready", 180)
        elapsed = time.monotonic() - t
    text = str(info.value)
    assert elapsed < 15, f"noticed the dead QEMU only after {elapsed:.1f}s"
    # The machine layer reports this either from its exit check ("QEMU exited with code -9", with a
    # console tail) or, when the serial socket closes first, as "ttyS0 closed (QEMU exited?)".
    assert "QEMU exited" in text, text
    assert "Linux version" in m.console_text(), "the console up to the kill is kept"
    assert (tmp_path / "vm" / "console.log").read_text().count("Linux version") >= 1
    assert not _alive(pid)


@pytest.mark.e2e
def test_qmp_socket_closed(base_target: BootTarget, tmp_path: Path, case) -> None:
    case("qemu fault", "QMP socket closed under a running machine")
    t0 = time.monotonic()
    with Machine(base_target, workdir=tmp_path / "vm", accel="tcg", timeout_multiplier=1.0,
                 exit_shutdown_timeout=10) as m:
        m.wait_for_console_text(r"Linux version", 120)
        pid = m.pid
        assert pid is not None and m._qmp is not None
        m._qmp.close()  # fault injection: the host side of QMP goes away
        t = time.monotonic()
        with pytest.raises(MachineError) as info:
            m.qmp("query-status")
        assert time.monotonic() - t < 10
        assert "QMP" in str(info.value)
        result = m.shutdown(timeout=10)
    assert result.method in ("kill", "exited", "quit"), result
    assert not _alive(pid)
    assert time.monotonic() - t0 < 240


@pytest.mark.e2e
def test_sigint_to_pytest_with_vm_up(base_target: BootTarget, tmp_path: Path, case) -> None:
    case("host fault", "Ctrl-C (SIGINT) to a pytest run with a VM booting")
    marker = tmp_path / "qemu.pid"
    reports = tmp_path / "reports"
    test_file = tmp_path / "test_interrupted.py"
    test_file.write_text(textwrap.dedent(f"""
        import time
        from pathlib import Path
        from lkit.machine.artifacts import boot_target, expand_prefix
        from lkit.machine.vm import Machine

        def test_ok():
            assert True

        def test_boot_then_wait(tmp_path):
            target = boot_target("kernel+initrd", [Path({str(base_target.kernel)!r}), Path({str(base_target.initrd)!r})],
                                 cmdline={base_target.cmdline!r})
            with Machine(target, workdir=tmp_path / "vm", accel="tcg") as m:
                qmp = next(a for a in m.argv if a.startswith("unix:")).split(",")[0][5:]
                Path({str(marker)!r}).write_text(f"{{m.pid}} {{qmp}}")
                time.sleep(600)
    """))
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={reports / 'junit.xml'}",
            f"--lkit-report-dir={reports}", f"--rootdir={tmp_path}", str(test_file)]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=lkit_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
        assert marker.exists(), "the VM never came up in the child pytest"
        time.sleep(0.2)
        pid_text, qmp_path = marker.read_text().split()
        qemu_pid = int(pid_text)
        assert _alive(qemu_pid)
        os.killpg(proc.pid, signal.SIGINT)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    text = out.decode(errors="replace")
    assert proc.returncode == 2, f"pytest's interrupted exit code is 2, got {proc.returncode}:\n{text[-2000:]}"
    assert "KeyboardInterrupt" in text
    deadline = time.monotonic() + 10
    while _alive(qemu_pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(qemu_pid), "QEMU outlived the interrupted pytest"
    for report in list(reports.rglob("*.json")):
        json.loads(report.read_text())  # every report written so far is valid JSON
    junit = reports / "junit.xml"
    if junit.exists():
        import xml.etree.ElementTree as ET

        ET.parse(junit)
    assert not Path(qmp_path).parent.exists(), "the VM's socket folder was left behind"


@pytest.mark.e2e
def test_sigint_to_plugin_suite_run(store_copy: Path, tmp_path: Path, case) -> None:
    """Ctrl-C to `pytest` running a spec suite through lkit's plugin while its VM boots."""
    case("host fault", "Ctrl-C (SIGINT) to pytest running the minimal suite through the plugin")
    suites = tmp_path / "suites"
    suites.mkdir()
    for name in ("minimal.yml", "minimal.test.yml"):
        (suites / name).write_text((REPO / "suites" / name).read_text())
    build, reports = tmp_path / "build", tmp_path / "reports"
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--rootdir={tmp_path}",
            f"--lkit-store={store_copy}", f"--lkit-build-dir={build}", f"--lkit-report-dir={reports}",
            "--lkit-accel=tcg", "--lkit-no-determinism"]
    proc = subprocess.Popen(argv, cwd=tmp_path, env=lkit_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    qemu_pid = None
    try:
        deadline = time.monotonic() + 180
        while qemu_pid is None and time.monotonic() < deadline and proc.poll() is None:
            qemu_pid = _qemu_using(build)
            time.sleep(0.2)
        assert qemu_pid is not None, "the plugin never started QEMU"
        time.sleep(1.0)
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=120)
        stop_seconds = time.monotonic() - t
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if qemu_pid is not None and _alive(qemu_pid):
            os.kill(qemu_pid, signal.SIGKILL)
    text = out.decode(errors="replace")
    print(f"\npytest (plugin) stopped {stop_seconds:.1f}s after SIGINT")
    assert proc.returncode == 2, f"rc {proc.returncode}:\n{text[-3000:]}"
    assert not _alive(qemu_pid), "QEMU outlived the interrupted pytest"
    assert stop_seconds < 60, f"pytest took {stop_seconds:.1f}s to stop after Ctrl-C"
    summaries = list(reports.rglob("*.json"))
    for report in summaries:
        json.loads(report.read_text())
    assert not [p for p in build.rglob("*") if p.name.startswith(("lkit-build.", "lkit-cache."))]


def _qemu_using(folder: Path) -> int | None:
    """The pid of a QEMU whose command line names a file under `folder`, if one runs."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"qemu-system-x86_64") and any(str(folder).encode() in a for a in cmdline):
            return int(proc.name)
    return None

"""lkit.machine.testguest's download: a failed copy leaves no staging folder and no half guest.

No network: apt-get and dpkg-deb are replaced by a fake that lays out what the packages unpack to.
"""

from __future__ import annotations

import errno
import shutil
import subprocess
from pathlib import Path

import pytest

from lkit.errors import InfraError
from lkit.machine import testguest


@pytest.fixture()
def fake_apt(monkeypatch) -> dict[str, bool]:
    """apt-get download writes a .deb; dpkg-deb -x unpacks a kernel, busybox and modules (unless told not)."""
    layout = {"busybox": True}

    def run(argv: list[str], **kwargs: object) -> subprocess.CompletedProcess:
        if argv[:2] == ["apt-get", "download"]:
            (Path(str(kwargs["cwd"])) / "pkg.deb").write_bytes(b"deb")
        elif argv[:2] == ["dpkg-deb", "-x"]:
            root = Path(argv[3])
            (root / "boot").mkdir(parents=True)
            (root / "boot" / "vmlinuz-6.1.0-1-cloud-amd64").write_bytes(b"kernel")
            (root / "bin").mkdir()
            if layout["busybox"]:
                (root / "bin" / "busybox").write_bytes(b"busybox")
            mods = root / "lib" / "modules" / "6.1.0-1-cloud-amd64" / "kernel"
            mods.mkdir(parents=True)
            for name in testguest.NET_MODULES:
                (mods / f"{name}.ko").write_bytes(b"ko")
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    monkeypatch.setattr(testguest.subprocess, "run", run)
    return layout


def test_download_installs_the_parts(tmp_path, fake_apt):
    dest = tmp_path / "linux-image-x"
    testguest._download(["linux-image-x", "busybox-static"], dest)
    assert (dest / "vmlinuz").read_bytes() == b"kernel" and (dest / "busybox").is_file()
    assert sorted(p.stem for p in (dest / "modules").iterdir()) == sorted(testguest.NET_MODULES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["linux-image-x"]


def test_failed_copy_removes_the_staging_folder(tmp_path, fake_apt, monkeypatch):
    real = shutil.copy2

    def copy2(src: object, dst: object, **kwargs: object) -> object:
        if str(dst).endswith(".ko"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(src, dst, **kwargs)

    monkeypatch.setattr(testguest.shutil, "copy2", copy2)
    with pytest.raises(InfraError, match="No space left"):
        testguest._download(["linux-image-x", "busybox-static"], tmp_path / "linux-image-x")
    assert list(tmp_path.iterdir()) == []


def test_packages_without_busybox_are_an_infra_error_and_leave_nothing(tmp_path, fake_apt):
    fake_apt["busybox"] = False
    with pytest.raises(InfraError, match="bin/busybox"):
        testguest._download(["linux-image-x", "busybox-static"], tmp_path / "linux-image-x")
    assert list(tmp_path.iterdir()) == []


def test_arm64_init_waits_for_the_channel_only_when_it_runs_the_agent():
    """A shell-only guest loads no module, so virtio_console never makes /dev/hvc0: waiting for it cost
    bench/boot.py's arm64 floor 10 s of its 12.5 s."""
    import subprocess

    from lkit.core.arch import AMD64, ARM64
    from lkit.machine.testguest import init_script

    for shell_only in (False, True):
        script = init_script(ARM64, native=False, shell_only=shell_only)
        wait = next(line for line in script.splitlines() if "/dev/hvc0" in line and "while" in line)
        assert wait.startswith('[ "$LKIT_SHELL_ONLY" = 1 ] || {'), wait
        assert ("LKIT_SHELL_ONLY=1" in script) is shell_only
        # the guard does what it says: sh skips the loop when the flag is set, and runs it otherwise
        probe = wait.replace("/dev/hvc0", "/dev/null").replace("-c /dev/null", "-e /nonexistent").replace(
            "-lt 100", "-lt 2").replace("sleep 0.1", "echo looped")
        out = subprocess.run(["sh", "-c", probe], env={"LKIT_SHELL_ONLY": "1" if shell_only else "0"},
                             capture_output=True, text=True, timeout=10).stdout
        assert ("looped" in out) is (not shell_only), out
    assert "hvc0" not in init_script(AMD64, native=True)

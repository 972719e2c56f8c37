"""Every output format of a real spec: built natively, byte-identical twice, and bootable.

suites/minimal.yml (lkit's kernel and init images from the store) is built in every format; each
bootable one boots under QEMU (TCG) to lkit's shell, answers a command through the channel, and powers
off through ACPI.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lkit.build.builder import BuiltImage, build
from lkit.build.outputs.base import FORMAT_NAMES
from lkit.images.store import Store
from lkit.machine.artifacts import boot_target
from lkit.machine.vm import Machine
from lkit.spec import load_spec

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "suites" / "minimal.yml"
BOOTABLE = [f for f in FORMAT_NAMES if f not in ("tar", "tar-kernel-initrd")]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> BuiltImage:
    out = tmp_path_factory.mktemp("all-formats")
    return build(load_spec([SPEC]), list(FORMAT_NAMES), out, store=Store.default(), use_cache=False)


def test_every_format_is_byte_identical_when_built_again(built: BuiltImage, tmp_path: Path):
    again = build(load_spec([SPEC]), list(FORMAT_NAMES), tmp_path, store=Store.default(), use_cache=False)
    for fmt in FORMAT_NAMES:
        first = {a.path.name: a.sha256 for a in built.artifacts[fmt]}
        second = {a.path.name: a.sha256 for a in again.artifacts[fmt]}
        assert first == second, fmt


def test_tar_formats_hold_the_root_and_the_boot_files(built: BuiltImage):
    import tarfile

    with tarfile.open(built.files("tar")[0]) as tar:
        names = set(tar.getnames())
    assert {"boot/kernel", "boot/cmdline", "init", "etc/init.d/rcS"} <= names
    with tarfile.open(built.files("tar-kernel-initrd")[0]) as tar:
        assert sorted(tar.getnames()) == ["cmdline", "initrd.img", "kernel"]


@pytest.mark.parametrize("fmt", BOOTABLE)
def test_format_boots_to_the_shell_and_powers_off(fmt: str, built: BuiltImage, tmp_path: Path):
    target = boot_target(fmt, built.files(fmt))
    with Machine(target, workdir=tmp_path, accel="tcg", memory_mb=1024) as vm:
        vm.wait_for_marker("shell", timeout=180)
        assert "console=ttyS0" in vm.succeed("cat /proc/cmdline").split()  # the spec's cmdline reached the kernel
        assert vm.run("exit 3").rc == 3
        assert not vm.badness, vm.badness
        result = vm.shutdown()
    assert result.method == "powerdown", result
    assert "lkit: poweroff" in vm.console_text()

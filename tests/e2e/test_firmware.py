"""Firmware as a test axis, with real parts: OVMF's Secure Boot build with lkit's test keys enrolled
(virt-fw-vars), EFI images signed by sbsign, a software TPM (swtpm), under QEMU (TCG).

- a signed iso-efi boots with Secure Boot on, the guest says so (its SecureBoot EFI variable), and its
  TPM's PCRs 0-7 are measured (non-zero) and the same after a reboot, which keeps an EFI variable
  written in the first boot and the same swtpm;
- the same image unsigned, and signed with a key that is not enrolled, are refused by the firmware
  ("Access Denied" on the console; the kernel never starts).

Boot times are printed (`-s`): the Secure Boot variant's cost against plain OVMF.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkit.build.builder import build
from lkit.core.secureboot import KeySet, generated_keys
from lkit.errors import MachineError
from lkit.images.store import Store
from lkit.machine import efi
from lkit.machine.artifacts import BootTarget, boot_target
from lkit.machine.vm import Machine
from lkit.spec import load_spec

pytestmark = pytest.mark.e2e

# The smallest image that can read EFI variables: lkit's init, runc for the onboot container, and
# lkit/efivarfs, which loads Debian's efivarfs module (the fixture kernel carries few modules).
SPEC = """\
kernel:
  image: lkit/kernel:6.1
  cmdline: "console=ttyS0"
init:
  - lkit/init:1
  - lkit/runc:1.1
onboot:
  - name: efivarfs
    image: lkit/efivarfs:1
    capabilities: [CAP_SYS_MODULE]
"""
BOOT_TIMEOUT = 300
REFUSED = r"Access Denied|Security Violation"
OUR_GUID = "4c4b4954-7465-7374-2d72-65626f6f7431"     # any GUID of our own for the test variable
TIMES: dict[str, float] = {}


@dataclass(frozen=True)
class Images:
    unsigned: BootTarget
    signed: BootTarget
    wrongly_signed: BootTarget
    keys: KeySet


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    work = tmp_path_factory.mktemp("firmware")
    (work / "sbtest.yml").write_text(SPEC)
    spec = load_spec([work / "sbtest.yml"])
    keys = generated_keys(work / "keys" / "test")
    other = generated_keys(work / "keys" / "other")     # never enrolled
    store = Store(Path(os.environ["LKIT_STORE"])) if os.environ.get("LKIT_STORE") else Store.default()
    cache = work / "cache"
    plain = build(spec, ["iso-efi"], work / "plain", store=store, cache_dir=cache)
    signed = build(spec, ["iso-efi"], work / "signed", store=store, cache_dir=cache, keys=keys)
    wrong = build(spec, ["iso-efi"], work / "wrong", store=store, cache_dir=cache, keys=other)
    return Images(boot_target("iso-efi", plain.files("iso-efi")), boot_target("iso-efi", signed.files("iso-efi")),
                  boot_target("iso-efi", wrong.files("iso-efi")), keys)


@pytest.fixture(scope="module")
def secure_vm(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Machine]:
    with Machine(images.signed, workdir=tmp_path_factory.mktemp("sbvm"), accel="tcg", secure_boot=True,
                 keys=images.keys, tpm=True) as vm:
        TIMES["efi-secureboot + tpm: shell"] = vm.wait_for_marker("shell", BOOT_TIMEOUT).host
        yield vm


def test_signed_image_boots_with_secure_boot_on(secure_vm: Machine) -> None:
    assert "smm=on" in " ".join(secure_vm.argv)
    state = efi.secure_boot_state(secure_vm)
    assert state.enabled is True, state
    assert state.source.startswith("/sys/firmware/efi/efivars/SecureBoot-"), state   # read from the variable
    assert efi.read_variable(secure_vm, "SetupMode") == (6, b"\x00")    # keys enrolled: user mode
    assert secure_vm.timeline.onboot_exits() == {"efivarfs": 0}


def test_tpm_pcrs_are_measured_and_survive_a_reboot_with_an_efi_variable(secure_vm: Machine) -> None:
    assert efi.tpm_devices(secure_vm) and efi.tpm_version(secure_vm) == "2"
    first = secure_vm.pcrs(indices=range(8))
    assert sorted(first) == list(range(8))
    assert all(value.strip("0") for value in first.values()), f"a PCR of 0-7 is zero: {first}"
    swtpm = secure_vm.swtpm_pid
    efi.write_variable(secure_vm, "LkitRebootTest", b"written in boot 1", OUR_GUID)

    t = time.monotonic()
    secure_vm.reboot(BOOT_TIMEOUT)
    TIMES["reboot to shell"] = time.monotonic() - t
    assert len(secure_vm.boots) == 1 and secure_vm.timeline.get("shell") is not None

    assert efi.read_variable(secure_vm, "LkitRebootTest", OUR_GUID) == (efi.NV_BS_RT, b"written in boot 1")
    assert secure_vm.swtpm_pid == swtpm, "the reboot kept the same TPM"
    second = secure_vm.pcrs(indices=range(8))
    assert second == first, "PCR 0-7 differ between two boots of the same image"
    assert efi.secure_boot_state(secure_vm).enabled is True


def test_no_swtpm_or_qemu_outlives_the_machine(images: Images, tmp_path: Path) -> None:
    with Machine(images.signed, workdir=tmp_path / "vm", accel="tcg", secure_boot=True, keys=images.keys,
                 tpm=True, exit_shutdown_timeout=0) as vm:
        vm.wait_for_console_text("Linux version", BOOT_TIMEOUT)
        qemu, swtpm = vm.pid, vm.swtpm_pid
        assert qemu and swtpm and _alive(swtpm)
    assert not _alive(qemu) and not _alive(swtpm)
    assert (tmp_path / "vm" / "tpm").is_dir() and (tmp_path / "vm" / "OVMF_VARS.raw").is_file()   # per-VM state


@pytest.mark.parametrize("which", ["unsigned", "wrongly_signed"])
def test_firmware_refuses_an_image_it_cannot_verify(images: Images, which: str, tmp_path: Path) -> None:
    target = getattr(images, which)
    with Machine(target, workdir=tmp_path / "vm", accel="tcg", secure_boot=True, keys=images.keys,
                 exit_shutdown_timeout=0) as vm:
        t = time.monotonic()
        found = vm.wait_for_console_text(REFUSED, BOOT_TIMEOUT)
        TIMES[f"{which}: refused after"] = time.monotonic() - t
        vm.screendump(tmp_path / "refused.png")
        with pytest.raises(MachineError):     # nothing boots after the refusal
            vm.wait_for_console_text(r"Linux version|EFI stub|Welcome to LinuxKit", 20)
    print(f"\n{which}: {found.group(0)!r}: {_line_of(vm.console_text(), found.group(0))}")
    assert (tmp_path / "refused.png").stat().st_size > 0


def test_the_seed_iso_efi_unsigned_is_refused(tmp_path: Path) -> None:
    """The seed spec's own iso-efi (suites/linuxkit.yml, whose signed twin the suite's
    iso-efi@efi-secureboot variant boots) is refused unsigned by the same firmware and keys."""
    spec = load_spec([Path(__file__).resolve().parents[2] / "suites" / "linuxkit.yml"])
    store = Store(Path(os.environ["LKIT_STORE"])) if os.environ.get("LKIT_STORE") else Store.default()
    keys = generated_keys(tmp_path / "keys")
    plain = build(spec, ["iso-efi"], tmp_path / "plain", store=store, cache_dir=tmp_path / "cache")
    target = boot_target("iso-efi", plain.files("iso-efi"))
    with Machine(target, workdir=tmp_path / "vm", accel="tcg", secure_boot=True, keys=keys,
                 exit_shutdown_timeout=0) as vm:
        vm.wait_for_console_text(REFUSED, BOOT_TIMEOUT)
        with pytest.raises(MachineError):
            vm.wait_for_console_text(r"Linux version|EFI stub|Welcome to LinuxKit", 20)


def test_plain_efi_boot_time_for_comparison(images: Images, tmp_path: Path) -> None:
    """The same image without Secure Boot or TPM, so the variant's cost is a figure, not a guess."""
    with Machine(images.unsigned, workdir=tmp_path / "vm", accel="tcg", exit_shutdown_timeout=0) as vm:
        TIMES["efi: shell"] = vm.wait_for_marker("shell", BOOT_TIMEOUT).host
        state = efi.secure_boot_state(vm)
        assert state.enabled is False, state
    print("\n" + "\n".join(f"  {k}: {v:.1f} s" for k, v in TIMES.items()))


def _alive(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def _line_of(text: str, needle: str) -> str:
    return next((line.strip() for line in text.splitlines() if needle in line), "")

"""Secure Boot on arm64, with real parts: Debian's AAVMF under qemu-system-aarch64 (TCG), its
Microsoft-enrolled variable store with those keys deleted and lkit's test keys enrolled (virt-fw-vars),
the arm64 unified kernel image signed with the test db key.

- the signed iso-efi boots with Secure Boot on (its SecureBoot variable), in user mode, and the
  firmware's KEK and db hold the suite's certificates and nothing of Microsoft's;
- the same image unsigned is refused ("Access Denied"; the kernel never starts).
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkit.build.builder import build
from lkit.core.arch import ARM64
from lkit.core.secureboot import KeySet, generated_keys
from lkit.errors import MachineError
from lkit.images.store import Store
from lkit.machine import efi
from lkit.machine.artifacts import BootTarget, boot_target
from lkit.machine.firmware import find_ovmf
from lkit.machine.vm import Machine
from lkit.spec import load_spec

from tests.e2e.test_firmware import BOOT_TIMEOUT, REFUSED, SPEC

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(shutil.which(ARM64.qemu) is None,
                                 reason=f"{ARM64.qemu} is not installed (Debian package {ARM64.qemu_package})")]

IMAGE_SECURITY_DATABASE = "d719b2cb-3d3a-4596-a3bc-dad00e67656f"    # db, dbx
TIMES: dict[str, float] = {}


@dataclass(frozen=True)
class Arm64Images:
    unsigned: BootTarget
    signed: BootTarget
    keys: KeySet


@pytest.fixture(scope="module")
def arm64_images(tmp_path_factory: pytest.TempPathFactory) -> Arm64Images:
    work = tmp_path_factory.mktemp("firmware-arm64")
    (work / "sbtest.yml").write_text(SPEC.replace("console=ttyS0", "console=ttyAMA0"))
    spec = load_spec([work / "sbtest.yml"])
    keys = generated_keys(work / "keys" / "test")
    store = Store(Path(os.environ["LKIT_STORE"])) if os.environ.get("LKIT_STORE") else Store.default()
    cache = work / "cache"
    plain = build(spec, ["iso-efi"], work / "plain", store=store, cache_dir=cache, arch=ARM64)
    signed = build(spec, ["iso-efi"], work / "signed", store=store, cache_dir=cache, keys=keys, arch=ARM64)
    return Arm64Images(boot_target("iso-efi", plain.files("iso-efi")), boot_target("iso-efi", signed.files("iso-efi")),
                       keys)


@pytest.fixture(autouse=True)
def _private_enrolled_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Enrol into a fresh cache, so the test proves today's enrolment, not a store made before."""
    monkeypatch.setenv("LKIT_SECUREBOOT_KEYS", str(tmp_path / "sbkeys"))


def test_this_host_takes_aavmfs_vendor_store_without_its_keys() -> None:
    fw = find_ovmf(secure_boot=True, arch=ARM64)
    assert fw.secure_boot and fw.vendor_keys, fw
    assert fw.code.resolve() == find_ovmf(arch=ARM64).code.resolve()   # Debian: the same code, SB built in


def test_signed_arm64_image_boots_with_secure_boot_and_only_the_suites_keys(arm64_images: Arm64Images,
                                                                           tmp_path: Path) -> None:
    with Machine(arm64_images.signed, workdir=tmp_path / "vm", accel="tcg", arch=ARM64, secure_boot=True,
                 keys=arm64_images.keys, exit_shutdown_timeout=0) as vm:
        TIMES["arm64 efi-secureboot: shell"] = vm.wait_for_marker("shell", BOOT_TIMEOUT).host
        assert "smm=on" not in " ".join(vm.argv)                       # Arm has no SMM
        state = efi.secure_boot_state(vm)
        assert state.enabled is True and state.source.startswith("/sys/firmware/efi/efivars/"), state
        assert efi.read_variable(vm, "SetupMode") == (6, b"\x00")     # keys enrolled: user mode
        kek = efi.read_variable(vm, "KEK")
        db = efi.read_variable(vm, "db", IMAGE_SECURITY_DATABASE)
        assert kek is not None and db is not None
        assert _der(arm64_images.keys.kek) in kek[1] and _der(arm64_images.keys.db) in db[1]
        assert b"Microsoft" not in kek[1] + db[1], "a vendor's key is still enrolled"
        assert vm.timeline.onboot_exits() == {"efivarfs": 0}


def test_unsigned_arm64_image_is_refused(arm64_images: Arm64Images, tmp_path: Path) -> None:
    with Machine(arm64_images.unsigned, workdir=tmp_path / "vm", accel="tcg", arch=ARM64, secure_boot=True,
                 keys=arm64_images.keys, exit_shutdown_timeout=0) as vm:
        t = time.monotonic()
        vm.wait_for_console_text(REFUSED, BOOT_TIMEOUT)
        TIMES["arm64 unsigned: refused after"] = time.monotonic() - t
        with pytest.raises(MachineError):     # nothing boots after the refusal
            vm.wait_for_console_text(r"Linux version|EFI stub|Welcome to LinuxKit", 20)
    print("\n" + "\n".join(f"  {k}: {v:.1f} s" for k, v in TIMES.items()))


def _der(pem: Path) -> bytes:
    """A PEM certificate's DER bytes (what an EFI signature list holds)."""
    import base64

    body = "".join(line for line in pem.read_text().splitlines() if line and not line.startswith("-----"))
    return base64.b64decode(body)

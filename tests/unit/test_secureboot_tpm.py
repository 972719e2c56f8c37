"""Secure Boot and TPM pieces without a VM: variants and their names, NAME.test.yml fields and their
errors, the QEMU command line, the firmware descriptor, and the real tools (openssl, sbsign under
libfaketime, virt-fw-vars, swtpm) on small inputs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from lkit.core.secureboot import KeySet, generated_keys
from lkit.errors import SpecError
from lkit.machine.artifacts import boot_target
from lkit.machine.firmware import choose, enrolled_vars, find_ovmf
from lkit.machine.qemu import QemuConfig, Sockets, build_argv
from lkit.pytest_plugin import variants
from lkit.pytest_plugin.expectations import load_expectations

STUB = Path("/usr/lib/systemd/boot/efi/linuxx64.efi.stub")
needs = pytest.mark.skipif


# -- variants ----------------------------------------------------------------------------------------
def test_variant_names_keep_the_plain_name_for_efi() -> None:
    assert variants.variant_id("iso-efi", "efi") == "iso-efi"
    assert variants.variant_id("iso-efi", "efi-secureboot") == "iso-efi@efi-secureboot"
    assert variants.split("iso-efi@efi-secureboot") == ("iso-efi", variants.Firmware.EFI_SECUREBOOT)
    assert variants.split("iso-efi") == ("iso-efi", variants.Firmware.EFI)
    assert variants.split("iso-bios") == ("iso-bios", None)
    assert variants.is_variant("raw-efi@efi-secureboot") and not variants.is_variant("iso-bios@efi-secureboot")
    assert not variants.is_variant("iso-efi@uefi")


def test_bios_formats_ignore_firmware_with_a_line() -> None:
    out, notes = variants.expand("seed.yml", ["kernel+initrd", "iso-bios", "iso-efi"], ["efi", "efi-secureboot"])
    assert out == ["kernel+initrd", "iso-bios", "iso-efi", "iso-efi@efi-secureboot"]
    assert notes == ["lkit: seed.yml: firmware efi-secureboot applies to EFI formats only; kernel+initrd, "
                     "iso-bios boot once, as before"]


def test_only_secureboot_and_an_unsignable_format() -> None:
    out, notes = variants.expand("s.yml", ["iso-efi", "iso-efi-initrd"], ["efi-secureboot"])
    assert out == ["iso-efi@efi-secureboot", "iso-efi-initrd"]
    assert len(notes) == 1 and "iso-efi-initrd has no efi-secureboot variant" in notes[0]
    assert variants.expand("s.yml", ["iso-efi"], ["efi"]) == (["iso-efi"], [])


# -- NAME.test.yml -----------------------------------------------------------------------------------
def _load(tmp_path: Path, text: str):
    path = tmp_path / "x.test.yml"
    path.write_text(text)
    return load_expectations(path)


def test_firmware_tpm_and_variant_budgets(tmp_path: Path) -> None:
    exp = _load(tmp_path, "firmware: [efi, efi-secureboot]\ntpm: true\n"
                          "budgets: {boot_time: {default: 60, iso-efi: 90, iso-efi@efi-secureboot: 150}}\n")
    assert exp.firmware == ["efi", "efi-secureboot"] and exp.tpm is True and exp.secureboot_keys is None
    assert exp.boot_time_budget("iso-efi@efi-secureboot") == 150
    assert exp.boot_time_budget("iso-efi") == 90 and exp.boot_time_budget("raw-efi@efi-secureboot") == 60


@pytest.mark.parametrize("text, where, what", [
    ("firmware: [efi, uefi-sb]\n", r"x\.test\.yml:1", "unknown firmware 'uefi-sb'"),
    ("firmware: [efi, efi]\n", r"x\.test\.yml:1", "listed twice"),
    ("firmware: []\n", r"x\.test\.yml:1", "lists no firmware"),
    ("tpm: maybe\n", r"x\.test\.yml:1", "tpm"),
    ("budgets: {boot_time: {iso-bios@efi-secureboot: 9}}\n", r"x\.test\.yml:1", "not an output format"),
    ("secureboot: {keys: {pk: PK.crt}}\n", r"x\.test\.yml:1", "kek"),
    ("secureboot: {keys: {pk: PK.crt, kek: KEK.crt, db: db.crt, db_key: db.key}}\n", r"x\.test\.yml:1",
     "no such file 'PK.crt'"),
])
def test_bad_firmware_fields_name_file_line_and_field(tmp_path: Path, text: str, where: str, what: str) -> None:
    with pytest.raises(SpecError, match=where) as caught:
        _load(tmp_path, text)
    assert what in str(caught.value)


def test_own_keys_are_read_relative_to_the_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    for role in ("PK", "KEK", "db"):
        (keys / f"{role}.crt").write_text("-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n")
    (keys / "db.key").write_text("-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----\n")
    exp = _load(tmp_path, "secureboot:\n  keys: {pk: keys/PK.crt, kek: keys/KEK.crt, db: keys/db.crt, db_key: keys/db.key}\n")
    assert exp.secureboot_keys is not None and exp.secureboot_keys.db == keys / "db.crt"
    assert "x.test.yml:2" in exp.secureboot_keys.origin
    (keys / "db.key").write_text("not a key")
    with pytest.raises(SpecError, match="not a PEM private key"):
        _load(tmp_path, "secureboot:\n  keys: {pk: keys/PK.crt, kek: keys/KEK.crt, db: keys/db.crt, db_key: keys/db.key}\n")


# -- QEMU command line and firmware ----------------------------------------------------------------
def test_secure_boot_needs_smm_and_a_secure_pflash_and_tpm_adds_its_device(tmp_path: Path) -> None:
    t = boot_target("iso-efi", [tmp_path / "x-efi.iso"])
    tpm = ("-chardev", "socket,id=chrtpm0,path=/tmp/s/tpm", "-tpmdev", "emulator,id=tpm0,chardev=chrtpm0",
           "-device", "tpm-tis,tpmdev=tpm0")
    argv = build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), firmware_code=Path("/fw/C.fd"),
                                 firmware_vars=tmp_path / "V.fd", secure_boot=True, tpm=tpm))
    assert argv[argv.index("-machine") + 1] == "q35,smm=on,accel=tcg"
    assert "driver=cfi.pflash01,property=secure,value=on" in argv
    assert "tpm-tis,tpmdev=tpm0" in argv and "emulator,id=tpm0,chardev=chrtpm0" in argv
    plain = build_argv(QemuConfig(t, Sockets.in_dir(tmp_path), firmware_code=Path("/fw/C.fd"),
                                  firmware_vars=tmp_path / "V.fd"))
    assert plain[plain.index("-machine") + 1] == "q35,accel=tcg" and "-tpmdev" not in plain


def test_secure_boot_descriptor_has_smm_and_no_enrolled_keys(tmp_path: Path) -> None:
    base = {"interface-types": ["uefi"], "targets": [{"architecture": "x86_64", "machines": ["pc-q35-*"]}],
            "mapping": {"device": "flash", "executable": {"filename": "c"}, "nvram-template": {"filename": "v"}}}
    secure = dict(base, features=["secure-boot", "requires-smm"])
    enrolled = dict(base, features=["secure-boot", "requires-smm", "enrolled-keys"])
    assert choose(secure, secure_boot=True) and not choose(secure)
    assert not choose(enrolled, secure_boot=True) and not choose(base, secure_boot=True)
    assert json.dumps(base)   # the plain one stays the default's


@needs(not Path("/usr/share/qemu/firmware/50-edk2-x86_64-secure.json").exists(), reason="Debian's ovmf")
def test_debian_ovmf_secure_boot_pair() -> None:
    fw = find_ovmf(secure_boot=True)
    assert fw.secure_boot and fw.code.name == "OVMF_CODE_4M.secboot.fd" and fw.vars_template.name == "OVMF_VARS_4M.fd"
    assert not find_ovmf().secure_boot


# -- the real tools ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> KeySet:
    if shutil.which("openssl") is None:
        pytest.skip("openssl")
    return generated_keys(tmp_path_factory.mktemp("keys") / "test")


def test_generated_test_keys_say_they_are_test_keys(keys: KeySet) -> None:
    note = (keys.db.parent / "README").read_text()
    assert "TEST KEYS. NOT SECRET." in note
    assert all(p.is_file() for p in (keys.pk, keys.kek, keys.db, keys.db_key))
    assert generated_keys(keys.db.parent).identity == keys.identity   # cached, not made again


@needs(shutil.which("sbsign") is None or not STUB.exists(), reason="sbsigntool and systemd-boot-efi")
def test_signing_is_deterministic_across_seconds_and_verifies(keys: KeySet, tmp_path: Path) -> None:
    from lkit.build.signing import sign_efi, verify_efi

    first = sign_efi(STUB, tmp_path / "a.efi", keys)
    time.sleep(1.1)   # sbsign alone puts the signing time in: a second later it would differ
    second = sign_efi(STUB, tmp_path / "b.efi", keys)
    assert first.read_bytes() == second.read_bytes()
    assert verify_efi(first, keys.db)
    other = generated_keys(tmp_path / "other")
    assert not verify_efi(first, other.db)


@needs(shutil.which("virt-fw-vars") is None, reason="virt-firmware")
def test_enrolled_vars_hold_the_keys_and_are_cached(keys: KeySet, tmp_path: Path) -> None:
    fw = find_ovmf(secure_boot=True)
    made = enrolled_vars(fw, keys, tmp_path / "cache")
    assert made.stat().st_size == fw.vars_template.stat().st_size
    assert made.read_bytes() != fw.vars_template.read_bytes()
    stamp = made.stat().st_mtime_ns
    assert enrolled_vars(fw, keys, tmp_path / "cache") == made and made.stat().st_mtime_ns == stamp
    vm_copy = fw.copy_vars(tmp_path, made)
    assert vm_copy.read_bytes() == made.read_bytes() and vm_copy != made


@needs(shutil.which("swtpm") is None, reason="swtpm")
def test_swtpm_starts_offers_its_socket_and_stops(tmp_path: Path) -> None:
    from lkit.machine.tpm import SwTpm

    with SwTpm(tmp_path / "tpm", tmp_path / "sock") as tpm:
        assert tpm.running and (tmp_path / "sock").exists()
        pid = tpm.pid
        assert pid is not None
    assert not tpm.running
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    tpm.stop()   # idempotent


@needs(shutil.which("swtpm") is None, reason="swtpm")
def test_swtpm_that_ignores_sigterm_is_killed(tmp_path: Path) -> None:
    from lkit.machine.tpm import SwTpm

    tpm = SwTpm(tmp_path / "tpm", tmp_path / "sock")
    tpm.start()
    pid = tpm.pid
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)    # a stopped process cannot act on SIGTERM
    started = time.monotonic()
    tpm.stop(timeout=0.5)
    assert not tpm.running and time.monotonic() - started < 5


# -- collection ------------------------------------------------------------------------------------------
SUITES = Path(__file__).resolve().parents[2] / "suites"
pytest_plugins = ["pytester"]


def _seed_suite(pytester: pytest.Pytester, test_yml: str) -> None:
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    shutil.copy(SUITES / "linuxkit.yml", suites / "linuxkit.yml")
    (suites / "linuxkit.test.yml").write_text(test_yml)


def test_ids_name_the_firmware_variant_and_bios_formats_say_why_they_boot_once(pytester: pytest.Pytester) -> None:
    _seed_suite(pytester, "firmware: [efi, efi-secureboot]\ntpm: true\n")
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    ids = [line for line in listed.outlines if line.startswith("suites/")]
    assert "suites/linuxkit.yml::iso-efi@efi-secureboot::secureboot" in ids
    assert "suites/linuxkit.yml::iso-efi@efi-secureboot::tpm" in ids and "suites/linuxkit.yml::iso-efi::tpm" in ids
    assert not any(i.startswith("suites/linuxkit.yml::iso-efi::secureboot") for i in ids)
    assert not any("iso-bios@" in i or "kernel+initrd@" in i for i in ids)
    order = [i.split("::")[1] for i in ids if i.endswith("::boots")]
    assert order == ["kernel+initrd", "iso-bios", "iso-efi", "iso-efi@efi-secureboot"]
    listed.stdout.fnmatch_lines(["lkit: linuxkit.yml: firmware efi-secureboot applies to EFI formats only; "
                                 "kernel+initrd, iso-bios boot once, as before"])
    marked = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider",
                                          "-m", "lkit_efi_secureboot")
    selected = [line for line in marked.outlines if line.startswith("suites/")]
    assert len(selected) == 12 and all("::iso-efi@efi-secureboot::" in i for i in selected)


def test_the_option_overrides_the_spec_and_bad_names_are_usage_errors(pytester: pytest.Pytester) -> None:
    _seed_suite(pytester, "firmware: [efi, efi-secureboot]\n")
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider",
                                          "--lkit-firmware", "efi-secureboot")
    boots = [line for line in listed.outlines if line.endswith("::boots")]
    assert boots == ["suites/linuxkit.yml::kernel+initrd::boots", "suites/linuxkit.yml::iso-bios::boots",
                     "suites/linuxkit.yml::iso-efi@efi-secureboot::boots"]
    bad = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "--lkit-firmware", "bios,efi-sb")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--lkit-firmware: unknown firmware bios, efi-sb; known: efi, efi-secureboot" in "\n".join(bad.errlines)


def test_a_bad_firmware_value_is_one_line_with_file_and_line(pytester: pytest.Pytester) -> None:
    _seed_suite(pytester, "memory: 512\nfirmware: [efi, secure]\n")
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    text = "\n".join(listed.outlines)
    assert "linuxkit.test.yml:2" in text and "unknown firmware 'secure'" in text
    assert "Traceback" not in text


# -- the guest side, over a fake command channel -----------------------------------------------------------
class FakeGuest:
    """Answers lkit.machine.efi's shell commands like a guest would (a dict of EFI variables)."""

    def __init__(self, *, efivarfs: bool, variables: dict[str, bytes] | None = None, dmesg: str = "") -> None:
        self.efivarfs, self.variables, self.dmesg = efivarfs, dict(variables or {}), dmesg
        self.commands: list[str] = []

    def run(self, command: str, timeout: float = 60):
        import base64
        import re

        from lkit.machine.channel import CommandResult

        self.commands.append(command)
        if "mount -t efivarfs" in command:
            return CommandResult(0 if self.efivarfs else 4, "", "")
        if command.startswith("dmesg"):
            return CommandResult(0, self.dmesg, "")
        path = re.search(r"/sys/firmware/efi/efivars/(\S+)", command)
        assert path is not None, command
        if "base64 -d" in command:
            payload = re.search(r"echo '?([A-Za-z0-9+/=]+)'? \| base64 -d", command)
            assert payload is not None
            self.variables[path.group(1)] = base64.b64decode(payload.group(1))
            return CommandResult(0, "", "")
        if path.group(1) not in self.variables:
            return CommandResult(3, "", "")
        return CommandResult(0, base64.encodebytes(self.variables[path.group(1)]).decode(), "")


def test_secure_boot_read_from_the_variable_else_from_the_kernel_log() -> None:
    from lkit.machine import efi

    on = FakeGuest(efivarfs=True, variables={f"SecureBoot-{efi.GLOBAL_GUID}": b"\x06\x00\x00\x00\x01"})
    state = efi.secure_boot_state(on)
    assert state.enabled is True and state.source.endswith(f"SecureBoot-{efi.GLOBAL_GUID}")
    off = FakeGuest(efivarfs=True, variables={f"SecureBoot-{efi.GLOBAL_GUID}": b"\x06\x00\x00\x00\x00"})
    assert efi.secure_boot_state(off).enabled is False
    logged = FakeGuest(efivarfs=False, dmesg="[    0.000000] secureboot: Secure boot enabled\n")
    assert efi.secure_boot_state(logged) == efi.SecureBootState(True, "kernel log", "Secure boot enabled")
    silent = FakeGuest(efivarfs=False)
    assert efi.secure_boot_state(silent).enabled is None


def test_variables_round_trip_with_their_attributes() -> None:
    from lkit.errors import MachineError
    from lkit.machine import efi

    guest = FakeGuest(efivarfs=True)
    guid = "4c4b4954-7465-7374-2d72-65626f6f7431"
    assert efi.read_variable(guest, "LkitTest", guid) is None
    efi.write_variable(guest, "LkitTest", b"boot 1", guid)
    assert efi.read_variable(guest, "LkitTest", guid) == (efi.NV_BS_RT, b"boot 1")
    with pytest.raises(ValueError):
        efi.write_variable(guest, "Bad Name;rm", b"x", guid)
    with pytest.raises(ValueError):
        efi.write_variable(guest, "SecureBoot", b"\x00", efi.GLOBAL_GUID)
    with pytest.raises(MachineError, match="cannot read EFI variables"):
        efi.read_variable(FakeGuest(efivarfs=False), "LkitTest", guid)

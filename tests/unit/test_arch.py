"""Architecture as a dimension, without a VM: the facts table, variant names, NAME.test.yml's `arch:`
and budgets, --lkit-arch, test ids and markers, report keys, and the builder refusing what an
architecture has not."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lkit.core import arch
from lkit.errors import BuildError, SpecError
from lkit.pytest_plugin import variants
from lkit.pytest_plugin.expectations import load_expectations
from lkit.report.model import FormatRun

SUITES = Path(__file__).resolve().parents[2] / "suites"
pytest_plugins = ["pytester"]


# -- the table ---------------------------------------------------------------------------------------
def test_linuxkit_names_are_accepted_and_the_kernel_names_get_a_hint() -> None:
    assert arch.get("arm64") is arch.ARM64 and arch.get("amd64") is arch.AMD64
    with pytest.raises(SpecError) as err:
        arch.get("aarch64", where="--arch")
    assert "unknown architecture 'aarch64'" in str(err.value) and "'arm64', not the kernel's" in str(err.value)
    with pytest.raises(SpecError, match="one of: amd64, arm64"):
        arch.get("riscv64")


def test_platforms_map_to_architectures_with_or_without_variant() -> None:
    assert arch.of_platform("linux/arm64/v8") is arch.ARM64 and arch.of_platform("linux/arm64") is arch.ARM64
    assert arch.of_platform("linux/amd64") is arch.AMD64 and arch.of_platform("linux/s390x") is None


def test_arm64_has_no_bios_formats_and_says_why() -> None:
    for fmt in arch.BIOS_FORMATS:
        assert "PC BIOS" in (arch.ARM64.refuse_format(fmt) or "")
        assert arch.AMD64.refuse_format(fmt) is None
    assert arch.ARM64.refuse_format("iso-efi") is None and arch.ARM64.efi_boot_file == "EFI/BOOT/BOOTAA64.EFI"


# -- variant names ------------------------------------------------------------------------------------
def test_amd64_variants_keep_their_names_and_others_are_prefixed() -> None:
    assert variants.variant_id("iso-efi", "efi") == "iso-efi"
    assert variants.variant_id("iso-efi", "efi", arch.ARM64) == "arm64.iso-efi"
    assert variants.split_arch("arm64.kernel+initrd") == (arch.ARM64, "kernel+initrd")
    assert variants.split_arch("iso-efi@efi-secureboot") == (arch.AMD64, "iso-efi@efi-secureboot")
    assert variants.split("arm64.iso-efi") == ("iso-efi", variants.Firmware.EFI)
    assert variants.is_variant("arm64.raw-efi") and not variants.is_variant("arm64.iso-bios")
    assert not variants.is_variant("mips.iso-efi")


def test_expanding_to_arm64_leaves_out_bios_with_a_note_and_keeps_secure_boot() -> None:
    out, notes = variants.expand_arches("seed.yml", ["kernel+initrd", "iso-bios", "iso-efi", "iso-efi@efi-secureboot"],
                                        [arch.AMD64, arch.ARM64])
    assert out == ["kernel+initrd", "iso-bios", "iso-efi", "iso-efi@efi-secureboot",
                   "arm64.kernel+initrd", "arm64.iso-efi", "arm64.iso-efi@efi-secureboot"]
    assert notes == ["lkit: seed.yml: iso-bios not on arm64: iso-bios boots through a PC BIOS, which arm64 "
                     "machines do not have"]
    assert variants.split("arm64.iso-efi@efi-secureboot") == ("iso-efi", variants.Firmware.EFI_SECUREBOOT)
    assert variants.expand_arches("s.yml", ["tar"], [arch.ARM64]) == (["arm64.tar"], [])


# -- NAME.test.yml ------------------------------------------------------------------------------------
def test_arch_list_and_budgets_per_architecture(tmp_path: Path) -> None:
    path = tmp_path / "s.test.yml"
    path.write_text("arch: [amd64, arm64]\nbudgets:\n  boot_time: {default: 90, iso-efi: 120, arm64: 300,"
                    " arm64.iso-efi: 400}\n  size:\n    default: {total: 100M}\n    arm64: {total: 150M}\n")
    exp = load_expectations(path)
    assert exp.arch == ["amd64", "arm64"]
    assert exp.boot_time_budget("iso-efi") == 120 and exp.boot_time_budget("kernel+initrd") == 90
    assert exp.boot_time_budget("arm64.iso-efi") == 400 and exp.boot_time_budget("arm64.kernel+initrd") == 300
    assert exp.size_budget("arm64.tar") == {"total": 150 << 20} and exp.size_budget("tar") == {"total": 100 << 20}


@pytest.mark.parametrize("text, message", [
    ("arch: [amd64, x86_64]\n", "s.test.yml:1: arch[1]: unknown architecture 'x86_64'"),
    ("arch: [arm64, arm64]\n", "architecture 'arm64' is listed twice"),
    ("arch: []\n", "lists no architecture"),
    ("budgets:\n  boot_time: {arm64.iso-bios: 10}\n", "is not an output format"),
    ("machines:\n  a: {}\narch: [arm64]\n", "is not supported in a multi-machine suite"),
])
def test_bad_arch_values_name_file_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "s.test.yml"
    path.write_text(text)
    (tmp_path / "s.yml").write_text("kernel: {image: k:1}\n")
    with pytest.raises(SpecError) as err:
        load_expectations(path, own_spec=tmp_path / "s.yml")
    assert message.split(": ", 1)[-1] in str(err.value) and "s.test.yml" in str(err.value)


# -- collection -----------------------------------------------------------------------------------------
def _suite(pytester: pytest.Pytester, test_yml: str) -> None:
    pytester.makeini("[pytest]\n")
    suites = pytester.mkdir("suites")
    shutil.copy(SUITES / "linuxkit.yml", suites / "linuxkit.yml")
    (suites / "linuxkit.test.yml").write_text(test_yml)


def test_ids_put_the_architecture_between_spec_and_format(pytester: pytest.Pytester) -> None:
    _suite(pytester, "arch: [amd64, arm64]\n")
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    boots = [line for line in listed.outlines if line.endswith("::boots")]
    assert boots == ["suites/linuxkit.yml::kernel+initrd::boots", "suites/linuxkit.yml::iso-bios::boots",
                     "suites/linuxkit.yml::iso-efi::boots", "suites/linuxkit.yml::arm64::kernel+initrd::boots",
                     "suites/linuxkit.yml::arm64::iso-efi::boots"]
    listed.stdout.fnmatch_lines(["lkit: linuxkit.yml: iso-bios not on arm64: *"])
    marked = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "lkit_arm64")
    selected = [line for line in marked.outlines if line.startswith("suites/")]
    assert selected and all("::arm64::" in i for i in selected)


def test_the_option_overrides_the_spec_and_bad_names_are_usage_errors(pytester: pytest.Pytester) -> None:
    _suite(pytester, "arch: [amd64, arm64]\n")
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider",
                                          "--lkit-arch", "arm64")
    boots = [line for line in listed.outlines if line.endswith("::boots")]
    assert boots == ["suites/linuxkit.yml::arm64::kernel+initrd::boots", "suites/linuxkit.yml::arm64::iso-efi::boots"]
    bad = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "--lkit-arch", "aarch64")
    assert bad.ret == pytest.ExitCode.USAGE_ERROR
    assert "--lkit-arch: unknown architecture aarch64; known: amd64, arm64" in "\n".join(bad.errlines)


def test_an_arch_whose_qemu_is_missing_is_left_out_with_a_note(pytester: pytest.Pytester, monkeypatch) -> None:
    _suite(pytester, "arch: [amd64, arm64]\n")
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "qemu-system-aarch64" else real(name, *a, **k))
    listed = pytester.runpytest_inprocess("suites/", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert not any("::arm64::" in line for line in listed.outlines)
    listed.stdout.fnmatch_lines(["lkit: linuxkit.yml: arm64 left out: qemu-system-aarch64 is not installed *"])


# -- reports and the builder ------------------------------------------------------------------------------
def test_report_rows_of_each_architecture_have_their_own_key() -> None:
    amd, arm = FormatRun("suites/s.yml", "iso-efi"), FormatRun("suites/s.yml", "arm64.iso-efi")
    assert amd.key != arm.key and (amd.arch, arm.arch) == ("amd64", "arm64")


def test_junit_names_the_architecture(tmp_path: Path) -> None:
    from lkit.report.junit import _properties

    assert _properties(FormatRun("suites/s.yml", "arm64.iso-efi"))["arch"] == "arm64"
    assert _properties(FormatRun("suites/s.yml", "iso-efi"))["arch"] == "amd64"


def test_the_builder_refuses_a_bios_format_for_arm64_before_any_work(tmp_path: Path) -> None:
    from lkit.build.builder import build
    from lkit.spec import load_spec

    spec = load_spec([SUITES / "redisos.yml"])
    with pytest.raises(BuildError) as err:
        build(spec, ["iso-bios"], tmp_path / "out", arch=arch.ARM64)
    assert "cannot build iso-bios for arm64" in str(err.value) and "redisos.yml" in str(err.value)
    assert not (tmp_path / "out").exists()

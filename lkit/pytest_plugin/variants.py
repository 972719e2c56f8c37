"""Variants: what one group of checks boots. A format boots once per architecture a suite asks for
(`arch:` in NAME.test.yml, `--lkit-arch`), and an EFI format once per firmware (`firmware:`,
`--lkit-firmware`).

A variant is named by its format, prefixed `ARCH.` unless the architecture is amd64, plus
`@FIRMWARE` unless the firmware is plain `efi` (so ids, report keys and baselines of suites that
ask for nothing stay as they were, and a name without an architecture always means amd64, whatever
the host):

    iso-efi                   # amd64, OVMF without Secure Boot (the default)
    iso-efi@efi-secureboot    # amd64, OVMF with Secure Boot on, the suite's keys enrolled, the image signed
    arm64.iso-efi             # arm64 (qemu-system-aarch64, AAVMF)
    arm64.iso-efi@efi-secureboot   # arm64, AAVMF with Secure Boot on (no SMM on Arm), keys enrolled, signed

The `.` keeps every variant a valid file name everywhere (console logs, JUnit files, CI artifact
names refuse `:` and `/`). Collection shows the architecture as a node of its own:
`suites/linuxkit.yml::arm64::iso-efi::boots`; the suite's own tests: `test_x[arm64.iso-efi]`.

Test ids: `suites/linuxkit.yml::iso-efi@efi-secureboot::boots`, `test_x[iso-efi@efi-secureboot]`;
report keys (JUnit file, summary.json, baseline): the format `iso-efi@efi-secureboot`. BIOS and
direct-kernel formats ignore the firmware list (said in one line at collection).
"""

from __future__ import annotations

from enum import StrEnum

from lkit.build.builder import SIGNABLE
from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.core.formats import FORMATS

SEPARATOR = "@"
ARCH_SEPARATOR = "."


class Firmware(StrEnum):
    EFI = "efi"                          # OVMF, no Secure Boot
    EFI_SECUREBOOT = "efi-secureboot"    # OVMF (with SMM) or AAVMF with Secure Boot, the suite's keys enrolled


DEFAULT = Firmware.EFI
NAMES: tuple[str, ...] = tuple(Firmware)


def variant_id(fmt: str, firmware: str | None, arch: Arch = arch_table.DEFAULT) -> str:
    name = fmt if firmware in (None, DEFAULT) else f"{fmt}{SEPARATOR}{firmware}"
    return name if arch == arch_table.DEFAULT else f"{arch.name}{ARCH_SEPARATOR}{name}"


def split_arch(variant: str) -> tuple[Arch, str]:
    """(architecture, the rest): `arm64.iso-efi` -> (ARM64, "iso-efi"); no prefix is amd64."""
    prefix, sep, rest = variant.partition(ARCH_SEPARATOR)
    if sep and prefix in arch_table.ARCHES:
        return arch_table.ARCHES[prefix], rest
    return arch_table.DEFAULT, variant


def arch_of(variant: str) -> Arch:
    return split_arch(variant)[0]


def without_arch(variant: str) -> str:
    """The variant's name within its architecture (the node name under `::arm64::`)."""
    return split_arch(variant)[1]


def split(variant: str) -> tuple[str, Firmware | None]:
    """(format, firmware): firmware None for a non-EFI format, `efi` for an EFI format's default."""
    fmt, sep, firmware = without_arch(variant).partition(SEPARATOR)
    if sep:
        return fmt, Firmware(firmware)
    facts = FORMATS.get(fmt)
    return fmt, (DEFAULT if facts is not None and facts.efi else None)


def is_variant(name: str) -> bool:
    """Whether `name` is a format, a format@firmware or ARCH.either that this module can name."""
    arch, rest = split_arch(name)
    fmt, sep, firmware = rest.partition(SEPARATOR)
    if fmt not in arch.formats:
        return False
    return not sep or (firmware in NAMES and FORMATS[fmt].efi)


def expand_arches(name: str, variants: list[str], arches: list[Arch]) -> tuple[list[str], list[str]]:
    """The `variants` (of the default architecture) for each of `arches` (architecture order first),
    and the lines that say what was left out and why: formats an architecture has not (BIOS on
    arm64)."""
    out: list[str] = []
    notes: list[str] = []
    for arch in arches:
        if arch == arch_table.DEFAULT:
            out += variants
            continue
        skipped: list[str] = []
        for variant in variants:
            fmt, firmware = split(variant)
            if arch.refuse_format(fmt) is not None:
                skipped.append(variant)
            else:
                out.append(variant_id(fmt, firmware, arch))
        if skipped:
            notes.append(f"lkit: {name}: {', '.join(skipped)} not on {arch.name}: "
                         f"{arch.refuse_format(split(skipped[0])[0])}")
    return out, notes


def expand(name: str, formats: list[str], firmwares: list[str]) -> tuple[list[str], list[str]]:
    """The variants of `formats` for `firmwares` (format order first), and the lines that say what
    was left out and why."""
    out: list[str] = []
    notes: list[str] = []
    non_efi = [f for f in formats if not FORMATS[f].efi]
    extra = [fw for fw in firmwares if fw != DEFAULT]
    if non_efi and extra:
        notes.append(f"lkit: {name}: firmware {', '.join(extra)} applies to EFI formats only; "
                     f"{', '.join(non_efi)} boot{'s' if len(non_efi) == 1 else ''} once, as before")
    for fmt in formats:
        if not FORMATS[fmt].efi:
            out.append(fmt)
            continue
        chosen = []
        for fw in firmwares:
            if fw == Firmware.EFI_SECUREBOOT and fmt not in SIGNABLE:
                notes.append(f"lkit: {name}: {fmt} has no efi-secureboot variant (lkit signs the unified kernel "
                             f"image of {', '.join(SIGNABLE)}; {fmt}'s boot loader would also need a signed kernel)")
                continue
            chosen.append(variant_id(fmt, fw))
        out += chosen or [fmt]
    return out, notes

"""Firmware variants: an EFI format boots once per firmware a suite asks for (`firmware:` in
NAME.test.yml, `--lkit-firmware`).

A variant is named by its format, plus `@FIRMWARE` unless the firmware is plain `efi` (so ids,
report keys and baselines of suites that ask for nothing stay as they were):

    iso-efi                   # OVMF without Secure Boot (the default, and every EFI format's only one before)
    iso-efi@efi-secureboot    # OVMF with Secure Boot on, the suite's keys enrolled, the image signed

Test ids: `suites/linuxkit.yml::iso-efi@efi-secureboot::boots`, `test_x[iso-efi@efi-secureboot]`;
report keys (JUnit file, summary.json, baseline): the format `iso-efi@efi-secureboot`. BIOS and
direct-kernel formats ignore the firmware list (said in one line at collection).
"""

from __future__ import annotations

from enum import StrEnum

from lkit.build.builder import SIGNABLE
from lkit.core.formats import FORMATS

SEPARATOR = "@"


class Firmware(StrEnum):
    EFI = "efi"                          # OVMF, no Secure Boot
    EFI_SECUREBOOT = "efi-secureboot"    # OVMF with SMM and Secure Boot, the suite's keys enrolled


DEFAULT = Firmware.EFI
NAMES: tuple[str, ...] = tuple(Firmware)


def variant_id(fmt: str, firmware: str | None) -> str:
    return fmt if firmware in (None, DEFAULT) else f"{fmt}{SEPARATOR}{firmware}"


def split(variant: str) -> tuple[str, Firmware | None]:
    """(format, firmware): firmware None for a non-EFI format, `efi` for an EFI format's default."""
    fmt, sep, firmware = variant.partition(SEPARATOR)
    if sep:
        return fmt, Firmware(firmware)
    facts = FORMATS.get(fmt)
    return fmt, (DEFAULT if facts is not None and facts.efi else None)


def is_variant(name: str) -> bool:
    """Whether `name` is a format or a format@firmware this module can name."""
    fmt, sep, firmware = name.partition(SEPARATOR)
    if fmt not in FORMATS:
        return False
    return not sep or (firmware in NAMES and FORMATS[fmt].efi)


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

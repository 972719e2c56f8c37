"""Collection: a spec file in a suite folder becomes SPEC.yml::FORMAT::CHECK items (amd64), and
SPEC.yml::ARCH::FORMAT::CHECK for another architecture (see lkit.pytest_plugin.variants)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from lkit.core import arch as arch_table
from lkit.errors import LkitError
from lkit.report import allure
from lkit.pytest_plugin.checks import BUILD_CHECKS, CHECKS, MACHINE_CHECKS, CheckFailed, checks_of
from lkit.pytest_plugin import variants
from lkit.pytest_plugin.state import RUN, Group, RunState, SuiteSpec

if TYPE_CHECKING:
    from _pytest._code.code import TerminalRepr, TracebackStyle  # repr_failure's types (not public)

CONSOLE_EXCERPT_LINES = 25


def marker_name(prefix: str, value: str) -> str:
    return prefix + re.sub(r"[^0-9a-zA-Z]+", "_", value).strip("_").lower()


def is_spec_file(path: Path, suites: list[Path]) -> bool:
    if path.suffix not in (".yml", ".yaml") or path.name.endswith((".test.yml", ".test.yaml")):
        return False
    return any(path.parent == s or s in path.parents for s in suites)


class SpecFile(pytest.File):
    """A LinuxKit spec in a suite folder."""

    def collect(self) -> Iterator[FormatNode | MachineNode | ArchNode]:
        run: RunState = self.config.stash[RUN]
        suite = run.suite(self.path)
        run.notes += [note for note in suite.notes if note not in run.notes]
        if suite.machines:
            for name in suite.machines:
                yield MachineNode.from_parent(self, name=name, suite=suite)
            return
        arches: list[str] = []
        for variant in suite.formats:
            arch = variants.arch_of(variant)
            if arch == arch_table.DEFAULT:
                yield FormatNode.from_parent(self, name=variant, suite=suite)
            elif arch.name not in arches:
                arches.append(arch.name)
                yield ArchNode.from_parent(self, name=arch.name, suite=suite)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException],
                     style: TracebackStyle | None = None) -> str | TerminalRepr:
        """An LkitError as its one-line message; anything else as pytest shows it (`style` is not
        passed on: a collector's repr_failure takes none, unlike an item's)."""
        if isinstance(excinfo.value, LkitError):
            return str(excinfo.value)
        return super().repr_failure(excinfo)


class MachineNode(pytest.Collector):
    """One machine of a multi-machine suite: its checks in each of the suite's formats."""

    def __init__(self, *, suite: SuiteSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def collect(self):
        for fmt in self.suite.formats:
            yield FormatNode.from_parent(self, name=fmt, suite=self.suite, machine=self.name)


class ArchNode(pytest.Collector):
    """A spec's variants of one architecture other than amd64 (`::arm64::`)."""

    def __init__(self, *, suite: SuiteSpec, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite = suite

    def collect(self):
        for variant in self.suite.formats:
            if variants.arch_of(variant).name == self.name:
                yield FormatNode.from_parent(self, name=variants.without_arch(variant), suite=self.suite,
                                             variant=variant)


class FormatNode(pytest.Collector):
    """All checks of one output format of a spec (or of one machine of a multi-machine suite)."""

    def __init__(self, *, suite: SuiteSpec, machine: str | None = None, variant: str | None = None,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite = suite
        self.machine = machine
        self.variant = variant or self.name   # with its architecture: arm64.iso-efi under ::arm64::iso-efi

    def collect(self):
        run: RunState = self.config.stash[RUN]
        if self.machine is not None:
            checks = checks_of(run.network(self.suite, self.variant).machines[self.machine], machine=True)
        else:
            checks = checks_of(run.group(self.suite, self.variant))
        for check in checks:
            yield CheckItem.from_parent(self, name=check, suite=self.suite, fmt=self.variant, check=check,
                                        machine=self.machine)


def variant_markers(variant: str) -> list[str]:
    """`lkit_iso_efi` for every variant of iso-efi (-m lkit_iso_efi), plus `lkit_efi_secureboot` for
    that firmware's variants (-m lkit_efi_secureboot) and `lkit_arm64` for that architecture's."""
    arch, rest = variants.split_arch(variant)
    fmt, sep, firmware = rest.partition("@")
    return ([marker_name("lkit_", fmt)] + ([marker_name("lkit_", firmware)] if sep else [])
            + ([marker_name("lkit_", arch.name)] if arch != arch_table.DEFAULT else []))


def xdist_group_name(suite: SuiteSpec, fmt: str) -> str:
    """A (spec, format) runs on one xdist worker; a multi-machine suite, every format of it on one."""
    return suite.id if suite.machines else f"{suite.id}::{fmt}"


class CheckItem(pytest.Item):
    """One built-in check of one (spec, format), or of one machine of a multi-machine suite."""

    def __init__(self, *, suite: SuiteSpec, fmt: str, check: str, machine: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.suite, self.format, self.check, self.machine = suite, fmt, check, machine
        self.add_marker("lkit")
        for marker in variant_markers(fmt):
            self.add_marker(marker)
        self.add_marker(pytest.mark.xdist_group(xdist_group_name(suite, fmt)))

    @property
    def group(self) -> Group:
        run: RunState = self.config.stash[RUN]
        if self.machine is not None:
            return run.network(self.suite, self.format).machines[self.machine]
        return run.group(self.suite, self.format)

    @property
    def label(self) -> str:
        return f"{self.suite.id}::{self.machine}" if self.machine else self.suite.id

    def runtest(self) -> None:
        allure.parameters(self.label, self.format)
        group = self.group
        try:
            with allure.step(f"{self.check} [{self.format}]"):
                (CHECKS[self.check] if self.check in CHECKS else MACHINE_CHECKS[self.check])(group)
        except BaseException:
            self._attach_evidence(group)
            raise
        finally:
            if self.check == "boot_time" and group.vm is not None:
                allure.attach_json(group.vm.timeline.as_list(), "boot timeline (stage, s since cont, guest uptime)")

    def _attach_evidence(self, group: Group) -> None:
        """What a person needs to see why a check failed: console, screen, the container's config."""
        for title, console in group.consoles().items():
            if console.exists():
                allure.attach_file(console, title, "text")
        for name, path in group.evidence.items():
            allure.attach_file(path, name, "png" if str(path).endswith(".png") else "json")

    def reportinfo(self):
        return self.path, None, f"{self.label}::{self.format}::{self.check}"

    def repr_failure(self, excinfo, style=None):
        exc = excinfo.value
        head = (f"{self.suite.id} machine {self.machine} [{self.format}] {self.check}: " if self.machine
                else f"{self.suite.id} [{self.format}] {self.check}: ")
        if isinstance(exc, CheckFailed):
            text = head + str(exc)
        elif isinstance(exc, LkitError):
            text = head + str(exc)
        else:
            return super().repr_failure(excinfo, style)
        excerpt = self.console_excerpt()
        if excerpt and self.check not in BUILD_CHECKS:
            text += "\n--- console (last lines) ---\n" + excerpt
        if self.machine is not None and self.check not in BUILD_CHECKS:
            text += "\n" + consoles_text(self.group.network_group)
        return text

    def console_excerpt(self) -> str:
        vm = self.group.vm
        if vm is None:
            return ""
        lines = vm.console_text().splitlines()
        return "\n".join(lines[-CONSOLE_EXCERPT_LINES:])


def consoles_text(group: Group) -> str:
    """Where every machine's console log is (a network's failure names them all)."""
    return "--- consoles ---\n" + "\n".join(f"{title}: {path}" for title, path in group.consoles().items()
                                           if path.exists())

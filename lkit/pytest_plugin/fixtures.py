"""Fixtures for a suite's own test modules (suites/test_NAME.py checks suites/NAME.yml).

Each test that uses one of these is parametrized over the spec's formats (`lkit_format`), so
`test_nginx[iso-efi]` runs on the iso-efi VM, the same VM the built-in checks of that format used.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lkit.build.builder import Artifact
from lkit.pytest_plugin.state import RUN, Group, SuiteSpec

LKIT_FIXTURES = ("lkit_format", "lkit_image", "lkit_vm", "machine", "host", "lkit_group", "machines", "hosts",
                 "lkit_tpm")


def _module_spec_path(module: Any, module_path: Path) -> Path | None:
    marker = getattr(module, "pytestmark", None)
    for mark in marker if isinstance(marker, list) else [marker] if marker else []:
        if getattr(mark, "name", "") == "lkit_spec":
            return (module_path.parent / mark.args[0]).resolve()
    stem = module_path.stem
    if stem.startswith("test_"):
        for suffix in (".yml", ".yaml"):
            candidate = module_path.with_name(stem[5:] + suffix)
            if candidate.exists():
                return candidate.resolve()
    return None


def suite_of(node: pytest.Item | pytest.Metafunc | pytest.FixtureRequest) -> SuiteSpec | None:
    """The suite spec a test module belongs to, or None for ordinary tests."""
    module = getattr(node, "module", None)
    path = getattr(module, "__file__", None)
    if module is None or path is None:
        return None
    spec_path = _module_spec_path(module, Path(path))
    if spec_path is None:
        return None
    run = node.config.stash[RUN]
    if not any(spec_path.parent == s or s in spec_path.parents for s in run.settings.suites):
        return None
    return run.suite(spec_path)


def parametrize_formats(metafunc: pytest.Metafunc) -> None:
    if not any(name in metafunc.fixturenames for name in LKIT_FIXTURES):
        return
    suite = suite_of(metafunc)
    if suite is None:
        return
    if "lkit_format" not in metafunc.fixturenames:
        metafunc.fixturenames.append("lkit_format")
    metafunc.parametrize("lkit_format", suite.formats, ids=suite.formats, scope="module")


@pytest.fixture(scope="module")
def lkit_group(request: pytest.FixtureRequest, lkit_format: str) -> Group:
    suite = suite_of(request)
    if suite is None:
        raise pytest.UsageError(f"{request.node.nodeid}: lkit fixtures need a spec: name the module test_NAME.py beside "
                                "NAME.yml, or set pytestmark = pytest.mark.lkit_spec('NAME.yml')")
    return request.config.stash[RUN].group(suite, lkit_format)


@dataclass(frozen=True)
class LkitImage:
    """The built artifacts of the current format."""

    format: str
    artifacts: list[Artifact]

    @property
    def files(self) -> list[Path]:
        return [a.path for a in self.artifacts]

    def file(self, suffix: str) -> Path:
        for a in self.artifacts:
            if a.path.name.endswith(suffix):
                return a.path
        raise KeyError(f"no artifact ending in {suffix!r}: {[a.path.name for a in self.artifacts]}")


@pytest.fixture(scope="module")
def lkit_image(lkit_group: Group) -> LkitImage:
    if lkit_group.machines_of():
        raise pytest.UsageError(f"{lkit_group.suite.id} is a multi-machine suite: lkit_image has no single "
                                "image (the machines' artifacts are in each machine's build)")
    return LkitImage(lkit_group.output_format, lkit_group.artifacts())


@pytest.fixture(scope="module")
def lkit_vm(lkit_group: Group) -> Any:
    """The booted VM (lkit.machine.vm.Machine): run, succeed, fail, wait_for_console_text, forward_port, qmp."""
    return lkit_group.machine()


@dataclass(frozen=True)
class GuestTpm:
    """The guest's TPM as its kernel sees it, for assertions on measurements."""

    vm: Any

    def pcrs(self, bank: str = "sha256", indices: Any = range(24)) -> dict[int, str]:
        """PCR index -> value (hex) from /sys/class/tpm/tpm0/pcr-BANK/N (lkit.machine.vm.Machine.pcrs)."""
        return dict(self.vm.pcrs(bank, indices))

    def event_log(self) -> bytes:
        """The firmware's measurement log (TCG binary), from securityfs."""
        from lkit.machine.efi import event_log

        return event_log(self.vm)


@pytest.fixture(scope="module")
def lkit_tpm(lkit_vm: Any, lkit_group: Group) -> GuestTpm:
    """The booted VM's TPM (the suite's NAME.test.yml must say `tpm: true`): `pcrs()`, `event_log()`."""
    if not lkit_group.suite.expectations.tpm:
        raise pytest.UsageError(f"{lkit_group.suite.id}: lkit_tpm needs `tpm: true` in its NAME.test.yml")
    return GuestTpm(lkit_vm)


class Machines(Mapping[str, Any]):
    """name -> booted VM of a multi-machine suite (for one VM: its spec's name -> it). Boots on first
    use; a machine that did not boot raises MachineError naming it when a test asks for it, so only
    the tests that use it fail."""

    def __init__(self, group: Group, wrap: Any = None) -> None:
        self._group = group
        self._wrap = wrap
        self._cache: dict[str, Any] = {}

    def _names(self) -> list[str]:
        return list(self._group.machines_of()) or [self._group.suite.spec.name]

    def __getitem__(self, name: str) -> Any:
        if name not in self._cache:
            members = self._group.machines_of()
            if members:
                if name not in members:
                    raise KeyError(f"no machine {name!r} in {self._group.suite.id}: {', '.join(members)}")
                vm = members[name].machine()
            elif name == self._group.suite.spec.name:
                vm = self._group.machine()
            else:
                raise KeyError(f"no machine {name!r}: {self._group.suite.id} has one, {self._group.suite.spec.name!r}")
            self._cache[name] = self._wrap(vm) if self._wrap else vm
        return self._cache[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"<machines of {self._group.key}: {', '.join(self._names())}>"


@pytest.fixture(scope="module")
def machines(lkit_group: Group) -> Machines:
    """A multi-machine suite's VMs by name (`machines["server"]`), each with lkit_vm's verbs plus
    block(), unblock() (its private link) and crash(); `.address` is its declared address."""
    return Machines(lkit_group)


@pytest.fixture
def hosts(lkit_group: Group) -> Machines:
    """Each machine's testinfra Host (`hosts["server"].file(...)`), over its command channel."""
    from lkit.machine.testinfra_backend import lkit_host

    return Machines(lkit_group, wrap=lkit_host)


@pytest.fixture(scope="module")
def machine(lkit_vm: Any) -> Any:
    """Alias of lkit_vm, named as in the NixOS test driver."""
    return lkit_vm


def keep_for_debugging(group: Group, seconds: float) -> None:
    """--lkit-keep-vm: leave a failed VM up for a bounded time and say how to reach it."""
    vm = group.vm
    sys.stderr.write(f"\nlkit: keeping the VM of {group.key} for {seconds:.0f} s (Ctrl-C to stop early)\n"
                     f"  QMP: {getattr(vm, 'qmp_socket', '?')}\n  console: {getattr(vm, 'console_socket', '?')}\n"
                     f"  console log: {getattr(vm, 'console_log', '?')}\n")
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        pass

"""What a pytest session shares between items: each spec built once, each (spec, format) booted once.

Items of one (spec, format) group run together (see plugin.py's ordering): the built-in checks, then
the suite's own tests on the same VM, then `shutdown`. A VM is released when its group ends, when the
next group starts, or at the end of the session, whichever comes first; the ExitStack guarantees it.
"""

from __future__ import annotations

import os
import shutil
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from lkit.build.builder import Artifact, BuiltImage, build
from lkit.build.manifest import manifest_path
from lkit.build.outputs.base import get_format
from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import LkitError, MachineError
from lkit.images.store import Store
from lkit.pytest_plugin import shared, variants
from lkit.pytest_plugin.expectations import Expectations, MachineDecl, load_expectations
from lkit.pytest_plugin.options import Settings
from lkit.pytest_plugin.timing import PhaseClock
from lkit.spec import load_spec
from lkit.spec.model import Spec

if TYPE_CHECKING:
    from lkit.machine.vm import Machine
    from lkit.pytest_plugin.shard import Weighed



def suite_arches(name: str, settings: Settings, expectations: Expectations) -> tuple[list[Arch], list[str]]:
    """The architectures a spec is tested on: --lkit-arch, else its `arch:`, else the host's. One its
    `arch:` lists whose QEMU is not installed is left out, said in a note (a host without
    qemu-system-arm still runs the rest); asked for on the command line, it boots and fails by name."""
    if settings.arch:
        return [arch_table.get(a) for a in settings.arch], []
    if not expectations.arch:
        return [arch_table.host()], []
    chosen, notes = [], []
    for arch in (arch_table.get(a) for a in expectations.arch):
        if arch == arch_table.host() or shutil.which(arch.qemu):
            chosen.append(arch)
        else:
            notes.append(f"lkit: {name}: {arch.name} left out: {arch.qemu} is not installed "
                         f"(apt-get install {arch.qemu_package} {arch.firmware_package}, or run scripts/setup)")
    return chosen, notes


@dataclass
class SuiteSpec:
    """A spec file of a suite with its expectations and the formats this run tests."""

    path: Path
    spec: Spec
    expectations: Expectations
    formats: list[str]
    # a multi-machine suite: machine name -> that machine's spec, its expectations and the formats
    # built of it (every format any machine boots it in); `formats` above are the suite's variants
    machines: dict[str, SuiteSpec] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # what collection left out and why (one line each)

    @property
    def id(self) -> str:
        return self.path.name

    @property
    def decls(self) -> dict[str, MachineDecl]:
        return self.expectations.machines


def test_yml_of(path: Path) -> Path:
    return path.with_name(path.name.rsplit(".", 1)[0] + ".test.yml")


def load_suite_spec(path: Path, settings: Settings) -> SuiteSpec:
    spec = load_spec([path])
    expectations = load_expectations(test_yml_of(path), own_spec=path.resolve())
    formats = expectations.formats or spec.outputs or ["kernel+initrd"]
    if settings.formats is not None:
        formats = [f for f in formats if f in settings.formats]
    notes: list[str] = []
    if not expectations.machines:   # firmware variants: an EFI format once per firmware (lkit.pytest_plugin.variants)
        firmwares = settings.firmware or expectations.firmware or [variants.DEFAULT]
        formats, notes = variants.expand(path.name, formats, firmwares)
        arches, left_out = suite_arches(path.name, settings, expectations)
        formats, arch_notes = variants.expand_arches(path.name, formats, arches)
        notes += left_out + arch_notes
    elif settings.arch and settings.arch != [arch_table.DEFAULT.name]:
        notes.append(f"lkit: {path.name}: a multi-machine suite boots amd64 only (yet); --lkit-arch ignored")
    suite = SuiteSpec(path=path, spec=spec, expectations=expectations, formats=formats, notes=notes)
    specs: dict[Path, Spec] = {path.resolve(): spec}
    built: dict[Path, list[str]] = {}
    for decl in expectations.machines.values():
        if decl.spec not in specs:
            specs[decl.spec] = load_spec([decl.spec])
        wanted = built.setdefault(decl.spec, [])
        wanted += [f for f in ([decl.format] if decl.format else formats) if f not in wanted]
    for name, decl in expectations.machines.items():
        suite.machines[name] = SuiteSpec(path=decl.spec, spec=specs[decl.spec], expectations=decl.expectations,
                                         formats=built[decl.spec])
    return suite


@dataclass
class Group:
    """One (spec, format): its build, its VM, and the figures the reports need."""

    suite: SuiteSpec
    format: str
    run: RunState
    figures: dict[str, float] = field(default_factory=dict)
    properties: dict[str, str] = field(default_factory=dict)
    boot_attempts: int = 0
    _vm: Machine | None = None
    _boot_error: LkitError | None = None
    _stack: ExitStack = field(default_factory=ExitStack)
    _facts: Any = None
    closed: bool = False
    evidence: dict[str, Path] = field(default_factory=dict)
    samples: dict[str, list[float]] = field(default_factory=dict)  # figure -> one value per boot
    clock: PhaseClock = field(default_factory=PhaseClock)           # where this group's wall time goes

    @property
    def key(self) -> str:
        return f"{self.suite.id}::{self.format}"

    @property
    def output_format(self) -> str:
        """The output format this group boots (`format` is its variant: iso-efi@efi-secureboot)."""
        return variants.split(self.format)[0]

    @property
    def arch(self) -> Arch:
        """The architecture this group builds for and boots (`arm64.iso-efi` -> arm64)."""
        return variants.arch_of(self.format)

    @property
    def secure_boot(self) -> bool:
        """The efi-secureboot variant: a signed build, booted by Secure Boot firmware with the keys enrolled."""
        return variants.split(self.format)[1] == variants.Firmware.EFI_SECUREBOOT

    @property
    def order_key(self) -> tuple[str, str]:
        """The items run together (and the VMs released together) share this key."""
        return (str(self.suite.path), self.format)

    @property
    def record_key(self) -> tuple[str, str]:
        """(spec, format) of this group's results in the reports."""
        return (str(self.suite.path), self.format)

    @property
    def network_group(self) -> Group:
        """The group whose VMs run together with this one's (itself, for a single machine)."""
        return self

    @property
    def active(self) -> bool:
        """Whether it holds a running VM (or network) to release."""
        return self._vm is not None

    def consoles(self) -> dict[str, Path]:
        """Console logs worth attaching to a failure: this VM's (all machines' in a network)."""
        return {"console log": self.console_path()}

    def machines_of(self) -> dict[str, MachineGroup]:
        """A multi-machine suite's machines (empty for one VM)."""
        return {}

    def artifacts(self) -> list[Artifact]:
        return self.built().artifacts[self.output_format]

    def built(self) -> BuiltImage:
        """The spec's build for this group's architecture (once per session: only the first group of a
        spec and architecture pays for it); the signed build for a Secure Boot variant (once too)."""
        with self.clock.span("build"):
            return self.run.built(self.suite, signed=self.secure_boot, arch=self.arch)

    def rebuilt(self) -> BuiltImage:
        """The determinism proof's second build from scratch (once per spec, architecture, signed or
        not, and session)."""
        with self.clock.span("rebuild"):
            return self.run.rebuilt(self.suite, signed=self.secure_boot, arch=self.arch)

    def _firmware_args(self) -> dict[str, Any]:
        """The architecture, Secure Boot (with the keys to enrol) and the TPM, for this group's Machine."""
        args: dict[str, Any] = {}
        if self.arch != arch_table.DEFAULT:
            args["arch"] = self.arch
        if self.suite.expectations.tpm:
            args["tpm"] = True
        if self.secure_boot:
            args.update(secure_boot=True, keys=self.run.keys(self.suite))
        return args

    @property
    def vm(self) -> Machine | None:
        """The group's VM if it is booted and not yet released (machine() boots it)."""
        return self._vm

    def machine(self) -> Machine:
        """The booted VM of this group; boots on first use (with the configured reruns)."""
        if self._vm is not None:
            return self._vm
        if self._boot_error is not None:
            raise MachineError(f"the VM did not boot: {self._boot_error}")
        if self.closed:
            raise MachineError("the VM of this group was already shut down")
        with self.clock.span("poweroff"):
            self.run.release_others(self)
        with self.clock.span("ready"):   # QEMU's start and the guest's boot are carved out of it
            for attempt in range(self.run.settings.reruns + 1):
                self.boot_attempts = attempt + 1
                try:
                    self._vm = self._boot()
                    break
                except LkitError as exc:
                    self._stack.close()
                    self._stack = ExitStack()
                    self._boot_error = exc
                    self._keep_failed_boot(attempt + 1)
            else:
                assert self._boot_error is not None
                raise self._boot_error
        self._boot_error = None
        return self._vm

    @property
    def cpus(self) -> int | None:
        """The spec's `cpus:`, else the run's --lkit-cpus, else None: the machine's default."""
        return self.suite.expectations.cpus or self.run.settings.cpus

    def console_path(self) -> Path:
        return self.run.run_dir / "console" / f"{self.suite.spec.name}-{self.format}.log"

    def _screen_path(self) -> Path:
        return self.run.run_dir / "screens" / f"{self.suite.spec.name}-{self.format}.png"

    def _keep_failed_boot(self, attempt: int) -> None:
        """A failed boot's console and screen, renamed so that a rerun cannot overwrite them."""
        for kind, path in (("console", self.console_path()), ("screen", self._screen_path())):
            if path.exists():
                kept = path.with_name(f"{path.stem}.failed-boot-{attempt}{path.suffix}")
                os.replace(path, kept)
                self.evidence.pop("screen at the failure (QMP screendump)", None)
                self.evidence[f"{kind} of failed boot {attempt}"] = kept

    def _boot(self) -> Any:
        vm = self._start_vm()
        self._await_vm(vm)
        return vm

    def _machine_args(self) -> dict[str, Any]:
        """More arguments for this group's Machine (a network's machines add their NIC)."""
        return {}

    def _start_vm(self) -> Any:
        """QEMU started and running (`cont`), not yet booted."""
        from lkit.machine.artifacts import boot_target
        from lkit.machine.vm import Machine

        exp = self.suite.expectations
        target = boot_target(self.output_format, [a.path for a in self.artifacts()])
        workdir = self.run.vm_dir(self.key)
        console = self.console_path()
        console.parent.mkdir(parents=True, exist_ok=True)
        with self.clock.span("qemu"):   # QEMU start to `cont`
            vm = self._stack.enter_context(Machine(
                target, workdir=workdir, accel=self.run.settings.accel, memory_mb=exp.memory, cpus=self.cpus,
                ports=[p.port for p in exp.ports], timeout_multiplier=self.run.settings.timeout_multiplier,
                console_log=console, badness_ignore=exp.badness_ignore, **self._firmware_args(),
                **self._machine_args()))  # entering starts it
            # Released at once when the group closes: a graceful power-off is the shutdown check's job.
            self._stack.callback(vm.stop, graceful=False)
        return vm

    def _await_vm(self, vm: Any) -> None:
        """Wait for the boot markers and the shell (a screendump when the boot fails)."""
        exp = self.suite.expectations
        try:
            try:
                for marker in exp.markers:
                    vm.wait_for_console_text(marker, timeout=exp.boot_timeout)
                vm.wait_for_marker("shell", timeout=exp.boot_timeout)
            finally:
                self._record_guest(vm, "boot", getattr(vm, "cont_time", None), "services")
        except LkitError:
            self._screendump(vm)
            raise

    def extra_boot_samples(self) -> None:
        """--lkit-boots N: N-1 more boots of the same artifacts, timed only (stopped with `quit`)."""
        from lkit.machine.artifacts import boot_target
        from lkit.machine.vm import Machine

        exp = self.suite.expectations
        for index in range(1, self.run.settings.boots):
            workdir = self.run.vm_dir(f"{self.key}-sample{index}")
            started = self.clock.clock()
            # what `qemu` and `boot` do not claim is this VM's set-up and quit: power-off
            with self.clock.span("poweroff"), Machine(
                    boot_target(self.output_format, [a.path for a in self.artifacts()]), workdir=workdir,
                    accel=self.run.settings.accel, memory_mb=exp.memory, cpus=self.cpus,
                    timeout_multiplier=self.run.settings.timeout_multiplier,
                    badness_ignore=exp.badness_ignore, exit_shutdown_timeout=0, **self._firmware_args()) as vm:
                self.clock.record("qemu", started, vm.cont_time if vm.cont_time is not None else self.clock.clock())
                try:
                    vm.wait_for_marker("services", timeout=exp.boot_timeout)
                finally:
                    self._record_guest(vm, "boot", vm.cont_time, "services")
                for name, host, _guest in vm.timeline.as_list():
                    self.samples.setdefault("boot." + name.replace(":", "."), []).append(round(host, 3))

    def _record_guest(self, vm: Any, phase: str, start: float | None, marker: str) -> None:
        """The guest's own part of a wait: from `start` to its `marker` line (or to now, without one)."""
        cont = getattr(vm, "cont_time", None)
        if start is None:
            return
        entry = vm.timeline.get(marker) if cont is not None else None
        end = cont + entry.host if entry is not None else self.clock.clock()
        self.clock.record(phase, start, end)

    def _screendump(self, vm: Any) -> None:
        """The guest's screen when a boot fails (QMP screendump), kept with the run's reports."""
        path = self._screen_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            vm.screendump(path)
            self.evidence["screen at the failure (QMP screendump)"] = path
        except (LkitError, OSError):
            pass  # QEMU may already be gone: the console log is the evidence then

    def facts(self) -> Any:
        if self._facts is None:
            from lkit.machine.facts import gather

            self._facts = gather(self.machine())
        return self._facts

    def shutdown(self) -> Any:
        vm = self.machine()
        with self.clock.span("poweroff"):
            asked = self.clock.clock()
            try:
                return vm.shutdown()
            finally:
                self._record_guest(vm, "poweroff.guest", asked, "poweroff")
                self.close()

    def close(self) -> None:
        """Release the VM at once (QMP quit, then kill): a graceful power-off is the shutdown check's
        job, and an interrupted or finished group must not wait for a guest to power itself off."""
        self.closed = self.closed or self._vm is not None
        with self.clock.span("poweroff"):
            self._stack.close()
            self._stack = ExitStack()
            self._vm = None


def peak_rss(pid: int | None) -> int | None:
    """A process's peak resident memory in bytes (VmHWM), None if unknown."""
    if pid is None:
        return None
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


@dataclass
class MachineGroup(Group):
    """One machine of a multi-machine suite in one of the suite's formats (`variant`). Its VM is booted
    with the others by its NetworkGroup; its clock is the network's (one window for all of them)."""

    network: NetworkGroup | None = None
    name: str = ""
    variant: str = ""
    decl: MachineDecl | None = None

    @property
    def net(self) -> NetworkGroup:
        assert self.network is not None
        return self.network

    @property
    def key(self) -> str:
        return f"{self.net.suite.id}::{self.name}::{self.variant}"

    @property
    def order_key(self) -> tuple[str, str]:
        return self.net.order_key

    @property
    def record_key(self) -> tuple[str, str]:
        return (f"{self.net.suite.path}::{self.name}", self.variant)

    @property
    def network_group(self) -> Group:
        return self.net

    def consoles(self) -> dict[str, Path]:
        return self.net.consoles()

    def console_path(self) -> Path:
        return self.run.run_dir / "console" / f"{self.net.suite.spec.name}-{self.variant}-{self.name}.log"

    def _screen_path(self) -> Path:
        return self.run.run_dir / "screens" / f"{self.net.suite.spec.name}-{self.variant}-{self.name}.png"

    def _machine_args(self) -> dict[str, Any]:
        segment = self.net.segment
        assert segment is not None and self.decl is not None
        return {"lan": segment.port(self.name), "user_net": self.net.host, "name": self.name,
                "address": self.decl.address}

    def machine(self) -> Machine:
        """This machine's VM: the network boots all of its machines on first use."""
        if self._vm is None and self._boot_error is None and not self.closed:
            self.net.start()
        if self._vm is not None:
            return self._vm
        if self._boot_error is not None:
            raise MachineError(f"machine {self.name!r} ({self.suite.path.name}, {self.format}) did not boot: "
                               f"{self._boot_error}")
        raise MachineError(f"machine {self.name!r} was already shut down")

    def _boot_attempt(self, attempt: int, step: Any) -> bool:
        """One step of a boot attempt; False (and the failed boot kept as evidence) if it failed."""
        try:
            step()
            return True
        except LkitError as exc:
            self._stack.close()
            self._stack = ExitStack()
            self._boot_error = exc
            self._keep_failed_boot(attempt)
            return False

    def _note_memory(self) -> None:
        """The QEMU's peak resident memory, before it exits."""
        vm = self._vm
        peak = peak_rss(vm.pid) if vm is not None and vm.running else None
        if peak is not None:
            self.figures["memory.qemu_peak"] = peak
            self.net.memory[self.name] = peak

    def shutdown(self) -> Any:
        if self._vm is not None:
            self._note_memory()
        return super().shutdown()

    def close(self) -> None:
        self._note_memory()
        super().close()


@dataclass
class NetworkGroup(Group):
    """A multi-machine suite in one format: its private network (lkit.machine.lan.Segment: a hub and
    one NIC per machine) and its machines, booted together. It holds the suite's own tests' results
    and the wall time of the whole (its clock is every machine's)."""

    machines: dict[str, MachineGroup] = field(default_factory=dict)
    segment: Any = None
    started: bool = False
    memory: dict[str, int] = field(default_factory=dict)    # machine (or "hub") -> peak RSS, bytes

    @property
    def host(self) -> bool:
        net = self.suite.expectations.network
        return net.host if net is not None else True

    @property
    def active(self) -> bool:
        return self.segment is not None

    def consoles(self) -> dict[str, Path]:
        return {f"console of {name}": m.console_path() for name, m in self.machines.items()}

    def machines_of(self) -> dict[str, MachineGroup]:
        return self.machines

    def machine(self) -> Machine:
        raise MachineError(f"{self.suite.id} is a multi-machine suite: it has no single VM",
                           hint="use the `machines` fixture (machines['NAME']) and `hosts['NAME']`")

    def start(self) -> None:
        """Start the network and every machine, then wait for each one's markers. A machine that fails
        keeps its error (its checks and the tests that use it fail); the others run on."""
        if self.started:
            return
        if self.closed:
            raise MachineError(f"the machines of {self.key} were already shut down")
        from lkit.machine.lan import Segment

        self.started = True
        with self.clock.span("poweroff"):
            self.run.release_others(self)
        with self.clock.span("ready"):
            try:
                self.segment = self._stack.enter_context(Segment(list(self.machines)))
            except LkitError as exc:
                for m in self.machines.values():
                    m._boot_error = exc
                return
            started: dict[str, Any] = {}
            for name, m in self.machines.items():
                m.boot_attempts = 1

                def launch(m: MachineGroup = m, name: str = name) -> None:
                    started[name] = m._start_vm()
                m._boot_attempt(1, launch)
            for name, m in self.machines.items():
                if name in started and m._boot_error is None:
                    vm = started[name]
                    if m._boot_attempt(1, lambda m=m, vm=vm: m._await_vm(vm)):
                        m._vm = vm
            for m in self.machines.values():   # --lkit-reruns: a failed machine alone boots again
                while m._vm is None and m.boot_attempts <= self.run.settings.reruns:
                    m.boot_attempts += 1

                    def again(m: MachineGroup = m) -> None:
                        m._vm = m._boot()
                    if m._boot_attempt(m.boot_attempts, again):
                        m._boot_error = None
            hub = peak_rss(self.segment.pid)
            if hub is not None:
                self.memory["hub"] = hub

    def close(self) -> None:
        self.closed = self.closed or self.started
        with self.clock.span("poweroff"):
            for m in self.machines.values():
                m.close()
            segment = self.segment
            self._stack.close()
            self._stack = ExitStack()
            self.segment = None
        if segment is not None:
            for name, counts in segment.counters.items():
                self.properties[f"lan.{name}"] = " ".join(f"{k}={v}" for k, v in sorted(counts.items()))
        if self.memory:
            self.figures["memory.peak_total"] = sum(self.memory.values())


class RunState:
    """Session-wide state of the plugin."""

    def __init__(self, settings: Settings, run_id: str) -> None:
        self.settings = settings
        self.run_id = run_id
        self.run_dir = settings.report_dir / run_id
        self.suites: dict[Path, SuiteSpec] = {}
        self.groups: dict[str, Group] = {}
        self._builds: dict[tuple[Path, bool, str], BuiltImage | LkitError] = {}   # (spec, signed) ->
        self.build_seconds: dict[tuple[Path, str], float] = {}   # (spec, arch) -> seconds
        self._rebuilds: dict[tuple[Path, bool, str], BuiltImage] = {}
        self._keys: dict[Path, Any] = {}
        self.notes: list[str] = []           # collection's lines for the terminal (variants left out...)
        self._sidecars: dict[Path, set[Path]] = {}      # NAME.test.yml -> the machine specs it names
        self._vm_root: Path | None = None
        self._stack = ExitStack()
        self.shard_plan: list[Weighed] = []   # this shard's groups (--lkit-shard)
        self.shard_formats: dict[Path, list[str]] = {}   # spec -> the formats this shard tests
        self._revision: str | None = None

    @property
    def revision(self) -> str:
        """A digest of the suite folders' files: shard runs of one suite revision can be merged."""
        if self._revision is None:
            self._revision = suite_revision(self.settings.suites)
        return self._revision

    def formats_to_build(self, suite: SuiteSpec, *, signed: bool = False, arch: Arch = arch_table.DEFAULT) -> list[str]:
        """The spec's formats this process tests (a shard builds only its own): the output formats of
        its variants of `arch`, those of Secure Boot variants for the signed build."""
        out: list[str] = []
        for variant in self.shard_formats.get(suite.path) or suite.formats:
            fmt, firmware = variants.split(variant)
            if variants.arch_of(variant) != arch:
                continue
            if (firmware == variants.Firmware.EFI_SECUREBOOT) == signed and fmt not in out:
                out.append(fmt)
        return out

    def built_if_any(self, suite: SuiteSpec, arch: Arch = arch_table.DEFAULT, *,
                     signed: bool = False) -> BuiltImage | None:
        """The spec's build for `arch` (signed or not) if this process made (or picked up) one."""
        cached = self._builds.get((suite.path, signed, arch.name))
        return cached if isinstance(cached, BuiltImage) else None

    def keys(self, suite: SuiteSpec) -> Any:
        """The Secure Boot keys of a suite: its own (NAME.test.yml `secureboot: keys:`), else lkit's
        generated test keys (cached, see lkit.core.secureboot)."""
        if suite.path not in self._keys:
            from lkit.core.secureboot import generated_keys

            self._keys[suite.path] = suite.expectations.secureboot_keys or generated_keys()
        return self._keys[suite.path]

    @property
    def store(self) -> Store:
        return Store(self.settings.store) if self.settings.store else Store.default()

    def vm_dir(self, key: str) -> Path:
        if self._vm_root is None:
            import tempfile

            self._vm_root = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="lkit-vm.")))
        path = self._vm_root / key.replace("::", "-").replace("/", "_")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def is_machine_spec(self, path: Path) -> bool:
        """Whether `path` is a machine of another spec's multi-machine suite (a `machines:` entry of a
        NAME.test.yml in its folder or above, within the suites): then it is not a suite of its own."""
        path = path.resolve()
        folder = path.parent
        while True:
            for sidecar in sorted([*folder.glob("*.test.yml"), *folder.glob("*.test.yaml")]):
                own = sidecar.with_name(sidecar.name.split(".test.", 1)[0] + ".yml")
                if own.resolve() == path:
                    continue
                if sidecar not in self._sidecars:
                    try:
                        self._sidecars[sidecar] = {d.spec for d in load_expectations(sidecar, own_spec=own.resolve()).machines.values()}
                    except LkitError:
                        self._sidecars[sidecar] = set()   # reported when its own spec is collected
                if path in self._sidecars[sidecar]:
                    return True
            if folder.parent == folder or not any(folder == s.resolve() or s.resolve() in folder.parents
                                                  for s in self.settings.suites):
                return False
            folder = folder.parent

    def suite(self, path: Path) -> SuiteSpec:
        if path not in self.suites:
            self.suites[path] = load_suite_spec(path, self.settings)
        return self.suites[path]

    def group(self, suite: SuiteSpec, fmt: str) -> Group:
        if suite.machines:
            return self.network(suite, fmt)
        key = f"{suite.id}::{fmt}"
        if key not in self.groups:
            self.groups[key] = Group(suite=suite, format=fmt, run=self)
        return self.groups[key]

    def network(self, suite: SuiteSpec, variant: str) -> NetworkGroup:
        """The machines of a multi-machine suite in one of its formats, and their network."""
        key = f"{suite.id}::{variant}"
        if key not in self.groups:
            net = NetworkGroup(suite=suite, format=variant, run=self)
            self.groups[key] = net
            for name, msuite in suite.machines.items():
                decl = suite.decls[name]
                group = MachineGroup(suite=msuite, format=decl.format or variant, run=self, clock=net.clock,
                                     network=net, name=name, variant=variant, decl=decl)
                net.machines[name] = group
                self.groups[group.key] = group
        found = self.groups[key]
        assert isinstance(found, NetworkGroup)
        return found

    def release_others(self, keep: Group) -> None:
        """Only one VM (or one suite's network of VMs) at a time per worker: memory and CPU are what a
        2-core machine lacks."""
        for group in self.groups.values():
            if group.network_group is not keep.network_group and group.active:
                group.close()

    def built(self, suite: SuiteSpec, *, signed: bool = False, arch: Arch = arch_table.DEFAULT) -> BuiltImage:
        """Build every format of the suite's spec once per session and architecture (or pick up prebuilt
        artifacts); `signed`: the formats of its Secure Boot variants, signed with its keys, in
        <build dir>/NAME/secureboot; another architecture than amd64 in <build dir>/NAME/ARCH (signed:
        <build dir>/NAME/ARCH/secureboot)."""
        slot = (suite.path, signed, arch.name)
        cached = self._builds.get(slot)
        if isinstance(cached, LkitError):
            raise cached
        if cached is not None:
            return cached
        started = time.monotonic()
        try:
            if signed and self.settings.uses_prebuilt:
                raise MachineError("the efi-secureboot variant needs lkit to build and sign the spec; "
                                   "--lkit-prebuilt artifacts cannot be signed",
                                   hint="drop --lkit-prebuilt, or test only firmware efi (--lkit-firmware efi)")
            if arch != arch_table.DEFAULT and self.settings.uses_prebuilt:
                raise MachineError(f"--lkit-prebuilt artifacts are amd64's; {arch.name} variants need lkit to build "
                                   "the spec", hint="drop --lkit-prebuilt, or test amd64 only (--lkit-arch amd64)")
            if signed or arch != arch_table.DEFAULT:
                outdir = self.settings.build_dir / suite.spec.name
                if arch != arch_table.DEFAULT:
                    outdir /= arch.name
                if signed:
                    outdir /= "secureboot"
                with shared.exclusive(self.settings.build_dir / f".{suite.spec.name}.lock"):
                    result = build(suite.spec, self.formats_to_build(suite, signed=signed, arch=arch), outdir,
                                   store=self.store, keys=self.keys(suite) if signed else None, arch=arch)
                if signed:      # not a build of its own in the figures (the unsigned one is timed)
                    self._builds[slot] = result
                    return result
            elif self.settings.prebuilt_oci is not None:
                result = prebuilt_image(suite, self._fetch_prebuilt(suite), self.formats_to_build(suite))
            elif self.settings.prebuilt is not None:
                result = prebuilt_image(suite, self.settings.prebuilt, self.formats_to_build(suite))
            else:
                outdir = self.settings.build_dir / suite.spec.name
                # one process of the run builds; another waits, then finds the build's stamp valid
                with shared.exclusive(self.settings.build_dir / f".{suite.spec.name}.lock"):
                    result = build(suite.spec, self.formats_to_build(suite), outdir, store=self.store)
        except LkitError as exc:
            self._builds[slot] = exc
            raise
        self.build_seconds[(suite.path, arch.name)] = time.monotonic() - started
        self._builds[slot] = result
        if self.settings.push and not self.settings.uses_prebuilt:
            self._push(result)
        return result

    def _fetch_prebuilt(self, suite: SuiteSpec) -> Path:
        """The spec's build from the registry (--lkit-prebuilt oci://...), verified, in a folder of this run."""
        from lkit.build.publish import fetch_build, parse_location

        location, plain = parse_location(str(self.settings.prebuilt_oci))
        dest = self.settings.build_dir / ".prebuilt" / suite.spec.name
        with shared.exclusive(self.settings.build_dir / f".{suite.spec.name}.lock"):
            return fetch_build(location, suite.spec.name, dest, store=self.store, plain_http=plain)

    def _push(self, built: BuiltImage) -> None:
        from lkit.build.publish import parse_location, push_build

        location, plain = parse_location(str(self.settings.push))
        push_build(built, location, store=self.store, plain_http=plain)

    def manifest(self, suite: SuiteSpec, arch: Arch = arch_table.DEFAULT) -> Path | None:
        """The build manifest of the suite's spec for `arch`, if it was built (or prebuilt with one)."""
        built = self._builds.get((suite.path, False, arch.name))
        return built.manifest if isinstance(built, BuiltImage) else None

    def rebuilt(self, suite: SuiteSpec, *, signed: bool = False, arch: Arch = arch_table.DEFAULT) -> BuiltImage:
        """A second build of every format from scratch (no cache), once per spec, architecture and run
        (xdist workers share it through the run folder): the determinism proof (of the signed build too)."""
        slot = (suite.path, signed, arch.name)
        cached = self._rebuilds.get(slot)
        if cached is None:
            import tempfile

            key = self.built(suite, signed=signed, arch=arch).key
            formats = self.formats_to_build(suite, signed=signed, arch=arch)
            keys = self.keys(suite) if signed else None
            tag = ("" if arch == arch_table.DEFAULT else f".{arch.name}") + (".signed" if signed else "")
            saved = self.run_dir / ".shared" / f"{suite.spec.name}{tag}.rebuild.json"
            with shared.exclusive(saved.with_suffix(".lock")):   # xdist workers: one rebuild per run
                cached = shared.load_digests(saved, key, formats)
                if cached is None:
                    outdir = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix="lkit-rebuild.")))
                    signing = {"keys": keys} if keys is not None else {}
                    cached = build(suite.spec, formats, outdir, store=self.store, use_cache=False, arch=arch,
                                   **signing)
                    shared.save_digests(saved, cached)
            self._rebuilds[slot] = cached
        return cached

    def close(self) -> None:
        for group in self.groups.values():
            group.close()
        self._stack.close()

    def kill(self) -> None:
        """Kill every QEMU at once (no QMP), then release the rest: for a second Ctrl-C."""
        for group in self.groups.values():
            if group.vm is not None:
                group.vm.kill()
        self.close()


def suite_revision(folders: list[Path]) -> str:
    """sha256 over every file of the suite folders (relative path and content), caches left out."""
    import hashlib

    h = hashlib.sha256()
    for folder in sorted(folders):
        if not folder.is_dir():
            continue
        for path in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                           and ".pytest_cache" not in p.parts):
            h.update(f"{path.relative_to(folder.parent)}\0{path.stat().st_size}\0".encode())
            h.update(path.read_bytes())
    return "sha256:" + h.hexdigest()


def prebuilt_image(suite: SuiteSpec, folder: Path, formats: list[str]) -> BuiltImage:
    """Artifacts built elsewhere (by LinuxKit, say), found by LinuxKit's file names."""
    from lkit.core.files import sha256_file

    result = BuiltImage(name=suite.spec.name, outdir=folder, key="prebuilt")
    for fmt in formats:
        names = get_format(fmt).filenames(suite.spec.name)
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise MachineError(f"--lkit-prebuilt {folder}: no {', '.join(missing)} for format {fmt}",
                               hint=f"build them with: linuxkit build --format {fmt} --dir {folder} {suite.path}")
        result.artifacts[fmt] = [Artifact(folder / n, (folder / n).stat().st_size, sha256_file(folder / n)) for n in names]
    manifest = manifest_path(folder, suite.spec.name)   # lkit build wrote one; linuxkit build does not
    result.manifest = manifest if manifest.is_file() else None
    return result


# Where the session's RunState lives: pytest's config.stash (not an attribute pytest does not know).
RUN = pytest.StashKey[RunState]()

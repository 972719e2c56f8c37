"""The built-in checks, one test item each per (spec, format).

A check raises CheckFailed with ONE line saying what was expected and what was found; the item adds
the spec, the format and a console excerpt. Checks read the guest through the group's VM and facts.
"""

from __future__ import annotations

import hashlib
import re
import shlex
import statistics
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable

from lkit.build import ociconfig
from lkit.errors import LkitError
from lkit.pytest_plugin.state import Group
from lkit.core.capabilities import ALL_CAPABILITIES
from lkit.machine.timeline import MARKERS

# Read from the console text after power-off (the timeline may not have its last lines yet then).
ONSHUTDOWN_EXIT = re.compile(re.escape(MARKERS["onshutdown"]) + r" (\S+) exit (-?\d+)")
CAP_SETS = ("effective", "permitted", "bounding")
PROC_STATUS_FIELD = {"effective": "CapEff", "permitted": "CapPrm", "bounding": "CapBnd"}


class CheckFailed(AssertionError):
    """A check's finding: expected vs found, in one line."""


def _mb(n: float) -> str:
    return f"{n / (1 << 20):.1f} MiB"


# ---- build ------------------------------------------------------------------------------------
def check_build(group: Group) -> None:
    built = group.built()
    for art in built.artifacts[group.output_format]:
        group.figures[f"size.{art.path.name}"] = art.size
    group.figures["size.total"] = built.total_size(group.output_format)
    settings = group.run.settings
    build_slot = (group.suite.path, group.arch.name)
    if build_slot in group.run.build_seconds and not settings.uses_prebuilt:
        group.figures["build.seconds"] = round(group.run.build_seconds[build_slot], 3)
    if settings.uses_prebuilt or not settings.determinism:
        return
    again = group.rebuilt()
    first = {a.path.name: a.sha256 for a in built.artifacts[group.output_format]}
    second = {a.path.name: a.sha256 for a in again.artifacts[group.output_format]}
    differ = sorted(n for n in first if first[n] != second.get(n))
    if differ:
        raise CheckFailed(f"not deterministic: a second build from scratch gave different bytes for {', '.join(differ)}")


def check_size_budget(group: Group) -> None:
    budget = group.suite.expectations.size_budget(group.format)
    arts = group.artifacts()
    sizes = {a.path.name: a.size for a in arts}
    over = []
    for name, limit in sorted(budget.items()):
        if name == "total":
            found = sum(sizes.values())
        elif name in sizes:
            found = sizes[name]
        else:
            raise CheckFailed(f"size budget names {name!r}, which this format does not write (it writes {', '.join(sizes)})")
        if found > limit:
            over.append(f"{name} {_mb(found)} > budget {_mb(limit)}")
    if over:
        raise CheckFailed("over the size budget: " + "; ".join(over))


# ---- boot -------------------------------------------------------------------------------------
def _badness(group: Group) -> list[str]:
    vm = group.machine()
    ignore = [re.compile(p) for p in group.suite.expectations.badness_ignore]
    lines = [b.line for b in vm.badness]
    return [line for line in lines if not any(p.search(line) for p in ignore)]


def check_boots(group: Group) -> None:
    vm = group.machine()
    group.properties["accelerator"] = str(getattr(vm, "accel", ""))
    if group.boot_attempts > 1:
        group.properties["boot_attempts"] = str(group.boot_attempts)
    bad = _badness(group)
    if bad:
        raise CheckFailed(f"kernel badness on the console ({len(bad)} line(s)): {bad[0].strip()}")


def timeline_figures(group: Group) -> dict[str, float]:
    """Seconds from `cont` to each boot stage: boot.kernel, boot.init, boot.onboot.NAME, boot.services..."""
    figures: dict[str, float] = {}
    for name, host, _guest in group.machine().timeline.as_list():
        figures.setdefault("boot." + name.replace(":", "."), round(host, 3))
    return figures


def check_boot_time(group: Group) -> None:
    figures = timeline_figures(group)
    if group.run.settings.boots > 1:
        for name, value in figures.items():
            group.samples.setdefault(name, []).append(value)
        group.extra_boot_samples()
        figures = {name: statistics.median(values) for name, values in group.samples.items()}
    group.figures.update(figures)
    found = figures.get("boot.services")
    if found is None:
        raise CheckFailed(f"the guest never said {MARKERS['services']!r}")
    budget = group.suite.expectations.boot_time_budget(group.format)
    if budget is not None and found > budget:
        stages = ", ".join(f"{k[5:]} {v:.1f}s" for k, v in sorted(figures.items(), key=lambda kv: kv[1]))
        what = f"median of {group.run.settings.boots} boots" if group.run.settings.boots > 1 else "services running"
        raise CheckFailed(f"{what}: {found:.1f} s, over the {budget:.1f} s budget (timeline: {stages})")


def check_onboot(group: Group) -> None:
    exits = group.machine().timeline.exits("onboot")  # complete: the boot waited past them
    expected = [e.name for e in group.suite.spec.onboot]
    missing = [n for n in expected if n not in exits]
    failed = [f"{n} exit {exits[n]}" for n in expected if n in exits and exits[n] != 0]
    if failed or missing:
        parts = []
        if failed:
            parts.append("onboot containers failed: " + ", ".join(failed))
        if missing:
            parts.append("onboot containers never finished: " + ", ".join(missing))
        raise CheckFailed("; ".join(parts))


def check_services_running(group: Group) -> None:
    expected = set(group.suite.expectations.services if group.suite.expectations.services is not None
                   else [e.name for e in group.suite.spec.services])
    running = {name for name, c in group.facts().containers.items() if c.status == "running"}
    if running != expected:
        missing, extra = sorted(expected - running), sorted(running - expected)
        detail = "; ".join(filter(None, [f"not running: {', '.join(missing)}" if missing else "",
                                         f"unexpected: {', '.join(extra)}" if extra else ""]))
        raise CheckFailed(f"services expected {sorted(expected)}, running {sorted(running)} ({detail})")


def expected_capabilities(group: Group) -> dict[str, dict[str, set[str]]]:
    """What LinuxKit's rules give each service: from the spec entry and the image's label."""
    store = group.run.store
    idmap = ociconfig.IdMap.from_spec(group.suite.spec)
    out = {}
    for entry in group.suite.spec.services:
        image = store.resolve(entry.image)
        bundle = ociconfig.generate(entry, ociconfig.ImageInfo(ref=image.ref, config=image.config.get("config") or {}), idmap,
                                    volumes={v.name: v for v in group.suite.spec.volumes})
        caps = bundle.config.get("process", {}).get("capabilities", {}) or {}
        out[entry.name] = {s: set(caps.get(s) or []) for s in CAP_SETS}
    return out


def check_capabilities(group: Group) -> None:
    expected = expected_capabilities(group)
    facts = group.facts()
    last = facts.cap_last_cap
    known = set(ALL_CAPABILITIES[: last + 1]) if last is not None else None
    problems = []
    for name, sets in sorted(expected.items()):
        container = facts.containers.get(name)
        if container is None or not container.caps:
            problems.append(f"{name}: not running, capabilities unknown")
            continue
        for which in CAP_SETS:
            want = sets[which] & known if known is not None else sets[which]
            got = set(container.caps.get(PROC_STATUS_FIELD[which], []))
            if got != want:
                extra, lacking = sorted(got - want), sorted(want - got)
                problems.append(f"{name} {which}: " + ", ".join(filter(None, [f"extra {' '.join(extra)}" if extra else "",
                                                                           f"missing {' '.join(lacking)}" if lacking else ""])))
    if problems:
        _keep_configs(group, [p.split(" ", 1)[0].rstrip(":") for p in problems])
        raise CheckFailed("capabilities differ from the spec: " + "; ".join(problems))


def _keep_configs(group: Group, services: list[str]) -> None:
    """The generated config.json of each failing container, as evidence for the report."""
    by_name = {e.name: e for e in group.suite.spec.services}
    idmap = ociconfig.IdMap.from_spec(group.suite.spec)
    folder = group.run.run_dir / "configs"
    folder.mkdir(parents=True, exist_ok=True)
    for name in sorted(set(services) & set(by_name)):
        image = group.run.store.resolve(by_name[name].image)
        bundle = ociconfig.generate(by_name[name], ociconfig.ImageInfo(ref=image.ref, config=image.config.get("config") or {}), idmap)
        path = folder / f"{group.suite.spec.name}-{group.format}-{name}.config.json"
        path.write_bytes(bundle.config_json())
        group.evidence[f"config.json of {name}"] = path


def check_files(group: Group) -> None:
    vm = group.machine()
    problems = []
    for entry in group.suite.spec.files:
        path = "/" + entry.path
        rc, out, _ = _run(vm, f"stat -c '%F|%a|%u|%g' {shlex.quote(path)}")
        if rc != 0:
            if not entry.optional:
                problems.append(f"{path}: missing")
            continue
        kind, mode, uid, gid = out.strip().split("|")
        want_kind = "directory" if entry.directory else "symbolic link" if entry.symlink is not None else "regular"
        if want_kind not in kind:
            problems.append(f"{path}: is a {kind}, expected a {want_kind}")
            continue
        if entry.symlink is None:
            want_mode = entry.mode if entry.mode is not None else (0o700 if entry.directory else 0o600)
            if int(mode, 8) != want_mode:
                problems.append(f"{path}: mode {int(mode, 8):04o}, expected {want_mode:04o}")
            if isinstance(entry.uid, int) and int(uid) != entry.uid or isinstance(entry.gid, int) and int(gid) != entry.gid:
                problems.append(f"{path}: owner {uid}:{gid}, expected {entry.uid}:{entry.gid}")
        if entry.contents is not None:
            _, digest, _ = _run(vm, f"sha256sum {shlex.quote(path)}")
            want = hashlib.sha256(entry.contents.encode()).hexdigest()
            if digest.split()[:1] != [want]:
                problems.append(f"{path}: content differs from the spec's `contents`")
    if problems:
        raise CheckFailed("; ".join(problems))


def _run(vm, command: str) -> tuple[int, str, str]:
    result = vm.run(command)
    return result.rc, result.stdout, result.stderr


def check_ports(group: Group) -> None:
    vm = group.machine()
    problems = []
    for port in group.suite.expectations.ports:
        host_port = vm.forward_port(port.port)
        error = _probe_port(host_port, port.http, port.expect, deadline=time.monotonic() + 60,
                            established=_slirp_established(vm, host_port, port.port))
        if error:
            problems.append(f"guest port {port.port} (host 127.0.0.1:{host_port}): {error}")
    if problems:
        raise CheckFailed("; ".join(problems))


def _slirp_established(vm, host_port: int, guest_port: int) -> Callable[[], bool]:
    """Whether user-mode networking has a connection from host_port to the guest's port in state
    ESTABLISHED (HMP `info usernet`): the guest accepted it."""
    pattern = re.compile(rf"TCP\[ESTABLISHED\]\s+\d+\s+\S+\s+{host_port}\s+\S+\s+{guest_port}\s")

    def established() -> bool:
        try:
            return bool(pattern.search(str(vm.qmp("human-monitor-command", **{"command-line": "info usernet"}))))
        except LkitError:
            return False
    return established


def _guest_accepted(conn: socket.socket, established: Callable[[], bool] | None, wait: float = 1.0) -> bool:
    """User-mode NAT accepts the host's connection at once and closes it when the guest refuses.
    Data, or slirp's own ESTABLISHED state, says the guest accepted; EOF says it refused. A silent
    service (redis) gave neither, so the probe waited the full second; `info usernet` ends it early."""
    end = time.monotonic() + wait
    while True:
        conn.settimeout(max(0.01, min(0.05, end - time.monotonic())))
        try:
            return conn.recv(1, socket.MSG_PEEK) != b""
        except TimeoutError:
            pass
        if (established is not None and established()) or time.monotonic() >= end:
            return True


def _probe_port(host_port: int, http: str | None, expect: str | None, deadline: float,
                established: Callable[[], bool] | None = None) -> str | None:
    """Retry until the deadline: a service may still be starting. Returns the last error or None."""
    error = "no answer"
    while time.monotonic() < deadline:
        try:
            if http is None:
                with socket.create_connection(("127.0.0.1", host_port), timeout=5) as conn:
                    if not _guest_accepted(conn, established):
                        raise ConnectionError("closed at once")
                return None
            with urllib.request.urlopen(f"http://127.0.0.1:{host_port}{http}", timeout=5) as resp:
                body = resp.read(1 << 20).decode(errors="replace")
                if resp.status != 200:
                    error = f"HTTP {resp.status}"
                elif expect and not re.search(expect, body):
                    error = f"HTTP 200 but the body does not match {expect!r}"
                else:
                    return None
        except (OSError, urllib.error.URLError) as exc:
            error = str(exc)
        time.sleep(1)
    return error


def check_address(group: Group) -> None:
    """A machine of a multi-machine suite has the address its declaration gives (its spec sets it)."""
    decl = getattr(group, "decl", None)
    address = getattr(decl, "address", None)
    if address is None:
        return
    vm = group.machine()
    rc, out, err = _run(vm, "ip -o addr show")
    if rc != 0:
        raise CheckFailed(f"cannot list the guest's addresses: ip -o addr show exited {rc}: {err.strip()[:200]}")
    found = re.findall(r"^\d+:\s+(\S+)\s+inet6?\s+([0-9a-fA-F.:]+)/\d+", out, re.M)
    if not any(addr == address for _iface, addr in found):
        listed = ", ".join(f"{iface} {addr}" for iface, addr in found if not addr.startswith(("127.", "::1", "fe80")))
        raise CheckFailed(f"the machine does not have its address {address} on any interface "
                          f"(it has: {listed or 'none but loopback'}); the spec must set it (lkit configures no guest)")


def check_secureboot(group: Group) -> None:
    """The efi-secureboot variant: the guest says it booted with Secure Boot on (the SecureBoot EFI
    variable, else its kernel's boot log)."""
    from lkit.machine import efi

    state = efi.secure_boot_state(group.machine())
    group.properties["secureboot"] = f"{state.enabled} ({state.source}: {state.detail})"
    group.properties["secureboot.keys"] = group.run.keys(group.suite).origin
    if state.enabled is not True:
        found = "off" if state.enabled is False else "unknown"
        raise CheckFailed(f"Secure Boot expected on, the guest reports it {found} ({state.source}: {state.detail})")


def check_tpm(group: Group) -> None:
    """`tpm: true`: the guest sees a TPM 2.0 (/dev/tpm0 or /dev/tpmrm0, version 2 in sysfs)."""
    from lkit.machine import efi

    vm = group.machine()
    devices = efi.tpm_devices(vm)
    version = efi.tpm_version(vm)
    group.properties["tpm"] = f"{' '.join(devices) or 'none'} (version {version or '?'})"
    swtpm = getattr(vm, "swtpm_pid", None)
    if not devices:
        raise CheckFailed("no TPM in the guest: neither /dev/tpm0 nor /dev/tpmrm0"
                          + ("" if swtpm else " (and no swtpm runs for this VM)"))
    if version != "2":
        raise CheckFailed(f"the guest's TPM is version {version or 'unknown'}, expected 2 (swtpm --tpm2)")


def check_shutdown(group: Group) -> None:
    vm = group.machine()
    result = group.shutdown()
    text = vm.console_text()
    ran = {name: int(rc) for name, rc in ONSHUTDOWN_EXIT.findall(text)}
    expected = [e.name for e in group.suite.spec.onshutdown]
    problems = []
    if result.method != "powerdown":
        problems.append(f"no clean power-off: QEMU had to be stopped by {result.method} after {result.seconds:.1f} s")
    if MARKERS["poweroff"] not in text:
        problems.append(f"the guest never printed {MARKERS['poweroff']!r}")
    missing = [n for n in expected if n not in ran]
    if missing:
        problems.append("onshutdown never ran: " + ", ".join(missing))
    failed = [f"{n} exit {ran[n]}" for n in expected if ran.get(n, 0) != 0]
    if failed:
        problems.append("onshutdown failed: " + ", ".join(failed))
    if problems:
        raise CheckFailed("; ".join(problems))


CHECKS: dict[str, Callable[[Group], None]] = {
    "build": check_build,
    "size_budget": check_size_budget,
    "boots": check_boots,
    "secureboot": check_secureboot,
    "tpm": check_tpm,
    "boot_time": check_boot_time,
    "onboot": check_onboot,
    "services_running": check_services_running,
    "capabilities": check_capabilities,
    "files": check_files,
    "ports": check_ports,
    "shutdown": check_shutdown,
}
# A machine of a multi-machine suite: the same checks, and `address` (when one is declared) before `ports`.
MACHINE_CHECKS: dict[str, Callable[[Group], None]] = {}
for _name, _check in CHECKS.items():
    if _name == "ports":
        MACHINE_CHECKS["address"] = check_address
    MACHINE_CHECKS[_name] = _check
# Checks that need no VM (they still run when a boot fails).
BUILD_CHECKS = ("build", "size_budget")


def checks_of(group: Group, machine: bool = False) -> list[str]:
    """The built-in checks of a group: `secureboot` only for an efi-secureboot variant, `tpm` only
    with `tpm: true`, `address` only for a machine that declares one."""
    names = list(MACHINE_CHECKS if machine else CHECKS)
    decl = getattr(group, "decl", None)
    skip = {"secureboot"} if not group.secure_boot else set()
    if not group.suite.expectations.tpm:
        skip.add("tpm")
    if getattr(decl, "address", None) is None:
        skip.add("address")
    return [n for n in names if n not in skip]

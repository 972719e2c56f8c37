"""A suite's expectations for one spec: `NAME.test.yml` beside `NAME.yml`.

The spec stays pure LinuxKit (LinuxKit itself can build it); what lkit should check lives in the
sidecar. Every field is optional:

    formats: [kernel+initrd, iso-bios, iso-efi]   # default: the spec's `outputs:`, else kernel+initrd
    memory: 1024                                  # MiB
    cpus: 1                                       # vCPUs (default: --lkit-cpus, else 2 under KVM, 1 under TCG)
    boot:
      timeout: 180                                # seconds to the shell (times the accelerator multiplier)
      markers: ["Welcome to LinuxKit"]            # console regexes that must appear during boot
    budgets:
      boot_time: {default: 60, iso-efi: 90}       # seconds from `cont` to "services started"
      size:                                       # bytes, or with K/M/G (powers of 1024)
        default: {total: 300M}
        kernel+initrd: {total: 200M, NAME-initrd.img: 150M}
    ports:                                        # must answer from the host through a forward
      - {port: 80, http: /, expect: "nginx"}      # http path -> GET must give 200 (+ body regex)
      - {port: 6379}                              # plain TCP connect
    services: [rngd, nginx]                       # default: the spec's services
    badness: {ignore: ["regex", ...]}             # console badness lines to tolerate
    firmware: [efi, efi-secureboot]               # EFI formats boot once per firmware (default [efi]);
                                                  # variants are named iso-efi, iso-efi@efi-secureboot
    arch: [amd64, arm64]                          # every format once per architecture (default: the
                                                  # host's); arm64 variants are named arm64.iso-efi and
                                                  # budgets take `arm64` and `arm64.FORMAT` keys too
    secureboot:                                   # the keys of efi-secureboot (default: lkit's test keys)
      keys: {pk: keys/PK.crt, kek: keys/KEK.crt, db: keys/db.crt, db_key: keys/db.key}
    tpm: true                                     # a software TPM 2.0 (swtpm) in every VM, `tpm` check

A multi-machine suite (several VMs on a private network, booted and tested together) adds
`machines:` and, optionally, `network:`; each of the suite's `formats` then boots every machine:

    network:
      subnet: 10.0.3.0/24                         # the machines' addresses must lie in it
      host: true                                  # default true: each machine keeps its user-mode NIC
                                                  # (eth0; ports:, forward_port); false: none, and the
                                                  # private NIC is eth0
    machines:                                     # name -> machine; names: a-z, 0-9 and -
      server:
        spec: webnet.yml                          # default: the suite's own spec (relative paths are
                                                  # read from this file's folder)
        address: 10.0.3.1                         # its address on the network: set by the spec itself
                                                  # (lkit never configures a guest); checked by `address`
        format: kernel+initrd                     # boot this format whatever the suite's format
        memory: 256                               # and any per-spec field above but `formats`:
        ports: [{port: 80, http: /}]              # memory, cpus, boot, budgets, ports, services, badness
      client: {spec: client.yml, address: 10.0.3.2}

The suite's own memory, cpus, boot, budgets and badness are every machine's defaults; ports and
services belong to each machine.
"""

from __future__ import annotations

import copy
import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path

from lkit.build.outputs.base import FORMAT_NAMES
from lkit.core import arch as arch_table
from lkit.core.secureboot import KeySet
from lkit.pytest_plugin import variants
from lkit.spec.yamlmarks import YamlNode, describe, load_yaml

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
SPEC_KEYS = ("memory", "cpus", "boot", "budgets", "ports", "services", "badness", "tpm")
TOP_KEYS = ("formats", *SPEC_KEYS, "machines", "network", "firmware", "secureboot", "arch")
KEY_ROLES = ("pk", "kek", "db", "db_key")
MACHINE_KEYS = ("spec", "format", "address", *SPEC_KEYS)
MACHINE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


@dataclass
class PortCheck:
    port: int
    http: str | None = None
    expect: str | None = None


@dataclass
class Expectations:
    source: Path | None = None
    formats: list[str] | None = None
    memory: int = 1024
    cpus: int | None = None                       # None: the run's --lkit-cpus
    boot_timeout: float = 180.0
    markers: list[str] = field(default_factory=list)
    boot_time: dict[str, float] = field(default_factory=dict)        # format or "default" -> seconds
    size: dict[str, dict[str, int]] = field(default_factory=dict)    # format or "default" -> file|total -> bytes
    ports: list[PortCheck] = field(default_factory=list)
    services: list[str] | None = None
    badness_ignore: list[str] = field(default_factory=list)
    machines: dict[str, MachineDecl] = field(default_factory=dict)   # a multi-machine suite's machines
    network: NetworkDecl | None = None
    firmware: list[str] | None = None             # None: the run's --lkit-firmware, else [efi]
    arch: list[str] | None = None                 # None: the run's --lkit-arch, else the host's
    secureboot_keys: KeySet | None = None         # None: lkit's generated test keys
    tpm: bool = False

    def boot_time_budget(self, variant: str) -> float | None:
        """The most specific budget: the variant's (arm64.iso-efi@efi-secureboot), its architecture's
        format's (arm64.iso-efi), its architecture's (arm64), its format's (iso-efi), the default."""
        for key in _budget_keys(variant):
            if key in self.boot_time:
                return self.boot_time[key]
        return None

    def size_budget(self, variant: str) -> dict[str, int]:
        """Every level's size limits merged, the most specific winning (levels as boot_time_budget)."""
        merged: dict[str, int] = {}
        for key in reversed(_budget_keys(variant)):
            merged.update(self.size.get(key, {}))
        return merged


def _budget_keys(variant: str) -> list[str]:
    """Budget keys that apply to `variant`, most specific first (duplicates dropped)."""
    arch, rest = variants.split_arch(variant)
    fmt = variants.split(variant)[0]
    keys = [variant]
    if arch != arch_table.DEFAULT:
        keys += [f"{arch.name}{variants.ARCH_SEPARATOR}{fmt}", arch.name]
    keys += [rest, fmt, "default"]
    return list(dict.fromkeys(keys))


@dataclass
class NetworkDecl:
    """The private network of a multi-machine suite."""

    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network | None = None
    host: bool = True             # each machine keeps its user-mode NIC (host port forwards)


@dataclass
class MachineDecl:
    """One machine of a multi-machine suite."""

    name: str
    spec: Path                    # resolved
    where: str                    # file:line of its entry, for errors
    expectations: Expectations
    format: str | None = None     # None: the suite's format being tested
    address: str | None = None


# Typed values on top of the YamlNode API (lkit.spec.yamlmarks): every error names file:line and field.


def _positive(node: YamlNode, *, integer: bool = False) -> float:
    value = node.value
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or value <= 0:
        raise node.error(f"must be a positive {'whole ' if integer else ''}number, not {describe(value)}")
    return float(value)


def _regex(node: YamlNode) -> str:
    text = node.as_str()
    try:
        re.compile(text)
    except re.error as exc:
        raise node.error(f"is not a valid regular expression: {exc}") from None
    return text


def _regexes(node: YamlNode) -> list[str]:
    return [_regex(item) for item in node.sequence()]


def _size(node: YamlNode) -> int:
    value = node.value
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = _SIZE.match(value) if isinstance(value, str) else None
    if not m:
        raise node.error(f"is not a size: {describe(value)}", hint="bytes, or a number with K, M or G (e.g. 150M)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "")[:1].upper()])


def _per_format(node: YamlNode) -> dict[str, YamlNode]:
    """A mapping keyed by output format or `default`."""
    per = node.mapping()
    for name, child in per.items():
        if name != "default" and name not in arch_table.NAMES and not variants.is_variant(name):
            raise child.error("is not an output format (or FORMAT@FIRMWARE of an EFI format, or an architecture "
                              "or ARCH.FORMAT)",
                              hint="formats: default, " + ", ".join(FORMAT_NAMES) + "; firmware: " + ", ".join(variants.NAMES)
                              + "; architectures: " + ", ".join(arch_table.NAMES))
    return per


def load_expectations(path: Path, *, own_spec: Path | None = None) -> Expectations:
    """Read NAME.test.yml; a missing file means all defaults. `own_spec` is the suite's NAME.yml
    (a machine without `spec:` boots it).

    Read through lkit.spec.yamlmarks like specs: size, alias and depth limits, duplicate keys, file:line.
    """
    if not path.exists():
        return Expectations()
    root = load_yaml(path)
    exp = Expectations(source=path)
    if root.value is None:
        return exp
    top = root.mapping(allowed=TOP_KEYS)
    if "formats" in top:
        exp.formats = []
        for item in top["formats"].sequence():
            exp.formats.append(_format(item))
    _apply(exp, top)
    if "firmware" in top:
        exp.firmware = []
        for item in top["firmware"].sequence():
            name = item.as_str()
            if name not in variants.NAMES:
                raise item.error(f"unknown firmware {name!r}", hint="firmware: " + ", ".join(variants.NAMES))
            if name in exp.firmware:
                raise item.error(f"firmware {name!r} is listed twice")
            exp.firmware.append(name)
        if not exp.firmware:
            raise top["firmware"].error("lists no firmware", hint="e.g. firmware: [efi, efi-secureboot]")
    if "arch" in top:
        exp.arch = []
        for item in top["arch"].sequence():
            name = item.as_str()
            if name not in arch_table.NAMES:
                raise item.error(f"unknown architecture {name!r}",
                                 hint="arch: " + ", ".join(arch_table.NAMES) + " (LinuxKit's names)")
            if name in exp.arch:
                raise item.error(f"architecture {name!r} is listed twice")
            exp.arch.append(name)
        if not exp.arch:
            raise top["arch"].error("lists no architecture", hint="e.g. arch: [amd64, arm64]")
    if "secureboot" in top:
        exp.secureboot_keys = _secureboot(top["secureboot"], path.parent)
    if "machines" in top:
        for key in ("firmware", "secureboot", "arch"):
            if key in top:
                raise top[key].error("is not supported in a multi-machine suite (yet)",
                                     hint="test firmware and architecture variants with a single-machine suite")
    if "network" in top and "machines" not in top:
        raise top["network"].error("needs `machines:`", hint="a network connects the machines of a multi-machine suite")
    if "machines" in top:
        _machines(exp, top, path, own_spec or path.with_name(path.name.split(".", 1)[0] + ".yml"))
    return exp


def _format(item: YamlNode) -> str:
    fmt = item.as_str()
    if fmt not in FORMAT_NAMES:
        raise item.error(f"unknown format {fmt!r}", hint="formats: " + ", ".join(FORMAT_NAMES))
    return fmt


def _apply(exp: Expectations, top: dict[str, YamlNode]) -> None:
    """The per-spec fields (SPEC_KEYS) of `top` onto `exp`."""
    if "memory" in top:
        exp.memory = int(_positive(top["memory"], integer=True))
    if "cpus" in top:
        exp.cpus = int(_positive(top["cpus"], integer=True))
    if "boot" in top:
        boot = top["boot"].mapping(allowed=("timeout", "markers"))
        if "timeout" in boot:
            exp.boot_timeout = _positive(boot["timeout"])
        if "markers" in boot:
            exp.markers = _regexes(boot["markers"])
    if "budgets" in top:
        budgets = top["budgets"].mapping(allowed=("boot_time", "size"))
        if "boot_time" in budgets:
            exp.boot_time = {k: _positive(v) for k, v in _per_format(budgets["boot_time"]).items()}
        if "size" in budgets:
            exp.size = {k: {f: _size(n) for f, n in v.mapping().items()}
                        for k, v in _per_format(budgets["size"]).items()}
    if "ports" in top:
        exp.ports = []
        for item in top["ports"].sequence():
            fields = item.mapping(allowed=("port", "http", "expect"), required=("port",))
            port = int(_positive(fields["port"], integer=True))
            if port > 65535:
                raise fields["port"].error(f"{port} is not a TCP port (1-65535)")
            exp.ports.append(PortCheck(port=port,
                                       http=fields["http"].as_str() if "http" in fields else None,
                                       expect=_regex(fields["expect"]) if "expect" in fields else None))
    if "services" in top:
        exp.services = top["services"].as_str_list()
    if "badness" in top:
        bad = top["badness"].mapping(allowed=("ignore",))
        if "ignore" in bad:
            exp.badness_ignore = _regexes(bad["ignore"])
    if "tpm" in top:
        exp.tpm = top["tpm"].as_bool()


def _secureboot(node: YamlNode, folder: Path) -> KeySet | None:
    """`secureboot: {keys: {pk, kek, db, db_key}}`: the user's own key files (relative to NAME.test.yml)."""
    fields = node.mapping(allowed=("keys",))
    if "keys" not in fields:
        return None
    keys = fields["keys"].mapping(allowed=KEY_ROLES, required=KEY_ROLES)
    paths: dict[str, Path] = {}
    for role in KEY_ROLES:
        text = keys[role].as_str()
        path = (folder / text).resolve()
        if not path.is_file():
            raise keys[role].error(f"no such file {text!r} (looked in {folder})",
                                   hint="PEM files: X.509 certificates for pk, kek and db, db's private key for db_key")
        head = path.read_bytes()[:4096]
        if role == "db_key" and b"PRIVATE KEY" not in head:
            raise keys[role].error(f"{text!r} is not a PEM private key")
        if role != "db_key" and b"BEGIN CERTIFICATE" not in head and not head.startswith(b"\x30\x82"):
            raise keys[role].error(f"{text!r} is not an X.509 certificate (PEM or DER)")
        paths[role] = path
    return KeySet(pk=paths["pk"], kek=paths["kek"], db=paths["db"], db_key=paths["db_key"],
                  origin=f"keys named in {fields['keys'].where}")


def _network(node: YamlNode) -> NetworkDecl:
    fields = node.mapping(allowed=("subnet", "host"))
    net = NetworkDecl()
    if "subnet" in fields:
        text = fields["subnet"].as_str()
        try:
            net.subnet = ipaddress.ip_network(text, strict=True)
        except ValueError as exc:
            raise fields["subnet"].error(f"is not a subnet: {exc}", hint="e.g. 10.0.3.0/24") from None
    if "host" in fields:
        net.host = fields["host"].as_bool()
    return net


def _machines(exp: Expectations, top: dict[str, YamlNode], path: Path, own_spec: Path) -> None:
    """`machines:` (and `network:`) of a multi-machine suite."""
    for key in ("ports", "services"):
        if key in top:
            raise top[key].error("belongs to a machine in a multi-machine suite",
                                 hint=f"move it under machines: NAME: {key}:")
    exp.network = _network(top["network"]) if "network" in top else NetworkDecl()
    net = exp.network
    entries = top["machines"].mapping()
    if not entries:
        raise top["machines"].error("declares no machine", hint="machines: {NAME: {spec: FILE.yml}, ...}")
    base = copy.deepcopy(exp)
    base.machines, base.network, base.formats = {}, None, None
    seen: dict[str, str] = {}
    folder = path.parent.resolve()
    for name, node in entries.items():
        where = node.where
        if not MACHINE_NAME.match(name):
            raise node.error(f"is not a valid machine name ({name!r})",
                             hint="lower-case letters, digits and -, at most 31 characters (it is part of test ids)")
        fields = node.mapping(allowed=MACHINE_KEYS) if node.value is not None else {}
        mexp = copy.deepcopy(base)
        mexp.source = path
        _apply(mexp, fields)
        spec = own_spec
        if "spec" in fields:
            text = fields["spec"].as_str()
            spec = (folder / text).resolve()
            if not (spec == folder or folder in spec.parents):
                raise fields["spec"].error(f"{text!r} is outside the suite's folder {folder}")
            if spec.suffix not in (".yml", ".yaml") or spec.name.endswith((".test.yml", ".test.yaml")):
                raise fields["spec"].error(f"{text!r} is not a LinuxKit spec (NAME.yml)")
            if not spec.is_file():
                raise fields["spec"].error(f"no spec file {text!r} (looked in {folder})")
        decl = MachineDecl(name=name, spec=spec, where=where, expectations=mexp,
                           format=_format(fields["format"]) if "format" in fields else None)
        if "address" in fields:
            text = fields["address"].as_str()
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                raise fields["address"].error(f"{text!r} is not an IP address (no prefix: the subnet gives it)") from None
            if net.subnet is not None:
                if address not in net.subnet:
                    raise fields["address"].error(f"{address} is not in the network's subnet {net.subnet}")
                if net.subnet.num_addresses > 2 and address in (net.subnet.network_address, net.subnet.broadcast_address):
                    raise fields["address"].error(f"{address} is the subnet's network or broadcast address")
            if str(address) in seen:
                raise fields["address"].error(f"{address} is already the address of machine {seen[str(address)]!r}")
            seen[str(address)] = name
            decl.address = str(address)
        if mexp.ports and not net.host:
            raise fields["ports"].error("needs the host to reach the machine",
                                        hint="set `network: {host: true}` (the user-mode NIC carries the forwards)")
        exp.machines[name] = decl

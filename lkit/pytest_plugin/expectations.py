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
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lkit.build.outputs.base import FORMAT_NAMES
from lkit.errors import SpecError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}


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

    def boot_time_budget(self, fmt: str) -> float | None:
        return self.boot_time.get(fmt, self.boot_time.get("default"))

    def size_budget(self, fmt: str) -> dict[str, int]:
        return {**self.size.get("default", {}), **self.size.get(fmt, {})}


class _Reader:
    """Typed access to a composed YAML node tree, every error with file:line and the field path."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, node: yaml.Node | None, field_path: str, message: str, hint: str | None = None) -> SpecError:
        line = node.start_mark.line + 1 if node is not None else 1
        return SpecError(f"{field_path}: {message}", where=f"{self.path}:{line}", hint=hint)

    def mapping(self, node: yaml.Node, field_path: str, allowed: tuple[str, ...] | None) -> dict[str, yaml.Node]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, field_path, "must be a mapping")
        out: dict[str, yaml.Node] = {}
        for key, value in node.value:
            name = str(key.value)
            if allowed is not None and name not in allowed:
                raise self.fail(key, f"{field_path}.{name}".lstrip("."), "unknown field", hint="allowed: " + ", ".join(allowed))
            if name in out:
                raise self.fail(key, f"{field_path}.{name}".lstrip("."), "given twice")
            out[name] = value
        return out

    def scalar(self, node: yaml.Node, field_path: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, field_path, "must be a single value")
        return yaml.safe_load(yaml.serialize(node))

    def number(self, node: yaml.Node, field_path: str, *, integer: bool = False) -> float:
        value = self.scalar(node, field_path)
        ok = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok or value <= 0:
            raise self.fail(node, field_path, f"must be a positive {'whole ' if integer else ''}number, not {value!r}")
        return value

    def string(self, node: yaml.Node, field_path: str) -> str:
        value = self.scalar(node, field_path)
        if not isinstance(value, str):
            raise self.fail(node, field_path, f"must be a string, not {value!r}")
        return value

    def seq(self, node: yaml.Node, field_path: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, field_path, "must be a list")
        return list(node.value)

    def strings(self, node: yaml.Node, field_path: str) -> list[str]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, field_path, "must be a list of strings")
        return [self.string(item, f"{field_path}[{i}]") for i, item in enumerate(node.value)]

    def regex(self, node: yaml.Node, field_path: str) -> str:
        text = self.string(node, field_path)
        try:
            re.compile(text)
        except re.error as exc:
            raise self.fail(node, field_path, f"is not a valid regular expression: {exc}") from None
        return text

    def size(self, node: yaml.Node, field_path: str) -> int:
        value = self.scalar(node, field_path)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
        m = _SIZE.match(str(value))
        if not m:
            raise self.fail(node, field_path, f"is not a size: {value!r}", hint="bytes, or a number with K, M or G (e.g. 150M)")
        return int(float(m.group(1)) * _UNITS[(m.group(2) or "")[:1].upper()])


def _format_key(reader: _Reader, key_node_map: dict[str, yaml.Node], field_path: str) -> None:
    for name, node in key_node_map.items():
        if name != "default" and name not in FORMAT_NAMES:
            raise reader.fail(node, f"{field_path}.{name}", "is not an output format",
                              hint="formats: default, " + ", ".join(FORMAT_NAMES))


def load_expectations(path: Path) -> Expectations:
    """Read NAME.test.yml; a missing file means all defaults."""
    if not path.exists():
        return Expectations()
    reader = _Reader(path)
    try:
        root = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise SpecError(f"not valid YAML: {getattr(exc, 'problem', exc)}", where=where) from None
    if root is None:
        return Expectations(source=path)
    top = reader.mapping(root, "", ("formats", "memory", "cpus", "boot", "budgets", "ports", "services", "badness"))
    exp = Expectations(source=path)
    if "formats" in top:
        exp.formats = reader.strings(top["formats"], "formats")
        for i, fmt in enumerate(exp.formats):
            if fmt not in FORMAT_NAMES:
                raise reader.fail(top["formats"].value[i], f"formats[{i}]", f"unknown format {fmt!r}", hint="formats: " + ", ".join(FORMAT_NAMES))
    if "memory" in top:
        exp.memory = int(reader.number(top["memory"], "memory", integer=True))
    if "cpus" in top:
        exp.cpus = int(reader.number(top["cpus"], "cpus", integer=True))
    if "boot" in top:
        boot = reader.mapping(top["boot"], "boot", ("timeout", "markers"))
        if "timeout" in boot:
            exp.boot_timeout = float(reader.number(boot["timeout"], "boot.timeout"))
        if "markers" in boot:
            node = boot["markers"]
            exp.markers = [reader.regex(item, f"boot.markers[{i}]") for i, item in enumerate(reader.seq(node, "boot.markers"))]
    if "budgets" in top:
        budgets = reader.mapping(top["budgets"], "budgets", ("boot_time", "size"))
        if "boot_time" in budgets:
            per = reader.mapping(budgets["boot_time"], "budgets.boot_time", None)
            _format_key(reader, per, "budgets.boot_time")
            exp.boot_time = {k: float(reader.number(v, f"budgets.boot_time.{k}")) for k, v in per.items()}
        if "size" in budgets:
            per = reader.mapping(budgets["size"], "budgets.size", None)
            _format_key(reader, per, "budgets.size")
            exp.size = {k: {f: reader.size(n, f"budgets.size.{k}.{f}") for f, n in reader.mapping(v, f"budgets.size.{k}", None).items()}
                        for k, v in per.items()}
    if "ports" in top:
        for i, item in enumerate(reader.seq(top["ports"], "ports")):
            fields = reader.mapping(item, f"ports[{i}]", ("port", "http", "expect"))
            if "port" not in fields:
                raise reader.fail(item, f"ports[{i}]", "needs `port`")
            port = int(reader.number(fields["port"], f"ports[{i}].port", integer=True))
            if port > 65535:
                raise reader.fail(fields["port"], f"ports[{i}].port", f"{port} is not a TCP port (1-65535)")
            exp.ports.append(PortCheck(port=port,
                                       http=reader.string(fields["http"], f"ports[{i}].http") if "http" in fields else None,
                                       expect=reader.regex(fields["expect"], f"ports[{i}].expect") if "expect" in fields else None))
    if "services" in top:
        exp.services = reader.strings(top["services"], "services")
    if "badness" in top:
        bad = reader.mapping(top["badness"], "badness", ("ignore",))
        if "ignore" in bad:
            exp.badness_ignore = [reader.regex(n, f"badness.ignore[{i}]") for i, n in enumerate(reader.seq(bad["ignore"], "badness.ignore"))]
    return exp


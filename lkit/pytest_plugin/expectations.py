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

from lkit.build.outputs.base import FORMAT_NAMES
from lkit.spec.yamlmarks import YamlNode, describe, load_yaml

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMG]i?B?|B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
TOP_KEYS = ("formats", "memory", "cpus", "boot", "budgets", "ports", "services", "badness")


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
        if name != "default" and name not in FORMAT_NAMES:
            raise child.error("is not an output format", hint="formats: default, " + ", ".join(FORMAT_NAMES))
    return per


def load_expectations(path: Path) -> Expectations:
    """Read NAME.test.yml; a missing file means all defaults.

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
            fmt = item.as_str()
            if fmt not in FORMAT_NAMES:
                raise item.error(f"unknown format {fmt!r}", hint="formats: " + ", ".join(FORMAT_NAMES))
            exp.formats.append(fmt)
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
    return exp

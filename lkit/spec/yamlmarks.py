"""YAML with line marks: every mapping key and list item knows its file, line and field path.

Why not `yaml.safe_load`: its plain values forget where they came from, so errors could only say
"invalid spec". Here the document is composed into PyYAML nodes and converted into a `YamlNode` tree
whose errors read `seed.yml:23: services[1].capabilities[2]: ...`. The same API serves the spec
loader and the plugin's sidecar files (NAME.test.yml):

    doc = load_yaml("suite.test.yml")            # -> YamlNode (a mapping, or None-valued if empty)
    fields = doc.mapping(allowed=("boot", "checks"), required=("boot",))
    timeout = fields["boot"].mapping()["timeout"].as_int()
    raise fields["checks"].error("must not be empty")   # SpecError with file:line and field path

Hostile input is refused with a SpecError, never a traceback: files over 8 MiB, nesting deeper than
64, alias expansion beyond 10000 nodes (billion laughs), duplicate keys, non-scalar keys,
several documents, bad UTF-8 and YAML syntax errors.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import stat
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lkit.errors import LkitError, SpecError

MAX_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000

_MERGE_TAG = "tag:yaml.org,2002:merge"
_BOOL_TAG = "tag:yaml.org,2002:bool"
_YAML12_BOOL = re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$")


class _Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    """libyaml when present (same nodes and marks, several times faster), with YAML 1.2 booleans.

    LinuxKit reads specs with Go's yaml.v3 (YAML 1.2): only true/false are booleans, and `yes`, `no`,
    `on`, `off` stay strings, which its schema then refuses where it wants a boolean. PyYAML's YAML
    1.1 rules would quietly take `readonly: yes` as true, so they are narrowed here."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(_BOOL_TAG, _YAML12_BOOL, list("tTfF"))


@dataclass
class YamlNode:
    """One YAML value with its place: `value` is dict[str, YamlNode], list[YamlNode] or a plain scalar."""

    value: Any
    file: str
    line: int | None
    path: str = ""  # field path from the document root, e.g. "services[1].capabilities[2]"
    error_class: type[LkitError] = field(default=SpecError, repr=False, compare=False)

    # --- where -----------------------------------------------------------------------------
    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file

    def error(self, message: str, hint: str | None = None) -> LkitError:
        """An error (SpecError unless the tree was built for another class) naming this node."""
        text = f"{self.path}: {message}" if self.path else message
        return self.error_class(text, where=self.where, hint=hint)

    # --- shape -----------------------------------------------------------------------------
    @property
    def kind(self) -> str:
        if isinstance(self.value, dict):
            return "mapping"
        if isinstance(self.value, list):
            return "sequence"
        if self.value is None:
            return "null"
        return "scalar"

    def plain(self) -> Any:
        """The value with every YamlNode unwrapped (dicts, lists, scalars)."""
        if isinstance(self.value, dict):
            return {key: child.plain() for key, child in self.value.items()}
        if isinstance(self.value, list):
            return [child.plain() for child in self.value]
        return self.value

    def line_of(self, *keys: str | int) -> int | None:
        """Line of a descendant (mapping keys and list indexes), or this node's line if absent."""
        node: YamlNode = self
        for key in keys:
            if isinstance(node.value, dict) and isinstance(key, str) and key in node.value:
                node = node.value[key]
            elif isinstance(node.value, list) and isinstance(key, int) and 0 <= key < len(node.value):
                node = node.value[key]
            else:
                break
        return node.line

    # --- typed access ------------------------------------------------------------------------
    def mapping(self, allowed: Sequence[str] | None = None, required: Sequence[str] = ()) -> dict[str, YamlNode]:
        """This node as a mapping; unknown keys (listing the allowed ones) and missing keys are errors."""
        if not isinstance(self.value, dict):
            raise self.error(f"expected a mapping, got {describe(self.value)}")
        if allowed is not None:
            for key, child in self.value.items():
                if key not in allowed:
                    close = difflib.get_close_matches(key, list(allowed), n=1)
                    guess = f"did you mean {close[0]!r}? " if close else ""
                    raise child.error(f"unknown key {key!r}", hint=guess + "allowed keys: " + ", ".join(allowed))
        for key in required:
            if key not in self.value:
                raise self.error(f"missing required key {key!r}")
        return self.value

    def sequence(self) -> list[YamlNode]:
        if not isinstance(self.value, list):
            raise self.error(f"expected a list, got {describe(self.value)}")
        return self.value

    def as_str(self, hint: str | None = None) -> str:
        if not isinstance(self.value, str):
            raise self.error(f"expected a string, got {describe(self.value)}",
                             hint=hint or "quote the value if it is meant as text")
        return self.value

    def as_bool(self) -> bool:
        if not isinstance(self.value, bool):
            hint = None
            if isinstance(self.value, str) and self.value.lower() in ("yes", "no", "on", "off", "y", "n"):
                hint = (f"write true or false: {self.value!r} is a string in YAML 1.2, which LinuxKit reads "
                        "(YAML 1.1 took it as a boolean)")
            raise self.error(f"expected true or false, got {describe(self.value)}", hint=hint)
        return self.value

    def as_int(self) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            raise self.error(f"expected an integer, got {describe(self.value)}")
        return self.value

    def as_number(self) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, (int, float)):
            raise self.error(f"expected a number, got {describe(self.value)}")
        return float(self.value)

    def as_str_list(self) -> list[str]:
        return [item.as_str() for item in self.sequence()]

    def as_str_map(self) -> dict[str, str]:
        return {key: child.as_str() for key, child in self.mapping().items()}

    def items(self) -> Iterator[tuple[str, YamlNode]]:
        return iter(self.mapping().items())

    # --- construction ------------------------------------------------------------------------
    @classmethod
    def from_plain(cls, value: Any, file: str, path: str = "", line: int | None = None,
                   error_class: type[LkitError] = SpecError, depth: int = 0) -> YamlNode:
        """Wrap JSON-like data (e.g. an image label) so it is validated with the same code."""
        if depth > MAX_DEPTH:
            raise error_class(f"{path or 'value'}: nested deeper than {MAX_DEPTH} levels", where=file)
        inner: Any = value
        if isinstance(value, dict):
            inner = {str(k): cls.from_plain(v, file, _join(path, str(k)), line, error_class, depth + 1)
                     for k, v in value.items()}
        elif isinstance(value, list):
            inner = [cls.from_plain(v, file, f"{path}[{i}]", line, error_class, depth + 1)
                     for i, v in enumerate(value)]
        return cls(inner, file, line, path, error_class)


def describe(value: Any) -> str:
    """A short description of a value's type and text for error messages."""
    if value is None:
        return "nothing (null)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int):
        return f"integer {value}"
    if isinstance(value, float):
        return f"number {value}"
    if isinstance(value, str):
        return f"string {value!r}"
    return f"{type(value).__name__} {str(value)[:40]!r}"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


# ----------------------------------------------------------------------------------------------
def load_yaml(path: str | Path) -> YamlNode:
    """Read and parse one YAML file (at most 8 MiB) into a YamlNode tree."""
    name = str(path)
    try:
        # O_NONBLOCK: opening a FIFO nobody writes to must not hang; reads then block as usual.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with open(fd, "rb") as handle:
            os.set_blocking(fd, True)
            data = handle.read(MAX_BYTES + 1)
            if not data and stat.S_ISFIFO(os.fstat(fd).st_mode):
                raise SpecError(f"is a pipe with nothing written to it: {name}", where=name,
                                hint="give the spec file itself")
    except FileNotFoundError:
        raise SpecError(f"no such file: {name}", where=name) from None
    except IsADirectoryError:
        raise SpecError(f"is a directory, not a YAML file: {name}", where=name) from None
    except OSError as exc:
        raise SpecError(f"cannot read {name}: {exc.strerror}", where=name) from None
    return load_yaml_bytes(data, name)


def load_yaml_bytes(data: bytes, filename: str) -> YamlNode:
    if len(data) > MAX_BYTES:
        raise SpecError(f"file is larger than {MAX_BYTES // (1024 * 1024)} MiB", where=filename,
                        hint="a spec is a few kilobytes; is this the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(f"not valid UTF-8 (byte {exc.start})", where=f"{filename}:{line}") from None
    return load_yaml_text(text, filename)


def load_yaml_text(text: str, filename: str = "<text>") -> YamlNode:
    """Parse YAML text into a YamlNode tree (an empty document gives a YamlNode whose value is None)."""
    if len(text) > MAX_BYTES:
        raise SpecError(f"text is larger than {MAX_BYTES // (1024 * 1024)} MiB", where=filename)
    try:
        _check_depth(text, filename)
        root = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        raise _yaml_error(exc, filename) from None
    except yaml.YAMLError as exc:
        raise SpecError(f"invalid YAML: {exc}".replace("\n", " "), where=filename) from None
    except RecursionError:
        raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", where=filename) from None
    if root is None:
        return YamlNode(None, filename, 1)
    return _Converter(filename).convert(root, "")


def _yaml_error(exc: yaml.MarkedYAMLError, filename: str) -> SpecError:
    mark = exc.problem_mark or exc.context_mark
    if exc.context_mark is not None and "end of stream" in (exc.problem or ""):
        mark = exc.context_mark  # an unclosed quote or bracket: point at where it opened
    where = f"{filename}:{mark.line + 1}" if mark is not None else filename
    parts = [part for part in (exc.context, exc.problem) if part]
    message = "YAML syntax error: " + "; ".join(parts) if parts else "YAML syntax error"
    if mark is not None:
        message += f" (column {mark.column + 1})"
    return SpecError(" ".join(message.split()), where=where)


def _check_depth(text: str, filename: str) -> None:
    """Refuse deep nesting from the event stream (the event parser is not recursive, compose is)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                line = event.start_mark.line + 1 if event.start_mark else None
                where = f"{filename}:{line}" if line else filename
                raise SpecError(f"nesting deeper than {MAX_DEPTH} levels", where=where)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


class _Converter:
    """PyYAML node graph -> YamlNode tree, counting alias expansion and rejecting duplicate keys."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.constructor = yaml.SafeLoader("")
        self.seen: set[int] = set()
        self.expanded = 0

    def convert(self, node: yaml.Node, path: str, line: int | None = None, in_alias: bool = False,
                outer: int | None = None) -> YamlNode:
        """`outer` is the last line outside alias expansion: where an alias bomb is reported."""
        if id(node) in self.seen and isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            in_alias = True
        if in_alias:
            self.expanded += 1
            if self.expanded > MAX_ALIAS_NODES:
                at = outer if outer is not None else node.start_mark.line + 1
                raise SpecError(f"{path or 'document'}: aliases expand to more than {MAX_ALIAS_NODES} nodes",
                                where=f"{self.filename}:{at}",
                                hint="anchors and aliases may be used, but not to build huge documents")
        self.seen.add(id(node))
        line = node.start_mark.line + 1 if line is None else line
        if not in_alias:
            outer = line
        if isinstance(node, yaml.MappingNode):
            return YamlNode(self._mapping(node, path, in_alias, outer), self.filename, line, path)
        if isinstance(node, yaml.SequenceNode):
            items = [self.convert(item, f"{path}[{index}]", None, in_alias, outer)
                     for index, item in enumerate(node.value)]
            return YamlNode(items, self.filename, line, path)
        return YamlNode(self._scalar(node, path), self.filename, line, path)

    def _scalar(self, node: yaml.Node, path: str) -> Any:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            where = f"{self.filename}:{node.start_mark.line + 1}"
            problem = getattr(exc, "problem", None) or str(exc)
            raise SpecError(f"{path or 'value'}: cannot read value: {problem}", where=where) from None
        except (ValueError, OverflowError) as exc:
            where = f"{self.filename}:{node.start_mark.line + 1}"
            raise SpecError(f"{path or 'value'}: cannot read value: {exc}", where=where) from None

    def _mapping(self, node: yaml.MappingNode, path: str, in_alias: bool,
                 outer: int | None) -> dict[str, YamlNode]:
        result: dict[str, YamlNode] = {}
        first_line: dict[str, int] = {}
        merged: dict[str, YamlNode] = {}
        for key_node, value_node in node.value:
            key_line = key_node.start_mark.line + 1
            where = f"{self.filename}:{key_line}"
            if key_node.tag == _MERGE_TAG:
                for key, child in self._merge_sources(value_node, path, outer):
                    merged.setdefault(key, child)
                continue
            if not isinstance(key_node, yaml.ScalarNode):
                raise SpecError(f"{path or 'document'}: a mapping key must be a plain name, not a "
                                f"{'list' if isinstance(key_node, yaml.SequenceNode) else 'mapping'}",
                                where=where)
            key = str(key_node.value)
            if key in first_line:
                raise SpecError(f"{_join(path, key)}: duplicate key {key!r} (first at line {first_line[key]})",
                                where=where, hint="each key may appear once in a mapping")
            first_line[key] = key_line
            result[key] = self.convert(value_node, _join(path, key), key_line, in_alias,
                                       outer if in_alias else key_line)
        for key, child in merged.items():
            result.setdefault(key, child)
        return result

    def _merge_sources(self, value_node: yaml.Node, path: str, outer: int | None) -> list[tuple[str, YamlNode]]:
        """YAML merge keys (`<<: *base`), as LinuxKit's YAML decoder supports them."""
        sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
        pairs: list[tuple[str, YamlNode]] = []
        for source in sources:
            if not isinstance(source, yaml.MappingNode):
                raise SpecError(f"{path or 'document'}: '<<' must merge a mapping or a list of mappings",
                                where=f"{self.filename}:{source.start_mark.line + 1}")
            pairs.extend(self.convert(source, path, None, True, outer).value.items())
        return pairs


def load_json_node(text: str, file: str, error_class: type[LkitError] = SpecError) -> YamlNode:
    """Parse JSON text (an image label) into a YamlNode tree without line numbers."""
    if len(text) > MAX_BYTES:
        raise error_class(f"JSON text is larger than {MAX_BYTES // (1024 * 1024)} MiB", where=file)
    try:
        return YamlNode.from_plain(json.loads(text), file, error_class=error_class)
    except RecursionError:
        raise error_class("JSON nested too deeply to read", where=file) from None
    except ValueError as exc:
        raise error_class(f"invalid JSON: {exc}", where=file) from None

"""JSON exactly as Go's encoding/json writes it (json.MarshalIndent), so bundle files match LinuxKit's.

The differences from Python's json module that matter: `<`, `>`, `&`, U+2028 and U+2029 are escaped
as \\u003c-style sequences, other non-ASCII text is written as UTF-8, control characters other than
\\b \\f \\n \\r \\t are \\u00XX, and there is no trailing newline. Key order is the caller's: Go writes
struct fields in declaration order and map keys sorted, so callers build dicts in that order (and
sort the ones that are Go maps, see `sorted_map`).
"""

from __future__ import annotations

from typing import Any

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f",
            "<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _string(text: str) -> str:
    out = ['"']
    for ch in text:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch < " ":
            out.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":  # a lone surrogate is not UTF-8: Go writes U+FFFD
            out.append("\ufffd")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _encode(value: Any, indent: str, level: int) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if value != int(value) else str(int(value))
    if isinstance(value, str):
        return _string(value)
    inner = "\n" + indent * (level + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        items = [f"{_string(str(k))}: {_encode(v, indent, level + 1)}" for k, v in value.items()]
        return "{" + inner + ("," + inner).join(items) + "\n" + indent * level + "}"
    if isinstance(value, (list, tuple)):
        if not value:
            return "[]"
        items = [_encode(v, indent, level + 1) for v in value]
        return "[" + inner + ("," + inner).join(items) + "\n" + indent * level + "]"
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


def marshal_indent(value: Any, indent: str = "    ") -> bytes:
    """Go's json.MarshalIndent(value, "", indent)."""
    return _encode(value, indent, 0).encode("utf-8", "surrogatepass")


def sorted_map(mapping: dict[str, Any]) -> dict[str, Any]:
    """A Go map[string]T: encoding/json writes its keys sorted (by bytes)."""
    return {key: mapping[key] for key in sorted(mapping, key=lambda k: k.encode("utf-8", "surrogatepass"))}

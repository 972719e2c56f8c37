"""Tar bytes exactly as Go's archive/tar writes LinuxKit's build stream (every header in PAX format).

LinuxKit's `tar` output is the stream its builder writes with `tar.Writer`, every header marked
`Format: tar.FormatPAX` and carrying `LINUXKIT.source`/`LINUXKIT.location` records. Reproducing
Go's choices makes lkit's tar output LinuxKit's, byte for byte: a `PaxHeaders.0/` extended header
before each entry with records (sorted by key), numbers as zero-padded octal with a NUL, the checksum
field "%06o\\0 ", names cut to 100 bytes with the full name in a `path` record when it is longer or
not ASCII, no USTAR prefix field, and two zero blocks at the end (no padding to a record size).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import BinaryIO

from lkit.build.tree import Content

BLOCK = 512
TYPE_REG, TYPE_LINK, TYPE_SYMLINK, TYPE_DIR, TYPE_FIFO, TYPE_XHEADER = b"0", b"1", b"2", b"5", b"6", b"x"
# Records Go derives from the header's own fields; a copy in PAXRecords is kept only when equal.
_BASIC = ("path", "linkpath", "size", "uid", "gid", "uname", "gname", "mtime", "atime", "ctime")


@dataclass
class GoHeader:
    """One tar.Header as LinuxKit hands it to tar.Writer (Format: FormatPAX)."""

    name: str
    typeflag: bytes
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int | Decimal = 0
    linkname: str = ""
    uname: str = ""
    gname: str = ""
    devmajor: int = 0
    devminor: int = 0
    pax: dict[str, str] = field(default_factory=dict)  # PAXRecords (LINUXKIT.*, and the layer's own)
    content: Content | None = None
    format_pax: bool = True  # False: Format left unset (LinuxKit's merged apk database header)


def _fits_octal(width: int, value: int) -> bool:
    return 0 <= value < 8 ** (width - 1)


def _octal(width: int, value: int) -> bytes:
    if not _fits_octal(width, value):
        value = 0  # Go writes 0 and relies on the PAX record
    return format(value, "o").rjust(width - 1, "0").encode() + b"\0"


def _ascii(text: str) -> bytes:
    return bytes(c for c in text.encode("utf-8", "surrogateescape") if 0 < c < 0x80)


def _string(width: int, text: str) -> bytes:
    data = _ascii(text)
    if len(data) > width:
        cut = bytearray(data[:width])
        if cut[-1] == ord("/"):  # Go: no trailing slash in a cut name field
            n = len(data[: width - 1].rstrip(b"/"))
            cut[n] = 0
        return bytes(cut)
    return data.ljust(width, b"\0")


def pax_time(value: int | Decimal) -> str:
    """Go's formatPAXTime: seconds, then up to nine decimals with trailing zeros dropped."""
    value = Decimal(value)
    secs = int(value.to_integral_value(rounding="ROUND_FLOOR"))
    nanos = int((value - secs) * 1_000_000_000)
    if nanos == 0:
        return str(secs)
    if secs < 0:  # Go writes negative times as -(secs+1).(1e9-nanos)
        return f"-{-(secs + 1)}.{1_000_000_000 - nanos:09d}".rstrip("0")
    return f"{secs}.{nanos:09d}".rstrip("0")


def pax_record(key: str, value: str) -> str:
    body = f" {key}={value}\n"
    size = len(body.encode()) + len(str(len(body.encode())))
    record = f"{size}{body}"
    if len(record.encode()) != size:
        size = len(record.encode())
        record = f"{size}{body}"
    return record


def _records(h: GoHeader) -> dict[str, str]:
    """Go's Header.allowedFormats for FormatPAX: the records the fields need, then PAXRecords."""
    out: dict[str, str] = {}

    def text(value: str, width: int, key: str) -> None:
        raw = value.encode("utf-8", "surrogateescape")
        if len(raw) > width or any(c >= 0x80 for c in raw):
            out[key] = value
        elif h.pax.get(key) == value:
            out[key] = value

    def number(value: int, width: int, key: str) -> None:
        if not _fits_octal(width, value):
            out[key] = str(value)
        elif h.pax.get(key) == str(value):
            out[key] = str(value)

    text(h.name, 100, "path")
    text(h.linkname, 100, "linkpath")
    text(h.uname, 32, "uname")
    text(h.gname, 32, "gname")
    number(h.uid, 8, "uid")
    number(h.gid, 8, "gid")
    number(h.size, 12, "size")
    mtime = Decimal(h.mtime)
    if h.format_pax and (mtime != int(mtime) or not _fits_octal(12, int(mtime))):
        out["mtime"] = pax_time(mtime)
    elif h.pax.get("mtime") == pax_time(mtime):
        out["mtime"] = pax_time(mtime)
    for key in ("atime", "ctime"):  # kept from the layer when the format is PAX (LinuxKit always says so)
        if h.format_pax and key in h.pax:
            out[key] = pax_time(Decimal(h.pax[key]))
    for key, value in h.pax.items():
        if key not in _BASIC and key not in out:
            out[key] = value
    return dict(sorted(out.items()))


def _checksum(block: bytearray) -> None:
    block[148:156] = b" " * 8
    total = sum(block)
    block[148:156] = format(total, "o").rjust(6, "0").encode() + b"\0 "


def _block(name: bytes, mode: bytes, uid: bytes, gid: bytes, size: bytes, mtime: bytes, typeflag: bytes,
           linkname: bytes = b"", uname: bytes = b"", gname: bytes = b"", dev: bytes = b"") -> bytes:
    block = bytearray(BLOCK)
    block[0:100] = name
    block[100:108], block[108:116], block[116:124] = mode, uid, gid
    block[124:136], block[136:148] = size, mtime
    block[156:157] = typeflag
    if linkname:
        block[157:257] = linkname
    block[257:265] = b"ustar\x0000"
    if uname:
        block[265:297] = uname
    if gname:
        block[297:329] = gname
    if dev:
        block[329:345] = dev
    _checksum(block)
    return bytes(block)


def _pad(size: int) -> bytes:
    return b"\0" * (-size % BLOCK)


def header_bytes(h: GoHeader) -> bytes:
    """The extended header (if any) and the header block of one entry."""
    out = b""
    records = _records(h)
    if records:
        data = "".join(pax_record(k, v) for k, v in records.items()).encode("utf-8", "surrogateescape")
        directory, file = posixpath.split(h.name)
        xname = posixpath.join(directory, "PaxHeaders.0", file)
        xname_bytes = _ascii(xname)[:100].rstrip(b"/")
        out += _block(xname_bytes.ljust(100, b"\0"), _octal(8, 0), _octal(8, 0), _octal(8, 0), _octal(12, len(data)),
                      _octal(12, 0), TYPE_XHEADER)
        out += data + _pad(len(data))
    mtime = int(Decimal(h.mtime).to_integral_value(rounding="ROUND_FLOOR"))
    out += _block(_string(100, h.name), _octal(8, h.mode), _octal(8, h.uid), _octal(8, h.gid), _octal(12, h.size),
                  _octal(12, mtime), h.typeflag, _string(100, h.linkname), _string(32, h.uname),
                  _string(32, h.gname), _octal(8, h.devmajor) + _octal(8, h.devminor))
    return out


def write(headers: Iterable[GoHeader], dest: BinaryIO) -> None:
    for h in headers:
        dest.write(header_bytes(h))
        if h.size:
            assert h.content is not None
            for chunk in h.content.chunks():
                dest.write(chunk)
            dest.write(_pad(h.size))
    dest.write(b"\0" * (2 * BLOCK))

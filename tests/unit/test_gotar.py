"""lkit.build.gotar writes headers as Go's archive/tar does for LinuxKit (PAX format throughout)."""

from __future__ import annotations

import io
import tarfile
from decimal import Decimal

from lkit.build import gotar
from lkit.build.gotar import GoHeader
from lkit.build.tree import Content

LK = {"LINUXKIT.source": "docker.io/lkit/x:1", "LINUXKIT.location": "init[0]"}


def written(*headers: GoHeader) -> bytes:
    out = io.BytesIO()
    gotar.write(headers, out)
    return out.getvalue()


def test_extended_header_before_each_entry_with_sorted_records():
    data = written(GoHeader(name="etc/hosts", typeflag=gotar.TYPE_REG, mode=0o644, mtime=1492533000,
                            content=Content(data=b"x\n"), size=2, pax=dict(LK)))
    assert data[:512].startswith(b"etc/PaxHeaders.0/hosts\0") and data[156:157] == b"x"
    records = data[512:1024].rstrip(b"\0")
    assert records == b"29 LINUXKIT.location=init[0]\n38 LINUXKIT.source=docker.io/lkit/x:1\n"
    head = data[1024:1536]
    assert head[100:108] == b"0000644\0" and head[136:148] == b"13075437410\0" and head[257:265] == b"ustar\x0000"
    assert head[148:156].endswith(b"\0 ") and len(data) == 1536 + 512 + 1024  # data block, two zero blocks


def test_no_records_no_extended_header():
    data = written(GoHeader(name="sbom.spdx.json", typeflag=gotar.TYPE_REG, mode=0o644, size=3,
                            content=Content(data=b"{}\n")))
    assert data[:14] == b"sbom.spdx.json" and data[156:157] == b"0"


def test_directory_name_with_a_final_slash_names_its_extended_header_like_go():
    data = written(GoHeader(name="lib/", typeflag=gotar.TYPE_DIR, mode=0o755, pax=dict(LK)))
    assert data[:100].rstrip(b"\0") == b"lib/PaxHeaders.0"


def test_long_and_non_ascii_names_big_ids_and_fractions_go_to_records_and_read_back():
    long_name = "a/" * 60 + "file"
    headers = [
        GoHeader(name=long_name, typeflag=gotar.TYPE_REG, mode=0o600, uid=3_000_000, size=1,
                 content=Content(data=b"z"), pax=dict(LK)),
        GoHeader(name="srv/données.txt", typeflag=gotar.TYPE_SYMLINK, linkname="../é", mtime=Decimal("1600000000.5"),
                 pax=dict(LK)),
    ]
    with tarfile.open(fileobj=io.BytesIO(written(*headers))) as tf:
        first, second = tf.getmembers()
    assert first.name == long_name and first.uid == 3_000_000 and first.pax_headers["path"] == long_name
    assert second.name == "srv/données.txt" and second.linkname == "../é" and second.mtime == 1600000000.5
    assert second.pax_headers["LINUXKIT.source"] == "docker.io/lkit/x:1"


def test_layer_records_are_kept_but_basic_ones_only_when_still_true():
    pax = {**LK, "SCHILY.xattr.user.k": "v", "path": "old/name", "uid": "5"}
    data = written(GoHeader(name="new/name", typeflag=gotar.TYPE_DIR, uid=5, pax=pax))
    records = data[512:1024].rstrip(b"\0").decode()
    assert "SCHILY.xattr.user.k=v" in records and "uid=5" in records and "path=" not in records


def test_pax_time_and_record_length_as_go():
    assert gotar.pax_time(Decimal("1600000000.500000000")) == "1600000000.5"
    assert gotar.pax_time(1492533000) == "1492533000"
    record = gotar.pax_record("path", "x" * 95)
    assert record.startswith("105 ") and len(record) == 105

"""iter_layer yields what the builder needs and refuses every hostile entry kind by name."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from lkit.errors import ImageError
from lkit.images.layers import LayerEntry, iter_layer


def make_tar(path: Path, entries: list[tuple[str, str, dict]], fmt=tarfile.PAX_FORMAT) -> Path:
    """entries: (name, type, extra) where type is file/dir/sym/link/chr/blk/fifo."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
             "chr": tarfile.CHRTYPE, "blk": tarfile.BLKTYPE, "fifo": tarfile.FIFOTYPE}
    with tarfile.open(path, "w", format=fmt) as tf:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            info.type = types[kind]
            data = extra.get("data", b"")
            info.size = len(data) if kind == "file" else 0
            info.linkname = extra.get("link", "")
            info.mode = extra.get("mode", 0o644)
            info.uid, info.gid = extra.get("uid", 0), extra.get("gid", 0)
            if "pax" in extra:
                info.pax_headers = extra["pax"]
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def entries(path: Path) -> list[LayerEntry]:
    return list(iter_layer(path, "docker.io/lkit/test:1"))


def test_normal_layer(tmp_path: Path):
    tar = make_tar(tmp_path / "l.tar", [
        ("./", "dir", {}),
        ("./usr/", "dir", {"mode": 0o755}),
        ("./usr/bin/env", "file", {"data": b"ELF", "mode": 0o4755, "uid": 1, "gid": 2}),
        ("usr/bin/sh", "sym", {"link": "/bin/dash"}),
        ("usr/bin/env2", "link", {"link": "./usr/bin/env"}),
        ("/etc//passwd", "file", {"data": b"root:x:0:0"}),
        ("etc/.wh.shadow", "file", {}),
        ("var/lib/.wh..wh..opq", "file", {}),
        ("dev/console", "chr", {}),
    ])
    got = entries(tar)
    raw = tar.read_bytes()
    assert [(e.path, e.kind) for e in got] == [
        ("usr", "dir"), ("usr/bin/env", "file"), ("usr/bin/sh", "symlink"), ("usr/bin/env2", "hardlink"),
        ("etc/passwd", "file"), ("etc/shadow", "whiteout"), ("var/lib", "opaque")]
    env = got[1]
    assert (env.mode, env.uid, env.gid, env.size) == (0o4755, 1, 2, 3)
    assert raw[env.offset:env.offset + env.size] == b"ELF"
    passwd = got[4]
    assert raw[passwd.offset:passwd.offset + passwd.size] == b"root:x:0:0"
    assert got[2].linkname == "/bin/dash"  # absolute symlink targets kept as is
    assert got[3].linkname == "usr/bin/env"


def test_long_names_offsets(tmp_path: Path):
    long = "a/" * 80 + "file"
    tar = make_tar(tmp_path / "l.tar", [(long, "file", {"data": b"x" * 1000})], fmt=tarfile.GNU_FORMAT)
    (e,) = entries(tar)
    assert e.path == long and tar.read_bytes()[e.offset:e.offset + 1000] == b"x" * 1000


@pytest.mark.parametrize("entry, words", [
    (("../etc/passwd", "file", {}), "'..'"),
    (("usr/../../x", "file", {}), "'..'"),
    (("usr/bin/x", "link", {"link": "/etc/shadow"}), "absolute"),
    (("usr/bin/x", "link", {"link": "../outside"}), "'..'"),
    (("dev/sda", "blk", {}), "block device"),
    (("dev/mem", "chr", {}), "character device"),
    (("evil", "file", {"pax": {"path": "etc/pass\x00wd"}}), "NUL"),
    (("bad", "file", {"pax": {"path": "line\nbreak"}}), "line break"),
    (("x", "sym", {"pax": {"linkpath": "a\x00b"}}), "invalid target"),
    (("etc/.wh.", "file", {}), "malformed whiteout"),
    ((".wh..wh..opq", "file", {}), "opaque whiteout of the image root"),
])
def test_hostile_entries_refused(tmp_path: Path, entry, words):
    tar = make_tar(tmp_path / "l.tar", [("etc/ok", "file", {"data": b"1"}), entry])
    with pytest.raises(ImageError) as exc:
        entries(tar)
    msg = exc.value.message
    assert "docker.io/lkit/test:1" in msg and words in msg


def test_fifo_is_taken_as_linuxkit_takes_it(tmp_path: Path):
    tar = make_tar(tmp_path / "l.tar", [("run", "dir", {}), ("run/pipe", "fifo", {})])
    assert [(e.path, e.kind) for e in entries(tar)] == [("run", "dir"), ("run/pipe", "fifo")]


def test_hardlink_to_directory_refused(tmp_path: Path):
    tar = make_tar(tmp_path / "l.tar", [("etc", "dir", {}), ("x", "link", {"link": "etc"})])
    with pytest.raises(ImageError, match="not a regular file"):
        entries(tar)


def test_hardlink_into_a_lower_layer_is_left_to_the_assembler(tmp_path: Path):
    """LinuxKit keeps a hard link to a file of a lower layer; whether it exists is checked on assembly."""
    tar = make_tar(tmp_path / "l.tar", [("usr/bin/x", "link", {"link": "etc/never-seen"})])
    assert [(e.path, e.kind, e.linkname) for e in entries(tar)] == [("usr/bin/x", "hardlink", "etc/never-seen")]


def test_non_utf8_name_refused(tmp_path: Path):
    path = tmp_path / "l.tar"
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT, encoding="latin-1") as tf:
        info = tarfile.TarInfo("caf\xe9")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(ImageError, match="UTF-8"):
        entries(path)


def test_truncated_tar(tmp_path: Path):
    tar = make_tar(tmp_path / "l.tar", [("big", "file", {"data": b"z" * 50_000})])
    data = tar.read_bytes()
    tar.write_bytes(data[:20_000])
    with pytest.raises(ImageError, match="not a valid tar"):
        entries(tar)


def test_not_a_tar(tmp_path: Path):
    p = tmp_path / "junk"
    p.write_bytes(b"\x01" * 2048)
    with pytest.raises(ImageError, match="not a valid tar"):
        entries(p)


from hypothesis import given, settings, strategies as st  # noqa: E402

_PARTS = st.sampled_from(["a", "b", ".", "..", "", ".wh.a", "c.d", "\u00e9"])


@settings(max_examples=150, deadline=None)
@given(names=st.lists(st.lists(_PARTS, min_size=1, max_size=5).map("/".join), min_size=1, max_size=6),
       leading=st.booleans())
def test_any_yielded_path_stays_inside_the_root(tmp_path_factory, names, leading):
    tar = tmp_path_factory.mktemp("h") / "l.tar"
    make_tar(tar, [(("/" if leading else "") + n or "x", "file", {"data": b"1"}) for n in names])
    try:
        got = entries(tar)
    except ImageError as exc:
        assert "docker.io/lkit/test:1" in exc.message
        return
    for e in got:
        parts = e.path.split("/")
        assert e.path and not e.path.startswith("/") and ".." not in parts and "." not in parts and "" not in parts

"""The cpio and tar writers: readable by the standard tools, byte-identical every time."""

import io
import subprocess
import tarfile
import zlib

from lkit.build.archive import write_cpio, write_initrd, write_tar
from lkit.build.tree import Tree


def sample_tree() -> Tree:
    tree = Tree()
    tree.add_dir("etc", 0o755)
    tree.add_file("etc/hostname", b"lkit\n", 0o644)
    tree.add_file("bin/tool", b"\x7fELF" + bytes(range(256)) * 100, 0o4755, 0, 0)
    tree.add_symlink("bin/sh", "busybox")
    tree.add_file("big", b"x" * 300_000, 0o600, 100, 101)
    return tree


def test_initrd_is_deterministic_and_chunked_archives_unpack(tmp_path):
    a, b = io.BytesIO(), io.BytesIO()
    write_initrd(sample_tree(), a, chunk_bytes=1000)
    write_initrd(sample_tree(), b, chunk_bytes=1000)
    assert a.getvalue() == b.getvalue()
    # Several gzip members, each a complete cpio archive (the kernel insists on that).
    members, data = [], a.getvalue()
    while data:
        d = zlib.decompressobj(31)
        members.append(d.decompress(data))
        data = d.unused_data
    assert len(members) > 1
    names = []
    for member in members:
        assert member.rstrip(b"\0").endswith(b"TRAILER!!!\0") or b"TRAILER!!!" in member[-140:]
        names += subprocess.run(["cpio", "-it", "--quiet"], input=member, capture_output=True, check=True).stdout.split()
    assert names == [b"big", b"bin", b"bin/sh", b"bin/tool", b"etc", b"etc/hostname"]


def test_cpio_contents_round_trip(tmp_path):
    buf = io.BytesIO()
    write_cpio(sample_tree(), buf)
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=buf.getvalue(), cwd=out, check=True)
    assert (out / "etc/hostname").read_bytes() == b"lkit\n"
    assert (out / "bin/sh").is_symlink() and (out / "bin/sh").readlink().as_posix() == "busybox"
    assert (out / "bin/tool").stat().st_mode & 0o7777 == 0o4755
    assert (out / "big").stat().st_size == 300_000


def test_tar_has_fixed_times_and_owners(tmp_path):
    buf = io.BytesIO()
    write_tar(sample_tree(), buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["big"].uid == 100 and members["big"].gid == 101
    assert {m.mtime for m in members.values()} == {1492533000}
    assert members["bin/sh"].issym() and members["bin/sh"].linkname == "busybox"

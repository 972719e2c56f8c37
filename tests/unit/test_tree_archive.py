"""The cpio and tar writers: readable by the standard tools, byte-identical every time."""

import io
import subprocess
import tarfile
import zlib

from lkit.build.tree_archive import write_cpio, write_initrd, write_tar
from lkit.build.tree import Tree


def sample_tree() -> Tree:
    tree = Tree()
    tree.add_dir("etc", 0o755)
    tree.add_file("etc/hostname", b"lkit\n", 0o644)
    tree.add_file("bin/tool", b"\x7fELF" + bytes(range(256)) * 100, 0o4755, 0, 0)
    tree.add_symlink("bin/sh", "busybox")
    tree.add_file("big", b"x" * 300_000, 0o600, 100, 101)
    return tree


def test_initrd_is_deterministic_one_gzip_member_one_archive(tmp_path):
    a, b = io.BytesIO(), io.BytesIO()
    write_initrd(sample_tree(), a, piece_bytes=1000)  # several deflate pieces, compressed in parallel
    write_initrd(sample_tree(), b, piece_bytes=1000)
    assert a.getvalue() == b.getvalue()
    # One gzip member (so `gzip -l` and `file` see all of it) holding one cpio archive.
    d = zlib.decompressobj(31)
    member = d.decompress(a.getvalue())
    assert d.eof and d.unused_data == b""
    assert member.count(b"TRAILER!!!") == 1
    path = tmp_path / "initrd.img"
    path.write_bytes(a.getvalue())
    listed = subprocess.run(["gzip", "-l", str(path)], capture_output=True, text=True, check=True).stdout.split()
    assert int(listed[5]) == len(member)  # the trailer's size is the whole archive's
    names = subprocess.run(["cpio", "-it", "--quiet"], input=member, capture_output=True, check=True).stdout.split()
    assert names == [b"big", b"bin", b"bin/sh", b"bin/tool", b"etc", b"etc/hostname"]


def test_crc32_combine_matches_zlib():
    from lkit.build.tree_archive import crc32_combine

    for left, right in ((b"", b"x"), (b"abc", b""), (b"a" * 1000, b"b" * 77), (bytes(range(256)) * 9, b"\0" * 4097)):
        assert crc32_combine(zlib.crc32(left), zlib.crc32(right), len(right)) == zlib.crc32(left + right)


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


def test_hard_links_fifos_and_mtimes_as_linuxkit_writes_them(tmp_path):
    """A hard link stays one in the tar (after its target) and is a relative symlink in the cpio, as
    LinuxKit's initrd writer makes it; fifos are kept; each entry keeps its own mtime."""
    from lkit.build.tree import FsNode, NodeKind

    tree = Tree()
    tree.add_file("a/z-target", b"data", 0o755, mtime=1600000000)
    tree.add_node("a/b/link", FsNode(NodeKind.HARDLINK, 0o755, target="a/z-target", mtime=1600000001))
    tree.add_node("run/pipe", FsNode(NodeKind.FIFO, 0o600, mtime=1600000002))
    buf = io.BytesIO()
    write_tar(tree, buf)
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tf:
        members = {m.name: m for m in tf.getmembers()}
        order = [m.name for m in tf.getmembers()]
    assert members["a/b/link"].islnk() and members["a/b/link"].linkname == "a/z-target"
    assert order.index("a/b/link") > order.index("a/z-target")
    assert members["run/pipe"].isfifo() and members["a/z-target"].mtime == 1600000000
    out = io.BytesIO()
    write_cpio(tree, out)
    root = tmp_path / "x"
    root.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet", "--no-absolute-filenames"], input=out.getvalue(), cwd=root, check=True)
    assert (root / "a/b/link").readlink().as_posix() == "../z-target"
    assert (root / "a/b/link").read_bytes() == b"data"
    assert (root / "a/z-target").stat().st_mtime == 1600000000
    import stat as st

    assert st.S_ISFIFO((root / "run/pipe").lstat().st_mode)

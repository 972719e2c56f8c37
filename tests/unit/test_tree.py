"""The build tree never lets a path or a link reach outside the root it is given."""

import pytest

from lkit.build.tree import Content, Tree
from lkit.errors import BuildError


def paths(tree: Tree) -> list[str]:
    return [p for p, _ in tree.walk()]


def test_dotdot_in_a_path_is_refused():
    tree = Tree()
    with pytest.raises(BuildError, match=r"'\.\.'"):
        tree.add_file("etc/../../x", b"")


def test_absolute_symlink_in_a_parent_resolves_inside_the_chroot():
    tree = Tree()
    base = tree.subtree("containers/services/x/lower")
    tree.add_symlink("etc", "/", base=base)               # etc -> / (the container's own root)
    tree.add_file("etc/passwd", b"root", base=base)
    assert "containers/services/x/lower/passwd" in paths(tree)
    assert "passwd" not in paths(tree)                     # the build's real root is untouched


def test_relative_symlink_climbing_out_stops_at_the_chroot():
    tree = Tree()
    base = tree.subtree("c/lower")
    tree.add_symlink("evil", "../../../../../../etc", base=base)
    tree.add_file("evil/shadow", b"x", base=base)
    assert "c/lower/etc/shadow" in paths(tree)
    assert not any(p == "etc/shadow" for p in paths(tree))


def test_symlink_loop_is_an_error():
    tree = Tree()
    tree.add_symlink("a", "b")
    tree.add_symlink("b", "a")
    with pytest.raises(BuildError, match="symbolic links"):
        tree.add_file("a/x", b"")


def test_later_entries_replace_earlier_ones_and_dirs_keep_children():
    tree = Tree()
    tree.add_file("d/f", b"1")
    tree.add_dir("d", 0o700)
    tree.add_file("d/f", b"22", 0o600)
    node = tree.lookup("d/f")
    assert node is not None and node.content.data == b"22" and node.mode == 0o600
    assert tree.lookup("d").mode == 0o700


def test_file_where_a_directory_is_needed_is_replaced():
    tree = Tree()
    tree.add_file("a", b"file")
    tree.add_file("a/b", b"inner")
    assert tree.lookup("a").kind == "dir"


def test_walk_is_sorted_parents_first():
    tree = Tree()
    for p in ["b/z", "a", "b/a", "B"]:
        tree.add_file(p, b"")
    assert paths(tree) == ["B", "a", "b", "b/a", "b/z"]


def test_content_range(tmp_path):
    f = tmp_path / "layer"
    f.write_bytes(b"0123456789")
    c = Content(source=f, offset=3, size=4)
    assert b"".join(c.chunks()) == b"3456" and c.length == 4
    short = Content(source=f, offset=8, size=10)
    with pytest.raises(BuildError, match="early"):
        b"".join(short.chunks())

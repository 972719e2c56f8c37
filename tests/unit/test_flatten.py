"""Images are flattened as LinuxKit's go-containerregistry does it (mutate.Extract)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

from lkit.build.rootfs import flatten
from lkit.images.oci import add_image
from lkit.images.store import Store


def layer(path: Path, entries: list[tuple[str, str]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, kind in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1600000000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            else:
                data = name.encode()
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    return path


def test_top_layer_first_whiteouts_hide_opaque_markers_do_not(tmp_path: Path):
    store = Store(tmp_path / "store")
    lower = layer(tmp_path / "1.tar", [("etc", "dir"), ("etc/a", "file"), ("etc/gone", "file"), ("opq", "dir"),
                                       ("opq/kept", "file"), ("d", "dir"), ("d/child", "file")])
    upper = layer(tmp_path / "2.tar", [("etc", "dir"), ("etc/a", "file"), ("etc/.wh.gone", "file"),
                                       ("opq/.wh..wh..opq", "file"), ("d", "file")])
    image = add_image(store, "t/flat:1", [lower, upper], config={})
    flat = [(e.path, e.kind, t.name) for e, t in flatten(store, image)]
    # upper entries first; etc/a from the upper layer only; etc/gone whited out; d is a file in the
    # upper layer, so the lower d/child is hidden; the opaque marker hides nothing (go-containerregistry).
    assert flat == [("etc", "dir", upper_blob(store, image, 1)), ("etc/a", "file", upper_blob(store, image, 1)),
                    ("d", "file", upper_blob(store, image, 1)), ("opq", "dir", upper_blob(store, image, 0)),
                    ("opq/kept", "file", upper_blob(store, image, 0))]


def upper_blob(store: Store, image, index: int) -> str:
    return store.uncompressed_layer(image.layers[index], image.diff_ids[index]).name


def test_entries_under_a_non_directory_are_dropped_even_in_the_same_layer(tmp_path: Path):
    """mutate.Extract marks a symlink (any non-directory) as hiding its path: `evil/x` after `evil ->
    /somewhere` never reaches LinuxKit's output, so nothing is ever written through an image's symlink."""
    store = Store(tmp_path / "store")
    path = tmp_path / "1.tar"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        link = tarfile.TarInfo("evil")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc"
        tf.addfile(link)
        inner = tarfile.TarInfo("evil/passwd")
        inner.size = 1
        tf.addfile(inner, io.BytesIO(b"x"))
    image = add_image(store, "t/evil:1", [path], config={})
    assert [(e.path, e.kind) for e, _ in flatten(store, image)] == [("evil", "symlink")]

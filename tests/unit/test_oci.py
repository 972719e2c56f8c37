"""add_image is byte-reproducible: same layers and config give the same digests in any store."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

from lkit.images.oci import CREATED, add_image
from lkit.images.store import OCI_LAYER_GZIP, OCI_MANIFEST, Store


def layer_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1492533000
            tf.addfile(info, io.BytesIO(data))
    return path


CONFIG = {"Entrypoint": ["/bin/echo"], "Cmd": ["hi"], "Env": ["PATH=/bin"], "WorkingDir": "/",
          "Labels": {"org.mobyproject.config": "{}"}}


def test_same_inputs_same_digests(tmp_path: Path):
    a = layer_tar(tmp_path / "a.tar", {"a": b"1" * 100_000, "b/c": b"2"})
    b = layer_tar(tmp_path / "b.tar", {"d": b"3"})
    one = add_image(Store(tmp_path / "s1"), "lkit/x:1", [a, b], config=CONFIG)
    two = add_image(Store(tmp_path / "s2"), "lkit/x:1", [a, b], config=dict(reversed(CONFIG.items())))
    again = add_image(Store(tmp_path / "s1"), "lkit/x:1", [a, b], config=CONFIG)
    assert one.digest == two.digest == again.digest
    assert [d.digest for d in one.layers] == [d.digest for d in two.layers]
    assert len(Store(tmp_path / "s1").list_images()) == 1


def test_different_content_different_digest(tmp_path: Path):
    store = Store(tmp_path / "s")
    a = add_image(store, "x:1", [layer_tar(tmp_path / "a.tar", {"a": b"1"})], config=CONFIG)
    b = add_image(store, "x:2", [layer_tar(tmp_path / "b.tar", {"a": b"2"})], config=CONFIG)
    c = add_image(store, "x:3", [tmp_path / "a.tar"], config={**CONFIG, "Cmd": ["bye"]})
    assert len({a.digest, b.digest, c.digest}) == 3


def test_layers_are_deterministic_gzip(tmp_path: Path):
    store = Store(tmp_path / "s")
    tar = layer_tar(tmp_path / "a.tar", {"f": b"data"})
    img = add_image(store, "x", [tar], config={})
    blob = store.blob_path(img.layers[0].digest).read_bytes()
    assert blob[:4] == b"\x1f\x8b\x08\x00"  # gzip, no FNAME flag
    assert blob[4:8] == b"\0\0\0\0"  # mtime 0
    assert gzip.decompress(blob) == tar.read_bytes()
    assert img.layers[0].media_type == OCI_LAYER_GZIP


def test_config_and_manifest_content(tmp_path: Path):
    store = Store(tmp_path / "s")
    tar = layer_tar(tmp_path / "a.tar", {"f": b"data"})
    img = add_image(store, "lkit/y:2", [tar], config={**CONFIG, "User": None})
    cfg = json.loads(store.read_blob(img.manifest["config"]["digest"]))
    assert cfg["created"] == CREATED == "2017-04-18T16:30:00Z"
    assert (cfg["architecture"], cfg["os"]) == ("amd64", "linux")
    assert cfg["config"] == CONFIG  # None values dropped
    assert cfg["rootfs"]["diff_ids"] == img.diff_ids and len(img.diff_ids) == 1
    assert img.manifest["mediaType"] == OCI_MANIFEST and img.manifest["schemaVersion"] == 2
    assert store.resolve("docker.io/lkit/y:2").config == cfg


def test_no_layers_image(tmp_path: Path):
    store = Store(tmp_path / "s")
    img = add_image(store, "empty", [], config={"Cmd": ["true"]})
    assert store.resolve("empty").layers == [] and img.diff_ids == []

"""Import/export of image archives: round trips, docker save, multi-arch, and refusal of bad archives."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from lkit.cli import main
from lkit.errors import ImageError
from lkit.images.cache_archive import export_archive, import_archive
from lkit.images.oci import add_image, canonical_json
from lkit.images.store import CONTAINERD_NAME, OCI_CONFIG, OCI_INDEX, OCI_MANIFEST, REF_NAME, Store


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1492533000
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def write_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def built(tmp_path: Path) -> tuple[Store, str]:
    store = Store(tmp_path / "src")
    tar = tmp_path / "l.tar"
    tar.write_bytes(layer_bytes({"bin/hello": b"hello world", "etc/motd": b"hi"}))
    img = add_image(store, "lkit/hello:1", [tar], config={"Cmd": ["/bin/hello"]})
    return store, img.digest


def test_export_import_round_trip(built, tmp_path: Path):
    store, digest = built
    out = export_archive(store, ["lkit/hello:1"], tmp_path / "x.tar")
    dest = Store(tmp_path / "dest")
    got = import_archive(dest, out)
    assert [(i.ref, i.descriptor.digest) for i in got] == [("docker.io/lkit/hello:1", digest)]
    img = dest.resolve("lkit/hello:1")
    assert img.digest == digest
    raw = dest.uncompressed_layer(img.layers[0], img.diff_ids[0]).read_bytes()
    assert b"hello world" in raw
    # importing twice is idempotent
    import_archive(dest, out)
    assert len(dest.list_images()) == 1


def test_export_is_linuxkit_format_and_deterministic(built, tmp_path: Path):
    store, digest = built
    a = export_archive(store, ["lkit/hello:1"], tmp_path / "a.tar")
    b = export_archive(store, ["docker.io/lkit/hello:1"], tmp_path / "b.tar")
    assert a.read_bytes() == b.read_bytes()
    with tarfile.open(a) as tf:
        names = tf.getnames()
        assert names[:2] == ["oci-layout", "index.json"]
        blob_names = [n for n in names if n.startswith("blobs/sha256/")]
        assert all(len(n.split("/")) == 3 for n in blob_names)  # what linuxkit's ImageLoad splits on
        assert all(m.mtime == 1492533000 and m.uid == 0 for m in tf.getmembers())
        index = json.load(tf.extractfile("index.json"))
    (entry,) = index["manifests"]
    assert entry["annotations"][CONTAINERD_NAME] == "docker.io/lkit/hello:1"
    assert entry["annotations"][REF_NAME] == "docker.io/lkit/hello:1"
    assert entry["digest"] == digest
    assert not list(tmp_path.glob(".*.tmp"))


def test_import_oci_layout_directory(built, tmp_path: Path):
    store, digest = built
    dest = Store(tmp_path / "dest")
    got = import_archive(dest, store.root)  # a plain OCI layout dir (lkit's own store)
    assert got[0].ref == "docker.io/lkit/hello:1" and dest.resolve("lkit/hello:1").digest == digest


def _oci_members(manifest_desc: dict, blobs: dict[str, bytes]) -> dict[str, bytes]:
    members = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
               "index.json": canonical_json({"schemaVersion": 2, "manifests": [manifest_desc]})}
    members.update({f"blobs/sha256/{d.split(':')[1]}": b for d, b in blobs.items()})
    return members


def _image_blobs(arch: str, content: bytes) -> tuple[dict, dict[str, bytes]]:
    layer = gzip.compress(layer_bytes({"arch": content}), mtime=0)
    cfg = canonical_json({"architecture": arch, "os": "linux", "config": {},
                          "rootfs": {"type": "layers", "diff_ids": [sha(gzip.decompress(layer))]}})
    man = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "digest": sha(cfg), "size": len(cfg)},
                          "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                      "digest": sha(layer), "size": len(layer)}]})
    desc = {"mediaType": OCI_MANIFEST, "digest": sha(man), "size": len(man),
            "platform": {"os": "linux", "architecture": arch}}
    return desc, {sha(layer): layer, sha(cfg): cfg, sha(man): man}


def test_import_multi_arch_index_resolves_amd64(tmp_path: Path):
    amd, amd_blobs = _image_blobs("amd64", b"A")
    arm, arm_blobs = _image_blobs("arm64", b"R")
    s390, _ = _image_blobs("s390x", b"S")  # named in the index, absent from the archive (like linuxkit's cache)
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [arm, s390, amd]})
    desc = {"mediaType": OCI_INDEX, "digest": sha(index), "size": len(index),
            "annotations": {CONTAINERD_NAME: "docker.io/library/multi:1", REF_NAME: "1"}}
    tar = write_tar(tmp_path / "m.tar", _oci_members(desc, {**amd_blobs, **arm_blobs, sha(index): index}))
    store = Store(tmp_path / "s")
    import_archive(store, tar)
    assert store.resolve("multi:1").digest == amd["digest"]
    assert store.resolve("multi:1", "linux/arm64").digest == arm["digest"]
    # export of a partial index falls back to the amd64 manifest; it re-imports cleanly
    out = export_archive(store, ["multi:1"], tmp_path / "out.tar")
    again = Store(tmp_path / "again")
    (item,) = import_archive(again, out)
    assert item.descriptor.digest == amd["digest"] and again.resolve("multi:1").digest == amd["digest"]


def test_import_missing_blob_names_nothing(tmp_path: Path):
    desc, blobs = _image_blobs("amd64", b"A")
    desc["annotations"] = {CONTAINERD_NAME: "docker.io/library/broken:1"}
    man = json.loads(blobs[desc["digest"]])
    del blobs[man["layers"][0]["digest"]]
    tar = write_tar(tmp_path / "b.tar", _oci_members(desc, blobs))
    store = Store(tmp_path / "s")
    with pytest.raises(ImageError, match="does not contain"):
        import_archive(store, tar)
    assert store.list_images() == []


def test_import_corrupt_blob_refused(tmp_path: Path):
    desc, blobs = _image_blobs("amd64", b"A")
    desc["annotations"] = {CONTAINERD_NAME: "docker.io/library/corrupt:1"}
    man = json.loads(blobs[desc["digest"]])
    blobs[man["layers"][0]["digest"]] = b"not the layer"
    tar = write_tar(tmp_path / "c.tar", _oci_members(desc, blobs))
    store = Store(tmp_path / "s")
    with pytest.raises(ImageError, match="corrupt"):
        import_archive(store, tar)
    assert store.list_images() == [] and not store.has_blob(man["layers"][0]["digest"])


def test_import_unnamed_needs_name(tmp_path: Path):
    desc, blobs = _image_blobs("amd64", b"A")
    desc["annotations"] = {REF_NAME: "latest"}  # OCI allows a bare tag: not a usable name
    tar = write_tar(tmp_path / "u.tar", _oci_members(desc, blobs))
    store = Store(tmp_path / "s")
    with pytest.raises(ImageError) as exc:
        import_archive(store, tar)
    assert "--name" in exc.value.hint
    (item,) = import_archive(store, tar, name="localhost:5000/named:2")
    assert item.ref == "localhost:5000/named:2" and store.resolve("localhost:5000/named:2")


def _docker_save(tmp_path: Path, gzip_layers: bool) -> tuple[Path, list[bytes]]:
    layers = [layer_bytes({"a": b"1"}), layer_bytes({"b": b"2" * 5000})]
    cfg = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/a"],
                      "Labels": {"x": "y"}},
                      "rootfs": {"type": "layers", "diff_ids": [sha(x) for x in layers]}}).encode()
    members = {f"{sha(cfg)[7:]}.json": cfg, "repositories": b"{}"}
    names = []
    for i, data in enumerate(layers):
        name = f"layer{i}/layer.tar"
        members[name] = gzip.compress(data) if gzip_layers else data
        names.append(name)
    members["manifest.json"] = json.dumps([{"Config": f"{sha(cfg)[7:]}.json",
                                            "RepoTags": ["saved:1", "localhost:5000/saved:1"],
                                            "Layers": names}]).encode()
    return write_tar(tmp_path / "save.tar", members), layers


@pytest.mark.parametrize("gzip_layers", [False, True])
def test_import_docker_save(tmp_path: Path, gzip_layers: bool):
    tar, layers = _docker_save(tmp_path, gzip_layers)
    store = Store(tmp_path / "s")
    got = import_archive(store, tar)
    assert sorted(i.ref for i in got) == ["docker.io/library/saved:1", "localhost:5000/saved:1"]
    img = store.resolve("saved:1")
    assert img.labels == {"x": "y"} and img.config["config"]["Cmd"] == ["/a"]
    for layer, diff_id, raw in zip(img.layers, img.diff_ids, layers):
        assert store.uncompressed_layer(layer, diff_id).read_bytes() == raw
        assert store.read_blob(layer.digest)[:2] == b"\x1f\x8b"


def test_import_docker_save_wrong_diff_id(tmp_path: Path):
    tar, _ = _docker_save(tmp_path, False)
    with tarfile.open(tar) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers()}
    members["layer1/layer.tar"] = layer_bytes({"b": b"tampered"})
    bad = write_tar(tmp_path / "bad.tar", members)
    store = Store(tmp_path / "s")
    with pytest.raises(ImageError, match="config says"):
        import_archive(store, bad)
    assert store.list_images() == []


def test_import_garbage(tmp_path: Path):
    p = tmp_path / "junk.tar"
    p.write_bytes(b"junk" * 100)
    with pytest.raises(ImageError, match="not a readable tar"):
        import_archive(Store(tmp_path / "s"), p)
    other = write_tar(tmp_path / "other.tar", {"hello.txt": b"hi"})
    with pytest.raises(ImageError, match="neither an OCI image layout"):
        import_archive(Store(tmp_path / "s"), other)


def test_cli_cache_commands(built, tmp_path: Path, capsys):
    store, digest = built
    out = tmp_path / "cli.tar"
    assert main(["cache", "--store", str(store.root), "export", "lkit/hello:1", "-o", str(out)]) == 0
    dest = tmp_path / "cli-store"
    assert main(["cache", "--store", str(dest), "import", str(out)]) == 0
    capsys.readouterr()
    assert main(["cache", "--store", str(dest), "ls"]) == 0
    listing = capsys.readouterr().out
    assert f"docker.io/lkit/hello:1\t{digest}\timage\tlinux/amd64" in listing
    assert main(["cache", "--store", str(dest), "rm", "lkit/hello:1"]) == 0
    assert main(["cache", "--store", str(dest), "rm", "lkit/hello:1"]) == 2
    assert "not in the store" in capsys.readouterr().err
    assert main(["cache", "--store", str(dest), "export", "nope", "-o", str(tmp_path / "n.tar")]) == 2
    assert not (tmp_path / "n.tar").exists()


def test_import_linuxkit_cache_export_quirk(tmp_path: Path):
    """`linuxkit cache export` labels a plain manifest with the index media type and names it by ref.name."""
    desc, blobs = _image_blobs("amd64", b"L")
    desc["mediaType"] = OCI_INDEX
    desc["annotations"] = {REF_NAME: "docker.io/linuxkit/init:v1.2.0"}
    tar = write_tar(tmp_path / "lk.tar", _oci_members(desc, blobs))
    store = Store(tmp_path / "s")
    (item,) = import_archive(store, tar)
    assert item.ref == "docker.io/linuxkit/init:v1.2.0" and item.descriptor.media_type == OCI_MANIFEST
    assert store.resolve("linuxkit/init:v1.2.0").digest == desc["digest"]


def test_cli_import_from_stdin(built, tmp_path: Path):
    import subprocess
    import sys
    store, digest = built
    out = export_archive(store, ["lkit/hello:1"], tmp_path / "x.tar")
    dest = tmp_path / "stdin-store"
    root = Path(__file__).resolve().parents[2]
    with open(out, "rb") as f:
        proc = subprocess.run([sys.executable, "-m", "lkit.cli", "cache", "--store", str(dest), "import", "-"],
                              stdin=f, capture_output=True, cwd=root, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"imported docker.io/lkit/hello:1 {digest}" in proc.stdout.decode()
    assert list((dest / "lkit-tmp").iterdir()) == []


def _unpack(tar: Path, dest: Path) -> Path:
    with tarfile.open(tar) as tf:
        tf.extractall(dest, filter="data")
    return dest


def test_import_directory_ignores_symlinks_out_of_it(tmp_path: Path):
    """A blob that is a symlink to a host file is not a member: nothing outside is read into the store."""
    desc, blobs = _image_blobs("amd64", b"A")
    desc["annotations"] = {CONTAINERD_NAME: "docker.io/library/escape:1"}
    src = _unpack(write_tar(tmp_path / "e.tar", _oci_members(desc, blobs)), tmp_path / "layout")
    man = json.loads(blobs[desc["digest"]])
    layer = src / "blobs" / "sha256" / man["layers"][0]["digest"].split(":")[1]
    secret = tmp_path / "host-secret"
    secret.write_bytes(layer.read_bytes())  # even the right bytes must not be taken through the link
    layer.unlink()
    layer.symlink_to(secret)
    store = Store(tmp_path / "s")
    with pytest.raises(ImageError, match="does not contain"):
        import_archive(store, src)
    assert store.list_images() == [] and not store.has_blob(man["layers"][0]["digest"])


def test_import_directory_follows_symlinks_inside_it(tmp_path: Path):
    """Old `docker save` layouts share a layer through a relative symlink within the archive."""
    tar, layers = _docker_save(tmp_path, False)
    src = _unpack(tar, tmp_path / "saved")
    (src / "shared").mkdir()
    os.replace(src / "layer1" / "layer.tar", src / "shared" / "layer.tar")
    (src / "layer1" / "layer.tar").symlink_to("../shared/layer.tar")
    store = Store(tmp_path / "s")
    import_archive(store, src)
    img = store.resolve("saved:1")
    assert store.uncompressed_layer(img.layers[1], img.diff_ids[1]).read_bytes() == layers[1]


@pytest.mark.parametrize("target, ok", [("../layer0/layer.tar", True), ("/etc/passwd", False),
                                        ("../../../etc/passwd", False)])
def test_import_tar_symlink_members(tmp_path: Path, target: str, ok: bool):
    """A symlink member counts when it names another member, never a path outside the archive."""
    tar, layers = _docker_save(tmp_path, False)
    with tarfile.open(tar) as tf:
        members = {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isreg()}
    manifest = json.loads(members["manifest.json"])
    manifest[0]["Layers"].append("layer2/layer.tar")
    cfg_name = manifest[0]["Config"]
    cfg = json.loads(members[cfg_name])
    cfg["rootfs"]["diff_ids"].append(sha(layers[0]))
    members[cfg_name] = json.dumps(cfg).encode()
    members["manifest.json"] = json.dumps(manifest).encode()
    linked = tmp_path / "linked.tar"
    with tarfile.open(linked, "w") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("layer2/layer.tar")
        info.type, info.linkname = tarfile.SYMTYPE, target
        tf.addfile(info)
    store = Store(tmp_path / "s")
    if ok:
        import_archive(store, linked)
        assert len(store.resolve("saved:1").layers) == 3
    else:
        with pytest.raises(ImageError, match="does not contain"):
            import_archive(store, linked)

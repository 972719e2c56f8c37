"""The store verifies every byte it hands out and keeps index.json LinuxKit-compatible."""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import multiprocessing
import os
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from lkit.errors import ImageError
from lkit.images.oci import add_image, canonical_json
from lkit.images.store import (OCI_CONFIG, OCI_INDEX, OCI_LAYER_TAR, OCI_LAYER_ZSTD, OCI_MANIFEST, REF_NAME,
                               Descriptor, Store)


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def layer_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1492533000
            tf.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def test_new_store_is_an_oci_layout(store: Store):
    assert json.loads((store.root / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((store.root / "index.json").read_text())
    assert index["schemaVersion"] == 2 and index["manifests"] == []
    assert (store.root / "blobs" / "sha256").is_dir()


def test_default_store_location(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("LKIT_STORE", str(tmp_path / "explicit"))
    assert Store.default().root == tmp_path / "explicit"
    monkeypatch.delenv("LKIT_STORE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert Store.default().root == tmp_path / "xdg" / "lkit" / "store"


def test_put_blob_forms_and_read(store: Store, tmp_path: Path):
    data = b"x" * 3_000_000
    d1, n1 = store.put_blob(data)
    assert (d1, n1) == (sha(data), len(data))
    src = tmp_path / "f"
    src.write_bytes(b"from a file")
    assert store.put_blob(src) == (sha(b"from a file"), 11)
    assert store.put_blob(io.BytesIO(b"stream"), sha(b"stream")) == (sha(b"stream"), 6)
    assert store.read_blob(d1) == data
    assert store.has_blob(d1) and not store.has_blob(sha(b"nope"))


def test_put_blob_refuses_mismatch_and_leaves_nothing(store: Store):
    wrong = sha(b"other")
    with pytest.raises(ImageError, match="does not match its digest"):
        store.put_blob(b"content", wrong)
    assert not store.has_blob(wrong) and not store.has_blob(sha(b"content"))
    assert list(store.tmp_dir.iterdir()) == []
    assert list(store.blobs_dir.iterdir()) == []


def test_put_blob_failing_stream_leaves_nothing(store: Store):
    class Broken(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, b):
            raise OSError("connection reset")

    with pytest.raises(OSError):
        store.put_blob(Broken())
    assert list(store.tmp_dir.iterdir()) == [] and list(store.blobs_dir.iterdir()) == []


def test_put_blob_bad_digest_syntax(store: Store):
    with pytest.raises(ImageError, match="not a sha256 digest"):
        store.put_blob(b"x", "md5:abc")


def test_read_detects_corrupt_blob(store: Store):
    digest, _ = store.put_blob(b'{"a": 1}')
    os.chmod(store.blob_path(digest), 0o644)
    store.blob_path(digest).write_bytes(b'{"a": 2}')
    with pytest.raises(ImageError, match="corrupt"):
        store.read_blob(digest)
    with pytest.raises(ImageError, match="corrupt"):
        with store.open_blob(digest) as f:
            while f.read(2):
                pass


def test_read_detects_truncated_blob(store: Store):
    data = os.urandom(200_000)
    digest, _ = store.put_blob(data)
    with open(store.blob_path(digest), "r+b") as f:
        f.truncate(100_000)
    with pytest.raises(ImageError, match="corrupt"):
        store.read_blob(digest)


def test_missing_blob(store: Store):
    with pytest.raises(ImageError, match="missing"):
        store.read_blob(sha(b"absent"))


def _manual_image(store: Store, layer: bytes, arch: str = "amd64", media=OCI_LAYER_TAR, diff_id=None):
    ld, ls = store.put_blob(layer)
    cfg = canonical_json({"architecture": arch, "os": "linux", "config": {"Labels": {"arch": arch}},
                          "rootfs": {"type": "layers", "diff_ids": [diff_id or ld]}})
    cd, cs = store.put_blob(cfg)
    man = canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                          "config": {"mediaType": OCI_CONFIG, "digest": cd, "size": cs},
                          "layers": [{"mediaType": media, "digest": ld, "size": ls}]})
    md, ms = store.put_blob(man)
    return Descriptor(OCI_MANIFEST, md, ms, platform={"os": "linux", "architecture": arch})


def test_tag_resolve_replace_remove(store: Store):
    first = _manual_image(store, b"one")
    store.tag("example", first)
    img = store.resolve("example")
    assert img.ref == "docker.io/library/example:latest" and img.digest == first.digest
    assert img.labels == {"arch": "amd64"} and img.diff_ids == [sha(b"one")]
    second = _manual_image(store, b"two")
    store.tag("docker.io/library/example:latest", second)
    names = store.list_images()
    assert [(n, d.digest) for n, d in names] == [("docker.io/library/example:latest", second.digest)]
    index = json.loads((store.root / "index.json").read_text())
    assert index["manifests"][0]["annotations"][REF_NAME] == "docker.io/library/example:latest"
    store.remove("example:latest")
    assert store.list_images() == []
    with pytest.raises(ImageError, match="not in the store"):
        store.remove("example")


def test_resolve_by_digest_without_a_name(store: Store):
    desc = _manual_image(store, b"pinned")
    img = store.resolve(f"localhost:5000/x@{desc.digest}")
    assert img.digest == desc.digest


def test_resolve_missing_has_build_hint(store: Store):
    with pytest.raises(ImageError) as exc:
        store.resolve("lkit/kernel:6.1")
    assert "docker.io/lkit/kernel:6.1" in exc.value.message
    assert exc.value.hint == "build it: lkit pkg build fixtures/pkgs/kernel"
    with pytest.raises(ImageError) as exc:
        store.resolve("quay.io/x/y:1")
    assert "lkit cache import FILE" in exc.value.hint


def test_manifest_naming_missing_layer(store: Store):
    desc = _manual_image(store, b"layer bytes")
    store.tag("broken", desc)
    store.blob_path(sha(b"layer bytes")).unlink()
    with pytest.raises(ImageError, match=r"layer sha256:\w+ named by manifest .* is missing"):
        store.resolve("broken")


def test_manifest_naming_missing_config(store: Store):
    desc = _manual_image(store, b"l2")
    store.tag("noconfig", desc)
    man = json.loads(store.read_blob(desc.digest))
    store.blob_path(man["config"]["digest"]).unlink()
    with pytest.raises(ImageError, match="missing"):
        store.resolve("noconfig")


def test_multi_arch_index_resolves_platform(store: Store):
    amd = _manual_image(store, b"amd", "amd64")
    arm = _manual_image(store, b"arm", "arm64")
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX,
                            "manifests": [arm.to_json(), amd.to_json(),
                                          {"mediaType": OCI_MANIFEST, "digest": sha(b"att"), "size": 3,
                                           "platform": {"os": "unknown", "architecture": "unknown"}}]})
    idx, size = store.put_blob(index)
    store.tag("multi:1", Descriptor(OCI_INDEX, idx, size))
    assert store.resolve("multi:1").digest == amd.digest
    assert store.resolve("multi:1", "linux/arm64").labels == {"arch": "arm64"}
    with pytest.raises(ImageError) as exc:
        store.resolve("multi:1", "linux/riscv64")
    assert "no linux/riscv64 variant; it offers: linux/amd64, linux/arm64" in exc.value.message


def test_index_json_corrupt_is_reported(store: Store):
    (store.root / "index.json").write_text("{not json")
    with pytest.raises(ImageError, match="index.json is not valid JSON"):
        store.list_images()


def _hold_lock(root: str, ready, release) -> None:
    with Store(Path(root)).lock():
        ready.set()
        release.wait(10)


def test_lock_excludes_other_processes(store: Store):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_lock, args=(str(store.root), ready, release))
    child.start()
    try:
        assert ready.wait(10)
        # What LinuxKit's F_SETLK on <cache>/.lock would see: held.
        with open(store.root / ".lock", "a+b") as f:
            with pytest.raises(OSError):
                fcntl.lockf(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        start = time.monotonic()
        timer = ctx.Process(target=_release_later, args=(release,))
        timer.start()
        with store.lock():
            waited = time.monotonic() - start
        timer.join(10)
        assert waited >= 0.3
    finally:
        release.set()
        child.join(10)
        assert child.exitcode == 0


def _release_later(release) -> None:
    time.sleep(0.5)
    release.set()


def test_uncompressed_layer_gzip_plain_zstd(store: Store, tmp_path: Path):
    raw = layer_tar(tmp_path / "l.tar", {"etc/x": b"hello"}).read_bytes()
    gz = gzip.compress(raw, mtime=0)
    zst = subprocess.run(["zstd", "-q", "-c"], input=raw, capture_output=True, check=True).stdout
    for blob, media in ((gz, "application/vnd.oci.image.layer.v1.tar+gzip"), (raw, OCI_LAYER_TAR),
                        (zst, OCI_LAYER_ZSTD)):
        d, s = store.put_blob(blob)
        path = store.uncompressed_layer(Descriptor(media, d, s), sha(raw))
        assert path.read_bytes() == raw
        assert store.blob_path(d).parent != path.parent  # outside blobs/
    mtime = path.stat().st_mtime_ns
    assert store.uncompressed_layer(Descriptor(OCI_LAYER_TAR, sha(raw), len(raw)), sha(raw)).stat().st_mtime_ns == mtime


def test_uncompressed_layer_diff_id_mismatch(store: Store):
    gz = gzip.compress(b"payload", mtime=0)
    d, s = store.put_blob(gz)
    with pytest.raises(ImageError, match="not the diff_id"):
        store.uncompressed_layer(Descriptor("application/vnd.oci.image.layer.v1.tar+gzip", d, s), sha(b"other"))
    assert list(store.uncompressed_dir.iterdir()) == [] and list(store.tmp_dir.iterdir()) == []


def test_uncompress_layers_in_parallel_leaves_a_bad_layer_to_the_serial_path(store: Store, tmp_path: Path):
    """The parallel warm-up makes every good layer and swallows nothing a build would report."""
    images = []
    for n in range(3):
        tar = layer_tar(tmp_path / f"l{n}.tar", {f"etc/f{n}": bytes([n]) * (1000 * (n + 1))})
        images.append(add_image(store, f"lkit/l{n}:1", [tar], config={}))
    store.tag("lkit/bad:1", _manual_image(store, gzip.compress(b"x", mtime=0), diff_id=sha(b"not x")))
    bad = store.resolve("lkit/bad:1")
    store.uncompress_layers([*images, bad], workers=2)
    made = {p.name for p in store.uncompressed_dir.iterdir()}
    assert made == {img.diff_ids[0].split(":")[1] for img in images}
    assert list(store.tmp_dir.iterdir()) == []
    with pytest.raises(ImageError, match="not the diff_id"):
        store.uncompressed_layer(bad.layers[0], bad.diff_ids[0])


def test_add_image_resolves_and_reads_back(store: Store, tmp_path: Path):
    tar = layer_tar(tmp_path / "a.tar", {"bin/sh": b"#!", "etc/os-release": b"ID=debian\n"})
    img = add_image(store, "lkit/base:1", [tar], config={"Cmd": ["/bin/sh"], "Labels": {"k": "v"}})
    got = store.resolve("lkit/base:1")
    assert got.digest == img.digest and got.labels == {"k": "v"}
    assert store.uncompressed_layer(got.layers[0], got.diff_ids[0]).read_bytes() == tar.read_bytes()


def _tag_many_times(root: str, worker: int) -> None:
    store = Store(Path(root))
    for i in range(15):
        d, s = store.put_blob(canonical_json({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": {},
                                              "layers": [], "w": worker, "i": i}))
        store.tag(f"w{worker}:{i}", Descriptor(OCI_MANIFEST, d, s))


def test_concurrent_taggers_lose_no_names(store: Store):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tag_many_times, args=(str(store.root), w)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    names = {n for n, _ in store.list_images()}
    assert names == {f"docker.io/library/w{w}:{i}" for w in range(4) for i in range(15)}


def _hold_index_json_lock(root: str, ready, release) -> None:
    """What `linuxkit cache` does before editing the index: F_WRLCK on index.json."""
    with open(Path(root) / "index.json", "r+b") as f:
        fcntl.lockf(f.fileno(), fcntl.LOCK_EX)
        ready.set()
        release.wait(10)


def test_tag_waits_for_linuxkit_index_lock(store: Store):
    ctx = multiprocessing.get_context("fork")
    ready, release = ctx.Event(), ctx.Event()
    child = ctx.Process(target=_hold_index_json_lock, args=(str(store.root), ready, release))
    child.start()
    try:
        assert ready.wait(10)
        timer = ctx.Process(target=_release_later, args=(release,))
        start = time.monotonic()
        timer.start()
        store.tag("waited", _manual_image(store, b"w"))
        assert time.monotonic() - start >= 0.3
        timer.join(10)
    finally:
        release.set()
        child.join(10)
    assert [n for n, _ in store.list_images()] == ["docker.io/library/waited:latest"]


def test_store_on_a_file_is_a_clear_error(tmp_path: Path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(ImageError, match="cannot use .* as the image store") as exc:
        Store(tmp_path / "file")
    assert "LKIT_STORE" in exc.value.hint

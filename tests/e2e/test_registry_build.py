"""Issue 7 end to end: share lkit's base images through a real registry and LinuxKit's cache, build from them.

Real parts only: Debian's docker-registry on 127.0.0.1 (random port, with and without htpasswd auth),
`lkit pkg build --push`, `lkit build` and `lkit cache export` as subprocesses, fresh empty stores.
The base images come from the default store (`lkit pkg build fixtures/pkgs/*` fills it; an image
missing there is built from Debian packages by the push step itself).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkit.images import refs
from lkit.images.store import REF_NAME, Store

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "suites" / "linuxkit.yml"
PKGS = ROOT / "fixtures" / "pkgs"
REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER, PASSWORD = "lkit-team", "pw-for-the-test"
FORMATS = ("kernel+initrd", "iso-bios")
SHORT_REF = re.compile(r'(?<![\w./:-])lkit/([a-z0-9][a-z0-9._-]*):([\w][\w.-]*)')


def spec_images(text: str) -> list[str]:
    """The lkit/<name>:<tag> images a spec names, in order of first use."""
    seen: dict[str, None] = {}
    for m in SHORT_REF.finditer(text):
        seen.setdefault(f"lkit/{m.group(1)}:{m.group(2)}", None)
    return list(seen)


def rewrite_spec(text: str, registry: str) -> str:
    """The same spec with every lkit/ image name moved to `registry` (what a team's spec would say)."""
    return SHORT_REF.sub(lambda m: f"{registry}/{m.group(0)}", text)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def run_registry(tmp: Path, htpasswd: bool) -> Iterator[str]:
    """docker-registry on a random loopback port (htpasswd basic auth if asked); yields host:port; always killed."""
    tmp.mkdir(parents=True, exist_ok=True)
    config: dict = {"version": 0.1, "log": {"level": "error"},
                    "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}}}
    if htpasswd:
        out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True, timeout=30)
        (tmp / "htpasswd").write_bytes(out.stdout)
        config["auth"] = {"htpasswd": {"realm": "lkit-team", "path": str(tmp / "htpasswd")}}
    for _ in range(5):
        port = free_port()
        config["http"] = {"addr": f"127.0.0.1:{port}"}
        (tmp / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        with open(tmp / "registry.log", "ab") as log:
            proc = subprocess.Popen([REGISTRY, "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 20
            while proc.poll() is None and time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
                time.sleep(0.05)
            else:
                continue  # exited (port taken between probe and bind) or never listened: next port
            yield f"127.0.0.1:{port}"
            return
        finally:
            proc.kill()
            proc.wait(timeout=10)
    raise RuntimeError(f"could not start docker-registry (see {tmp / 'registry.log'})")


def docker_config(directory: Path, registry: str | None, password: str = PASSWORD) -> Path:
    """A DOCKER_CONFIG directory whose config.json holds basic credentials for `registry` (or none)."""
    directory.mkdir(parents=True, exist_ok=True)
    auths = {}
    if registry:
        auths[registry] = {"auth": base64.b64encode(f"{USER}:{password}".encode()).decode()}
    (directory / "config.json").write_text(json.dumps({"auths": auths}))
    return directory


def lkit(args: list[str], env: dict[str, str], timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lkit.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


def base_env(tmp: Path, docker_cfg: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LKIT_STORE", "LKIT_BUILD_CACHE", "DOCKER_CONFIG")}
    env["DOCKER_CONFIG"] = str(docker_cfg)
    env["LKIT_BUILD_CACHE"] = str(tmp / "build-cache")
    return env


def build(spec: Path, store: Path, outdir: Path, env: dict[str, str], *extra: str) -> dict[str, str]:
    """`lkit build` of FORMATS into a fresh outdir with its own build cache; sha256 of every output."""
    env = {**env, "LKIT_BUILD_CACHE": str(outdir.parent / f"{outdir.name}.cache")}
    cmd = ["build", "--store", str(store), "--dir", str(outdir), *extra]
    for fmt in FORMATS:
        cmd += ["-f", fmt]
    done = lkit([*cmd, str(spec)], env)
    assert done.returncode == 0, done.stdout + done.stderr
    outputs = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(outdir.iterdir()) if p.is_file()}
    assert {"linuxkit-kernel", "linuxkit-initrd.img", "linuxkit-cmdline", "linuxkit.iso"} <= set(outputs)
    return outputs


def assert_store_sound(store: Store) -> None:
    """Every visible blob hashes to its name and nothing half-written is left in the store's temp dir."""
    for blob in store.blobs_dir.iterdir():
        h = hashlib.sha256()
        with open(blob, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        assert h.hexdigest() == blob.name, f"{blob} does not match its digest"
    assert list(store.tmp_dir.iterdir()) == []


def local_copy(default: Store, dest: Path, images: list[str], registry: str) -> Store:
    """A store holding the default store's images under the registry's names, filled without any network."""
    store = Store(dest)
    entries = []
    for ref in images:
        desc = default.lookup(ref)
        assert desc is not None, f"{ref} is not in the default store: run lkit pkg build fixtures/pkgs/*"
        data = json.loads(default.read_blob(desc.digest))
        children = [c["digest"] for c in data.get("manifests", [])]
        manifests = [json.loads(default.read_blob(d)) for d in children] if children else [data]
        digests = {desc.digest, *children}
        for m in manifests:
            digests |= {m["config"]["digest"], *(layer["digest"] for layer in m["layers"])}
        for digest in sorted(digests):
            store.put_blob(default.blob_path(digest), digest)
        entries.append((f"{registry}/{ref}", desc))
    store.tag_many(entries)
    return store


@dataclass
class Shared:
    """A registry holding the spec's base images, pushed with `lkit pkg build --push`."""

    addr: str
    images: list[str]
    spec: Path           # suites/linuxkit.yml rewritten to addr/lkit/...
    env: dict[str, str]  # DOCKER_CONFIG with working credentials (empty config without auth)
    digests: dict[str, str]


def share(tmp: Path, addr: str, with_auth: bool) -> Shared:
    text = SPEC.read_text()
    images = spec_images(text)
    assert len(images) == 10  # kernel, 4 init, 3 onboot, 2 services
    cfg = docker_config(tmp / "docker", addr if with_auth else None)
    env = base_env(tmp, cfg)
    dirs = [str(PKGS / refs.Reference.parse(ref).path.split("/", 1)[1]) for ref in images]
    done = lkit(["pkg", "build", "--push", addr, "--plain-http", *dirs], env, timeout=3600)
    assert done.returncode == 0, done.stdout + done.stderr
    pushed = dict(line.split()[1:3] for line in done.stdout.splitlines() if line.startswith("pushed "))
    assert sorted(pushed) == sorted(f"{addr}/{ref}" for ref in images)
    spec = tmp / "linuxkit.yml"
    spec.write_text(rewrite_spec(text, addr))
    return Shared(addr, images, spec, env, pushed)


@pytest.fixture(scope="module")
def plain_shared(tmp_path_factory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("plain")
    with run_registry(tmp / "registry", htpasswd=False) as addr:
        yield share(tmp, addr, with_auth=False)


@pytest.fixture(scope="module")
def auth_shared(tmp_path_factory) -> Iterator[Shared]:
    tmp = tmp_path_factory.mktemp("auth")
    with run_registry(tmp / "registry", htpasswd=True) as addr:
        yield share(tmp, addr, with_auth=True)


def test_rewrite_names_every_image_once():
    text = SPEC.read_text()
    out = rewrite_spec(text, "127.0.0.1:5000")
    assert spec_images(out) == []  # nothing left pointing at docker.io/lkit
    assert out.count("127.0.0.1:5000/lkit/") == 10 and "127.0.0.1:5000/lkit/kernel:6.1" in out
    assert out.count("\n") == text.count("\n")  # same line numbers: errors point at the same lines


@pytest.mark.parametrize("mode", ["plain", "htpasswd"])
def test_build_from_registry_matches_local_build(mode: str, request, tmp_path: Path):
    shared: Shared = request.getfixturevalue("plain_shared" if mode == "plain" else "auth_shared")
    pulled_store = tmp_path / "empty-store"
    from_registry = build(shared.spec, pulled_store, tmp_path / "pulled", shared.env, "--plain-http")
    store = Store(pulled_store)
    assert sorted(name for name, _ in store.list_images()) == sorted(f"{shared.addr}/{r}" for r in shared.images)
    for name, desc in store.list_images():
        assert desc.digest == shared.digests[name]  # exactly what was pushed
    assert_store_sound(store)
    local = local_copy(Store.default(), tmp_path / "local-store", shared.images, shared.addr)
    from_local = build(shared.spec, local.root, tmp_path / "local", shared.env, "--offline")
    assert from_registry == from_local


def test_auth_registry_refuses_missing_and_wrong_credentials(auth_shared: Shared, tmp_path: Path):
    for label, cfg in (("none", docker_config(tmp_path / "none", None)),
                       ("wrong", docker_config(tmp_path / "wrong", auth_shared.addr, "not-the-password"))):
        env = {**auth_shared.env, "DOCKER_CONFIG": str(cfg)}
        store = tmp_path / f"store-{label}"
        done = lkit(["build", "--store", str(store), "--dir", str(tmp_path / label), "--plain-http",
                     str(auth_shared.spec)], env)
        assert done.returncode != 0
        assert "Traceback" not in done.stderr
        assert "HTTP 401" in done.stderr and f"{auth_shared.spec}:5: kernel.image" in done.stderr, done.stderr
        assert Store(store).list_images() == []
        assert_store_sound(Store(store))


def test_offline_names_missing_image_and_line(plain_shared: Shared, tmp_path: Path):
    started = time.monotonic()
    done = lkit(["build", "--store", str(tmp_path / "empty"), "--dir", str(tmp_path / "out"), "--offline",
                 str(plain_shared.spec)], plain_shared.env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert f"{plain_shared.addr}/lkit/kernel:6.1" in done.stderr and "not in the store" in done.stderr
    assert f"{plain_shared.spec}:5: kernel.image" in done.stderr, done.stderr
    assert time.monotonic() - started < 15  # fails fast: no network wait, no retries
    assert not (tmp_path / "out" / "linuxkit-kernel").exists()


def test_missing_image_in_registry_leaves_only_verified_blobs(plain_shared: Shared, tmp_path: Path):
    """A 404 half way through the spec: clear error at that spec line; what came down is complete and verified."""
    text = plain_shared.spec.read_text().replace("/lkit/nginx:1.22", "/lkit/nginx:0.0-absent")
    spec = tmp_path / "linuxkit.yml"
    spec.write_text(text)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if "nginx:0.0-absent" in s)
    store = tmp_path / "store"
    done = lkit(["build", "--store", str(store), "--dir", str(tmp_path / "out"), "--plain-http", str(spec)],
                plain_shared.env)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "nginx:0.0-absent" in done.stderr and "HTTP 404" in done.stderr, done.stderr
    assert f"{spec}:{line - 1}: services nginx" in done.stderr, done.stderr  # the entry's `- name:` line
    pulled = Store(store)
    assert f"{plain_shared.addr}/lkit/kernel:6.1" in {n for n, _ in pulled.list_images()}
    assert_store_sound(pulled)
    # after the fault is fixed (the name exists again), the same store finishes the build
    done = lkit(["build", "--store", str(store), "--dir", str(tmp_path / "out"), "--plain-http",
                 str(plain_shared.spec)], plain_shared.env)
    assert done.returncode == 0, done.stderr
    assert_store_sound(pulled)


def test_registry_down_is_a_clear_error(plain_shared: Shared, tmp_path: Path):
    port = free_port()  # nothing listens here
    spec = tmp_path / "linuxkit.yml"
    spec.write_text(rewrite_spec(SPEC.read_text(), f"127.0.0.1:{port}"))
    store = tmp_path / "store"
    done = lkit(["build", "--store", str(store), "--dir", str(tmp_path / "out"), "--plain-http", str(spec)],
                plain_shared.env, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "Connection refused" in done.stderr and "failed after 5 attempts" in done.stderr, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr and "kernel:6.1" in done.stderr
    assert ":5: kernel.image" in done.stderr  # the spec line that names the unreachable image
    assert Store(store).list_images() == [] and list(Store(store).blobs_dir.iterdir()) == []


class CuttingProxy:
    """A TCP relay to the registry; while `cap` is set, each connection's reply is cut after `cap` bytes.

    Manifests and small blobs fit under the cap; the kernel layer does not, so a pull fails mid-blob.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self.upstream = (host, int(port))
        self.cap: int | None = None
        self.cuts = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.addr = f"127.0.0.1:{self.server.getsockname()[1]}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> "CuttingProxy":
        self._spawn(self._accept)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(10)
        self.server.close()

    def _spawn(self, fn, *args) -> None:
        t = threading.Thread(target=fn, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            upstream = socket.create_connection(self.upstream, timeout=30)
            client.settimeout(30)
            self._spawn(self._pipe, client, upstream, None)
            self._spawn(self._pipe, upstream, client, self.cap)

    def _pipe(self, src: socket.socket, dst: socket.socket, cap: int | None) -> None:
        sent = 0
        with contextlib.suppress(OSError):
            while not self._stop.is_set() and (data := src.recv(65536)):
                if cap is not None and sent + len(data) > cap:
                    dst.sendall(data[: cap - sent])
                    self.cuts += 1
                    break
                dst.sendall(data)
                sent += len(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def test_connection_cut_mid_blob_then_retry(plain_shared: Shared, tmp_path: Path):
    """Every attempt at the kernel layer is cut: the build fails cleanly; once the fault is gone it succeeds."""
    with CuttingProxy(plain_shared.addr) as relay:
        spec = tmp_path / "linuxkit.yml"
        spec.write_text(plain_shared.spec.read_text().replace(plain_shared.addr, relay.addr))
        store = tmp_path / "store"
        relay.cap = 2 << 20
        done = lkit(["build", "--store", str(store), "--dir", str(tmp_path / "out"), "--plain-http", str(spec)],
                    plain_shared.env, timeout=300)
        assert done.returncode != 0 and "Traceback" not in done.stderr
        assert "could not be fetched intact after 5 attempts" in done.stderr, done.stderr
        assert f"{spec}:5: kernel.image" in done.stderr
        assert relay.cuts >= 5
        cut_store = Store(store)
        assert cut_store.list_images() == []
        assert_store_sound(cut_store)
        assert not (tmp_path / "out" / "linuxkit-kernel").exists()
        relay.cap = None
        done = lkit(["build", "--store", str(store), "--dir", str(tmp_path / "out"), "--plain-http", str(spec)],
                    plain_shared.env, timeout=300)
        assert done.returncode == 0, done.stderr
        assert len(cut_store.list_images()) == 10
        assert_store_sound(cut_store)


def linuxkit_cache(default: Store, home: Path, images: list[str], tmp: Path) -> Path:
    """~/.linuxkit/cache as LinuxKit keeps it: an OCI layout whose index names images by ref.name only."""
    archive = tmp / "export.tar"
    env = base_env(tmp, docker_config(tmp / "docker", None))
    done = lkit(["cache", "--store", str(default.root), "export", "-o", str(archive), *images], env)
    assert done.returncode == 0, done.stderr
    cache = home / ".linuxkit" / "cache"
    cache.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(cache, filter="data")
    index = json.loads((cache / "index.json").read_text())
    for entry in index["manifests"]:  # LinuxKit's cache index carries the ref.name annotation only
        entry["annotations"] = {REF_NAME: entry["annotations"][REF_NAME]}
    (cache / "index.json").write_text(json.dumps(index, separators=(",", ":")))
    return cache


def test_linuxkit_cache_used_directly_as_the_store(tmp_path: Path):
    default = Store.default()
    images = spec_images(SPEC.read_text())
    home = tmp_path / "home"
    cache = linuxkit_cache(default, home, images, tmp_path)
    before = (cache / "index.json").read_bytes()
    names = {e["annotations"][REF_NAME] for e in json.loads(before)["manifests"]}
    assert names == {refs.normalise(r) for r in images}  # docker.io/lkit/..., as LinuxKit expands them
    env = {**base_env(tmp_path, docker_config(tmp_path / "docker", None)), "HOME": str(home)}
    from_cache = build(SPEC, cache, tmp_path / "lk", env, "--offline")  # = --store ~/.linuxkit/cache
    local = local_copy(default, tmp_path / "copy", images, "docker.io")
    from_store = build(SPEC, local.root, tmp_path / "lkit", env, "--offline")
    assert from_cache == from_store
    assert (cache / "index.json").read_bytes() == before  # reading never rewrites LinuxKit's index
    assert_store_sound(Store(cache))


def test_linuxkit_cache_lock_is_respected(tmp_path: Path):
    """While LinuxKit holds its lock on the cache's index.json, lkit waits before rewriting the index."""
    import fcntl
    cache = linuxkit_cache(Store.default(), tmp_path / "home", ["lkit/nginx:1.22", "lkit/rngd:5"], tmp_path)
    env = base_env(tmp_path, docker_config(tmp_path / "docker", None))
    with open(cache / "index.json", "r+b") as index:
        fcntl.lockf(index.fileno(), fcntl.LOCK_EX)  # what linuxkit's util.Lock takes
        proc = subprocess.Popen([sys.executable, "-m", "lkit.cli", "cache", "--store", str(cache), "rm",
                                 "lkit/nginx:1.22"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            with pytest.raises(subprocess.TimeoutExpired):
                proc.wait(timeout=3)  # blocked on the lock
            names = {e["annotations"][REF_NAME] for e in json.loads((cache / "index.json").read_text())["manifests"]}
            assert "docker.io/lkit/nginx:1.22" in names
        finally:
            fcntl.lockf(index.fileno(), fcntl.LOCK_UN)
            try:
                out, err = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait(10)
    assert proc.returncode == 0, err
    assert "removed lkit/nginx:1.22" in out
    names = {n for n, _ in Store(cache).list_images()}
    assert names == {"docker.io/lkit/rngd:5"}

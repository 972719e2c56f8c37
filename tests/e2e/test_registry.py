"""The registry client against Debian's real docker-registry (distribution 2.8) on 127.0.0.1.

A small in-test proxy sits in front of it where a failure must be staged: Bearer token auth,
corrupt or cut blob bodies, transient 503s.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import http.server
import io
import json
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lkit.errors import ImageError, InfraError
from lkit.images.oci import add_image, canonical_json
from lkit.images.registry import RegistryClient, ensure, pull, push
from lkit.images.registry_http import Transport
from lkit.images.store import OCI_INDEX, Store

REGISTRY = shutil.which("docker-registry") or "/usr/bin/docker-registry"
USER, PASSWORD = "lkit", "s3cret-pw"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port: int, proc: subprocess.Popen | None = None, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"docker-registry exited with {proc.returncode}")
        with contextlib.suppress(OSError):
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


@contextlib.contextmanager
def registry(tmp: Path, htpasswd: bool = False) -> Iterator[str]:
    """Run docker-registry on a random loopback port; yields 'host:port'. Always killed."""
    tmp.mkdir(parents=True, exist_ok=True)
    config = {"version": 0.1, "log": {"level": "error"},
              "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}, "delete": {"enabled": True}},
              "http": {}}
    if htpasswd:
        out = subprocess.run(["htpasswd", "-Bbn", USER, PASSWORD], capture_output=True, check=True, timeout=30)
        (tmp / "htpasswd").write_bytes(out.stdout)
        config["auth"] = {"htpasswd": {"realm": "lkit-test", "path": str(tmp / "htpasswd")}}
    for _ in range(5):
        port = free_port()
        config["http"] = {"addr": f"127.0.0.1:{port}"}
        (tmp / "config.yml").write_text(json.dumps(config))  # JSON is YAML
        with open(tmp / "registry.log", "ab") as log:
            proc = subprocess.Popen([REGISTRY, "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
        try:
            try:
                wait_http(port, proc)
            except RuntimeError:
                continue  # port taken between probe and bind: try another
            yield f"127.0.0.1:{port}"
            return
        finally:
            proc.kill()
            proc.wait(timeout=10)
    raise RuntimeError("could not start docker-registry")


@dataclass
class ProxyState:
    upstream: str
    mode: set[str] = field(default_factory=set)
    fail_503: int = 0
    cut_blobs: int = 0
    blob_gets: int = 0
    token_requests: list[str] = field(default_factory=list)
    token: str = "tok-123"


class _Proxy(http.server.BaseHTTPRequestHandler):
    state: ProxyState
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _reply(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _handle(self) -> None:
        st = self.state
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path.startswith("/token"):
            expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
            if self.headers.get("Authorization") != expected:
                return self._reply(401)
            st.token_requests.append(self.path)
            return self._reply(200, json.dumps({"token": st.token}).encode(),
                               {"Content-Type": "application/json"})
        if "bearer" in st.mode and self.headers.get("Authorization") != f"Bearer {st.token}":
            host = self.headers["Host"]
            return self._reply(401, b'{"errors":[{"code":"UNAUTHORIZED","message":"token"}]}', {
                "WWW-Authenticate": f'Bearer realm="http://{host}/token",service="lkit-test"'})
        if st.fail_503 > 0:
            st.fail_503 -= 1
            return self._reply(503, b"busy")
        conn = http.client.HTTPConnection(st.upstream, timeout=30)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("authorization", "host")}
        conn.request(self.command, self.path, body=body if self.command in ("PUT", "POST", "PATCH") else None,
                     headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        conn.close()
        is_blob_get = self.command == "GET" and "/blobs/sha256:" in self.path and resp.status == 200
        if is_blob_get:
            st.blob_gets += 1
            if "corrupt" in st.mode:
                data = bytes([data[0] ^ 0xFF]) + data[1:]
        out_headers = {k: v for k, v in resp.getheaders()
                       if k.lower() not in ("content-length", "transfer-encoding", "connection")}
        if "Location" in out_headers:
            out_headers["Location"] = out_headers["Location"].replace(st.upstream, self.headers["Host"])
        if is_blob_get and st.cut_blobs > 0:
            st.cut_blobs -= 1
            self.send_response(resp.status)
            for k, v in out_headers.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._reply(resp.status, data, out_headers)

    do_GET = do_PUT = do_POST = do_PATCH = do_DELETE = _handle

    def do_HEAD(self) -> None:
        st = self.state
        conn = http.client.HTTPConnection(st.upstream, timeout=30)
        conn.request("HEAD", self.path, headers={k: v for k, v in self.headers.items()
                                                 if k.lower() not in ("authorization", "host")})
        resp = conn.getresponse()
        resp.read()
        conn.close()
        if "bearer" in st.mode and self.headers.get("Authorization") != f"Bearer {st.token}":
            host = self.headers["Host"]
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="http://{host}/token",service="lkit-test"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("transfer-encoding", "connection"):
                self.send_header(k, v)
        self.end_headers()


@contextlib.contextmanager
def proxy(upstream: str) -> Iterator[tuple[str, ProxyState]]:
    state = ProxyState(upstream)
    handler = type("Handler", (_Proxy,), {"state": state})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def layer(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1492533000
            tf.addfile(info, io.BytesIO(data))
    return path


def fast(ref: str, **kw) -> RegistryClient:
    return RegistryClient.for_ref(ref, insecure=True, backoff=0.01, **kw)


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory) -> Iterator[str]:
    with registry(tmp_path_factory.mktemp("reg")) as addr:
        yield addr


@pytest.fixture
def source(tmp_path: Path) -> Store:
    store = Store(tmp_path / "src")
    add_image(store, "lkit/hello:1", [layer(tmp_path / "a.tar", {"bin/hello": b"hello from the registry"}),
                                      layer(tmp_path / "b.tar", {"etc/motd": b"x" * 300_000})],
              config={"Cmd": ["/bin/hello"], "Labels": {"t": "1"}})
    return store


@pytest.fixture(autouse=True)
def no_docker_config(tmp_path: Path, monkeypatch) -> Path:
    cfg = tmp_path / "docker-config"
    cfg.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(cfg))
    return cfg


def test_push_pull_round_trip(plain_registry: str, source: Store, tmp_path: Path):
    ref = f"{plain_registry}/lkit/hello:1"
    digest = push(source, "lkit/hello:1", dest=ref, insecure=True)
    assert digest == source.resolve("lkit/hello:1").digest
    dest = Store(tmp_path / "dest")
    img = pull(dest, ref, insecure=True)
    assert img.digest == digest and img.labels == {"t": "1"} and img.ref == ref
    raw = dest.uncompressed_layer(img.layers[0], img.diff_ids[0]).read_bytes()
    assert b"hello from the registry" in raw
    # pinned by digest
    pinned = pull(Store(tmp_path / "pinned"), f"{plain_registry}/lkit/hello@{digest}", insecure=True)
    assert pinned.digest == digest
    # a second push uploads nothing: every blob is already there
    client = fast(ref)
    assert all(not client.upload_blob(source, d.digest) for d in img.layers)


def test_pull_skips_present_blobs(plain_registry: str, source: Store, tmp_path: Path):
    ref = f"{plain_registry}/lkit/skip:1"
    push(source, "lkit/hello:1", dest=ref, insecure=True)
    dest = Store(tmp_path / "dest")
    with proxy(plain_registry) as (addr, state):
        via = f"{addr}/lkit/skip:1"
        pull(dest, via, insecure=True)
        assert state.blob_gets == 3  # config + 2 layers
        pull(dest, via, insecure=True)
        assert state.blob_gets == 3


def test_not_found(plain_registry: str, tmp_path: Path):
    with pytest.raises(ImageError) as exc:
        pull(Store(tmp_path / "s"), f"{plain_registry}/lkit/absent:9", insecure=True)
    assert "not found (HTTP 404)" in exc.value.message and "MANIFEST_UNKNOWN" in exc.value.message


def test_registry_down(tmp_path: Path):
    port = free_port()
    with pytest.raises(InfraError) as exc:
        pull(Store(tmp_path / "s"), f"127.0.0.1:{port}/x:1", client=fast(f"127.0.0.1:{port}/x:1"))
    assert "failed after 5 attempts" in exc.value.message and "Connection refused" in exc.value.message


def test_plain_http_only_for_loopback():
    with pytest.raises(ImageError, match="not a loopback"):
        Transport("registry.example.com", insecure=True)
    assert Transport("localhost:5000", insecure=True).base == "http://localhost:5000"
    assert Transport("docker.io").base == "https://registry-1.docker.io"


def test_transient_503_is_retried(plain_registry: str, source: Store, tmp_path: Path):
    push(source, "lkit/hello:1", dest=f"{plain_registry}/lkit/flaky:1", insecure=True)
    with proxy(plain_registry) as (addr, state):
        state.fail_503 = 3
        img = pull(Store(tmp_path / "d"), f"{addr}/lkit/flaky:1", client=fast(f"{addr}/lkit/flaky:1"))
        assert img.labels == {"t": "1"} and state.fail_503 == 0


def test_corrupt_blob_is_refused(plain_registry: str, source: Store, tmp_path: Path):
    push(source, "lkit/hello:1", dest=f"{plain_registry}/lkit/corrupt:1", insecure=True)
    dest = Store(tmp_path / "d")
    with proxy(plain_registry) as (addr, state):
        state.mode.add("corrupt")
        with pytest.raises(ImageError) as exc:
            pull(dest, f"{addr}/lkit/corrupt:1", client=fast(f"{addr}/lkit/corrupt:1"))
    assert "could not be fetched intact" in exc.value.message and "does not match" in exc.value.message
    assert dest.list_images() == []
    assert list(dest.blobs_dir.iterdir()) == [] and list(dest.tmp_dir.iterdir()) == []


def test_cut_connection_retried_then_refused(plain_registry: str, source: Store, tmp_path: Path):
    push(source, "lkit/hello:1", dest=f"{plain_registry}/lkit/cut:1", insecure=True)
    with proxy(plain_registry) as (addr, state):
        state.cut_blobs = 1  # one cut: the retry succeeds
        img = pull(Store(tmp_path / "ok"), f"{addr}/lkit/cut:1", client=fast(f"{addr}/lkit/cut:1"))
        assert img.labels == {"t": "1"} and state.cut_blobs == 0
        state.cut_blobs = 1000  # always cut: a clean failure, nothing visible
        dest = Store(tmp_path / "bad")
        with pytest.raises(ImageError, match="could not be fetched intact"):
            pull(dest, f"{addr}/lkit/cut:1", client=fast(f"{addr}/lkit/cut:1"))
        assert dest.list_images() == [] and list(dest.tmp_dir.iterdir()) == []


def test_multi_arch_index(plain_registry: str, tmp_path: Path):
    store = Store(tmp_path / "src")
    amd = add_image(store, "lkit/multi:amd", [layer(tmp_path / "a.tar", {"arch": b"amd64"})], config={})
    arm = add_image(store, "lkit/multi:arm", [layer(tmp_path / "r.tar", {"arch": b"arm64"})], config={},
                    platform="linux/arm64")
    repo = f"{plain_registry}/lkit/multi"
    push(store, "lkit/multi:amd", dest=f"{repo}@{amd.digest}", insecure=True)
    push(store, "lkit/multi:arm", dest=f"{repo}@{arm.digest}", insecure=True)
    index = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": img.manifest["mediaType"], "digest": img.digest,
         "size": len(store.read_blob(img.digest)), "platform": plat}
        for img, plat in ((arm, {"os": "linux", "architecture": "arm64"}),
                          (amd, {"os": "linux", "architecture": "amd64"}))]})
    fast(f"{repo}:1").put_manifest("1", index, OCI_INDEX)
    dest = Store(tmp_path / "dest")
    img = pull(dest, f"{repo}:1", insecure=True)
    assert img.digest == amd.digest
    assert not dest.has_blob(arm.layers[0].digest)  # only the requested platform's layers come down
    assert dest.lookup(f"{repo}:1").media_type == OCI_INDEX
    with pytest.raises(ImageError, match="no linux/riscv64 variant in the registry; it offers: linux/amd64, "
                                         "linux/arm64"):
        pull(Store(tmp_path / "x"), f"{repo}:1", platform="linux/riscv64", insecure=True)
    # a partial index (one platform present) pushes that platform under the name
    assert push(dest, f"{repo}:1", dest=f"{repo}:amd-only", insecure=True) == amd.digest


def test_store_ensure_local_first_then_registry(plain_registry: str, source: Store, tmp_path: Path):
    ref = f"{plain_registry}/lkit/ensure:1"
    push(source, "lkit/hello:1", dest=ref, insecure=True)
    dest = Store(tmp_path / "d")
    with pytest.raises(ImageError, match="not in the store"):
        ensure(dest, ref, offline=True)
    img = ensure(dest, ref, insecure=True)
    assert ensure(dest, ref, offline=True).digest == img.digest
    with pytest.raises(ImageError, match="offline"):
        ensure(dest, ref, pull_policy=True, offline=True)


@pytest.fixture(scope="module")
def auth_registry(tmp_path_factory) -> Iterator[str]:
    with registry(tmp_path_factory.mktemp("authreg"), htpasswd=True) as addr:
        yield addr


def write_docker_config(cfg_dir: Path, registry_addr: str, password: str = PASSWORD) -> None:
    auth = base64.b64encode(f"{USER}:{password}".encode()).decode()
    (cfg_dir / "config.json").write_text(json.dumps({"auths": {registry_addr: {"auth": auth}}}))


def test_htpasswd_auth(auth_registry: str, source: Store, tmp_path: Path, no_docker_config: Path):
    ref = f"{auth_registry}/lkit/secret:1"
    with pytest.raises(ImageError) as exc:
        push(source, "lkit/hello:1", dest=ref, insecure=True)
    assert "HTTP 401" in exc.value.message and "config.json" in exc.value.hint
    write_docker_config(no_docker_config, auth_registry, "wrong")
    with pytest.raises(ImageError, match="HTTP 401"):
        pull(Store(tmp_path / "w"), ref, insecure=True)
    write_docker_config(no_docker_config, auth_registry)
    digest = push(source, "lkit/hello:1", dest=ref, insecure=True)
    assert pull(Store(tmp_path / "d"), ref, insecure=True).digest == digest


def test_bearer_token_flow(plain_registry: str, source: Store, tmp_path: Path, no_docker_config: Path):
    with proxy(plain_registry) as (addr, state):
        state.mode.add("bearer")
        ref = f"{addr}/lkit/tok:1"
        with pytest.raises(ImageError, match="refused anonymous access"):
            push(source, "lkit/hello:1", dest=ref, client=fast(ref))
        write_docker_config(no_docker_config, addr)
        digest = push(source, "lkit/hello:1", dest=ref, insecure=True)
        assert pull(Store(tmp_path / "d"), ref, insecure=True).digest == digest
        scopes = {urllib.parse.parse_qs(urllib.parse.urlsplit(p).query)["scope"][0] for p in state.token_requests}
        assert scopes == {"repository:lkit/tok:pull,push", "repository:lkit/tok:pull"}


def test_credential_helper(tmp_path: Path, no_docker_config: Path, monkeypatch):
    from lkit.images.registry_auth import load_credentials
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    helper = bin_dir / "docker-credential-lkittest"
    helper.write_text('#!/bin/sh\nread server\n[ "$1" = get ] || exit 1\n'
                      'printf \'{"ServerURL":"%s","Username":"u1","Secret":"p1"}\' "$server"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    (no_docker_config / "config.json").write_text(json.dumps({"credHelpers": {"reg.example:5000": "lkittest"}}))
    creds = load_credentials("reg.example:5000")
    assert (creds.username, creds.password) == ("u1", "p1")
    assert load_credentials("other.example") is None


def test_cli_push_pull(plain_registry: str, source: Store, tmp_path: Path, capsys):
    from lkit.cli import main
    ref = f"{plain_registry}/lkit/cli:1"
    assert main(["cache", "--store", str(source.root), "push", "lkit/hello:1", ref, "--plain-http"]) == 0
    dest = tmp_path / "cli"
    assert main(["cache", "--store", str(dest), "pull", ref, "--plain-http"]) == 0
    assert f"pulled {ref} sha256:" in capsys.readouterr().out
    assert Store(dest).resolve(ref).labels == {"t": "1"}
    assert main(["cache", "--store", str(dest), "pull", "registry.example.com/x:1", "--plain-http"]) == 2
    assert "not a loopback" in capsys.readouterr().err


def test_challenge_and_docker_config_forms(tmp_path: Path, no_docker_config: Path):
    from lkit.images.registry_auth import load_credentials, parse_challenge
    c = parse_challenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
                        'scope="repository:library/nginx:pull"')
    assert c.scheme == "bearer" and c.params == {"realm": "https://auth.docker.io/token",
                                                 "service": "registry.docker.io",
                                                 "scope": "repository:library/nginx:pull"}
    assert parse_challenge('Basic realm="x"').scheme == "basic"
    b64 = base64.b64encode(b"hubuser:hubpass").decode()
    (no_docker_config / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": b64},
        "https://reg.example": {"username": "u", "password": "p"},
        "broken.example": {"auth": "%%%"}}}))
    hub = load_credentials("docker.io")
    assert (hub.username, hub.password) == ("hubuser", "hubpass")
    assert load_credentials("reg.example").password == "p"
    with pytest.raises(ImageError, match="not base64"):
        load_credentials("broken.example")
    (no_docker_config / "config.json").write_text("{oops")
    with pytest.raises(ImageError, match="cannot read docker credentials"):
        load_credentials("reg.example")

"""Registry connections are closed on every path, errors included (a canned HTTP server on loopback).

Why: a response body that fails to read (truncated, reset) or an auth challenge that cannot be
answered used to leave its connection open and, for the former, escape as a raw http.client error.
"""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator

import pytest

from lkit.errors import ImageError, InfraError
from lkit.images import registry_http
from lkit.images.registry import RegistryClient
from lkit.images.registry_http import Transport

# path -> raw HTTP response; a Content-Length larger than the body sent makes read() fail. HTTP/1.1
# (keep-alive): for HTTP/1.0 answers http.client closes the connection by itself.
CANNED: dict[str, bytes] = {
    "/v2/lkit/t/manifests/truncated": b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\nshort",
    "/v2/lkit/t/manifests/redirect": (b"HTTP/1.1 307 Temporary Redirect\r\nLocation: /v2/lkit/t/manifests/ok\r\n"
                                      b"Content-Length: 100\r\n\r\nshort"),
    "/v2/lkit/t/manifests/ok": b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n",
    "/v2/lkit/t/manifests/challenge": (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nWWW-Authenticate: "
                                       b'Bearer realm="http://auth.example.com/token",service="x"\r\n\r\n'),
}


class _Canned(http.server.BaseHTTPRequestHandler):
    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.wfile.write(CANNED.get(self.path.split("?")[0], b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))

    do_GET = do_PUT = do_HEAD = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture()
def server() -> Iterator[str]:
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Canned)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


class _Recorded(http.client.HTTPConnection):
    opened: list[_Recorded] = []

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.closed = False
        _Recorded.opened.append(self)

    def close(self) -> None:
        self.closed = True
        super().close()


@pytest.fixture()
def connections(monkeypatch, tmp_path) -> list[_Recorded]:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    _Recorded.opened = []
    monkeypatch.setattr(registry_http.http.client, "HTTPConnection", _Recorded)
    return _Recorded.opened


def client(domain: str) -> RegistryClient:
    return RegistryClient(Transport(domain, insecure=True, retries=0, sleep=lambda _s: None), "lkit/t")


def test_truncated_response_is_an_infra_error_and_the_connection_is_closed(server, connections):
    with pytest.raises(InfraError, match="manifest lkit/t:truncated: reading the response failed"):
        client(server).put_manifest("truncated", b"{}", "application/json")
    assert connections and all(c.closed for c in connections)


def test_redirect_with_a_broken_body_is_followed_and_both_connections_closed(server, connections):
    client(server).put_manifest("redirect", b"{}", "application/json")
    assert len(connections) == 2 and all(c.closed for c in connections)


def test_unanswerable_challenge_closes_the_connection(server, connections):
    with pytest.raises(ImageError, match="not HTTPS"):
        client(server).put_manifest("challenge", b"{}", "application/json")
    assert connections and all(c.closed for c in connections)

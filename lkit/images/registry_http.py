"""HTTP for the registry client: TLS with the system trust store, auth challenges, bounded retries.

Plain HTTP is allowed only for loopback registries and only when the caller asks for it: a
typo must never send credentials or accept unverified images over the network in clear text.
"""

from __future__ import annotations

import functools
import http.client
import ipaddress
import json
import socket
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lkit.errors import ImageError, InfraError
from lkit.images.registry_auth import Credentials, load_credentials, parse_challenge

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_REDIRECTS = 5
USER_AGENT = "lkit/0.1"


def registry_host(domain: str) -> str:
    """Docker Hub's API lives at registry-1.docker.io; everyone else serves it at their own name."""
    return "registry-1.docker.io" if domain == "docker.io" else domain


def is_loopback(host: str) -> bool:
    name = urllib.parse.urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@functools.lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    """The system trust store, loaded once per process (it costs ~0.1 s; a build makes one Transport per image)."""
    return ssl.create_default_context()


class RetryableError(Exception):
    """A failure worth retrying (connection trouble or a 5xx)."""


@dataclass
class Transport:
    """One registry endpoint: scheme, credentials, token cache and retry policy."""

    domain: str
    insecure: bool = False
    credentials: Credentials | None = None
    retries: int = 4
    backoff: float = 0.25
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    _tokens: dict[str, str] = field(default_factory=dict)
    _basic: bool = False
    _creds_loaded: bool = False

    def __post_init__(self) -> None:
        self.host = registry_host(self.domain)
        if self.insecure and not is_loopback(self.host):
            raise ImageError(f"plain HTTP was asked for registry {self.domain}, which is not a loopback address",
                             hint="plain HTTP is only for localhost/127.0.0.1 registries; use HTTPS elsewhere")
        self.scheme = "http" if self.insecure else "https"
        self.base = f"{self.scheme}://{self.host}"

    def _creds(self) -> Credentials | None:
        if not self._creds_loaded:
            self._creds_loaded = True
            if self.credentials is None:
                self.credentials = load_credentials(self.domain)
        return self.credentials

    # -- one HTTP exchange ---------------------------------------------------------------------

    def _connect(self, url: urllib.parse.SplitResult) -> http.client.HTTPConnection:
        if url.scheme == "https":
            return http.client.HTTPSConnection(url.netloc, timeout=self.timeout, context=_tls_context())
        if url.scheme == "http" and self.insecure and is_loopback(url.netloc):
            return http.client.HTTPConnection(url.netloc, timeout=self.timeout)
        raise ImageError(f"registry {self.domain} redirected to {url.geturl()}, which lkit will not follow "
                         "(plain HTTP to a non-loopback host)")

    def _send(self, method: str, url: str, headers: dict[str, str], body: bytes | Path | None
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """Send once, following redirects (Authorization dropped when the host changes)."""
        for _ in range(MAX_REDIRECTS + 1):
            parts = urllib.parse.urlsplit(url)
            conn = self._connect(parts)
            target = parts.path + (f"?{parts.query}" if parts.query else "")
            hdrs = {"User-Agent": USER_AGENT, "Host": parts.netloc, **headers}
            if parts.netloc != self.host:
                hdrs.pop("Authorization", None)
            try:
                conn.connect()
                # Headers and body go out in separate writes: without NODELAY, Nagle + delayed ACK
                # add ~40 ms to every upload request.
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                if isinstance(body, Path):
                    hdrs["Content-Length"] = str(body.stat().st_size)
                    with open(body, "rb") as f:
                        conn.request(method, target, body=f, headers=hdrs)
                else:
                    if body is not None:
                        hdrs["Content-Length"] = str(len(body))
                    conn.request(method, target, body=body, headers=hdrs)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                if isinstance(exc, ssl.SSLCertVerificationError):
                    raise ImageError(f"registry {self.domain}: TLS certificate not trusted: {exc.verify_message}",
                                     hint="install the registry's CA in the system trust store") from None
                raise RetryableError(f"{method} {url}: {exc}") from None
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                try:
                    resp.read()
                except (OSError, http.client.HTTPException):
                    pass  # the redirect is followed on a new connection: this body does not matter
                finally:
                    conn.close()
                url = urllib.parse.urljoin(url, resp.getheader("Location"))
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return conn, resp
        raise ImageError(f"registry {self.domain}: too many redirects for {url}")

    # -- with auth and retries -----------------------------------------------------------------

    def request(self, method: str, path: str, *, headers: dict[str, str] | None = None,
                body: bytes | Path | None = None, scope: str = "", ok: tuple[int, ...] = (200,),
                what: str = "") -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The response (status in `ok`, body unread) or ImageError/InfraError; retries are bounded."""
        url = path if path.startswith(("http://", "https://")) else self.base + path
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * (2 ** (attempt - 1)))
            hdrs = dict(headers or {})
            auth = self._auth_header(scope)
            if auth:
                hdrs["Authorization"] = auth
            try:
                conn, resp = self._send(method, url, hdrs, body)
            except RetryableError as exc:
                last = str(exc)
                continue
            if resp.status == 401 and self._challenge_answered(conn, resp, scope):
                try:
                    retry_auth = self._auth_header(scope)
                    conn, resp = self._send(method, url, {**hdrs, **({"Authorization": retry_auth}
                                                                     if retry_auth else {})}, body)
                except RetryableError as exc:
                    last = str(exc)
                    continue
            if resp.status in ok:
                return conn, resp
            detail = _error_detail(resp)
            conn.close()
            if resp.status in RETRY_STATUSES:
                last = f"HTTP {resp.status} {detail}"
                continue
            raise _status_error(self.domain, resp.status, detail, what or f"{method} {path}")
        raise InfraError(f"registry {self.domain}: {what or method + ' ' + path} failed after "
                         f"{self.retries + 1} attempts: {last}",
                         hint="is the registry up and reachable? (lkit retries 5xx and connection errors)")

    def _auth_header(self, scope: str) -> str | None:
        if scope in self._tokens:
            return f"Bearer {self._tokens[scope]}"
        if self._basic and self._creds():
            return self._creds().basic_header()  # type: ignore[union-attr]
        return None

    def _challenge_answered(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse,
                            scope: str) -> bool:
        """`_handle_challenge`, closing the 401's connection when it is answered or fails."""
        try:
            answered = self._handle_challenge(resp, scope)
        except BaseException:
            conn.close()
            raise
        if answered:
            conn.close()
        return answered

    def _handle_challenge(self, resp: http.client.HTTPResponse, scope: str) -> bool:
        """Answer a 401: fetch a Bearer token or switch to Basic. False if there is nothing to try."""
        header = resp.getheader("WWW-Authenticate") or ""
        try:
            resp.read()
        except (OSError, http.client.HTTPException):
            pass  # the challenge is in the headers; the request is sent again on a new connection
        challenge = parse_challenge(header)
        if challenge.scheme == "basic":
            if self._basic or self._creds() is None:
                return False
            self._basic = True
            return True
        if challenge.scheme != "bearer" or "realm" not in challenge.params or scope in self._tokens:
            return False
        self._tokens[scope] = self._fetch_token(challenge.params, scope)
        return True

    def _fetch_token(self, params: dict[str, str], scope: str) -> str:
        query = {k: v for k, v in (("service", params.get("service", "")),
                                   ("scope", params.get("scope") or scope)) if v}
        realm = params["realm"]
        url = realm + ("&" if "?" in realm else "?") + urllib.parse.urlencode(query)
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "https" and not (self.insecure and is_loopback(parts.netloc)):
            raise ImageError(f"registry {self.domain} asks for a token from {realm}, which is not HTTPS")
        headers = {"User-Agent": USER_AGENT}
        creds = self._creds()
        if creds:
            headers["Authorization"] = creds.basic_header()
        last = ""
        for attempt in range(self.retries + 1):
            if attempt:
                self.sleep(self.backoff * (2 ** (attempt - 1)))
            conn = self._connect(parts)
            try:
                conn.request("GET", parts.path + (f"?{parts.query}" if parts.query else ""), headers=headers)
                resp = conn.getresponse()
                data = resp.read()
            except (OSError, http.client.HTTPException) as exc:
                last = str(exc)
                continue
            finally:
                conn.close()
            if resp.status in RETRY_STATUSES:
                last = f"HTTP {resp.status}"
                continue
            if resp.status != 200:
                raise ImageError(f"registry {self.domain}: token server {realm} refused "
                                 f"{'the credentials' if creds else 'anonymous access'} (HTTP {resp.status})",
                                 hint="check ~/.docker/config.json (docker login) for this registry")
            try:
                body = json.loads(data)
                return str(body.get("token") or body["access_token"])
            except (ValueError, KeyError, TypeError):
                raise ImageError(f"registry {self.domain}: token server {realm} sent no token") from None
        raise InfraError(f"registry {self.domain}: token server {realm} unreachable: {last}")


def _error_detail(resp: http.client.HTTPResponse) -> str:
    try:
        raw = resp.read(65536)
        errors = json.loads(raw).get("errors") or []
        return "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors) or raw.decode(errors="replace")[:200]
    except (ValueError, AttributeError, OSError, http.client.HTTPException):
        return ""


def _status_error(domain: str, status: int, detail: str, what: str) -> ImageError:
    if status == 401:
        return ImageError(f"registry {domain}: {what}: unauthorised (HTTP 401) {detail}".rstrip(),
                          hint=f"log in: put credentials for {domain} in ~/.docker/config.json (docker login)")
    if status == 403:
        return ImageError(f"registry {domain}: {what}: access denied (HTTP 403) {detail}".rstrip())
    if status == 404:
        return ImageError(f"registry {domain}: {what}: not found (HTTP 404) {detail}".rstrip(),
                          hint="check the image name and tag")
    return ImageError(f"registry {domain}: {what}: unexpected HTTP {status} {detail}".rstrip())


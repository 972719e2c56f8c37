"""OCI distribution client: pull images into the store and push them from it, on the standard library.

Why not a PyPI client (e.g. `oras`): oras-py targets OCI artifacts, pulls whole files with requests
and has no platform selection from image indexes; lkit needs the reverse trade-offs: streaming each
blob straight into the store's verify-then-publish writer, platform resolution identical to
Store.resolve, bounded retries, and no extra dependency. http.client + ssl cover that in a few
hundred lines.

Pull stores what LinuxKit's cache stores: the root manifest or index under its name, plus the
manifest, config and layers of the requested platform only. Blobs already present are skipped;
every blob is verified against its digest before it becomes visible; the name is written last.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import urllib.parse
from dataclasses import dataclass

from lkit.core.files import COPY_BUFSIZE
from lkit.errors import ImageError, InfraError
from lkit.images import refs
from lkit.images.registry_http import RetryableError, Transport
from lkit.images.store import (DOCKER_LIST, DOCKER_MANIFEST, INDEX_TYPES, MANIFEST_TYPES, OCI_INDEX,
                               OCI_MANIFEST, Descriptor, Image, PlatformMismatch, Store, parse_platform,
                               platform_matches, platform_string)

MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))
MAX_MANIFEST = 4 << 20


@dataclass
class RegistryClient:
    """Pull and push for one repository on one registry."""

    transport: Transport
    repo: str

    @classmethod
    def for_ref(cls, ref: str | refs.Reference, *, insecure: bool = False, **transport_args) -> "RegistryClient":
        parsed = ref if isinstance(ref, refs.Reference) else refs.Reference.parse(ref)
        return cls(Transport(parsed.domain, insecure=insecure, **transport_args), parsed.path)

    @property
    def _pull_scope(self) -> str:
        return f"repository:{self.repo}:pull"

    @property
    def _push_scope(self) -> str:
        return f"repository:{self.repo}:pull,push"

    # -- reading -------------------------------------------------------------------------------

    def get_manifest(self, reference: str) -> tuple[bytes, str, str]:
        """(body, media type, digest) of a manifest or index; the digest is computed, not trusted."""
        conn, resp = self.transport.request("GET", f"/v2/{self.repo}/manifests/{reference}",
                                            headers={"Accept": MANIFEST_ACCEPT}, scope=self._pull_scope,
                                            what=f"manifest {self.repo}:{reference}")
        try:
            body = resp.read(MAX_MANIFEST + 1)
        except (OSError, http.client.HTTPException) as exc:
            raise InfraError(f"registry {self.transport.domain}: reading manifest {reference} failed: {exc}") from None
        finally:
            conn.close()
        if len(body) > MAX_MANIFEST:
            raise ImageError(f"registry {self.transport.domain}: manifest {self.repo}:{reference} is over "
                             f"{MAX_MANIFEST} bytes")
        digest = "sha256:" + hashlib.sha256(body).hexdigest()
        claimed = resp.getheader("Docker-Content-Digest")
        if claimed and claimed.startswith("sha256:") and claimed != digest:
            raise ImageError(f"registry {self.transport.domain}: manifest {self.repo}:{reference} hashes to "
                             f"{digest} but the registry says {claimed}")
        if refs.is_digest(reference) and reference != digest:
            raise ImageError(f"registry {self.transport.domain}: manifest {self.repo}@{reference} "
                             f"has content {digest}: refusing it")
        media = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        try:
            data = json.loads(body)
        except ValueError:
            raise ImageError(f"registry {self.transport.domain}: manifest {reference} is not JSON") from None
        media = data.get("mediaType") or media
        if media not in INDEX_TYPES and media not in MANIFEST_TYPES:
            raise ImageError(f"registry {self.transport.domain}: {self.repo}:{reference} has unsupported "
                             f"manifest type {media!r}", hint="lkit reads OCI and docker v2 schema 2 images")
        return body, media, digest

    def fetch_blob(self, store: Store, desc: Descriptor) -> None:
        """Stream one blob into the store (verified before visible); a present blob is skipped."""
        if store.has_blob(desc.digest):
            return
        last = ""
        for attempt in range(self.transport.retries + 1):
            if attempt:
                self.transport.sleep(self.transport.backoff * (2 ** (attempt - 1)))
            conn, resp = self.transport.request("GET", f"/v2/{self.repo}/blobs/{desc.digest}",
                                                scope=self._pull_scope, what=f"blob {desc.digest}")
            try:
                with store.blob_writer(desc.digest) as writer:
                    try:
                        while chunk := resp.read(COPY_BUFSIZE):
                            writer.write(chunk)
                    except (OSError, http.client.HTTPException) as exc:
                        raise RetryableError(str(exc)) from None
                    if writer.size != desc.size:
                        raise RetryableError(f"got {writer.size} of {desc.size} bytes")
                return
            except RetryableError as exc:
                last = str(exc)
            except ImageError as exc:
                last = exc.message  # corrupt bytes in flight: fetch again, then give up
            finally:
                conn.close()
        raise ImageError(f"registry {self.transport.domain}: blob {desc.digest} of {self.repo} could not be "
                         f"fetched intact after {self.transport.retries + 1} attempts: {last}",
                         hint="the registry or a proxy is serving corrupt or truncated data")

    # -- writing -------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        conn, resp = self.transport.request("HEAD", f"/v2/{self.repo}/blobs/{digest}", scope=self._push_scope,
                                            ok=(200, 404), what=f"blob {digest}")
        self._finish(conn, resp, f"blob {digest}")
        return resp.status == 200

    def upload_blob(self, store: Store, digest: str) -> bool:
        """Upload one blob unless the registry has it; True if bytes were sent."""
        if self.has_blob(digest):
            return False
        conn, resp = self.transport.request("POST", f"/v2/{self.repo}/blobs/uploads/", scope=self._push_scope,
                                            ok=(202,), body=b"", what="starting a blob upload")
        location = resp.getheader("Location") or ""
        self._finish(conn, resp, "starting a blob upload")
        if not location:
            raise ImageError(f"registry {self.transport.domain}: upload started without a Location")
        url = urllib.parse.urljoin(self.transport.base + "/", location)
        url += ("&" if "?" in url else "?") + urllib.parse.urlencode({"digest": digest})
        # Read the store copy once to verify it: never push bytes that do not match their name.
        with store.open_blob(digest) as f:
            while f.read(COPY_BUFSIZE):
                pass
        conn, resp = self.transport.request("PUT", url, scope=self._push_scope, ok=(201,),
                                            headers={"Content-Type": "application/octet-stream"},
                                            body=store.blob_path(digest), what=f"uploading blob {digest}")
        self._finish(conn, resp, f"uploading blob {digest}")
        return True

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> None:
        conn, resp = self.transport.request("PUT", f"/v2/{self.repo}/manifests/{reference}",
                                            scope=self._push_scope, ok=(201,), body=body,
                                            headers={"Content-Type": media_type},
                                            what=f"manifest {self.repo}:{reference}")
        self._finish(conn, resp, f"manifest {self.repo}:{reference}")

    def _finish(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse, what: str) -> None:
        """Drain a response whose status decided the outcome; the connection is closed whatever happens."""
        try:
            resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise InfraError(f"registry {self.transport.domain}: {what}: reading the response failed: {exc}") from None
        finally:
            conn.close()


def _select_platform(name: str, index: dict, platform: str) -> Descriptor:
    wanted = parse_platform(platform)
    children = [Descriptor.from_json(c, f"index of {name}") for c in index.get("manifests") or []]
    for child in children:  # the same rule as Store.resolve: arm64 with variant v8 or none
        if platform_matches(child.platform, wanted):
            return child
    offered = sorted({platform_string(c.platform) for c in children
                      if c.platform and c.platform.get("os") != "unknown"})
    raise ImageError(f"image {name} has no {platform} variant in the registry; it offers: "
                     f"{', '.join(offered) or 'none'}")


def pull(store: Store, ref: str, *, platform: str = "linux/amd64", insecure: bool = False,
         client: RegistryClient | None = None) -> Image:
    """Fetch `ref` for `platform` into `store`, then name it; returns the resolved image."""
    parsed = refs.Reference.parse(ref)
    name = str(parsed)
    client = client or RegistryClient.for_ref(parsed, insecure=insecure)
    body, media, digest = client.get_manifest(parsed.digest or parsed.tag or refs.DEFAULT_TAG)
    root = Descriptor(media, digest, len(body))
    manifest_body, manifest_digest = body, digest
    if media in INDEX_TYPES:
        child = _select_platform(name, json.loads(body), platform)
        manifest_body, child_media, manifest_digest = client.get_manifest(child.digest)
        if child_media not in MANIFEST_TYPES:
            raise ImageError(f"image {name}: nested index {child.digest} is not supported")
    data = json.loads(manifest_body)
    where = f"manifest {manifest_digest} of {name}"
    blobs = [Descriptor.from_json(data.get("config"), where)] + \
        [Descriptor.from_json(layer, where) for layer in data.get("layers") or []]
    for blob in blobs:
        client.fetch_blob(store, blob)
    store.put_blob(manifest_body, manifest_digest)
    store.put_blob(body, digest)
    store.tag(name, root)
    return store.resolve(name, platform)


def push(store: Store, ref: str, *, dest: str | None = None, insecure: bool = False,
         platform: str = "linux/amd64", client: RegistryClient | None = None) -> str:
    """Push the stored image `ref` (to `dest` if given); returns the digest of what was tagged."""
    name = refs.normalise(ref)
    target = refs.Reference.parse(dest or name)
    client = client or RegistryClient.for_ref(target, insecure=insecure)
    root = store.lookup(name)
    if root is None:
        image = store.resolve(name, platform)  # raises the standard "not in the store" error
        root = Descriptor(image.manifest.get("mediaType") or OCI_MANIFEST, image.digest,
                          store.blob_path(image.digest).stat().st_size)
    data = store.read_json(root.digest, "manifest")
    if "manifests" in data:
        children = [Descriptor.from_json(c, f"index of {name}") for c in data.get("manifests") or []]
        if all(_complete(store, c) for c in children):
            for child in children:
                _push_manifest(store, client, child.digest, child.digest)
        else:  # like LinuxKit's cache: only one platform is here, so push that one under the name
            image = store.resolve(name, platform)
            root = Descriptor(image.manifest.get("mediaType") or OCI_MANIFEST, image.digest, 0)
    tag = target.digest or target.tag or refs.DEFAULT_TAG
    _push_manifest(store, client, root.digest, tag)
    return root.digest


def _complete(store: Store, desc: Descriptor) -> bool:
    if not store.has_blob(desc.digest):
        return False
    data = store.read_json(desc.digest, "manifest")
    blobs = [data.get("config")] + list(data.get("layers") or [])
    return all(isinstance(b, dict) and store.has_blob(str(b.get("digest"))) for b in blobs)


def _push_manifest(store: Store, client: RegistryClient, digest: str, reference: str) -> None:
    body = store.read_blob(digest)
    data = json.loads(body)
    media = data.get("mediaType") or (OCI_INDEX if "manifests" in data else OCI_MANIFEST)
    if "manifests" not in data:
        for blob in [data.get("config")] + list(data.get("layers") or []):
            client.upload_blob(store, Descriptor.from_json(blob, f"manifest {digest}").digest)
    client.put_manifest(reference, body, media)


def ensure(store: Store, ref: str, *, platform: str = "linux/amd64", pull_policy: bool = False,
           offline: bool = False, insecure: bool = False) -> Image:
    """Local first (unless `pull_policy`), then the registry (unless `offline`)."""
    if not pull_policy:
        try:
            return store.resolve(ref, platform)
        except PlatformMismatch as exc:  # the registry may have the platform; if not, say what is wrong here
            if offline:
                raise
            try:
                return pull(store, ref, platform=platform, insecure=insecure)
            except (ImageError, InfraError) as pull_exc:
                raise PlatformMismatch(exc.message, where=exc.where,
                                       hint=f"{exc.hint}; pulling it for {platform} failed too: "
                                            f"{pull_exc.message}") from None
        except ImageError:
            if offline:
                raise
    elif offline:
        raise ImageError(f"cannot pull {refs.normalise(ref)}: offline mode",
                         hint="drop --offline, or import the image: lkit cache import FILE")
    return pull(store, ref, platform=platform, insecure=insecure)


"""Image references, normalised the way docker and LinuxKit name images in their caches.

LinuxKit keys its cache by the fully expanded name ("nginx" -> "docker.io/library/nginx:latest"),
so every name that reaches the store goes through `normalise` first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lkit.errors import ImageError

DEFAULT_DOMAIN = "docker.io"
LEGACY_DOMAINS = ("index.docker.io", "registry-1.docker.io")
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"

# The distribution reference grammar (github.com/distribution/reference), simplified to one regex each.
_PATH_COMPONENT = re.compile(r"^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$")
_DOMAIN = re.compile(
    r"^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*"
    r"|\[[0-9a-fA-F:]+\])(?::[0-9]+)?$"
)
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$")
_SHA256 = re.compile(r"^sha256:[a-f0-9]{64}$")


@dataclass(frozen=True)
class Reference:
    """A parsed, normalised image reference: domain/path[:tag][@digest]."""

    domain: str
    path: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, ref: str) -> "Reference":
        """Parse and normalise `ref`; ImageError says what is wrong with a malformed one."""
        if not isinstance(ref, str) or not ref or ref != ref.strip():
            raise _bad(ref, "an image reference must be a non-empty name without surrounding spaces")
        rest, digest = ref, None
        if "@" in rest:
            rest, digest = rest.split("@", 1)
            if not _DIGEST.match(digest):
                raise _bad(ref, f"digest {digest!r} is not ALGORITHM:HEX (e.g. sha256:<64 hex digits>)")
            if digest.startswith("sha256:") and not _SHA256.match(digest):
                raise _bad(ref, f"sha256 digest {digest!r} must be 64 lower-case hex digits")
        name, tag = rest, None
        slash = name.rfind("/")
        colon = name.rfind(":")
        if colon > slash:
            name, tag = name[:colon], name[colon + 1:]
            if not _TAG.match(tag):
                raise _bad(ref, f"tag {tag!r} must be 1-128 of [A-Za-z0-9_.-], not starting with . or -")
        domain, path = _split_domain(ref, name)
        for component in path.split("/"):
            if not _PATH_COMPONENT.match(component):
                raise _bad(ref, f"path component {component!r} must be lower-case [a-z0-9] "
                                "separated by '.', '_', '__' or '-'")
        if tag is None and digest is None:
            tag = DEFAULT_TAG
        return cls(domain=domain, path=path, tag=tag, digest=digest)

    @property
    def name(self) -> str:
        """domain/path without tag or digest (the repository)."""
        return f"{self.domain}/{self.path}"

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def _split_domain(ref: str, name: str) -> tuple[str, str]:
    """Docker's rule: the first component is a host only if it has '.', ':' or is 'localhost'."""
    if not name:
        raise _bad(ref, "the repository name is empty")
    first, sep, remainder = name.partition("/")
    if sep and (("." in first or ":" in first) or first == "localhost" or first != first.lower()):
        if not _DOMAIN.match(first):
            raise _bad(ref, f"registry host {first!r} is not a valid host[:port]")
        domain, path = first, remainder
        if not path:
            raise _bad(ref, "the repository path after the registry host is empty")
    else:
        domain, path = DEFAULT_DOMAIN, name
    if domain in LEGACY_DOMAINS:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = OFFICIAL_REPO_PREFIX + path
    return domain, path


def _bad(ref: object, why: str) -> ImageError:
    return ImageError(f"invalid image reference {ref!r}: {why}",
                      hint="write NAME[:TAG][@sha256:DIGEST], e.g. 'lkit/kernel:6.1' or 'localhost:5000/x:1'")


def normalise(ref: str) -> str:
    """The fully expanded name LinuxKit uses as the cache key ("nginx" -> "docker.io/library/nginx:latest")."""
    return str(Reference.parse(ref))


def is_digest(value: str) -> bool:
    """True for a sha256 content digest 'sha256:<64 hex>'."""
    return bool(_SHA256.match(value))

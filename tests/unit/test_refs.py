"""Reference normalisation follows docker/LinuxKit's expansion rules exactly."""

import pytest

from lkit.errors import ImageError
from lkit.images.refs import Reference, normalise

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize("ref, expected", [
    ("nginx", "docker.io/library/nginx:latest"),
    ("nginx:1.25", "docker.io/library/nginx:1.25"),
    ("library/nginx", "docker.io/library/nginx:latest"),
    ("docker.io/nginx", "docker.io/library/nginx:latest"),
    ("index.docker.io/library/nginx:1", "docker.io/library/nginx:1"),
    ("lkit/kernel:6.1", "docker.io/lkit/kernel:6.1"),
    ("linuxkit/init:v1.0.0", "docker.io/linuxkit/init:v1.0.0"),
    ("localhost:5000/x", "localhost:5000/x:latest"),
    ("localhost/x:2", "localhost/x:2"),
    ("127.0.0.1:5000/a/b/c:t", "127.0.0.1:5000/a/b/c:t"),
    ("ghcr.io/org/img:tag", "ghcr.io/org/img:tag"),
    (f"nginx@{D}", f"docker.io/library/nginx@{D}"),
    (f"lkit/kernel:6.1@{D}", f"docker.io/lkit/kernel:6.1@{D}"),
    (f"localhost:5000/x@{D}", f"localhost:5000/x@{D}"),
    ("a-b/c_d.e__f--g", "docker.io/a-b/c_d.e__f--g:latest"),
])
def test_normalise_table(ref, expected):
    assert normalise(ref) == expected
    assert normalise(expected) == expected  # idempotent


def test_parse_fields():
    r = Reference.parse(f"localhost:5000/lkit/kernel:6.1@{D}")
    assert (r.domain, r.path, r.tag, r.digest) == ("localhost:5000", "lkit/kernel", "6.1", D)
    assert r.name == "localhost:5000/lkit/kernel"
    digest_only = Reference.parse(f"busybox@{D}")
    assert digest_only.tag is None and str(digest_only) == f"docker.io/library/busybox@{D}"


@pytest.mark.parametrize("bad, words", [
    ("", "non-empty"),
    (" nginx", "spaces"),
    ("Nginx", "lower-case"),
    ("nginx:", "tag"),
    ("nginx:-x", "tag"),
    ("nginx@sha256:abc", "digest"),
    ("a//b", "path component"),
    ("bad_host:5000/x", "registry host"),
    ("docker.io/", "empty"),
])
def test_invalid_refs_say_what_is_wrong(bad, words):
    with pytest.raises(ImageError) as exc:
        normalise(bad)
    assert words in str(exc.value)
    assert exc.value.hint and "NAME[:TAG]" in exc.value.hint

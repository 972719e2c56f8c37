"""`lkit pkg build --push [REGISTRY] [--plain-http]`: destination names, early refusal, order of work.

No registry and no Debian downloads: pkgbuild.build and registry.push are replaced by recorders;
the real registry round trip is tests/e2e/test_registry_build.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lkit.cli import main
from lkit.errors import ImageError
from lkit.images import pkgbuild, registry
from lkit.images.pkg_cli import push_destination

ROOT = Path(__file__).resolve().parents[2]
NGINX = ROOT / "fixtures" / "pkgs" / "nginx"
KERNEL = ROOT / "fixtures" / "pkgs" / "kernel"


@pytest.mark.parametrize("registry_arg, expected", [
    ("localhost:5000", "localhost:5000/lkit/nginx:1.22"),
    ("127.0.0.1:41000", "127.0.0.1:41000/lkit/nginx:1.22"),
    ("registry.example.com/team/", "registry.example.com/team/lkit/nginx:1.22"),
    ("localhost", "localhost/lkit/nginx:1.22"),
    ("", "docker.io/lkit/nginx:1.22"),  # --push without a value: the image's own name
])
def test_destination(registry_arg: str, expected: str):
    assert push_destination("lkit/nginx:1.22", registry_arg) == expected


@pytest.mark.parametrize("registry_arg, why", [
    ("nginx", "not a registry address"),              # a repository, not a host
    ("http://localhost:5000", "not a registry address"),
    ("user@localhost:5000", "not a registry address"),
    ("localhost:5000/Team", "lower-case"),            # invalid path component
])
def test_bad_destination(registry_arg: str, why: str):
    with pytest.raises(ImageError, match=why) as exc:
        push_destination("lkit/nginx:1.22", registry_arg)
    assert exc.value.hint


@pytest.fixture
def recorded(monkeypatch, tmp_path: Path) -> list[tuple]:
    """Replace building and pushing by recorders sharing one ordered log."""
    log: list[tuple] = []

    def fake_build(directory: Path, store, *, update: bool = False, log_fn=None, **_kw) -> pkgbuild.BuildResult:
        spec = pkgbuild.load_build(directory)
        log.append(("build", spec.ref))
        return pkgbuild.BuildResult(spec.name, spec.ref, "sha256:" + "ab" * 32, 1000, "unchanged", 0.0)

    def fake_push(store, ref: str, *, dest: str | None = None, insecure: bool = False, **_kw) -> str:
        log.append(("push", ref, dest, insecure))
        return "sha256:" + "cd" * 32

    monkeypatch.setattr(pkgbuild, "build", fake_build)
    monkeypatch.setattr(registry, "push", fake_push)
    monkeypatch.setenv("LKIT_STORE", str(tmp_path / "store"))
    return log


def test_push_after_all_builds(recorded: list[tuple], capsys):
    assert main(["pkg", "build", "--push", "localhost:5000", "--plain-http", str(NGINX), str(KERNEL)]) == 0
    # builds run in parallel (any order); pushes start only after every build, in argument order
    assert sorted(recorded[:2]) == [("build", "lkit/kernel:6.1"), ("build", "lkit/nginx:1.22")]
    assert recorded[2:] == [("push", "lkit/nginx:1.22", "localhost:5000/lkit/nginx:1.22", True),
                        ("push", "lkit/kernel:6.1", "localhost:5000/lkit/kernel:6.1", True)]
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["pushed localhost:5000/lkit/nginx:1.22 sha256:" + "cd" * 32,
                        "pushed localhost:5000/lkit/kernel:6.1 sha256:" + "cd" * 32]


def test_push_without_value_before_a_dir(recorded: list[tuple]):
    # argparse hands the DIR to --push; lkit takes it back as a DIR and pushes under the own name
    assert main(["pkg", "build", "--push", str(NGINX)]) == 0
    assert recorded == [("build", "lkit/nginx:1.22"), ("push", "lkit/nginx:1.22", "docker.io/lkit/nginx:1.22", False)]


def test_no_push_without_flag(recorded: list[tuple]):
    assert main(["pkg", "build", str(NGINX)]) == 0
    assert recorded == [("build", "lkit/nginx:1.22")]


def test_plain_http_to_remote_refused_before_building(recorded: list[tuple], capsys):
    assert main(["pkg", "build", "--push", "registry.example.com", "--plain-http", str(NGINX)]) == 2
    assert recorded == []  # nothing built, nothing pushed
    assert "not a loopback" in capsys.readouterr().err


def test_plain_http_needs_push(recorded: list[tuple], capsys):
    assert main(["pkg", "build", "--plain-http", str(NGINX)]) == 2
    assert recorded == []
    assert "--plain-http only applies with --push" in capsys.readouterr().err


def test_bad_registry_refused_before_building(recorded: list[tuple], capsys):
    assert main(["pkg", "build", "--push", "nginx", str(NGINX)]) == 2
    assert recorded == []
    err = capsys.readouterr().err
    assert "--push 'nginx' is not a registry address" in err and "Traceback" not in err


def test_push_failure_is_a_clear_error(recorded: list[tuple], monkeypatch, capsys):
    def refuse(store, ref: str, **_kw) -> str:
        raise ImageError(f"registry localhost:5000: manifest {ref}: unauthorised (HTTP 401)", hint="log in")

    monkeypatch.setattr(registry, "push", refuse)
    assert main(["pkg", "build", "--push", "localhost:5000", str(NGINX)]) == 2
    err = capsys.readouterr().err
    assert "HTTP 401" in err and "log in" in err
    assert recorded == [("build", "lkit/nginx:1.22")]


def test_no_dir_is_a_usage_error(recorded: list[tuple], capsys):
    assert main(["pkg", "build", "--push", "localhost:5000"]) == 2
    assert "no DIR given" in capsys.readouterr().err and recorded == []

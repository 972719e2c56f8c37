"""Reliability suite: every case says what it tried and whether lkit handled it as specified.

A test calls `case(category, tried)` once per input/fault it exercises; the outcome (handled = the test
passed) is attached when the test's report is made. At the end of the session a table is printed:
per category, cases tried / handled / not handled, then the cases that were not handled. The same
rows go to $LKIT_RELIABILITY_TABLE (JSON, written atomically) when that variable is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from relkit import REPO, lkit_env, run_lkit  # noqa: E402

CATEGORIES = ("bad spec", "hostile image", "guest fault", "qemu fault", "host fault", "concurrency")
FIXTURE_IMAGES = ("lkit/kernel:6.1", "lkit/init:1", "lkit/runc:1.1")
_CASES = pytest.StashKey[list["Case"]]()


@dataclass
class Case:
    category: str
    tried: str
    test: str
    handled: bool | None = None
    detail: str = ""


_ALL: list[Case] = []


@pytest.fixture
def case(request: pytest.FixtureRequest) -> Callable[[str, str], None]:
    """Record that this test tries `tried` (an input or a fault) in `category`."""

    def add(category: str, tried: str) -> None:
        assert category in CATEGORIES, f"unknown reliability category {category!r}"
        c = Case(category, tried, request.node.nodeid)
        request.node.stash.setdefault(_CASES, []).append(c)
        _ALL.append(c)

    return add


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome: Any = yield
    rep = outcome.get_result()
    for c in item.stash.get(_CASES, []):
        if rep.failed:
            c.handled = False
            lines = (rep.longreprtext or "failed").strip().splitlines()
            c.detail = c.detail or f"{rep.when}: {lines[-1][:160] if lines else 'failed'}"
        elif rep.when == "call" and c.handled is None:
            c.handled = rep.passed


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    if not _ALL:
        return
    tr = terminalreporter
    tr.section("lkit reliability")
    tr.write_line(f"{'category':16} {'tried':>6} {'handled':>8} {'not handled':>12}")
    for cat in CATEGORIES:
        rows = [c for c in _ALL if c.category == cat]
        if rows:
            ok = sum(1 for c in rows if c.handled)
            tr.write_line(f"{cat:16} {len(rows):>6} {ok:>8} {len(rows) - ok:>12}")
    total = len(_ALL)
    ok = sum(1 for c in _ALL if c.handled)
    tr.write_line(f"{'total':16} {total:>6} {ok:>8} {total - ok:>12}")
    bad = [c for c in _ALL if not c.handled]
    for c in bad:
        tr.write_line(f"NOT HANDLED [{c.category}] {c.tried}: {c.detail or 'not run to the end'} ({c.test})")
    out = os.environ.get("LKIT_RELIABILITY_TABLE")
    if out:
        path = Path(out)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps([asdict(c) for c in _ALL], indent=2))
        os.replace(tmp, path)


# ---------------------------------------------------------------------------------- shared fixtures

@pytest.fixture(scope="session")
def fixture_store() -> Path:
    """The image store with the fixture base images (built by `lkit pkg build` if missing).

    Used read-only by the VM tests; tests that add images work on a hard-linked copy.
    """
    from lkit.images.store import Store

    store = Store.default()
    missing = [ref for ref in FIXTURE_IMAGES if store.lookup(ref) is None]
    if missing:
        folders = [REPO / "fixtures" / "pkgs" / ref.split("/")[1].split(":")[0] for ref in missing]
        res = run_lkit(["pkg", "build", "--store", store.root, *folders], timeout=1800)
        assert res.rc == 0, f"could not build fixture images {missing}: {res.stderr}"
    return store.root


@pytest.fixture(scope="session")
def store_copy(fixture_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hard-linked copy of the fixture store (the store only ever replaces files, never edits them)."""
    dest = tmp_path_factory.mktemp("store") / "store"
    linked = subprocess.run(["cp", "-al", str(fixture_store), str(dest)], capture_output=True, timeout=300)
    if linked.returncode != 0:  # another file system: a real copy
        subprocess.run(["rm", "-rf", str(dest)], check=True, timeout=120)
        subprocess.run(["cp", "-a", str(fixture_store), str(dest)], check=True, timeout=600)
    return dest


@pytest.fixture(scope="session")
def session_build_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("build-cache")


@pytest.fixture(scope="session")
def fixture_env(store_copy: Path, session_build_cache: Path) -> dict[str, str]:
    """`lkit` subprocess environment: the copied fixture store and a session build cache."""
    return lkit_env(LKIT_STORE=store_copy, LKIT_BUILD_CACHE=session_build_cache)

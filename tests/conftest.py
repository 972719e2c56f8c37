"""The `e2e` marker, set by folder, so `-m "not e2e"` never boots a VM.

- every test under tests/e2e/ is e2e (real QEMU guests, real packages, a real registry);
- a test elsewhere (tests/reliability/) is e2e when it asks for a fixture that builds a guest to boot
  (BOOT_FIXTURES), or when it carries the mark itself (tests that boot through a child pytest or lkit);
- a test that is not e2e runs with a `qemu-system-x86_64` on PATH that refuses to start and names the
  test: a VM booted by a test without the mark fails loudly instead of slowing a `not e2e` run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
E2E_FOLDERS = (TESTS / "e2e",)
BOOT_FIXTURES = frozenset({"targets", "base_target"})  # tests/reliability: build a guest to boot it
QEMU_NAMES = ("qemu-system-x86_64", "qemu-system-aarch64")
_STUB_DIR = pytest.StashKey[Path]()


def is_e2e_item(item: pytest.Item) -> bool:
    """Whether the folder rule or a booting fixture makes this test e2e."""
    path = Path(item.path).resolve()
    if any(folder == path.parent or folder in path.parents for folder in E2E_FOLDERS):
        return True
    return bool(BOOT_FIXTURES.intersection(getattr(item, "fixturenames", ())))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Runs before `-m` deselects: the marks added here count."""
    for item in items:
        if item.get_closest_marker("e2e") is None and is_e2e_item(item):
            item.add_marker(pytest.mark.e2e)


def _stub_dir(config: pytest.Config, factory: pytest.TempPathFactory) -> Path:
    """A folder with a QEMU that refuses to start (made once per session)."""
    if _STUB_DIR not in config.stash:
        folder = factory.mktemp("no-qemu")
        for name in QEMU_NAMES:
            stub = folder / name
            stub.write_text('#!/bin/sh\necho "lkit tests: QEMU started by a test not marked e2e: $LKIT_TEST_NOT_E2E'
                            ' (add pytest.mark.e2e, or move it to tests/e2e)" >&2\nexit 97\n')
            stub.chmod(0o755)
        config.stash[_STUB_DIR] = folder
    return config.stash[_STUB_DIR]


@pytest.fixture(autouse=True)
def _no_vm_unless_e2e(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                      tmp_path_factory: pytest.TempPathFactory) -> None:
    """Put the refusing QEMU first on PATH for a test that is not e2e (child processes inherit it)."""
    if request.node.get_closest_marker("e2e") is not None:
        return
    stub = _stub_dir(request.config, tmp_path_factory)
    monkeypatch.setenv("PATH", f"{stub}{os.pathsep}{os.environ.get('PATH', '')}")
    monkeypatch.setenv("LKIT_TEST_NOT_E2E", request.node.nodeid)

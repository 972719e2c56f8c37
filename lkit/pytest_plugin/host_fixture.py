"""The `host` fixture, in a module of its own: the plugin registers it after pytest-testinfra has
registered its own `host`, and among plugins the last definition of a fixture wins."""

from __future__ import annotations

from typing import Any

import pytest

from lkit.pytest_plugin.fixtures import suite_of


@pytest.fixture
def host(request: pytest.FixtureRequest) -> Any:
    """testinfra Host: over the guest's command channel in suite modules, testinfra's own elsewhere.

    Function-scoped on purpose: it is a thin wrapper, and the VM it wraps (module-scoped `lkit_vm`)
    changes with the format parameter, which a cached module-scoped Host would not see."""
    if suite_of(request) is not None:
        from lkit.machine.testinfra_backend import lkit_host

        return lkit_host(request.getfixturevalue("lkit_vm"))
    import testinfra

    hosts = request.config.getoption("hosts", None)
    return testinfra.get_host(hosts.split(",")[0] if hosts else "local://")

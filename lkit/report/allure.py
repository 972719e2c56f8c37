"""Allure helpers the pytest plugin calls inside tests; no-ops when allure-pytest is not active.

allure-pytest is active only with `--alluredir`; without it (or without the package) every helper
returns quietly, so checks never depend on the report being enabled.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lkit.report.model import FormatRun

try:  # allure-pytest is a dependency, but a missing package must not break a test run
    import allure as _allure
    import allure_commons as _commons
except ImportError:  # pragma: no cover - exercised only without allure installed
    _allure = None  # type: ignore[assignment]
    _commons = None  # type: ignore[assignment]

# kind -> (allure attachment type name, file extension)
KINDS = {
    "text": ("TEXT", "txt"), "log": ("TEXT", "log"), "console": ("TEXT", "log"),
    "json": ("JSON", "json"), "yaml": ("YAML", "yaml"), "svg": ("SVG", "svg"),
    "html": ("HTML", "html"), "xml": ("XML", "xml"), "csv": ("CSV", "csv"), "png": ("PNG", "png"),
}


def is_active() -> bool:
    """True when an allure listener is registered (pytest ran with --alluredir).

    allure-pytest always registers a label helper; only the listener that records results
    (present with --alluredir) implements the attachment hooks.
    """
    if _commons is None:
        return False
    return any(hasattr(p, "attach_data") for p in _commons.plugin_manager.get_plugins())


def _attachment_type(kind: str) -> Any:
    type_name, _ = KINDS.get(kind, KINDS["text"])
    return getattr(_allure.attachment_type, type_name)


def attach_file(path: str | os.PathLike[str], name: str, kind: str = "text") -> bool:
    """Attach a file (console log, timeline...) to the current test; False when not attached."""
    if not is_active() or not Path(path).is_file():
        return False
    _allure.attach.file(str(path), name=name, attachment_type=_attachment_type(kind),
                        extension=KINDS.get(kind, KINDS["text"])[1])
    return True


def attach_json(data: Any, name: str) -> bool:
    """Attach a JSON-serialisable value (figures, guest facts) as a JSON attachment."""
    if not is_active():
        return False
    body = json.dumps(data, indent=2, sort_keys=True, default=str)
    _allure.attach(body, name=name, attachment_type=_allure.attachment_type.JSON)
    return True


def attach_text(text: str, name: str, kind: str = "text") -> bool:
    """Attach a string (an SVG chart, an excerpt) with the given kind."""
    if not is_active():
        return False
    _allure.attach(text, name=name, attachment_type=_attachment_type(kind))
    return True


@contextlib.contextmanager
def step(name: str) -> Iterator[None]:
    """A named, timed step in the Allure report (nothing without allure)."""
    if not is_active():
        yield
        return
    with _allure.step(name):
        yield


def parameters(spec: str, fmt: str, **extra: str) -> None:
    """Label the current test with its spec and format so Allure groups and filters by them."""
    if not is_active():
        return
    _allure.dynamic.parameter("spec", spec)
    _allure.dynamic.parameter("format", fmt)
    for key, value in sorted(extra.items()):
        _allure.dynamic.parameter(key, value)
    _allure.dynamic.parent_suite("lkit")
    _allure.dynamic.suite(spec)
    _allure.dynamic.sub_suite(fmt)
    _allure.dynamic.tag(fmt)


def attach_format_run(run: FormatRun) -> bool:
    """Attach one format's figures (JSON, with samples) and its boot timeline (SVG)."""
    if not is_active():
        return False
    from lkit.report.human import timeline_svg

    attach_json({"figures": run.figures, "samples": run.samples, "properties": run.properties},
                f"figures {run.format}")
    svg = timeline_svg(run, standalone=True)
    if svg:
        attach_text(svg, f"boot timeline {run.format}", "svg")
    return True

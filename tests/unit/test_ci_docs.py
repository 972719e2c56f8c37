"""docs/ci.md's workflows are valid YAML and run only lkit commands and options that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from lkit.pytest_plugin.options import _OPTIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "ci.md"
PYTEST_OPTIONS = {f"--lkit-{name}" for name, _, _ in _OPTIONS}


def _workflows() -> dict[str, dict]:
    blocks = re.findall(r"^## (.+?)\n.*?```yaml\n(.*?)```", DOC.read_text(), re.S | re.M)
    return {title: yaml.safe_load(body) for title, body in blocks}


def _commands(node: object) -> list[str]:
    """Every shell line of a workflow: GitHub's `run:` and GitLab's `script:` entries."""
    out: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                out.append(value)
            elif key == "script" and isinstance(value, list):
                out += [str(v) for v in value]
            else:
                out += _commands(value)
    elif isinstance(node, list):
        for value in node:
            out += _commands(value)
    return out


def test_both_workflows_parse_and_have_build_shards_and_gate() -> None:
    flows = _workflows()
    assert set(flows) == {"GitHub Actions", "GitLab CI"}
    assert set(flows["GitHub Actions"]["jobs"]) == {"build", "shard", "gate"}
    assert flows["GitHub Actions"]["jobs"]["shard"]["strategy"]["matrix"]["shard"] == [1, 2, 3]
    assert flows["GitLab CI"]["shard"]["parallel"] == 3


def test_every_lkit_option_and_command_exists() -> None:
    seen = 0
    for title, flow in _workflows().items():
        for line in _commands(flow):
            words = shlex.split(line.replace("$(", "").replace(")", ""))
            if "pytest" in words:
                used = {w.split("=")[0] for w in words if w.startswith("--lkit-")}
                assert used <= PYTEST_OPTIONS, f"{title}: {line}: unknown {used - PYTEST_OPTIONS}"
                seen += 1
            elif words[:2] == ["lkit", "report"]:
                help_text = subprocess.run([sys.executable, "-m", "lkit.cli", "report", words[2], "--help"],
                                           capture_output=True, text=True, timeout=60)
                assert help_text.returncode == 0, f"{title}: no `lkit report {words[2]}`"
                for option in (w for w in words[3:] if w.startswith("-")):
                    assert option in help_text.stdout, f"{title}: `lkit report {words[2]}` has no {option}"
                seen += 1
    assert seen >= 8

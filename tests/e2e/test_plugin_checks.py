"""The plugin's built-in checks fail when they should, with messages naming spec, format and difference.

Real parts: the fixture images from the store (`make test` builds them), real builds, real QEMU boots
under TCG, pytest run in a subprocess through pytester.

The faulty scenario uses `--lkit-prebuilt`: the artifacts are built from a *variant* of the spec under
test (an extra capability, a wrong file mode, an onboot container exiting 1, a service left out), so
the guest differs from what the tested spec says, exactly as a broken distribution change would.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lkit.images.store import Store

# Resolved before pytester points HOME at a temporary folder: the fixture images live in the real store.
STORE = str(Store.default().root)

pytestmark = pytest.mark.e2e
pytest_plugins = ["pytester"]

TESTED = """\
kernel:
  image: lkit/kernel:6.1
  cmdline: "console=ttyS0"
init:
  - lkit/init:1
  - lkit/runc:1.1
onboot:
  - name: setup
    image: lkit/binfmt:1
    command: ["/bin/busybox", "true"]
services:
  - name: web
    image: lkit/nginx:1.22
    capabilities: [CAP_NET_BIND_SERVICE, CAP_CHOWN, CAP_SETUID, CAP_SETGID, CAP_DAC_OVERRIDE]
    net: host
  - name: cache
    image: lkit/redis:7.0
    net: host
files:
  - path: etc/lkit-secret
    contents: "s3cret"
    mode: "0600"
"""

# What was really built: every line that differs from TESTED is a fault the checks must find.
VARIANT = (TESTED
           .replace('command: ["/bin/busybox", "true"]', 'command: ["/bin/busybox", "false"]')
           .replace("CAP_SETGID, CAP_DAC_OVERRIDE]", "CAP_SETGID, CAP_DAC_OVERRIDE, CAP_SYS_ADMIN]")
           .replace("""  - name: cache
    image: lkit/redis:7.0
    net: host
""", "")
           .replace('mode: "0600"', 'mode: "0644"'))

EXPECTATIONS = """\
formats: [kernel+initrd]
boot: {timeout: 240}
budgets:
  boot_time: {default: 1}
  size: {default: {total: 1M}}
"""


def lkit(*args: str, cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "lkit.cli", "build", "--store", STORE, *args], cwd=cwd, check=True,
                   capture_output=True)


def outcomes(result: pytest.RunResult) -> dict[str, tuple[str, str]]:
    """check name -> (outcome, line) from pytest's `-rA` short summary."""
    text = result.stdout.str()
    found = {}
    for line in text.splitlines():
        status, _, rest = line.partition(" ")
        if status in ("PASSED", "FAILED", "ERROR") and rest.startswith("suites/") and "::" in rest:
            node = rest.split(" - ")[0].strip()
            found[node.rsplit("::", 1)[-1]] = (status, line)
    return found


def run_suite(pytester: pytest.Pytester, *extra: str) -> pytest.RunResult:
    pytester.makeini("[pytest]\n")  # rootdir = the test's folder, whatever paths the options name
    return pytester.runpytest_subprocess("suites/", "-rA", "-p", "no:cacheprovider", "--lkit-accel", "tcg",
                                         "--lkit-reruns", "0", "--lkit-store", STORE, "--lkit-report-dir", "reports", *extra,
                                         timeout=900)


def test_each_check_reports_the_fault_it_finds(pytester: pytest.Pytester):
    suites = pytester.mkdir("suites")
    (suites / "faulty.yml").write_text(TESTED)
    (suites / "faulty.test.yml").write_text(EXPECTATIONS)
    (pytester.path / "variant.yml").write_text(VARIANT)
    lkit("--name", "faulty", "--dir", "prebuilt", "variant.yml", cwd=pytester.path)

    result = run_suite(pytester, "--lkit-prebuilt", "prebuilt", "--alluredir", "allure")
    got = outcomes(result)
    text = result.stdout.str()

    assert got["boots"][0] == "PASSED", text[-3000:]
    for check in ("size_budget", "boot_time", "onboot", "services_running", "capabilities", "files"):
        assert got[check][0] == "FAILED", f"{check}: {got.get(check)}\n{text[-3000:]}"
    # Each message names spec, format and the difference, on one line.
    assert "faulty.yml [kernel+initrd] size_budget: over the size budget: total" in text
    assert "over the 1.0 s budget" in text
    assert "onboot containers failed: setup exit 1" in text
    assert "not running: cache" in text
    assert "web effective: extra CAP_SYS_ADMIN" in text
    assert "/etc/lkit-secret: mode 0644, expected 0600" in text
    assert result.ret == 1
    # The run folder has a summary the gate wrote, with the failures recorded per format.
    summaries = list((pytester.path / "reports").glob("*/summary.json"))
    assert len(summaries) == 1 and '"failed"' in summaries[0].read_text()
    # Allure: the failing capabilities check carries the container's generated config.json and the console.
    results = [json.loads(p.read_text()) for p in (pytester.path / "allure").glob("*-result.json")]
    caps = next(r for r in results if r["name"].endswith("capabilities"))
    names = {a["name"] for a in caps.get("attachments", [])}
    assert {"config.json of web", "console log"} <= names, names
    assert caps["status"] == "failed"
    params = {p["name"]: p["value"].strip("'") for p in caps["parameters"]}
    assert params == {"spec": "faulty.yml", "format": "kernel+initrd"}


def test_kernel_panic_fails_boots_early_and_names_it(pytester: pytest.Pytester):
    suites = pytester.mkdir("suites")
    (suites / "panics.yml").write_text("""\
kernel:
  image: lkit/kernel:6.1
  cmdline: "console=ttyS0"
init:
  - lkit/init:1
  - lkit/runc:1.1
onboot:
  - name: crash
    image: lkit/binfmt:1
    command: ["/bin/busybox", "sh", "-c", "echo c > /proc/sysrq-trigger"]
    capabilities: [all]
    pid: host
""")
    (suites / "panics.test.yml").write_text("formats: [kernel+initrd]\nboot: {timeout: 300}\n")
    started = time.monotonic()
    result = run_suite(pytester, "-k", "boots")
    elapsed = time.monotonic() - started
    got = outcomes(result)
    text = result.stdout.str()
    assert got["boots"][0] == "FAILED", text[-3000:]
    assert "panics.yml [kernel+initrd] boots:" in text
    assert "panic" in text.lower()
    # Streaming badness detection: far sooner than the 300 s (x2 under TCG) boot timeout.
    assert elapsed < 240, f"took {elapsed:.0f} s"

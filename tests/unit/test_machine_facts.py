"""Guest facts parsing (the output of facts.GATHER) and capability decoding."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from lkit.machine.facts import GATHER, decode_caps, parse_gather

SAMPLE = """\
LASTCAP 40
CTR runc getty 412 running
CTR runc sshd 0 stopped
CTR containerd nginx 530 RUNNING
noise that is not ours
CAP 412 CapInh 0000000000000000
CAP 412 CapPrm 00000000a80425fb
CAP 412 CapEff 00000000a80425fb
CAP 412 CapBnd 00000000a80425fb
CAP 412 CapAmb 0000000000000000
CAP 530 CapEff 0000000000000400
CAP 530 CapFoo 1
CAP x CapEff zz
"""


def test_parse_gather() -> None:
    ctrs, last = parse_gather(SAMPLE)
    assert last == 40
    assert sorted(ctrs) == ["getty", "nginx", "sshd"]
    getty = ctrs["getty"]
    assert (getty.runtime, getty.pid, getty.status) == ("runc", 412, "running")
    assert getty.caps["CapInh"] == [] and getty.caps["CapAmb"] == []
    # docker's default set: 14 capabilities
    assert len(getty.caps["CapEff"]) == 14 and "CAP_NET_BIND_SERVICE" in getty.caps["CapEff"]
    assert "CAP_SYS_ADMIN" not in getty.caps["CapEff"]
    nginx = ctrs["nginx"]
    assert nginx.runtime == "containerd" and nginx.status == "running"
    assert nginx.caps == {"CapEff": ["CAP_NET_BIND_SERVICE"]}
    assert ctrs["sshd"].caps == {}


def test_decode_caps_is_limited_by_cap_last_cap() -> None:
    full = (1 << 64) - 1
    assert len(decode_caps(full, 37)) == 38
    assert decode_caps(full, 37)[-1] == "CAP_AUDIT_READ"
    assert decode_caps(1 << 40, 37) == []
    assert decode_caps(1, None) == ["CAP_CHOWN"]


@pytest.mark.parametrize("shell", [["busybox", "sh"], ["dash"]])
def test_gather_runs_each_go_tool_once_and_reads_every_container(tmp_path, shell) -> None:
    """GATHER in a real shell (busybox ash, as in the guest) with fake runc and ctr on PATH."""
    if shutil.which(shell[0]) is None:
        pytest.skip(f"{shell[0]} not installed")
    me, log = os.getpid(), tmp_path / "calls"
    tools = {"runc": f"ID PID STATUS BUNDLE CREATED OWNER\ngetty {me} running /c/getty x root\nsshd 0 stopped /c/sshd x root",
             "ctr": f"TASK PID STATUS\nnginx {me} RUNNING"}
    for name, out in tools.items():
        tool = tmp_path / name
        tool.write_text(f"#!/bin/sh\necho {name} >> {log}\ncat <<'END'\n{out}\nEND\n")
        tool.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    done = subprocess.run([*shell, "-c", GATHER], env=env, capture_output=True, text=True, check=True)
    assert sorted(log.read_text().split()) == ["ctr", "runc"]          # one start of each Go binary
    ctrs, last = parse_gather(done.stdout)
    assert last is not None and sorted(ctrs) == ["getty", "nginx", "sshd"]
    assert (ctrs["getty"].runtime, ctrs["getty"].pid, ctrs["getty"].status) == ("runc", me, "running")
    assert ctrs["nginx"].runtime == "containerd" and ctrs["nginx"].status == "running"
    assert set(ctrs["nginx"].masks) == {"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"}
    assert ctrs["sshd"].caps == {}


def test_gather_without_runc_or_ctr_succeeds_with_no_containers() -> None:
    if shutil.which("busybox") is None:
        pytest.skip("busybox not installed")
    script = GATHER.replace("command -v runc", "command -v no-runc").replace("command -v ctr", "command -v no-ctr")
    done = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True)
    assert done.returncode == 0 and parse_gather(done.stdout)[0] == {}

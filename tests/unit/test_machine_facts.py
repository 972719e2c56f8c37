"""Guest facts parsing (the output of facts.GATHER) and capability decoding."""

from __future__ import annotations

from lkit.machine.facts import decode_caps, parse_gather

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

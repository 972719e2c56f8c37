"""The capability table: numbers match linux/capability.h; masks decode /proc/PID/status."""

import pytest

from lkit.core.capabilities import CAPABILITIES, FULL_MASK, mask_from_names, names_from_mask, parse_mask


def test_table_numbers():
    assert len(CAPABILITIES) == 41
    assert CAPABILITIES[0] == "CAP_CHOWN" and CAPABILITIES[21] == "CAP_SYS_ADMIN"
    assert CAPABILITIES[12] == "CAP_NET_ADMIN" and CAPABILITIES[40] == "CAP_CHECKPOINT_RESTORE"
    assert len(set(CAPABILITIES)) == 41


def test_masks_round_trip():
    names = ["CAP_CHOWN", "CAP_NET_BIND_SERVICE", "CAP_SYS_ADMIN"]
    mask = mask_from_names(names)
    assert mask == (1 << 0) | (1 << 10) | (1 << 21)
    assert names_from_mask(mask) == names
    assert mask_from_names(["all"]) == FULL_MASK == parse_mask("000001ffffffffff")
    assert mask_from_names(["none"]) == 0 and names_from_mask(0) == []


def test_docker_default_set_decodes():
    # CapBnd of a default Docker container
    assert names_from_mask(parse_mask("00000000a80425fb")) == [
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID",
        "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW", "CAP_SYS_CHROOT", "CAP_MKNOD", "CAP_AUDIT_WRITE",
        "CAP_SETFCAP"]


def test_unknown_name_rejected():
    with pytest.raises(ValueError, match="CAP_FLY"):
        mask_from_names(["CAP_FLY"])

"""The seed spec's own tests: what the 2017 announcement showed, checked through testinfra's `host`.

Every test runs once per output format, on the VM the built-in checks of that format booted.
"""

import json


def test_daemon_json_written_by_files(host):
    f = host.file("/etc/docker/daemon.json")
    assert f.is_file
    assert json.loads(f.content_string) == {"debug": True}
    assert f.mode == 0o600 and f.user == "root"


def test_nginx_runs_and_listens_on_80(host):
    masters = [p for p in host.process.filter(comm="nginx") if "master" in p.args]
    assert masters, "no nginx master process"
    assert host.socket("tcp://0.0.0.0:80").is_listening


def test_sysctl_onboot_applied_its_settings(host):
    # Values from the sysctl image's /etc/sysctl.d (fixtures/pkgs/sysctl/files); kernel defaults differ.
    # (No net.ipv4.* value: the seed grants sysctl only CAP_SYS_ADMIN, and those need CAP_NET_ADMIN.)
    assert host.sysctl("kernel.panic") == 10
    assert host.sysctl("net.core.somaxconn") == 1024
    assert host.sysctl("vm.overcommit_memory") == 1


def test_binfmt_misc_mounted_and_handler_registered(host):
    assert host.mount_point("/proc/sys/fs/binfmt_misc").exists
    assert host.file("/proc/sys/fs/binfmt_misc/lkit-sh").exists


def test_dhcpcd_configured_eth0(host):
    addresses = host.interface("eth0").addresses
    assert "10.0.2.15" in addresses, addresses


def test_runc_list_shows_the_services(lkit_vm):
    listing = lkit_vm.succeed("runc list 2>/dev/null; ctr -n services.linuxkit task ls 2>/dev/null; true")
    for name in ("nginx", "rngd"):
        assert name in listing


def test_tpm_pcrs_readable_and_measured_under_uefi(lkit_tpm, lkit_format):
    # linuxkit.test.yml says `tpm: true`: every format's VM has a swtpm; OVMF measures the boot into
    # PCRs 0-7 (each gets at least its separator event), so under UEFI none of them is zero.
    pcrs = lkit_tpm.pcrs()
    assert sorted(pcrs) == list(range(24)) and all(len(v) == 64 for v in pcrs.values()), pcrs
    if "efi" in lkit_format:
        zero = [i for i in range(8) if not pcrs[i].strip("0")]
        assert not zero, f"PCRs {zero} are zero under UEFI"

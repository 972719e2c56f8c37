"""The spec loader: every LinuxKit field, the seed, merging several files, the YamlNode API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from lkit.errors import ImageError, SpecError
from lkit.spec import YamlNode, Where, load_json_node, load_spec, load_spec_text, load_yaml, load_yaml_text

DATA = Path(__file__).resolve().parents[1] / "data" / "specs"
SEED = DATA / "good" / "seed.yml"

FULL = """\
kernel:
  image: linuxkit/kernel:6.1
  cmdline: console=ttyS0
  binary: bzImage
  tar: none
  ucode: intel-ucode.cpio
init:
  - linuxkit/init:v1
  - linuxkit/runc:v1
onboot:
  - name: sysctl
    image: linuxkit/sysctl:v1
    net: host
    pid: host
    ipc: host
    uts: host
    userns: host
    capabilities: [CAP_SYS_ADMIN]
    capabilities.add: [CAP_NET_ADMIN]
    ambient: [CAP_NET_RAW]
    readonly: true
    sysctl:
      net.ipv4.ip_forward: "1"
onshutdown:
  - name: bye
    image: busybox:latest
    command: ["/bin/echo", "bye"]
services:
  - name: web
    image: nginx:alpine
    mounts:
      - destination: /data
        type: bind
        source: /var/data
        options: [rw, rbind]
      - type: mqueue
    binds: ["/etc/ssl:/etc/ssl:ro"]
    binds.add: ["/var/log:/var/log"]
    devices:
      - path: /dev/kvm
        type: c
        major: 10
        minor: 232
        mode: "0666"
      - path: all
        type: b
    tmpfs: ["/tmp:size=64m,mode=1777", "/run"]
    env: ["A=1"]
    cwd: /srv
    hostname: web1
    maskedPaths: [/proc/kcore]
    readonlyPaths: [/proc/sys]
    uid: sysctl
    gid: 1000
    additionalGids: [bye, 10]
    noNewPrivileges: true
    oomScoreAdj: -500
    rootfsPropagation: rshared
    cgroupsPath: /lkit/web
    resources:
      memory: {limit: 67108864, swappiness: 0, disableOOMKiller: false}
      cpu: {shares: 512, cpus: "0-1"}
      pids: {limit: 100}
      blockio: {weight: 300, throttleReadBpsDevice: [{major: 8, minor: 0, rate: 1000}]}
      devices: [{allow: false, access: rwm}]
      hugepageLimits: [{pageSize: 2MB, limit: 0}]
      network: {classID: 1, priorities: [{name: eth0, priority: 1}]}
    rlimits: ["nofile,100,200", "core,unlimited,unlimited"]
    uidMappings: [{hostID: 1000, containerID: 0, size: 1}]
    gidMappings: [{hostID: 1000, containerID: 0, size: 1}]
    annotations: {org.example/owner: team}
    runtime:
      cgroups: [web]
      mounts: [{destination: /var/lib/web, options: [remount, ro]}]
      mkdir: [/var/lib/web]
      interfaces: [{name: eth1, add: veth, peer: veth1, createInRoot: false}]
      bindNS: {net: /run/netns/web, uts: /run/utsns/web}
      namespace: web
files:
  - path: /etc/motd
    contents: hello
    mode: "0644"
    uid: web
    gid: 0
  - path: var/lib/empty
    directory: true
  - path: etc/localtime
    symlink: /usr/share/zoneinfo/UTC
  - path: etc/linuxkit.yml
    metadata: yaml
  - path: etc/extra.conf
    source: extra.conf
    optional: true
  - path: etc/home.conf
    source: ~/home.conf
volumes:
  - name: data
    image: alpine:3.19
    readonly: true
    format: filesystem
    platforms: [linux/amd64]
  - name: scratch
trust:
  org: [linuxkit]
outputs:
  - format: kernel+initrd
  - format: docker
"""


@pytest.fixture()
def full(tmp_path: Path):
    path = tmp_path / "full.yml"
    path.write_text(FULL)
    return load_spec([path]), path


def test_kernel_fields(full):
    spec, path = full
    k = spec.kernel
    assert (k.image, k.cmdline, k.binary, k.tar, k.ucode) == (
        "linuxkit/kernel:6.1", "console=ttyS0", "bzImage", None, "intel-ucode.cpio")
    assert k.where == Where(str(path), 1)


def test_init_and_sections(full):
    spec, _ = full
    assert spec.init == ["linuxkit/init:v1", "linuxkit/runc:v1"]
    assert [e.name for e in spec.onboot] == ["sysctl"]
    assert [e.name for e in spec.onshutdown] == ["bye"]
    assert [e.name for e in spec.services] == ["web"]
    assert spec.onboot[0].where.line == 11 and spec.services[0].where.line == 29


def test_every_image_field_kept_with_linuxkit_names(full):
    spec, _ = full
    sysctl = spec.onboot[0].config
    assert sysctl["capabilities"] == ["CAP_SYS_ADMIN"]
    assert sysctl["capabilities.add"] == ["CAP_NET_ADMIN"]
    assert sysctl["ambient"] == ["CAP_NET_RAW"]
    assert sysctl["sysctl"] == {"net.ipv4.ip_forward": "1"}
    assert (sysctl["net"], sysctl["pid"], sysctl["ipc"], sysctl["uts"], sysctl["userns"]) == ("host",) * 5
    web = spec.services[0].config
    assert set(web) == {
        "mounts", "binds", "binds.add", "devices", "tmpfs", "env", "cwd", "hostname", "maskedPaths",
        "readonlyPaths", "uid", "gid", "additionalGids", "noNewPrivileges", "oomScoreAdj",
        "rootfsPropagation", "cgroupsPath", "resources", "rlimits", "uidMappings", "gidMappings",
        "annotations", "runtime"}
    assert web["mounts"][1] == {"type": "mqueue"}
    assert web["devices"][0] == {"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232, "mode": "0666"}
    assert web["uid"] == "sysctl" and web["gid"] == 1000 and web["additionalGids"] == ["bye", 10]
    assert web["resources"]["memory"]["limit"] == 67108864
    assert web["resources"]["hugepageLimits"] == [{"pageSize": "2MB", "limit": 0}]
    assert web["runtime"]["bindNS"] == {"net": "/run/netns/web", "uts": "/run/utsns/web"}
    assert web["runtime"]["interfaces"][0]["createInRoot"] is False
    assert spec.onshutdown[0].config == {"command": ["/bin/echo", "bye"]}
    assert "name" not in web and "image" not in web


def test_files(full):
    spec, path = full
    motd, empty, localtime, meta, extra, home = spec.files
    assert motd.path == "etc/motd" and motd.contents == "hello" and motd.mode == 0o644
    assert motd.uid == "web" and motd.gid == 0 and motd.where == Where(str(path), 80)
    assert empty.directory and empty.mode is None and empty.effective_mode == 0o700
    assert motd.effective_mode == 0o644 and localtime.effective_mode == 0o600
    assert localtime.symlink == "/usr/share/zoneinfo/UTC"
    assert meta.metadata == "yaml"
    assert extra.source == str(path.parent / "extra.conf") and extra.optional
    assert home.source == os.path.expanduser("~/home.conf")


def test_volumes(full):
    spec, _ = full
    data, scratch = spec.volumes
    assert (data.name, data.image, data.readonly, data.format, data.platforms) == (
        "data", "alpine:3.19", True, "filesystem", ["linux/amd64"])
    assert (scratch.image, scratch.readonly, scratch.format, scratch.platforms) == (None, False, "filesystem", [])


def test_outputs_trust_notice_and_images(full):
    spec, path = full
    assert spec.outputs == ["kernel+initrd", "docker"]
    assert spec.notices == [f"{path}:103: trust: is accepted and ignored (as LinuxKit does today)"]
    assert spec.images() == ["linuxkit/kernel:6.1", "linuxkit/init:v1", "linuxkit/runc:v1",
                             "linuxkit/sysctl:v1", "busybox:latest", "nginx:alpine", "alpine:3.19"]


def test_to_dict_round_trips(full):
    spec, path = full
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    again = load_spec_text(text, "again.yml", base=path.parent)
    assert again.to_dict() == spec.to_dict()
    assert spec.to_dict()["kernel"]["tar"] == "none"
    assert spec.to_dict()["files"][0]["mode"] == "0644"


def test_seed_loads_as_is():
    spec = load_spec([SEED])
    assert spec.name == "seed"
    assert spec.outputs == ["kernel+initrd", "iso-bios", "iso-efi"]
    assert spec.kernel.image == "mobylinux/kernel:4.9.x"
    assert spec.kernel.cmdline == "console=ttyS0 console=tty0 page_poison=1"
    assert spec.kernel.tar == "kernel.tar" and spec.kernel.binary == "kernel"
    assert len(spec.init) == 4
    assert [e.name for e in spec.onboot] == ["sysctl", "binfmt", "dhcpcd"]
    assert [e.name for e in spec.services] == ["rngd", "nginx"]
    assert spec.onshutdown == []
    assert len(spec.notices) == 1 and spec.notices[0].startswith(f"{SEED}:61: trust:")
    assert spec.files[0].path == "etc/docker/daemon.json" and spec.files[0].contents == '{"debug": true}'
    assert spec.services[0].config == {"capabilities": ["CAP_SYS_ADMIN"], "oomScoreAdj": -800, "readonly": True}
    assert len(spec.images()) == 10


def test_merge_kernel_overrides_and_lists_append(tmp_path: Path):
    a = tmp_path / "base.yml"
    b = tmp_path / "extra.yaml"
    a.write_text("kernel: {image: k:1, cmdline: console=ttyS0, tar: none}\ninit: [i:1]\n"
                 "services: [{name: a, image: x:1}]\nfiles: [{path: a, contents: a}]\n"
                 "outputs: [{format: tar}]\n")
    b.write_text("kernel: {image: k:2, cmdline: ''}\ninit: [i:2]\nonboot: [{name: b, image: y:1}]\n"
                 "services: [{name: c, image: z:1}]\nfiles: [{path: b, contents: b}]\n"
                 "volumes: [{name: v}]\noutputs: [{format: tar}, {format: iso-bios}]\n")
    spec = load_spec([a, b])
    assert spec.name == "base" and spec.sources == [a, b]
    assert spec.kernel.image == "k:2" and spec.kernel.cmdline == "console=ttyS0" and spec.kernel.tar is None
    assert spec.init == ["i:1", "i:2"]
    assert [e.name for e in spec.services] == ["a", "c"] and [e.name for e in spec.onboot] == ["b"]
    assert [f.path for f in spec.files] == ["a", "b"] and [v.name for v in spec.volumes] == ["v"]
    assert spec.outputs == ["tar", "iso-bios"]
    assert spec.services[1].where.file == str(b)


def test_merge_duplicate_service_across_files(tmp_path: Path):
    a = tmp_path / "a.yml"
    b = tmp_path / "b.yml"
    a.write_text("services:\n  - name: web\n    image: x:1\n")
    b.write_text("\n\nservices:\n  - name: web\n    image: y:1\n")
    with pytest.raises(SpecError) as info:
        load_spec([a, b])
    assert info.value.where == f"{b}:4" and f"first at {a}:2" in info.value.message


def test_same_name_in_onboot_and_services_is_a_notice():
    spec = load_spec_text("onboot: [{name: x, image: a:1}]\nservices: [{name: x, image: b:1}]\n")
    assert any("'x' is used 2 times" in n for n in spec.notices)


def test_kernel_override_only_cmdline_across_files(tmp_path: Path):
    a = tmp_path / "a.yml"
    b = tmp_path / "b.yml"
    a.write_text("kernel: {image: k:1}\n")
    b.write_text("kernel: {cmdline: quiet}\n")
    spec = load_spec([a, b])
    assert (spec.kernel.image, spec.kernel.cmdline) == ("k:1", "quiet")


def test_empty_file_and_empty_sections():
    spec = load_spec_text("", "empty.yml")
    assert spec.name == "empty" and spec.kernel is None and spec.images() == [] and spec.outputs == []
    spec = load_spec_text("services:\nonboot:\n", "x.yml")
    assert spec.services == [] and spec.onboot == []


def test_anchors_and_merge_keys_are_allowed():
    spec = load_spec_text(
        "x-base: &base\n  image: busybox:1\n  readonly: true\n" if False else
        "services:\n  - &web {name: a, image: busybox:1, readonly: true}\n"
        "  - <<: *web\n    name: b\n")
    assert [(e.name, e.image, e.config) for e in spec.services] == [
        ("a", "busybox:1", {"readonly": True}), ("b", "busybox:1", {"readonly": True})]


def test_uid_names_resolve_against_any_section():
    spec = load_spec_text("onshutdown: [{name: late, image: a:1}]\n"
                          "services: [{name: s, image: b:1, uid: late, gid: root, additionalGids: ['']}]\n")
    assert spec.services[0].config["uid"] == "late"


def test_capabilities_all_and_none_any_case():
    spec = load_spec_text("services:\n - {name: a, image: b:1, capabilities: [ALL]}\n"
                          " - {name: c, image: d:1, capabilities: [none], ambient: [All]}\n")
    assert spec.services[0].config["capabilities"] == ["ALL"]
    assert spec.services[1].config["ambient"] == ["All"]


def test_load_spec_accepts_single_path_and_rejects_empty(tmp_path: Path):
    assert load_spec(SEED).name == "seed"
    with pytest.raises(SpecError):
        load_spec([])


# --- the YamlNode API (used by the plugin for NAME.test.yml) --------------------------------------
def test_node_api_lines_paths_and_typed_access(tmp_path: Path):
    path = tmp_path / "suite.test.yml"
    path.write_text("boot:\n  timeout: 30\n  markers:\n    - services started\n    - 7\nname: x\n")
    doc = load_yaml(path)
    fields = doc.mapping(allowed=("boot", "name"), required=("boot",))
    boot = fields["boot"].mapping()
    assert boot["timeout"].as_int() == 30 and boot["timeout"].line == 2
    assert doc.line_of("boot", "markers", 1) == 5
    assert doc.line_of("boot", "missing") == 1
    markers = boot["markers"].sequence()
    assert markers[0].as_str() == "services started"
    with pytest.raises(SpecError) as info:
        boot["markers"].as_str_list()
    assert info.value.where == f"{path}:5" and info.value.message.startswith("boot.markers[1]: expected a string")
    err = fields["name"].error("bad name", hint="h")
    assert isinstance(err, SpecError) and err.where == f"{path}:6" and err.hint == "h"
    assert doc.plain() == {"boot": {"timeout": 30, "markers": ["services started", 7]}, "name": "x"}
    with pytest.raises(SpecError, match="unknown key 'name'"):
        doc.mapping(allowed=("boot",))
    with pytest.raises(SpecError, match="missing required key 'checks'"):
        doc.mapping(required=("checks",))


def test_node_typed_helpers_reject_wrong_types():
    doc = load_yaml_text("a: true\nb: 1.5\nc: [1]\nd: {k: v}\n", "t.yml").mapping()
    assert doc["a"].as_bool() is True and doc["b"].as_number() == 1.5
    assert doc["d"].as_str_map() == {"k": "v"} and doc["c"].kind == "sequence"
    for call in (doc["a"].as_int, doc["b"].as_int, doc["c"].as_str, doc["d"].sequence, doc["c"].as_bool):
        with pytest.raises(SpecError):
            call()


def test_json_node_carries_error_class():
    node = load_json_node('{"a": [1]}', "label", error_class=ImageError)
    with pytest.raises(ImageError) as info:
        node.mapping()["a"].as_str()
    assert info.value.where == "label" and "a: expected a string" in info.value.message
    with pytest.raises(ImageError, match="invalid JSON"):
        load_json_node("{", "label", error_class=ImageError)


def test_node_from_plain_paths():
    node = YamlNode.from_plain({"x": [{"y": 1}]}, "f")
    assert node.value["x"].value[0].value["y"].path == "x[0].y"


def test_json_node_refuses_deep_nesting():
    with pytest.raises(ImageError, match="nested"):
        load_json_node("[" * 100 + "]" * 100, "label", error_class=ImageError)
    with pytest.raises(ImageError):
        load_json_node("[" * 100000 + "]" * 100000, "label", error_class=ImageError)


def test_uid_out_of_range():
    with pytest.raises(SpecError, match="between 0 and 4294967295"):
        load_spec_text("services: [{name: a, image: b:1, uid: 4294967296}]\n")

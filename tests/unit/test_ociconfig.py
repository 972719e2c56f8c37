"""LinuxKit's ConfigToOCI rules, checked field by field on the seed and on each rule alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lkit.build.ociconfig import (Bundle, IdMap, ImageInfo, bundle_prefix, generate, generate_all,
                                  label_config)
from lkit.errors import ImageError, SpecError
from lkit.spec import load_spec, load_spec_text
from lkit.core.capabilities import CAPABILITIES

SEED = Path(__file__).resolve().parents[1] / "data" / "specs" / "good" / "seed.yml"
DEFAULT_MOUNT_DESTS = ["/dev", "/dev/pts", "/proc", "/sys", "/sys/fs/cgroup"]
NGINX_CAPS = ["CAP_NET_BIND_SERVICE", "CAP_CHOWN", "CAP_SETUID", "CAP_SETGID", "CAP_DAC_OVERRIDE"]


def image(ref: str = "x:1", label: dict | str | None = None, **config) -> ImageInfo:
    if label is not None:
        config["Labels"] = {"org.mobyproject.config": label if isinstance(label, str) else json.dumps(label)}
    return ImageInfo(ref, config)


def one(yaml_entry: str, info: ImageInfo | None = None, extra: str = "") -> Bundle:
    spec = load_spec_text(f"services:\n  - name: svc\n    image: x:1\n{yaml_entry}{extra}", "t.yml")
    return generate(spec.services[0], info or image(), IdMap.from_spec(spec))


@pytest.fixture(scope="module")
def seed() -> dict[str, Bundle]:
    spec = load_spec([SEED])
    infos = {e.image: image(e.image, Cmd=["/bin/" + e.name], Env=["PATH=/usr/bin:/bin"]) for _, _, e in spec.entries()}
    bundles = generate_all(spec, infos)
    return {entry.name: bundle for (_, _, entry), bundle in zip(spec.entries(), bundles)}


# --- the seed's five containers ------------------------------------------------------------
def test_seed_bundle_paths(seed):
    assert sorted(b.prefix for b in seed.values()) == [
        "containers/onboot/000-sysctl", "containers/onboot/001-binfmt", "containers/onboot/002-dhcpcd",
        "containers/services/nginx", "containers/services/rngd"]


def test_seed_nginx_five_capabilities_in_every_set(seed):
    config = seed["nginx"].config
    caps = config["process"]["capabilities"]
    assert caps["effective"] == NGINX_CAPS
    for key in ("bounding", "inheritable", "permitted"):
        assert caps[key] == sorted(NGINX_CAPS)
    assert "ambient" not in caps
    assert config["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}]
    assert config["root"] == {"path": "rootfs"} and seed["nginx"].readonly is False
    assert config["process"]["args"] == ["/bin/nginx"] and config["process"]["cwd"] == "/"
    assert config["process"]["user"] == {"uid": 0, "gid": 0}


def test_seed_rngd_oom_and_readonly_root(seed):
    config = seed["rngd"].config
    assert config["process"]["oomScoreAdj"] == -800
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert seed["rngd"].readonly is True and seed["rngd"].root == "containers/services/rngd/rootfs"
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts["/dev"]["options"][-1] == "ro" and mounts["/sys"]["options"][-1] == "ro"
    assert "ro" not in mounts["/proc"]["options"]
    assert config["process"]["capabilities"]["effective"] == ["CAP_SYS_ADMIN"]
    assert seed["rngd"].runtime["mounts"] == [{
        "destination": "/containers/services/rngd/rootfs", "source": "/containers/services/rngd/rootfs",
        "options": ["bind"]}]


def test_seed_sysctl_host_namespaces(seed):
    config = seed["sysctl"].config
    assert config["linux"]["namespaces"] == [{"type": "mount"}]
    assert config["process"]["capabilities"]["bounding"] == ["CAP_SYS_ADMIN"]
    assert config["root"]["readonly"] is True


def test_seed_dhcpcd_binds_and_command(seed):
    config = seed["dhcpcd"].config
    mounts = {m["destination"]: m for m in config["mounts"]}
    assert mounts["/var"] == {"destination": "/var", "type": "bind", "source": "/var",
                              "options": ["rw", "rbind", "rshared"]}
    assert mounts["/etc"] == {"destination": "/etc", "type": "bind", "source": "/tmp/etc",
                              "options": ["rw", "rbind", "rshared"]}
    assert [m["destination"] for m in config["mounts"]] == sorted(DEFAULT_MOUNT_DESTS + ["/etc", "/var"])
    assert config["process"]["args"] == ["/sbin/dhcpcd", "--nobackground", "-f", "/dhcpcd.conf", "-1"]
    assert config["linux"]["namespaces"] == [{"type": "pid"}, {"type": "mount"}]
    assert config["process"]["capabilities"]["effective"] == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_NET_RAW"]
    runtime = seed["dhcpcd"].runtime
    assert [m.get("type") for m in runtime["mounts"]] == ["tmpfs", None, "overlay"]
    assert runtime["mounts"][2]["options"] == [
        "lowerdir=/containers/onboot/002-dhcpcd/lower", "upperdir=/containers/onboot/002-dhcpcd/tmp/upper",
        "workdir=/containers/onboot/002-dhcpcd/tmp/work"]


def test_seed_binfmt_bind(seed):
    mounts = {m["destination"]: m for m in seed["binfmt"].config["mounts"]}
    assert mounts["/binfmt_misc"] == {"destination": "/binfmt_misc", "type": "bind",
                                      "source": "/proc/sys/fs/binfmt_misc", "options": ["rw", "rbind", "rshared"]}
    assert seed["binfmt"].config["process"]["capabilities"] == {}


def test_seed_runtime_shape_and_json(seed):
    runtime = seed["nginx"].runtime
    assert list(runtime) == ["cgroups", "mounts", "mkdir", "interfaces", "bindNS", "namespace"]
    assert runtime["bindNS"] == dict.fromkeys(("cgroup", "ipc", "mnt", "net", "pid", "user", "uts"), "")
    text = seed["nginx"].config_json()
    assert json.loads(text) == seed["nginx"].config and not text.endswith(b"\n")  # Go's MarshalIndent
    assert list(seed["nginx"].config) == ["ociVersion", "process", "root", "mounts", "linux"]


# --- individual rules ----------------------------------------------------------------------
def test_no_capabilities_unless_listed():
    assert one("").config["process"]["capabilities"] == {}


def test_all_and_none():
    caps = one("    capabilities: [all]\n").config["process"]["capabilities"]
    assert caps["effective"] == list(CAPABILITIES) and caps["bounding"] == sorted(CAPABILITIES)
    assert one("    capabilities: [NONE]\n", image(label={"capabilities": ["CAP_KILL"]})
               ).config["process"]["capabilities"] == {}


def test_ambient_joins_bounding_not_effective():
    caps = one("    capabilities: [CAP_KILL]\n    ambient: [CAP_NET_RAW, CAP_KILL]\n").config["process"]["capabilities"]
    assert caps["effective"] == ["CAP_KILL"]
    assert caps["bounding"] == caps["permitted"] == caps["inheritable"] == ["CAP_KILL", "CAP_NET_RAW"]
    assert caps["ambient"] == ["CAP_NET_RAW", "CAP_KILL"]


def test_label_merge_rules():
    label = {"capabilities": ["CAP_CHOWN"], "binds": ["/a:/a"], "command": ["/label"], "env": ["L=1"],
             "cwd": "/label", "readonly": True, "net": "new", "oomScoreAdj": 5, "hostname": "lbl",
             "sysctl": {"a.b": "1"}}
    info = image(label=label, Entrypoint=["/entry"], Cmd=["arg"], Env=["I=1"], WorkingDir="/img")
    b = one("    capabilities.add: [CAP_KILL]\n    binds.add: ['/b:/b']\n", info)
    process = b.config["process"]
    assert process["capabilities"]["effective"] == ["CAP_CHOWN", "CAP_KILL"]
    assert {"/a", "/b"} <= {m["destination"] for m in b.config["mounts"]}
    assert process["args"] == ["/label"] and process["env"] == ["L=1"] and process["cwd"] == "/label"
    assert b.readonly and process["oomScoreAdj"] == 5 and b.config["hostname"] == "lbl"
    assert {"type": "network"} in b.config["linux"]["namespaces"]
    assert b.config["linux"]["sysctl"] == {"a.b": "1"}
    # the spec replaces the label's field (capabilities, binds, command, readonly, ...)
    b = one("    capabilities: [CAP_SYS_ADMIN]\n    capabilities.add: [CAP_KILL]\n    binds: ['/c:/c']\n"
            "    command: [/spec]\n    env: []\n    readonly: false\n    net: host\n", info)
    assert b.config["process"]["capabilities"]["effective"] == ["CAP_SYS_ADMIN"]
    dests = {m["destination"] for m in b.config["mounts"]}
    assert "/c" in dests and "/a" not in dests
    assert b.config["process"]["args"] == ["/spec"] and "env" not in b.config["process"]
    assert not b.readonly and {"type": "network"} not in b.config["linux"]["namespaces"]


def test_image_config_command_env_cwd_defaults():
    b = one("", image(Entrypoint=["/e"], Cmd=["c"], Env=["A=1"], WorkingDir="/w"))
    assert (b.config["process"]["args"], b.config["process"]["env"], b.config["process"]["cwd"]) == (
        ["/e", "c"], ["A=1"], "/w")
    assert one("    cwd: /spec\n", image(WorkingDir="/w")).config["process"]["cwd"] == "/spec"


def test_namespaces_new_none_and_paths():
    ns = one("    net: none\n    ipc: new\n    uts: /proc/1/ns/uts\n    pid: host\n    userns: new\n"
             ).config["linux"]["namespaces"]
    assert ns == [{"type": "network"}, {"type": "ipc"}, {"type": "uts", "path": "/proc/1/ns/uts"},
                  {"type": "user"}, {"type": "mount"}]
    assert one("    pid: /proc/1/ns/pid\n").config["linux"]["namespaces"][0] == {
        "type": "pid", "path": "/proc/1/ns/pid"}


def test_mounts_tmpfs_binds_keyed_and_sorted():
    b = one("    tmpfs: ['/tmp:size=1m', /run]\n    binds: ['/x:/dev:ro']\n"
            "    mounts: [{type: proc}, {source: mqueue}, {destination: /dev, options: [mode=700]}]\n")
    mounts = {m["destination"]: m for m in b.config["mounts"]}
    assert mounts["/tmp"] == {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}
    assert mounts["/run"] == {"destination": "/run", "type": "tmpfs", "source": "tmpfs"}
    # mounts come after binds: the /dev mount replaces both the default and the bind
    assert mounts["/dev"] == {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=700"]}
    assert mounts["/proc"] == {"destination": "/proc", "type": "proc", "source": "proc"}
    assert mounts["/dev/mqueue"] == {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue"}
    dests = [m["destination"] for m in b.config["mounts"]]
    assert dests == sorted(dests)
    assert one("    binds: ['/x:/y:ro,nosuid']\n").config["mounts"][-1]["options"] == ["ro", "nosuid", "rbind"]


def test_uid_gid_by_name_and_additional_gids():
    spec = load_spec_text("onboot: [{name: a, image: x:1}]\nonshutdown: [{name: b, image: x:1}]\n"
                          "services:\n  - {name: c, image: x:1, uid: c, gid: a, additionalGids: [b, 7, root]}\n")
    idmap = IdMap.from_spec(spec)
    assert idmap.ids == {"a": 100, "b": 101, "c": 102}
    user = generate(spec.services[0], image(), idmap).config["process"]["user"]
    assert user == {"uid": 102, "gid": 100, "additionalGids": [101, 7, 0]}


def test_label_uid_unknown_name_is_image_error():
    with pytest.raises(ImageError, match="unknown user or group 'ghost'"):
        one("", image(label={"uid": "ghost"}))


def test_process_and_linux_fields():
    b = one("    rlimits: ['nofile,100,200', 'RLIMIT_CORE,unlimited,0']\n    noNewPrivileges: true\n"
            "    hostname: h\n    annotations: {k: v}\n    rootfsPropagation: rslave\n    cgroupsPath: /p\n"
            "    maskedPaths: [/proc/kcore]\n    readonlyPaths: [/proc/sys]\n"
            "    uidMappings: [{hostID: 1000, containerID: 0, size: 10}]\n"
            "    resources: {memory: {limit: 1000}, blockio: {weight: 10}}\n"
            "    devices:\n      - {path: /dev/kvm, type: c, major: 10, minor: 232, mode: '0660'}\n"
            "      - {path: all, type: b}\n")
    process, linux = b.config["process"], b.config["linux"]
    assert process["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 200, "soft": 100},
                                  {"type": "RLIMIT_CORE", "hard": 0, "soft": 2**64 - 1}]
    assert process["noNewPrivileges"] is True
    assert b.config["hostname"] == "h" and b.config["annotations"] == {"k": "v"}
    assert linux["rootfsPropagation"] == "rslave" and linux["cgroupsPath"] == "/p"
    assert linux["maskedPaths"] == ["/proc/kcore"] and linux["readonlyPaths"] == ["/proc/sys"]
    # LinuxKit decodes the mapping with yaml.v3, which only knows `hostid`: hostID as written becomes 0.
    assert linux["uidMappings"] == [{"containerID": 0, "hostID": 0, "size": 10}]
    assert linux["devices"] == [{"path": "/dev/kvm", "type": "c", "major": 10, "minor": 232, "fileMode": 0o660}]
    assert linux["resources"]["devices"] == [
        {"allow": True, "type": "c", "major": 10, "minor": 232, "access": "rwm"},
        {"allow": True, "type": "b", "access": "rwm"}]
    assert linux["resources"]["memory"] == {"limit": 1000} and linux["resources"]["blockIO"] == {"weight": 10}


def test_runtime_fields_merge_field_by_field():
    label = {"runtime": {"mkdir": ["/label"], "cgroups": ["lc"], "bindNS": {"net": "/l/net", "pid": "/l/pid"}}}
    b = one("    runtime:\n      mkdir: [/spec]\n      bindNS: {net: /s/net}\n      namespace: ns\n"
            "      interfaces: [{name: eth1, add: veth, peer: p1}]\n"
            "      mounts: [{destination: /var/lib, options: [remount, ro]}]\n", image(label=label))
    rt = b.runtime
    assert rt["mkdir"] == ["/spec"] and rt["cgroups"] == ["lc"] and rt["namespace"] == "ns"
    assert rt["bindNS"]["net"] == "/s/net" and rt["bindNS"]["pid"] == "/l/pid" and rt["bindNS"]["uts"] == ""
    assert rt["interfaces"] == [{"name": "eth1", "add": "veth", "peer": "p1", "createInRoot": False}]
    assert rt["mounts"][-1] == {"destination": "/var/lib", "options": ["remount", "ro"]}
    assert len(rt["mounts"]) == 4


# --- labels ------------------------------------------------------------------------------------
def test_label_config_parsed_and_validated():
    assert label_config(image()) == {}
    assert label_config(image(label={"capabilities": ["CAP_KILL"], "readonly": True})) == {
        "capabilities": ["CAP_KILL"], "readonly": True}


@pytest.mark.parametrize(("label", "message"), [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "must be a JSON object"),
    ({"name": "x"}, "name cannot be set"),
    ({"image": "x"}, "image cannot be set"),
    ({"capabilities": ["CAP_FLY"]}, "unknown capability 'CAP_FLY'"),
    ({"readonly": "yes"}, "readonly: expected true or false"),
    ({"frobnicate": 1}, "unknown key 'frobnicate'"),
    ({"binds": ["/nodest"]}, "invalid bind"),
])
def test_bad_labels_are_image_errors(label, message):
    with pytest.raises(ImageError) as info:
        label_config(image("docker.io/lkit/bad:1", label=label))
    assert message in str(info.value)
    assert "docker.io/lkit/bad:1" in str(info.value)


# --- helpers -----------------------------------------------------------------------------------
def test_bundle_prefix():
    assert bundle_prefix("onboot", 3, "a") == "containers/onboot/003-a"
    assert bundle_prefix("onshutdown", 0, "b") == "containers/onshutdown/000-b"
    assert bundle_prefix("services", 9, "c") == "containers/services/c"
    with pytest.raises(ValueError):
        bundle_prefix("init", 0, "x")


def test_generate_all_reuses_unpacked_image_for_readonly():
    spec = load_spec_text("onboot: [{name: a, image: x:1, readonly: true}]\n"
                          "services: [{name: b, image: x:1, readonly: true}, {name: c, image: y:1}]\n")
    a, b, c = generate_all(spec, {"x:1": image("x:1"), "y:1": image("y:1")})
    assert a.root == "containers/onboot/000-a/rootfs"
    assert b.root == a.root and b.runtime["mounts"][0]["source"] == "/containers/onboot/000-a/rootfs"
    assert c.root == "containers/services/c/lower"


def test_spec_rlimit_error_is_spec_error_with_line():
    with pytest.raises(SpecError) as info:
        load_spec_text("services:\n  - name: a\n    image: x:1\n    rlimits: ['nofile,1']\n", "r.yml")
    assert info.value.where == "r.yml:4"


# --- property: the capability sets always obey LinuxKit's rules ------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

cap_lists = st.lists(st.sampled_from(CAPABILITIES), max_size=6)


@settings(max_examples=60, deadline=None)
@given(cap_lists, cap_lists, cap_lists)
def test_capability_sets_property(listed, ambient, label_caps):
    spec_fields = ""
    if listed:
        spec_fields += f"    capabilities: {json.dumps(listed)}\n"
    if ambient:
        spec_fields += f"    ambient: {json.dumps(ambient)}\n"
    caps = one(spec_fields, image(label={"capabilities": label_caps} if label_caps else None)
               ).config["process"]["capabilities"]
    chosen = list(listed or label_caps)  # duplicates kept, as LinuxKit writes them
    assert caps.get("effective", []) == chosen
    union = sorted(set(chosen) | set(ambient))
    for key in ("bounding", "permitted", "inheritable"):
        assert caps.get(key, []) == union
    assert caps.get("ambient", []) == list(ambient)


def test_capabilities_add_keeps_a_label_duplicate_like_linuxkit():
    """LinuxKit's mergeStrings never fills its `seen` map: a cap in the label and in capabilities.add
    appears twice in the effective set (and once in the sorted sets)."""
    caps = one("    capabilities.add: [CAP_NET_RAW, CAP_CHOWN]\n",
               image(label={"capabilities": ["CAP_CHOWN"]})).config["process"]["capabilities"]
    assert caps["effective"] == ["CAP_CHOWN", "CAP_NET_RAW", "CAP_CHOWN"]
    assert caps["bounding"] == ["CAP_CHOWN", "CAP_NET_RAW"]


def test_bundle_json_is_go_encoding():
    config = one("    env: [\"A=<b>&c\", \"B=é\"]\n    sysctl: {z.b: \"1\", a.b: \"2\"}\n", image())
    text = config.config_json()
    assert b'"A=\\u003cb\\u003e\\u0026c"' in text and '"B=é"'.encode() in text
    assert text.index(b'"a.b"') < text.index(b'"z.b"') and not text.endswith(b"\n")


def test_idmap_resolve_for_files():
    idmap = IdMap({"web": 104})
    assert idmap.resolve("web", "f.yml:3") == 104 and idmap.resolve("root") == 0 and idmap.resolve(7) == 7
    with pytest.raises(SpecError) as info:
        idmap.resolve("ghost", "f.yml:3")
    assert info.value.where == "f.yml:3" and "web" in info.value.hint


def test_generate_finds_the_entry_bundle_path_from_the_idmap():
    spec = load_spec_text("onboot: [{name: a, image: x:1}]\nonshutdown: [{name: b, image: x:1}]\n"
                          "services: [{name: c, image: x:1}]\n")
    idmap = IdMap.from_spec(spec)
    prefixes = [generate(e, image(), idmap).prefix for _, _, e in spec.entries()]
    assert prefixes == ["containers/onboot/000-a", "containers/onshutdown/000-b", "containers/services/c"]
    onboot = generate(spec.onboot[0], image(), idmap)
    assert onboot.runtime["mounts"][0]["destination"] == "/containers/onboot/000-a/tmp"
    assert generate(spec.onboot[0], image(), idmap, prefix="p/q").prefix == "p/q"

"""LinuxKit's per-image schema as small checking functions over `YamlNode`s.

One table serves the spec loader and the `org.mobyproject.config` image label (whose errors come
out as ImageError because the label's YamlNode tree carries that error class). Beyond LinuxKit's JSON
schema, values LinuxKit only rejects at build time (capability names, binds, tmpfs, rlimits, device
modes, mounts without type, namespaces) are checked here already, so the error can name the line.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable
from typing import Any

from lkit.core.capabilities import CAPABILITIES, NUMBERS
from lkit.spec.yamlmarks import YamlNode, describe

Check = Callable[[YamlNode], Any]

RLIMITS = ("RLIMIT_CPU", "RLIMIT_FSIZE", "RLIMIT_DATA", "RLIMIT_STACK", "RLIMIT_CORE", "RLIMIT_RSS",
           "RLIMIT_NPROC", "RLIMIT_NOFILE", "RLIMIT_MEMLOCK", "RLIMIT_AS", "RLIMIT_LOCKS",
           "RLIMIT_SIGPENDING", "RLIMIT_MSGQUEUE", "RLIMIT_NICE", "RLIMIT_RTPRIO", "RLIMIT_RTTIME")
UNLIMITED = 2**64 - 1
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave", "unbindable", "runbindable")
# Mount types whose destination LinuxKit fills in when it is left out.
DEFAULT_MOUNTPOINTS = {"proc": "/proc", "devpts": "/dev/pts", "sysfs": "/sys",
                       "cgroup": "/sys/fs/cgroup", "mqueue": "/dev/mqueue"}
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --- primitive checks -------------------------------------------------------------------------
def string(node: YamlNode) -> str:
    return node.as_str()


def boolean(node: YamlNode) -> bool:
    return node.as_bool()


def integer(node: YamlNode) -> int:
    return node.as_int()


def strings(node: YamlNode) -> list[str]:
    return node.as_str_list()


def mapstring(node: YamlNode) -> dict[str, str]:
    return node.as_str_map()


def str_or_int(node: YamlNode) -> str | int:
    if isinstance(node.value, str):
        return node.value
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        if not 0 <= node.value <= 2**32 - 1:
            raise node.error(f"must be between 0 and {2**32 - 1}, got {node.value}")
        return node.value
    raise node.error(f"expected a number or a name, got {describe(node.value)}")


def obj(fields: dict[str, Check], required: tuple[str, ...] = ()) -> Check:
    """A mapping with exactly these keys (unknown keys are errors listing the allowed ones)."""

    def check(node: YamlNode) -> dict[str, Any]:
        items = node.mapping(allowed=tuple(fields), required=required)
        return {key: fields[key](child) for key, child in items.items()}

    return check


def list_of(item: Check) -> Check:
    def check(node: YamlNode) -> list[Any]:
        return [item(child) for child in node.sequence()]

    return check


def octal_string(node: YamlNode, limit: int = 0o7777) -> int:
    """A mode written as an octal string ("0644"); ints are refused as YAML reads 0644 as a number."""
    if isinstance(node.value, int) and not isinstance(node.value, bool):
        raise node.error(f"mode must be an octal string, got integer {node.value}",
                         hint='quote it, e.g. mode: "0644"')
    text = node.as_str()
    if not re.fullmatch(r"[0-7]{1,5}", text) or int(text, 8) > limit:
        raise node.error(f"invalid mode {text!r}: expected an octal string up to {limit:o}, e.g. \"0644\"")
    return int(text, 8)


# --- semantic checks --------------------------------------------------------------------------
def capability_list(node: YamlNode) -> list[str]:
    """Capability names; a single `all` or `none` (any case) stands for every or no capability."""
    items = node.sequence()
    names: list[str] = []
    for child in items:
        name = child.as_str()
        if name.lower() in ("all", "none"):
            if len(items) != 1:
                raise child.error(f"{name!r} must be the only entry of the list",
                                  hint="write [all] or [none], or list capability names")
        elif name not in NUMBERS:
            close = difflib.get_close_matches(name.upper() if name.upper() in NUMBERS else name,
                                              CAPABILITIES, n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            raise child.error(f"unknown capability {name!r}",
                              hint=f"{guess}allowed: all, none, " + ", ".join(CAPABILITIES))
        names.append(name)
    return names


def bind(node: YamlNode) -> str:
    text = node.as_str()
    parts = text.split(":")
    if len(parts) < 2 or len(parts) > 3 or not parts[0] or not parts[1]:
        raise node.error(f"invalid bind {text!r}", hint="write SOURCE:DESTINATION or SOURCE:DESTINATION:OPTIONS, "
                         "e.g. /var:/var or /etc/ssl:/etc/ssl:ro")
    if not parts[1].startswith("/"):
        raise node.error(f"bind destination {parts[1]!r} must be an absolute path")
    return text


def tmpfs(node: YamlNode) -> str:
    text = node.as_str()
    parts = text.split(":")
    if len(parts) > 2 or not parts[0].startswith("/"):
        raise node.error(f"invalid tmpfs {text!r}", hint="write DESTINATION or DESTINATION:OPTIONS, "
                         "e.g. /tmp or /tmp:size=64m,mode=1777")
    return text


def parse_rlimit(text: str) -> tuple[str, int, int]:
    """("nofile,100,200") -> ("RLIMIT_NOFILE", 100, 200); ValueError says what is wrong."""
    parts = text.split(",")
    if len(parts) != 3:
        raise ValueError(f"invalid rlimit {text!r}: expected NAME,SOFT,HARD, e.g. nofile,1024,4096")
    name = parts[0].strip().upper()
    if not name.startswith("RLIMIT_"):
        name = "RLIMIT_" + name
    if name not in RLIMITS:
        raise ValueError(f"unknown rlimit {parts[0].strip()!r}; allowed: "
                         + ", ".join(r.removeprefix("RLIMIT_").lower() for r in RLIMITS))
    values = []
    for raw in parts[1:]:
        raw = raw.strip()
        if raw.lower() == "unlimited":
            values.append(UNLIMITED)
        elif raw.isdigit() and int(raw) <= UNLIMITED:
            values.append(int(raw))
        else:
            raise ValueError(f"invalid rlimit value {raw!r} in {text!r}: expected a number or unlimited")
    return name, values[0], values[1]


def rlimit(node: YamlNode) -> str:
    text = node.as_str()
    try:
        parse_rlimit(text)
    except ValueError as exc:
        raise node.error(str(exc)) from None
    return text


def namespace(kind: str) -> Check:
    """net/pid/ipc/uts/userns: host (or root), new, none (net only), or a namespace path."""
    allowed = ["host", "root", "new"] + (["none"] if kind == "net" else [])

    def check(node: YamlNode) -> str:
        text = node.as_str()
        if text in allowed or text.startswith("/"):
            return text
        raise node.error(f"invalid {kind} namespace {text!r}",
                         hint="allowed: " + ", ".join(allowed) + ", or the path of a namespace to join")

    return check


def oom_score_adj(node: YamlNode) -> int:
    value = node.as_int()
    if not -1000 <= value <= 1000:
        raise node.error(f"oomScoreAdj {value} is outside -1000..1000")
    return value


def propagation(node: YamlNode) -> str:
    text = node.as_str()
    if text and text not in PROPAGATIONS:
        raise node.error(f"invalid rootfsPropagation {text!r}", hint="allowed: " + ", ".join(PROPAGATIONS))
    return text


def absolute_path(node: YamlNode) -> str:
    text = node.as_str()
    if not text.startswith("/"):
        raise node.error(f"{text!r} must be an absolute path")
    return text


IDMAPPING = obj({"hostID": integer, "containerID": integer, "size": integer})
_MOUNT_FIELDS = obj({"destination": string, "type": string, "source": string, "options": strings,
                     "uidmappings": list_of(IDMAPPING), "gidmappings": list_of(IDMAPPING)})


def mount(node: YamlNode) -> dict[str, Any]:
    """A mount; like LinuxKit, type may be implied by source and destination by type."""
    value: dict[str, Any] = _MOUNT_FIELDS(node)
    kind = value.get("type") or ""
    source = value.get("source") or ""
    if not kind and source in ("mqueue", "devpts", "proc", "sysfs", "cgroup"):
        kind = source
    if not kind and value.get("destination") == "/dev":
        kind = "tmpfs"
    if not kind:
        raise node.error(f"mount for destination {value.get('destination', '')!r} is missing type",
                         hint="add type: bind, tmpfs, proc, ...")
    if not value.get("destination") and kind not in DEFAULT_MOUNTPOINTS:
        raise node.error(f"mount of type {kind!r} is missing destination")
    return value


def device(node: YamlNode) -> dict[str, Any]:
    value: dict[str, Any] = obj({"path": string, "type": string, "major": integer, "minor": integer,
                                 "mode": string},
                                required=("path", "type"))(node)
    if value["path"] != "all":
        fields = node.mapping()
        if "mode" not in fields:
            raise node.error(f"device {value['path']!r} needs mode (an octal string such as \"0666\")")
        octal_string(fields["mode"], limit=0o777)
        if value["type"] not in ("c", "b", "u", "p"):
            raise fields["type"].error(f"invalid device type {value['type']!r}", hint="allowed: c, b, u, p")
    elif value["type"] not in ("a", "c", "b"):
        raise node.mapping()["type"].error(f"invalid device type {value['type']!r} for path all",
                                           hint="allowed: a, c, b")
    return value


_THROTTLE = list_of(obj({"major": integer, "minor": integer, "rate": integer}))
RESOURCES = obj({
    "devices": list_of(obj({"allow": boolean, "type": string, "major": integer, "minor": integer,
                            "access": string})),
    "memory": obj({"limit": integer, "reservation": integer, "swap": integer, "kernel": integer,
                   "kernelTCP": integer, "swappiness": integer, "disableOOMKiller": boolean}),
    "cpu": obj({"shares": integer, "quota": integer, "period": integer, "realtimeRuntime": integer,
                "realtimePeriod": integer, "cpus": string, "mems": string}),
    "pids": obj({"limit": integer}),
    "blockio": obj({"weight": integer, "leafWeight": integer,
                    "weightDevice": list_of(obj({"major": integer, "minor": integer, "weight": integer,
                                                 "leafWeight": integer})),
                    "throttleReadBpsDevice": _THROTTLE, "throttleWriteBpsDevice": _THROTTLE,
                    "throttleReadIOPSDevice": _THROTTLE, "throttleWriteIOPSDevice": _THROTTLE}),
    "hugepageLimits": list_of(obj({"pageSize": lambda n: str(str_or_int(n)), "limit": integer})),
    "network": obj({"classID": integer, "priorities": list_of(obj({"name": string, "priority": integer}))}),
})

RUNTIME = obj({
    "cgroups": strings,
    "mounts": list_of(_MOUNT_FIELDS),  # passed to the guest's init as written (remounts have no type)
    "mkdir": strings,
    "interfaces": list_of(obj({"name": string, "add": string, "peer": string, "createInRoot": boolean})),
    "bindNS": obj({kind: string for kind in ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")}),
    "namespace": string,
})

# Every per-image field (LinuxKit's ImageConfig), in LinuxKit's order.
IMAGE_FIELDS: dict[str, Check] = {
    "capabilities": capability_list,
    "capabilities.add": capability_list,
    "ambient": capability_list,
    "mounts": list_of(mount),
    "binds": list_of(bind),
    "binds.add": list_of(bind),
    "devices": list_of(device),
    "tmpfs": list_of(tmpfs),
    "command": strings,
    "env": strings,
    "cwd": string,
    "net": namespace("net"),
    "pid": namespace("pid"),
    "ipc": namespace("ipc"),
    "uts": namespace("uts"),
    "userns": namespace("userns"),
    "hostname": string,
    "readonly": boolean,
    "maskedPaths": list_of(absolute_path),
    "readonlyPaths": list_of(absolute_path),
    "uid": str_or_int,
    "gid": str_or_int,
    "additionalGids": list_of(str_or_int),
    "noNewPrivileges": boolean,
    "oomScoreAdj": oom_score_adj,
    "rootfsPropagation": propagation,
    "cgroupsPath": string,
    "resources": RESOURCES,
    "sysctl": mapstring,
    "rlimits": list_of(rlimit),
    "uidMappings": list_of(IDMAPPING),
    "gidMappings": list_of(IDMAPPING),
    "annotations": mapstring,
    "runtime": RUNTIME,
}
ENTRY_KEYS: tuple[str, ...] = ("name", "image", *IMAGE_FIELDS)


def image_config(node: YamlNode, fields: dict[str, YamlNode]) -> dict[str, Any]:
    """Validated per-image fields of one entry or label (name/image excluded), in the given order."""
    return {key: IMAGE_FIELDS[key](child) for key, child in fields.items() if key in IMAGE_FIELDS}


def container_name(node: YamlNode) -> str:
    """A container name: it becomes a directory (containers/services/NAME) and a runc id."""
    text = node.as_str()
    if not NAME_RE.match(text) or len(text) > 128:
        raise node.error(f"invalid name {text!r}",
                         hint="use letters, digits, '-', '_' and '.', starting with a letter or digit")
    return text


def image_ref(node: YamlNode) -> str:
    text = node.as_str()
    if not text or any(c.isspace() for c in text) or text != text.strip():
        raise node.error(f"invalid image reference {text!r}", hint="e.g. linuxkit/init:v1.0 or nginx:alpine")
    return text

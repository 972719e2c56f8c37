"""`files: - metadata: yaml|json`: the merged spec, written as LinuxKit's Go code marshals its Moby struct.

LinuxKit writes its own struct, not the user's YAML: image references expanded (docker.io/...),
every section present (empty ones as [] in YAML, null in JSON), `directory` and `optional` of each
file always, fields in the struct's order. YAML goes through yaml.v2 (double quotes for strings that
would read back as another type, literal blocks for multi-line text), JSON through encoding/json.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from lkit.build import gojson, ociconfig
from lkit.images import refs
from lkit.spec.model import FileEntry, ImageEntry, Spec, Volume, file_dict, volume_dict

# ImageConfig's fields in declaration order (moby/config.go); yaml and json names are the same.
IMAGE_FIELDS = (
    "capabilities", "capabilities.add", "ambient", "mounts", "binds", "binds.add", "devices", "tmpfs", "command",
    "env", "cwd", "net", "pid", "ipc", "uts", "userns", "hostname", "readonly", "maskedPaths", "readonlyPaths",
    "uid", "gid", "additionalGids", "noNewPrivileges", "oomScoreAdj", "rootfsPropagation", "cgroupsPath",
    "resources", "sysctl", "rlimits", "uidMappings", "gidMappings", "annotations", "runtime",
)
_STRING_FIELDS = ("cwd", "net", "pid", "ipc", "uts", "userns", "hostname")  # Go strings: "" is omitted
_MAP_FIELDS = ("sysctl", "annotations")
RUNTIME_FIELDS = ("cgroups", "mounts", "mkdir", "interfaces", "bindNS", "namespace")
BIND_NS = ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")


def render(spec: Spec, kind: str) -> bytes:
    if kind == "json":
        return gojson.marshal_indent(_moby(spec, json=True))
    return yaml.dump(_moby(spec, json=False), Dumper=_GoYamlDumper, sort_keys=False, allow_unicode=True,
                     default_flow_style=False, width=80, indent=2).encode()


def _moby(spec: Spec, *, json: bool) -> dict[str, Any]:
    def section(items: list[Any]) -> Any:
        return items if items or not json else None

    kernel: dict[str, Any] = {"image": ""}  # Go's zero KernelConfig when the spec has none
    if spec.kernel is not None:
        kernel = {**spec.kernel.to_dict(), "image": refs.normalise(spec.kernel.image)}
    return {
        "kernel": kernel,
        "init": section([refs.normalise(ref) for ref in spec.init]),
        "onboot": section([_image(e, json) for e in spec.onboot]),
        "onshutdown": section([_image(e, json) for e in spec.onshutdown]),
        "services": section([_image(e, json) for e in spec.services]),
        "files": section([_file(f) for f in spec.files]),
        "volumes": section([_volume(v) for v in spec.volumes]),
    }


def _image(entry: ImageEntry, json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": entry.name, "image": refs.normalise(entry.image)}
    for key in IMAGE_FIELDS:
        if key not in entry.config:
            continue
        value = entry.config[key]
        if key in _STRING_FIELDS and value == "":
            continue
        if key in _MAP_FIELDS:
            value = gojson.sorted_map(dict(value))
        elif key == "mounts":
            value = [_mount(m, json) for m in value]
        elif key == "runtime":
            value = _runtime(value, json)
        elif key in ("uidMappings", "gidMappings"):
            value = [ociconfig.idmapping(m) if json else
                     {k.lower(): v for k, v in ociconfig.idmapping(m).items()} for m in value]
        out[key] = value
    return out


def _mount(mount: dict[str, Any], json: bool) -> dict[str, Any]:
    """runtime-spec's Mount: json tags with omitempty; yaml.v2 uses lower-cased names, no omitempty."""
    if json:
        out = {"destination": mount.get("destination", "")}
        for key in ("type", "source", "options"):
            if mount.get(key):
                out[key] = mount[key]
        return out
    return {"destination": mount.get("destination", ""), "type": mount.get("type", ""),
            "source": mount.get("source", ""), "options": mount.get("options") or [],
            "uidmappings": mount.get("uidmappings") or [], "gidmappings": mount.get("gidmappings") or []}


def _runtime(runtime: dict[str, Any], json: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in RUNTIME_FIELDS:
        if key == "bindNS":
            bind = {k: runtime["bindNS"][k] for k in BIND_NS if k in runtime.get("bindNS", {})}
            if bind or json:
                out[key] = bind
        elif key in runtime:
            value = runtime[key]
            if key == "mounts":
                value = [_mount(m, json) for m in value]
            elif key == "interfaces":
                value = [{**{k: i[k] for k in ("name", "add", "peer") if i.get(k)},
                          "createInRoot": bool(i.get("createInRoot", False))} for i in value]
            out[key] = value
    return out


def _file(entry: FileEntry) -> dict[str, Any]:
    """Go's File struct: `directory` and `optional` always, then what the YAML gave, as it gave it."""
    given = {**file_dict(entry), **entry.given}
    return {"path": entry.written_path, "directory": entry.directory,
            **{k: given[k] for k in ("symlink", "contents", "source", "metadata") if k in given},
            "optional": entry.optional, **{k: given[k] for k in ("mode", "uid", "gid") if k in given}}


def _volume(volume: Volume) -> dict[str, Any]:
    """Go's Volume struct (its format omitted when it is the default)."""
    given = volume_dict(volume)
    if given.get("format") == "filesystem":
        del given["format"]
    return given


# yaml.v2 reads these plain scalars as booleans (YAML 1.1 and its own y/n).
_V2_BOOL = re.compile(r"^(?:y|Y|yes|Yes|YES|n|N|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$")


class _GoYamlDumper(yaml.SafeDumper):
    """PyYAML's emitter is libyaml's, like yaml.v2's; only the choice of string style differs."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    if "\n" in text:
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style="|")
    resolved = dumper.resolve(yaml.ScalarNode, text, (True, False))
    if resolved != "tag:yaml.org,2002:str" or _V2_BOOL.match(text) or text == "":
        return dumper.represent_scalar("tag:yaml.org,2002:str", text, style='"')
    return dumper.represent_scalar("tag:yaml.org,2002:str", text)


_GoYamlDumper.add_representer(str, _represent_str)

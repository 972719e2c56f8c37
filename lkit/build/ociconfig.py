"""LinuxKit's ConfigToOCI rules: (spec entry, image label, image config) -> config.json + runtime.json.

Our code, LinuxKit's semantics (src/cmd/linuxkit/moby/config.go, build/image.go, build/volume.go):
a field from the spec replaces the label's, which replaces what the image config says; only
`capabilities.add` and `binds.add` in the spec append to the label's list. Dicts are built in the
field order of Go's runtime-spec structs and leave out what Go's `omitempty` leaves out, and
`lkit.build.gojson` writes them as Go does, so config.json and runtime.json are LinuxKit's bytes.

LinuxKit's quirks are followed on purpose (docs/linuxkit-differences.md): `capabilities.add`
appends without removing duplicates (a capability the label has already appears twice in the
effective set; runc does not mind), and a `mounts:` entry of type bind naming a volume keeps the
volume's bare name as its source (LinuxKit rewrites a copy of the entry), while `binds` and
`binds.add` get /containers/volumes/NAME/merged.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lkit.build import gojson
from lkit.errors import ImageError, LkitError, SpecError
from lkit.spec import schema
from lkit.core.capabilities import CAPABILITIES, NUMBERS
from lkit.spec.model import ImageEntry, Spec, Volume
from lkit.spec.yamlmarks import load_json_node

# The runtime-spec version LinuxKit is built with (specs.Version of its vendored runtime-spec).
OCI_VERSION = "1.2.1"
VOLUMES_DIR = "/containers/volumes"
LABEL = "org.mobyproject.config"
FIRST_ID = 100

# Go's runtime-spec namespace type names, in the order LinuxKit appends them.
_NAMESPACE_TYPES = (("net", "network"), ("ipc", "ipc"), ("uts", "uts"), ("pid", "pid"), ("userns", "user"))


@dataclass
class ImageInfo:
    """What the generator needs from an image: its reference and its OCI config's `config` object."""

    ref: str
    config: dict[str, Any] = field(default_factory=dict)  # Entrypoint, Cmd, Env, WorkingDir, User, Labels


@dataclass
class IdMap:
    """uid/gid numbers by container name: 100 upward in order onboot, onshutdown, services."""

    ids: dict[str, int] = field(default_factory=dict)
    # id(entry) -> bundle directory, so generate() finds an entry's place without being told
    paths: dict[int, tuple[ImageEntry, str]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_spec(cls, spec: Spec) -> IdMap:
        ids: dict[str, int] = {}
        paths: dict[int, tuple[ImageEntry, str]] = {}
        for number, (section, index, entry) in enumerate(spec.entries(), start=FIRST_ID):
            ids[entry.name] = number  # a reused name maps to its last use, as in LinuxKit
            paths[id(entry)] = (entry, bundle_prefix(section, index, entry.name))
        return cls(ids, paths)

    def bundle_path(self, entry: ImageEntry) -> str | None:
        """The entry's bundle directory, if it is one of the spec's own entries."""
        known = self.paths.get(id(entry))
        return known[1] if known is not None and known[0] is entry else None

    def lookup(self, value: Any) -> int:
        """A number, "" / "root" (0), or a container name; KeyError (unknown name) or TypeError."""
        if isinstance(value, bool):
            raise TypeError("a uid or gid must be a number or a name")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            if value in ("", "root"):
                return 0
            return self.ids[value]
        raise TypeError("a uid or gid must be a number or a name")

    def resolve(self, value: Any, where: str | None = None) -> int:
        """Like lookup, but a SpecError at `where` naming the known containers."""
        try:
            return self.lookup(value)
        except KeyError:
            raise SpecError(f"unknown user or group {value!r}", where=where,
                            hint="a number, root, or a container name: " + ", ".join(sorted(self.ids))) from None
        except TypeError as exc:
            raise SpecError(str(exc), where=where) from None


@dataclass
class Bundle:
    """One container's bundle files, and where its image is unpacked."""

    config: dict[str, Any]  # config.json (OCI runtime spec)
    runtime: dict[str, Any]  # runtime.json (LinuxKit's runtime config for the guest's init)
    readonly: bool  # image unpacked into rootfs/ (True) or lower/ with tmp/ + rootfs/ (False)
    prefix: str = ""  # bundle directory in the root filesystem, e.g. containers/services/nginx
    root: str = ""  # where the image's files go, e.g. containers/services/nginx/lower

    def config_json(self) -> bytes:
        return gojson.marshal_indent(self.config)

    def runtime_json(self) -> bytes:
        return gojson.marshal_indent(self.runtime)


def bundle_prefix(section: str, index: int, name: str) -> str:
    """containers/onboot/NNN-name, containers/onshutdown/NNN-name or containers/services/name."""
    if section == "services":
        return f"containers/services/{name}"
    if section in ("onboot", "onshutdown"):
        return f"containers/{section}/{index:03d}-{name}"
    raise ValueError(f"unknown section {section!r}")


# --- the label ----------------------------------------------------------------------------------
def label_config(info: ImageInfo) -> dict[str, Any]:
    """The image's org.mobyproject.config label, parsed and validated like spec fields ({} if none)."""
    labels = info.config.get("Labels") or {}
    if not isinstance(labels, dict):
        raise ImageError(f"image {info.ref}: config Labels is not an object")
    text = labels.get(LABEL)
    if not text:
        return {}
    where = f"image {info.ref} label {LABEL}"
    if not isinstance(text, str):
        raise ImageError("the label is not a string", where=where)
    node = load_json_node(text, where, error_class=ImageError)
    if not isinstance(node.value, dict):
        raise ImageError("the label must be a JSON object of per-image fields", where=where)
    for key in ("name", "image"):
        if key in node.value:
            raise ImageError(f"{key} cannot be set in the label", where=where)
    fields = node.mapping(allowed=tuple(schema.IMAGE_FIELDS))
    return schema.image_config(node, fields)


# --- generation ---------------------------------------------------------------------------------
class _Ctx:
    """Field lookup with LinuxKit's precedence, remembering which side a value came from."""

    def __init__(self, entry: ImageEntry, label: dict[str, Any], ref: str) -> None:
        self.entry = entry
        self.spec = entry.config
        self.label = label
        self.ref = ref

    def pick(self, key: str, default: Any = None) -> Any:
        if key in self.spec:
            return self.spec[key]
        if key in self.label:
            return self.label[key]
        return default

    def pick_nonempty(self, key: str, default: Any = "") -> Any:
        """For string fields where "" means unset (LinuxKit's assignStringEmpty)."""
        return self.spec.get(key) or self.label.get(key) or default

    def appended(self, key: str) -> list[str]:
        """spec KEY, else label KEY + spec KEY.add, duplicates kept: LinuxKit's mergeStrings means to
        drop them but never fills its `seen` map."""
        if key in self.spec:
            return list(self.spec[key])
        return list(self.label.get(key, [])) + list(self.spec.get(key + ".add", []))

    def error(self, key: str, message: str, hint: str | None = None) -> LkitError:
        if key in self.spec:
            return SpecError(f"{self.entry.name}: {key}: {message}", where=str(self.entry.where), hint=hint)
        return ImageError(f"{self.entry.name}: {key} (from the {LABEL} label of {self.ref}): {message}",
                          where=str(self.entry.where), hint=hint)


def generate(entry: ImageEntry, image: ImageInfo, idmap: IdMap, *, prefix: str | None = None,
             root: str | None = None, volumes: Mapping[str, Volume] | None = None) -> Bundle:
    """config.json and runtime.json for one container.

    `prefix` is the bundle directory (see bundle_prefix); by default the entry's own place in the
    spec the IdMap was made from (containers/services/NAME for an entry of no known spec). `root`
    overrides where the image files are (LinuxKit reuses an image unpacked for an earlier container).
    `volumes` are the spec's, by name: binds that name one are pointed at its merged directory.
    """
    entry = with_volume_paths(entry, volumes or {})
    ctx = _Ctx(entry, label_config(image), image.ref)
    img = image.config
    readonly = bool(ctx.pick("readonly", False))
    prefix = prefix or idmap.bundle_path(entry) or bundle_prefix("services", 0, entry.name)

    process: dict[str, Any] = {"user": _user(ctx, idmap)}
    args = ctx.pick("command")
    if args is None:
        args = list(img.get("Entrypoint") or []) + list(img.get("Cmd") or [])
    if args:
        process["args"] = list(args)
    env = ctx.pick("env")
    if env is None:
        env = list(img.get("Env") or [])
    if env:
        process["env"] = list(env)
    process["cwd"] = ctx.pick_nonempty("cwd") or img.get("WorkingDir") or "/"
    process["capabilities"] = _capabilities(ctx)
    rlimits = _rlimits(ctx)
    if rlimits:
        process["rlimits"] = rlimits
    if ctx.pick("noNewPrivileges", False):
        process["noNewPrivileges"] = True
    oom = ctx.pick("oomScoreAdj")
    if oom is not None:
        process["oomScoreAdj"] = oom

    config: dict[str, Any] = {"ociVersion": OCI_VERSION, "process": process,
                              "root": {"path": "rootfs", **({"readonly": True} if readonly else {})}}
    hostname = ctx.pick_nonempty("hostname")
    if hostname:
        config["hostname"] = hostname
    config["mounts"] = _mounts(ctx, readonly)
    annotations = ctx.pick("annotations") or {}
    if annotations:
        config["annotations"] = gojson.sorted_map(dict(annotations))
    config["linux"] = _linux(ctx)

    root = root or f"{prefix}/{'rootfs' if readonly else 'lower'}"
    return Bundle(config=config, runtime=_runtime(ctx, prefix, root, readonly), readonly=readonly,
                  prefix=prefix, root=root)


def generate_all(spec: Spec, images: Mapping[str, ImageInfo]) -> list[Bundle]:
    """Bundles for every container in build order; `images` maps each entry's image ref to its info.

    Like LinuxKit, a container whose image was already unpacked for an earlier one mounts that copy
    (read-only: a bind; otherwise the overlay's lower directory).
    """
    from lkit.images import refs

    idmap = IdMap.from_spec(spec)
    volumes = {v.name: v for v in spec.volumes}
    unpacked: dict[str, str] = {}
    bundles: list[Bundle] = []
    for section, index, entry in spec.entries():
        info = images[entry.image]
        prefix = bundle_prefix(section, index, entry.name)
        key = refs.normalise(entry.image)
        bundle = generate(entry, info, idmap, prefix=prefix, root=unpacked.get(key), volumes=volumes)
        unpacked.setdefault(key, bundle.root)
        bundles.append(bundle)
    return bundles


def with_volume_paths(entry: ImageEntry, volumes: Mapping[str, Volume]) -> ImageEntry:
    """LinuxKit's updateMountsAndBindsFromVolumes: a bind whose source is not absolute names a volume.

    binds and binds.add get the volume's merged directory; a read-only volume must be bound with
    `ro`. A bind-type `mounts:` entry is checked the same way but keeps its source (LinuxKit rewrites
    a loop variable's copy, not the entry)."""
    config = entry.config
    if not any(key in config for key in ("mounts", "binds", "binds.add")):
        return entry

    def volume(name: str, key: str, index: int) -> Volume:
        if name not in volumes:
            raise SpecError(f"{entry.name}: {key}[{index}]: volume {name!r} not found",
                            where=str(entry.where), hint="declare it under volumes:, or give an absolute source path")
        return volumes[name]

    def read_only_error(key: str, index: int, name: str) -> SpecError:
        return SpecError(f"{entry.name}: {key}[{index}]: volume {name} is read-only, but is bound read-write",
                         where=str(entry.where), hint="add :ro to the bind")

    for index, mount in enumerate(config.get("mounts", [])):
        source = mount.get("source", "")
        if mount.get("type") != "bind" or source.startswith("/"):
            continue
        if volume(source, "mounts", index).readonly:
            flags = [o for o in mount.get("options") or [] if o in ("ro", "rw")]
            if not flags or flags[0] != "ro":
                raise read_only_error("mounts", index, source)
    new_config = dict(config)
    for key in ("binds", "binds.add"):
        if key not in config:
            continue
        out = []
        for index, bind in enumerate(config[key]):
            parts = bind.split(":")
            if parts[0].startswith("/"):
                out.append(bind)
                continue
            vol = volume(parts[0], key, index)
            if vol.readonly and (len(parts) < 3 or parts[2] != "ro"):
                raise read_only_error(key, index, parts[0])
            parts[0] = posixpath.join(VOLUMES_DIR, vol.name, "merged")
            out.append(":".join(parts))
        new_config[key] = out
    return ImageEntry(name=entry.name, image=entry.image, where=entry.where, config=new_config)


def _user(ctx: _Ctx, idmap: IdMap) -> dict[str, Any]:
    def one(key: str, value: Any) -> int:
        try:
            return idmap.lookup(value)
        except KeyError:
            raise ctx.error(key, f"unknown user or group {value!r}",
                            hint="a number, root, or a container name: " + ", ".join(sorted(idmap.ids))) from None
        except TypeError as exc:
            raise ctx.error(key, str(exc)) from None

    user: dict[str, Any] = {"uid": one("uid", ctx.pick("uid", 0)), "gid": one("gid", ctx.pick("gid", 0))}
    groups = [one("additionalGids", value) for value in ctx.pick("additionalGids", [])]
    if groups:
        user["additionalGids"] = groups
    return user


def _expand_caps(names: list[str], ctx: _Ctx, key: str) -> list[str]:
    if len(names) == 1 and names[0].lower() == "none":
        return []
    if len(names) == 1 and names[0].lower() == "all":
        return list(CAPABILITIES)
    for name in names:
        if name not in NUMBERS:
            raise ctx.error(key, f"unknown capability {name!r}", hint="allowed: all, none, " + ", ".join(CAPABILITIES))
    return names


def _capabilities(ctx: _Ctx) -> dict[str, list[str]]:
    """Effective = listed; Bounding/Permitted/Inheritable = listed ∪ ambient, sorted; none unless listed.

    Effective and ambient keep duplicates, as LinuxKit writes them (runc ignores them).
    """
    caps = _expand_caps(ctx.appended("capabilities"), ctx, "capabilities")
    ambient = _expand_caps(list(ctx.pick("ambient", [])), ctx, "ambient")
    bounding = sorted(set(caps) | set(ambient))
    out: dict[str, list[str]] = {}
    for key, value in (("bounding", bounding), ("effective", caps), ("inheritable", bounding),
                       ("permitted", bounding), ("ambient", ambient)):
        if value:
            out[key] = list(value)
    return out


def _rlimits(ctx: _Ctx) -> list[dict[str, Any]]:
    out = []
    for text in ctx.pick("rlimits", []):
        try:
            kind, soft, hard = schema.parse_rlimit(text)
        except ValueError as exc:
            raise ctx.error("rlimits", str(exc)) from None
        out.append({"type": kind, "hard": hard, "soft": soft})
    return out


def _mount(destination: str, kind: str, source: str, options: list[str] | None) -> dict[str, Any]:
    mount: dict[str, Any] = {"destination": destination}
    if kind:
        mount["type"] = kind
    if source:
        mount["source"] = source
    if options:
        mount["options"] = list(options)
    return mount


def _mounts(ctx: _Ctx, readonly: bool) -> list[dict[str, Any]]:
    """Default mounts, then tmpfs, binds, mounts: keyed by destination, sorted by destination."""
    ro = ["ro"] if readonly else []
    mounts: dict[str, dict[str, Any]] = {
        "/proc": _mount("/proc", "proc", "proc", ["nosuid", "nodev", "noexec", "relatime"]),
        "/dev": _mount("/dev", "tmpfs", "tmpfs", ["nosuid", "strictatime", "mode=755", "size=65536k", *ro]),
        "/dev/pts": _mount("/dev/pts", "devpts", "devpts",
                           ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]),
        "/sys": _mount("/sys", "sysfs", "sysfs", ["nosuid", "noexec", "nodev", *ro]),
        "/sys/fs/cgroup": _mount("/sys/fs/cgroup", "cgroup", "cgroup",
                                 ["nosuid", "noexec", "nodev", "relatime", "ro"]),
    }
    for text in ctx.pick("tmpfs", []):
        parts = text.split(":")
        if len(parts) > 2:
            raise ctx.error("tmpfs", f"cannot parse tmpfs {text!r}: too many ':'")
        options = parts[1].split(",") if len(parts) == 2 else None
        mounts[parts[0]] = _mount(parts[0], "tmpfs", "tmpfs", options)
    for text in ctx.appended("binds"):
        parts = text.split(":")
        if len(parts) < 2:
            raise ctx.error("binds", f"cannot parse bind, missing ':': {text!r}", hint="SOURCE:DESTINATION[:OPTIONS]")
        if len(parts) > 3:
            raise ctx.error("binds", f"cannot parse bind, too many ':': {text!r}", hint="SOURCE:DESTINATION[:OPTIONS]")
        options = parts[2].split(",") + ["rbind"] if len(parts) == 3 else ["rw", "rbind", "rshared"]
        mounts[parts[1]] = _mount(parts[1], "bind", parts[0], options)
    for item in ctx.pick("mounts", []):
        kind, source, dest = item.get("type", ""), item.get("source", ""), item.get("destination", "")
        if not kind and source in ("mqueue", "devpts", "proc", "sysfs", "cgroup"):
            kind = source
        if not kind and dest == "/dev":
            kind = "tmpfs"
        if not kind:
            raise ctx.error("mounts", f"mount for destination {dest!r} is missing type")
        source = source or kind
        dest = dest or schema.DEFAULT_MOUNTPOINTS.get(kind, "")
        if not dest:
            raise ctx.error("mounts", f"mount of type {kind!r} is missing destination")
        # LinuxKit copies type, source, destination and options only (no id mappings).
        mounts[dest] = _mount(dest, kind, source, item.get("options"))
    return [mounts[dest] for dest in sorted(mounts)]


def idmapping(value: dict[str, int]) -> dict[str, int]:
    """runtime-spec's LinuxIDMapping as LinuxKit fills it: yaml.v3 matches the lower-cased field names
    (`containerid`, `hostid`), which its schema does not allow, so `containerID` and `hostID` as
    written are dropped and come out 0; only `size` gets through."""
    return {"containerID": value.get("containerid", 0), "hostID": value.get("hostid", 0),
            "size": value.get("size", 0)}


def _namespaces(ctx: _Ctx) -> list[dict[str, str]]:
    """net/ipc/uts/user: host unless asked; pid: new unless host; mount and cgroup: always new."""
    out: list[dict[str, str]] = []
    for key, kind in _NAMESPACE_TYPES:
        default = "" if key == "pid" else "root"
        value = ctx.pick_nonempty(key, default)
        if value in ("host", "root"):
            continue
        if value in ("new", "none"):
            value = ""
        out.append({"type": kind, "path": value} if value else {"type": kind})
    out.append({"type": "mount"})  # LinuxKit creates no cgroup namespace ("TODO cgroup namespaces")
    return out


# runtime-spec's LinuxResources and what it holds, as (Go field, JSON name, omitempty, nested struct).
# LinuxKit decodes the spec's `resources:` into these structs with yaml.v3, which matches a YAML key
# to a field by the field's lower-cased name ("kerneltcp"); a key in any other case is ignored, so
# `kernelTCP: 1` never reaches config.json. The JSON names and order are the structs'.
_Field = tuple[str, str, bool, "tuple | None"]
_DEVICE_CGROUP: tuple[_Field, ...] = (("Allow", "allow", False, None), ("Type", "type", True, None),
                                      ("Major", "major", True, None), ("Minor", "minor", True, None),
                                      ("Access", "access", True, None))
_MEMORY: tuple[_Field, ...] = tuple((go, js, True, None) for go, js in (
    ("Limit", "limit"), ("Reservation", "reservation"), ("Swap", "swap"), ("Kernel", "kernel"),
    ("KernelTCP", "kernelTCP"), ("Swappiness", "swappiness"), ("DisableOOMKiller", "disableOOMKiller"),
    ("UseHierarchy", "useHierarchy"), ("CheckBeforeUpdate", "checkBeforeUpdate")))
_CPU: tuple[_Field, ...] = tuple((go, js, True, None) for go, js in (
    ("Shares", "shares"), ("Quota", "quota"), ("Burst", "burst"), ("Period", "period"),
    ("RealtimeRuntime", "realtimeRuntime"), ("RealtimePeriod", "realtimePeriod"), ("Cpus", "cpus"),
    ("Mems", "mems"), ("Idle", "idle")))
_PIDS: tuple[_Field, ...] = (("Limit", "limit", False, None),)
_THROTTLE: tuple[_Field, ...] = (("Rate", "rate", False, None),)
_BLOCKIO: tuple[_Field, ...] = (
    ("Weight", "weight", True, None), ("LeafWeight", "leafWeight", True, None),
    ("WeightDevice", "weightDevice", True, (("Weight", "weight", True, None), ("LeafWeight", "leafWeight", True, None))),
    ("ThrottleReadBpsDevice", "throttleReadBpsDevice", True, _THROTTLE),
    ("ThrottleWriteBpsDevice", "throttleWriteBpsDevice", True, _THROTTLE),
    ("ThrottleReadIOPSDevice", "throttleReadIOPSDevice", True, _THROTTLE),
    ("ThrottleWriteIOPSDevice", "throttleWriteIOPSDevice", True, _THROTTLE))
_RESOURCES: tuple[_Field, ...] = (
    ("Devices", "devices", True, _DEVICE_CGROUP), ("Memory", "memory", True, _MEMORY), ("CPU", "cpu", True, _CPU),
    ("Pids", "pids", True, _PIDS), ("BlockIO", "blockIO", True, _BLOCKIO),
    ("HugepageLimits", "hugepageLimits", True, (("Pagesize", "pageSize", False, None), ("Limit", "limit", False, None))),
    ("Network", "network", True, (("ClassID", "classID", True, None),
                                  ("Priorities", "priorities", True, (("Name", "name", False, None),
                                                                     ("Priority", "priority", False, None))))),
    ("Rdma", "rdma", True, None), ("Unified", "unified", True, None))
_ZERO = {"Allow": False, "Limit": 0, "Rate": 0, "Pagesize": "", "Name": "", "Priority": 0}


def _go_struct(value: Any, fields: tuple[_Field, ...]) -> dict[str, Any]:
    """A YAML mapping decoded into a Go struct by yaml.v3 and written by encoding/json."""
    source = value if isinstance(value, dict) else {}
    out: dict[str, Any] = {}
    for go_name, json_name, omitempty, nested in fields:
        key = go_name.lower()
        if key not in source or source[key] is None:
            if not omitempty:
                out[json_name] = _ZERO.get(go_name, 0)
            continue
        item = source[key]
        if nested is not None:
            item = [_go_struct(v, nested) for v in item] if isinstance(item, list) else _go_struct(item, nested)
        elif isinstance(item, dict):
            item = gojson.sorted_map(dict(item))
        empty_value = isinstance(item, (str, list)) and not item or (go_name in ("Rdma", "Unified") and not item)
        if omitempty and empty_value:  # a non-pointer field at its zero value (pointers are written when set)
            continue
        out[json_name] = item
    return out


def _resources(ctx: _Ctx) -> dict[str, Any]:
    return _go_struct(json.loads(json.dumps(ctx.pick("resources", {}))), _RESOURCES)


def _linux(ctx: _Ctx) -> dict[str, Any]:
    linux: dict[str, Any] = {}
    for key in ("uidMappings", "gidMappings"):
        mappings = ctx.pick(key, [])
        if mappings:
            linux[key] = [idmapping(m) for m in mappings]
    sysctl = ctx.pick("sysctl", {})
    if sysctl:
        linux["sysctl"] = gojson.sorted_map(dict(sysctl))
    resources = _resources(ctx)
    devices: list[dict[str, Any]] = []
    cgroup_rules: list[dict[str, Any]] = list(resources.get("devices", []))
    for device in ctx.pick("devices", []):
        if device["path"] == "all":
            cgroup_rules.append({"allow": True, "type": device["type"], "access": "rwm"})
            continue
        try:
            mode = int(device.get("mode", ""), 8)
        except ValueError:
            raise ctx.error("devices", f"cannot parse device mode {device.get('mode')!r} as octal") from None
        major, minor = device.get("major", 0), device.get("minor", 0)
        devices.append({"path": device["path"], "type": device["type"], "major": major, "minor": minor,
                        "fileMode": mode})
        cgroup_rules.append({"allow": True, "type": device["type"], "major": major, "minor": minor,
                             "access": "rwm"})
    if cgroup_rules:
        resources = {"devices": cgroup_rules, **{k: v for k, v in resources.items() if k != "devices"}}
    linux["resources"] = resources
    cgroups_path = ctx.pick("cgroupsPath", "")
    if cgroups_path:
        linux["cgroupsPath"] = cgroups_path
    linux["namespaces"] = _namespaces(ctx)
    if devices:
        linux["devices"] = devices
    propagation = ctx.pick("rootfsPropagation", "")
    if propagation:
        linux["rootfsPropagation"] = propagation
    for key in ("maskedPaths", "readonlyPaths"):
        paths = ctx.pick(key, [])
        if paths:
            linux[key] = list(paths)
    return linux


def _runtime(ctx: _Ctx, prefix: str, root: str, readonly: bool) -> dict[str, Any]:
    """runtime.json: LinuxKit's Runtime with the rootfs mounts (overlay or bind) put first."""
    spec_rt: dict[str, Any] = ctx.spec.get("runtime", {})
    label_rt: dict[str, Any] = ctx.label.get("runtime", {})

    def pick(key: str, default: Any) -> Any:
        if key in spec_rt:
            return spec_rt[key]
        if key in label_rt:
            return label_rt[key]
        return default

    if readonly:
        rootfs = [_mount(f"/{prefix}/rootfs", "", f"/{root}", ["bind"])]
    else:
        tmp = f"/{prefix}/tmp"
        rootfs = [
            _mount(tmp, "tmpfs", "tmpfs", None),
            _mount(tmp, "", "", ["remount", "private"]),
            _mount(f"/{prefix}/rootfs", "overlay", "overlay",
                   [f"lowerdir=/{root}", f"upperdir={tmp}/upper", f"workdir={tmp}/work"]),
        ]
    user_mounts = [_mount(m.get("destination", ""), m.get("type", ""), m.get("source", ""), m.get("options"))
                   for m in pick("mounts", [])]
    interfaces = []
    for item in pick("interfaces", []):
        iface = {key: item[key] for key in ("name", "add", "peer") if item.get(key)}
        iface["createInRoot"] = bool(item.get("createInRoot", False))
        interfaces.append(iface)
    spec_ns, label_ns = spec_rt.get("bindNS", {}), label_rt.get("bindNS", {})
    bind_ns = {kind: spec_ns.get(kind, label_ns.get(kind, ""))
               for kind in ("cgroup", "ipc", "mnt", "net", "pid", "user", "uts")}
    return {
        "cgroups": list(pick("cgroups", [])),
        "mounts": rootfs + user_mounts,
        "mkdir": list(pick("mkdir", [])),
        "interfaces": interfaces,
        "bindNS": bind_ns,
        "namespace": pick("namespace", ""),
    }


__all__ = ["Bundle", "IdMap", "ImageInfo", "bundle_prefix", "generate", "generate_all", "label_config"]


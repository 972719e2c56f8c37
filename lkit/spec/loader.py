"""load_spec(paths) -> Spec: LinuxKit's YAML schema, strict, with file:line and field in every error.

Several files merge as LinuxKit's AppendConfig does: later `kernel` fields override earlier ones,
every list (init, onboot, onshutdown, services, files, volumes) appends; service names must be
unique (LinuxKit checks services only; a name reused across sections is a notice).

Where lkit is stricter than LinuxKit, on purpose, so mistakes surface at load time with a line:
the 2017 `outputs:` key is read (formats validated) and `trust:` is accepted with a notice;
capability names, binds, tmpfs, rlimits, device modes, namespaces and mounts without a type are
checked here rather than at build time; uid/gid names must name a container; container names must
be usable as directory names; file paths may not contain `..`; `optional` needs `source`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from lkit.core import formats
from lkit.errors import SpecError
from lkit.spec import schema
from lkit.spec.model import FileEntry, ImageEntry, Kernel, Spec, Volume, Where
from lkit.spec.yamlmarks import YamlNode, load_yaml, load_yaml_text

TOP_KEYS = ("kernel", "init", "onboot", "onshutdown", "services", "files", "volumes", "trust", "outputs")
KERNEL_KEYS = ("image", "cmdline", "binary", "tar", "ucode")
FILE_KEYS = ("path", "directory", "symlink", "contents", "source", "metadata", "optional", "mode", "uid", "gid")
FILE_KINDS = ("directory", "symlink", "contents", "source", "metadata")
VOLUME_KEYS = ("name", "image", "readonly", "format", "platforms")
VOLUME_FORMATS = ("oci", "filesystem")
VOLUME_NAME_RE = re.compile(r"^[a-z0-9_-]*$")
SECTIONS = ("onboot", "onshutdown", "services")


def output_format_names() -> tuple[str, ...]:
    """Formats an `outputs:` entry may name: lkit's writers plus LinuxKit's `docker`."""
    return (*formats.NAMES, "docker")


@dataclass
class _Part:
    """What one file contributes before merging."""

    kernel: dict[str, tuple[object, YamlNode]] = field(default_factory=dict)
    kernel_where: Where | None = None
    init: list[str] = field(default_factory=list)
    onboot: list[ImageEntry] = field(default_factory=list)
    onshutdown: list[ImageEntry] = field(default_factory=list)
    services: list[ImageEntry] = field(default_factory=list)
    files: list[FileEntry] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)
    # (entry or file, field node) for uid/gid/additionalGids names, checked after merging
    id_refs: list[tuple[str, YamlNode]] = field(default_factory=list)


def load_spec(paths: Sequence[str | Path]) -> Spec:
    """Load and merge one or more spec files (in order)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise SpecError("no spec file given")
    parts = [(Path(p), _parse(load_yaml(p), Path(p).resolve().parent)) for p in paths]
    return _merge(parts)


def load_spec_text(text: str, filename: str = "<text>", base: Path | None = None) -> Spec:
    """Load a spec from text; relative `files[].source` paths resolve against `base` (default: cwd)."""
    part = _parse(load_yaml_text(text, filename), base or Path.cwd())
    return _merge([(Path(filename), part)])


def spec_name(path: Path) -> str:
    name = path.name
    for suffix in (".yml", ".yaml"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name.strip("<>") or "spec"


# --- one file -----------------------------------------------------------------------------------
def _parse(root: YamlNode, base: Path) -> _Part:
    part = _Part()
    if root.value is None:  # an empty file is an empty spec
        return part
    if not isinstance(root.value, dict):
        raise root.error(f"a spec must be a mapping of {', '.join(TOP_KEYS)}")
    top = root.mapping(allowed=TOP_KEYS)
    for key, node in top.items():
        if node.value is None:  # `services:` with nothing under it, as LinuxKit allows
            continue
        if key == "kernel":
            _parse_kernel(node, part)
        elif key == "init":
            part.init = [schema.image_ref(item) for item in node.sequence()]
        elif key in SECTIONS:
            getattr(part, key).extend(_parse_entry(item, part) for item in node.sequence())
        elif key == "files":
            part.files = [_parse_file(item, base, part) for item in node.sequence()]
        elif key == "volumes":
            part.volumes = [_parse_volume(item) for item in node.sequence()]
        elif key == "trust":
            schema.obj({"image": schema.strings, "org": schema.strings})(node)
            part.notices.append(f"{node.where}: trust: is accepted and ignored (as LinuxKit does today)")
        elif key == "outputs":
            part.outputs = [_parse_output(item) for item in node.sequence()]
    return part


def _parse_kernel(node: YamlNode, part: _Part) -> None:
    fields = node.mapping(allowed=KERNEL_KEYS)
    part.kernel_where = Where(node.file, node.line)
    for key, child in fields.items():
        value = schema.image_ref(child) if key == "image" else child.as_str()
        part.kernel[key] = (value, child)


def _parse_entry(node: YamlNode, part: _Part) -> ImageEntry:
    fields = node.mapping(allowed=schema.ENTRY_KEYS, required=("name", "image"))
    name = schema.container_name(fields["name"])
    image = schema.image_ref(fields["image"])
    config = schema.image_config(node, fields)
    for key in ("uid", "gid"):
        if key in fields and isinstance(config[key], str):
            part.id_refs.append((name, fields[key]))
    if "additionalGids" in fields:
        for child in fields["additionalGids"].sequence():
            if isinstance(child.value, str):
                part.id_refs.append((name, child))
    return ImageEntry(name=name, image=image, where=Where(node.file, node.line), config=config)


def _parse_file(node: YamlNode, base: Path, part: _Part) -> FileEntry:
    fields = node.mapping(allowed=FILE_KEYS, required=("path",))
    path_text = fields["path"].as_str()
    path = path_text.lstrip("/")
    if not path or any(piece in ("..",) for piece in path.split("/")) or "\0" in path:
        raise fields["path"].error(f"invalid file path {path_text!r}",
                                   hint="a path inside the image, e.g. etc/motd (no '..')")
    kinds = [key for key in FILE_KINDS if key in fields and not (key == "directory" and fields[key].value is False)]
    if len(kinds) > 1:
        raise node.error(f"file {path!r} sets {' and '.join(kinds)}",
                         hint="give exactly one of: " + ", ".join(FILE_KINDS))
    if not kinds:
        raise node.error(f"file {path!r} has no contents",
                         hint="give exactly one of: " + ", ".join(FILE_KINDS))
    entry = FileEntry(path=path, where=Where(node.file, node.line),
                      given={k: fields[k].value for k in ("path", "source", "mode", "uid", "gid") if k in fields})
    if "directory" in fields:
        entry.directory = fields["directory"].as_bool()
    if "symlink" in fields:
        entry.symlink = fields["symlink"].as_str()
    if "contents" in fields:
        entry.contents = fields["contents"].as_str()
    if "source" in fields:
        source = fields["source"].as_str()
        if not source:
            raise fields["source"].error("source must not be empty")
        expanded = os.path.expanduser(source) if source.startswith("~/") else source
        entry.source = str(base / expanded) if not os.path.isabs(expanded) else expanded
    if "metadata" in fields:
        meta = fields["metadata"].as_str()
        if meta not in ("yaml", "json"):
            raise fields["metadata"].error(f"invalid metadata {meta!r}", hint="allowed: yaml, json")
        entry.metadata = meta
    if "optional" in fields:
        entry.optional = fields["optional"].as_bool()
        if entry.optional and entry.source is None:
            raise fields["optional"].error("optional only applies to files with source")
    if "mode" in fields:
        entry.mode = schema.octal_string(fields["mode"])
    for key in ("uid", "gid"):
        if key in fields:
            value = schema.str_or_int(fields[key])
            setattr(entry, key, value)
            if isinstance(value, str):
                part.id_refs.append((f"file {path}", fields[key]))
    return entry


def _parse_volume(node: YamlNode) -> Volume:
    fields = node.mapping(allowed=VOLUME_KEYS, required=("name",))
    name = fields["name"].as_str()
    if not VOLUME_NAME_RE.match(name) or not name:
        raise fields["name"].error(f"invalid volume name {name!r}",
                                   hint="lower-case letters, digits, '-' and '_' only")
    image = schema.image_ref(fields["image"]) if "image" in fields else None
    fmt = fields["format"].as_str() if "format" in fields else "filesystem"  # LinuxKit: "" is filesystem
    if fmt not in VOLUME_FORMATS:
        raise fields["format"].error(f"invalid volume format {fmt!r}", hint="allowed: " + ", ".join(VOLUME_FORMATS))
    return Volume(name=name, image=image,
                  readonly=fields["readonly"].as_bool() if "readonly" in fields else False,
                  format=fmt,
                  platforms=fields["platforms"].as_str_list() if "platforms" in fields else [],
                  where=Where(node.file, node.line))


def _parse_output(node: YamlNode) -> str:
    if isinstance(node.value, str):
        raise node.error(f"expected a mapping {{format: {node.value}}}, got a string",
                         hint=f"write `- format: {node.value}`")
    fields = node.mapping(allowed=("format",), required=("format",))
    name = fields["format"].as_str()
    allowed = output_format_names()
    if name not in allowed:
        raise fields["format"].error(f"unknown output format {name!r}", hint="allowed: " + ", ".join(allowed))
    return name


# --- merging ------------------------------------------------------------------------------------
def _merge(parts: list[tuple[Path, _Part]]) -> Spec:
    spec = Spec(name=spec_name(parts[0][0]), sources=[p for p, _ in parts], kernel=None, init=[],
                onboot=[], onshutdown=[], services=[], files=[], volumes=[], outputs=[], notices=[])
    kernel: dict[str, tuple[object, YamlNode]] = {}
    kernel_where: Where | None = None
    id_refs: list[tuple[str, YamlNode]] = []
    for _, part in parts:
        for key, (value, node) in part.kernel.items():
            # LinuxKit: an empty string in a later file does not override (tar/ucode: any value does)
            if value != "" or key in ("tar", "ucode"):
                kernel[key] = (value, node)
        kernel_where = part.kernel_where or kernel_where
        spec.init += part.init
        spec.onboot += part.onboot
        spec.onshutdown += part.onshutdown
        spec.services += part.services
        spec.files += part.files
        spec.volumes += part.volumes
        spec.outputs += [name for name in part.outputs if name not in spec.outputs]
        spec.notices += part.notices
        id_refs += part.id_refs
    spec.kernel = _build_kernel(kernel, kernel_where)
    _check_unique(spec)
    _check_id_names(spec, id_refs)
    return spec


def _build_kernel(fields: dict[str, tuple[object, YamlNode]], where: Where | None) -> Kernel | None:
    if not fields:
        return None
    if "image" not in fields:
        first = next(iter(fields.values()))[1]
        raise SpecError("kernel: image is missing (kernel fields were given without a kernel image)",
                        where=str(where) if where else first.where, hint="add kernel: image: <ref>")
    values = {key: value for key, (value, _) in fields.items()}
    tar = values.get("tar", "kernel.tar")
    return Kernel(image=str(values["image"]), cmdline=str(values.get("cmdline", "")),
                  binary=str(values.get("binary") or "kernel"),
                  tar=None if tar in ("", "none") else str(tar),
                  ucode=str(values["ucode"]) if values.get("ucode") else None,
                  where=where)


def _check_unique(spec: Spec) -> None:
    """Service names unique (they run side by side), volume names unique; reused names get a notice."""
    seen: dict[str, ImageEntry] = {}
    for entry in spec.services:
        if entry.name in seen:
            raise SpecError(f"services: duplicate service name {entry.name!r} (first at {seen[entry.name].where})",
                            where=str(entry.where), hint="service names must be unique")
        seen[entry.name] = entry
    volumes: dict[str, Volume] = {}
    for volume in spec.volumes:
        if volume.name in volumes:
            raise SpecError(f"volumes: duplicate volume name {volume.name!r} (first at {volumes[volume.name].where})",
                            where=str(volume.where))
        volumes[volume.name] = volume
    sections: dict[str, list[str]] = {}
    for section, _, entry in spec.entries():
        sections.setdefault(entry.name, []).append(section)
    for name, where_used in sections.items():
        if len(where_used) > 1:
            spec.notices.append(f"container name {name!r} is used {len(where_used)} times "
                                f"({', '.join(where_used)}); uid/gid by name refers to the last one")


def _check_id_names(spec: Spec, refs: list[tuple[str, YamlNode]]) -> None:
    names = {entry.name for _, _, entry in spec.entries()}
    for _, node in refs:
        value = node.value
        if value in ("", "root") or value in names:
            continue
        raise node.error(f"unknown user or group {value!r}",
                         hint="a number, root, or the name of a container: " + (", ".join(sorted(names)) or "(none)"))

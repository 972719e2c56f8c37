"""The typed spec every later stage codes against (LinuxKit's YAML, validated and merged).

Per-image fields stay a dict with LinuxKit's own key names (`capabilities`, `capabilities.add`,
`binds.add`, `oomScoreAdj`, ...) because the OCI config generator merges them key by key with the
image label, exactly as LinuxKit does; their types are already checked by the loader.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Where:
    """Where a spec element was written, for error messages."""

    file: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line is not None else self.file


@dataclass
class Kernel:
    image: str
    cmdline: str = ""
    binary: str = "kernel"
    tar: str | None = "kernel.tar"  # None: no modules tar ("none" or "" in the YAML)
    ucode: str | None = None
    where: Where | None = None

    def to_dict(self) -> dict[str, Any]:
        """LinuxKit's kernel section: the image, then what differs from LinuxKit's defaults."""
        out: dict[str, Any] = {"image": self.image}
        if self.cmdline:
            out["cmdline"] = self.cmdline
        if self.binary != "kernel":
            out["binary"] = self.binary
        if self.tar != "kernel.tar":
            out["tar"] = self.tar if self.tar is not None else "none"
        if self.ucode is not None:
            out["ucode"] = self.ucode
        return out


@dataclass
class ImageEntry:
    """One onboot, onshutdown or service container."""

    name: str
    image: str
    where: Where
    config: dict[str, Any] = field(default_factory=dict)  # validated per-image fields, LinuxKit key names


@dataclass
class FileEntry:
    path: str  # leading "/" stripped
    directory: bool = False
    symlink: str | None = None
    contents: str | None = None
    source: str | None = None  # "~/" expanded; relative paths resolved against the spec file's folder
    metadata: str | None = None  # "yaml" | "json": the merged spec written at path
    optional: bool = False
    mode: int | None = None  # None -> LinuxKit default 0600 (0700 for directories)
    uid: int | str = 0
    gid: int | str = 0
    where: Where | None = None
    # path, source, mode, uid and gid as the YAML gave them: LinuxKit's metadata files show them so.
    given: dict[str, Any] = field(default_factory=dict)

    @property
    def written_path(self) -> str:
        return str(self.given.get("path", self.path))

    @property
    def effective_mode(self) -> int:
        if self.mode is not None:
            return self.mode
        return 0o700 if self.directory else 0o600


@dataclass
class Volume:
    name: str
    image: str | None
    readonly: bool
    format: str  # "oci" | "filesystem"
    platforms: list[str]
    where: Where


@dataclass
class Spec:
    name: str  # first file's name without .yml/.yaml
    sources: list[Path]
    kernel: Kernel | None
    init: list[str]
    onboot: list[ImageEntry]
    onshutdown: list[ImageEntry]
    services: list[ImageEntry]
    files: list[FileEntry]
    volumes: list[Volume]
    outputs: list[str]  # from the 2017 `outputs:` key, in order; [] when absent
    notices: list[str]  # e.g. "seed.yml:58: trust: is accepted and ignored"

    def entries(self) -> list[tuple[str, int, ImageEntry]]:
        """(section, index in section, entry) for onboot, onshutdown, services, in build order."""
        out: list[tuple[str, int, ImageEntry]] = []
        for section, items in (("onboot", self.onboot), ("onshutdown", self.onshutdown),
                               ("services", self.services)):
            out.extend((section, index, entry) for index, entry in enumerate(items))
        return out

    def images(self) -> list[str]:
        """Every image reference used (kernel, init, containers, volumes), in order, de-duplicated."""
        refs: list[str] = []
        if self.kernel is not None:
            refs.append(self.kernel.image)
        refs.extend(self.init)
        refs.extend(entry.image for _, _, entry in self.entries())
        refs.extend(volume.image for volume in self.volumes if volume.image)
        return list(dict.fromkeys(refs))

    def to_dict(self) -> dict[str, Any]:
        """The merged spec in LinuxKit's YAML shape (what `lkit build --dry-run` prints)."""
        out: dict[str, Any] = {}
        if self.kernel is not None:
            out["kernel"] = self.kernel.to_dict()
        if self.init:
            out["init"] = list(self.init)
        for section in ("onboot", "onshutdown", "services"):
            entries: list[ImageEntry] = getattr(self, section)
            if entries:
                out[section] = [{"name": e.name, "image": e.image, **_copy(e.config)} for e in entries]
        if self.files:
            out["files"] = [file_dict(f) for f in self.files]
        if self.volumes:
            out["volumes"] = [volume_dict(v) for v in self.volumes]
        if self.outputs:
            out["outputs"] = [{"format": name} for name in self.outputs]
        return out


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


def file_dict(entry: FileEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"path": entry.path}
    if entry.directory:
        out["directory"] = True
    for key in ("symlink", "contents", "source", "metadata"):
        value = getattr(entry, key)
        if value is not None:
            out[key] = value
    if entry.optional:
        out["optional"] = True
    if entry.mode is not None:
        out["mode"] = f"{entry.mode:04o}"
    if entry.uid != 0:
        out["uid"] = entry.uid
    if entry.gid != 0:
        out["gid"] = entry.gid
    return out


def volume_dict(volume: Volume) -> dict[str, Any]:
    out: dict[str, Any] = {"name": volume.name}
    if volume.image:
        out["image"] = volume.image
    if volume.readonly:
        out["readonly"] = True
    out["format"] = volume.format
    if volume.platforms:
        out["platforms"] = list(volume.platforms)
    return out

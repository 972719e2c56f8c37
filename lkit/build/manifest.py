"""The manifest of a build: what is inside each output, small, deterministic, versioned JSON.

Written by the builder beside the outputs (`<outdir>/.lkit/<name>.manifest.json`, never inside an
output: the outputs stay LinuxKit's bytes) and copied by the pytest plugin into the run folder
(`reports/<run>/manifests/<name>.json`), so `lkit diff` and the gate can say *what* changed between
two builds, not only by how much. Schema (`"schema": 1`, `"kind": "lkit-build-manifest"`):

    name, key                 the spec's name and the build key (spec + image digests + lkit code)
    images                    slot -> {ref, digest, packages {name: version} | null, packages_from}
                              slots: kernel, init/<repository>, onboot/<name>, services/<name>,
                              onshutdown/<name>, volumes/<name>; packages come from the image label
                              org.lkit.pkgbuild.packages (lkit's Debian-built images), else from the
                              image's dpkg status or apk database, else are unknown (null)
    kernel                    {version, cmdline, modules [...], size, sha256} or null
    containers                slot -> {section, name, index, image, where, config_sha256,
                              runtime_sha256, capabilities {effective: [...], ...}, mounts, namespaces,
                              oom_score_adj, readonly, command, env, user, cwd}
    origins                   [[slot, location, source, layer diff_id or null], ...]
    file_columns, files       one row per entry of the root filesystem, sorted by path:
                              path, type (d f l h p), mode, uid, gid, size, sha256 (files), link
                              target (links), index into origins
    formats                   format -> [{name, role, size, sha256}] (role: kernel, initrd, cmdline,
                              modules, image)
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from lkit.build import ociconfig
from lkit.build.tree import Content, FsNode, Tree
from lkit.core.files import write_text
from lkit.errors import LkitError
from lkit.images import refs

SCHEMA = 1
KIND = "lkit-build-manifest"
PACKAGES_LABEL = "org.lkit.pkgbuild.packages"
FILE_COLUMNS = ("path", "type", "mode", "uid", "gid", "size", "sha256", "link", "origin")
TYPE_CODE = {"dir": "d", "file": "f", "symlink": "l", "hardlink": "h", "fifo": "p"}
CAP_SETS = ("effective", "permitted", "bounding", "inheritable", "ambient")
DPKG_STATUS = "var/lib/dpkg/status"
APK_DB = "lib/apk/db/installed"
# Artifact roles by file-name suffix (lkit.core.formats names them NAME + suffix).
ROLES = (("-squashfs-initrd.img", "modules"), ("-initrd.img", "initrd"), ("-kernel", "kernel"),
         ("-cmdline", "cmdline"))
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(LkitError):
    """A build manifest is missing, truncated or of another schema."""


class FileRecord(NamedTuple):
    path: str
    type: str          # d f l h p
    mode: int
    uid: int
    gid: int
    size: int
    sha256: str | None
    link: str | None
    origin: int


class Origin(NamedTuple):
    slot: str          # kernel, init/<repository>, services/<name>, files, lkit ...
    location: str      # LinuxKit's LINUXKIT.location: init[0], services[1], files[0], kernel ...
    source: str        # LinuxKit's LINUXKIT.source: the normalised image reference, linuxkit.files ...
    layer: str | None  # the layer's diff_id, when the entry came from a layer


@dataclass
class ImageRecord:
    slot: str
    ref: str
    digest: str
    packages: dict[str, str] | None = None
    packages_from: str = "unknown"   # label, dpkg, apk, unknown


@dataclass
class KernelRecord:
    version: str | None
    cmdline: str
    modules: list[str] = field(default_factory=list)
    size: int = 0
    sha256: str = ""


@dataclass
class ContainerRecord:
    slot: str
    section: str
    name: str
    index: int
    image: str
    where: str
    config_sha256: str
    runtime_sha256: str
    capabilities: dict[str, list[str]] = field(default_factory=dict)
    mounts: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    oom_score_adj: int | None = None
    readonly: bool = False
    command: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    user: str = ""
    cwd: str = ""


@dataclass
class ArtifactRecord:
    name: str
    role: str
    size: int
    sha256: str


@dataclass
class BuildManifest:
    name: str
    key: str
    images: dict[str, ImageRecord] = field(default_factory=dict)
    kernel: KernelRecord | None = None
    containers: dict[str, ContainerRecord] = field(default_factory=dict)
    origins: list[Origin] = field(default_factory=list)
    files: dict[str, FileRecord] = field(default_factory=dict)
    formats: dict[str, list[ArtifactRecord]] = field(default_factory=dict)

    # ---- JSON ---------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA, "kind": KIND, "name": self.name, "key": self.key,
            "images": {s: _plain(i) for s, i in sorted(self.images.items())},
            "kernel": _plain(self.kernel) if self.kernel else None,
            "containers": {s: _plain(c) for s, c in sorted(self.containers.items())},
            "origins": [list(o) for o in self.origins],
            "file_columns": list(FILE_COLUMNS),
            "files": [list(self.files[p]) for p in sorted(self.files, key=lambda p: p.encode())],
            "formats": {f: [_plain(a) for a in arts] for f, arts in sorted(self.formats.items())},
        }

    def dumps(self) -> str:
        """Deterministic text: one line per file row, so a text diff of two manifests is readable too."""
        data = self.to_json()
        files = data.pop("files")
        head = json.dumps(data, indent=1, sort_keys=True)
        rows = ",\n".join(" " + json.dumps(row, separators=(",", ":")) for row in files)
        return head[:-2] + ',\n "files": [\n' + rows + "\n ]\n}\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_text(path, self.dumps())

    @classmethod
    def from_json(cls, data: Any, where: str | None = None) -> BuildManifest:
        if not isinstance(data, dict) or data.get("kind") != KIND:
            raise ManifestError("not an lkit build manifest (field 'kind' is not 'lkit-build-manifest')", where=where,
                                hint="`lkit build` writes one beside its outputs: <dir>/.lkit/NAME.manifest.json")
        if data.get("schema") != SCHEMA:
            raise ManifestError(f"field 'schema' is {data.get('schema')!r}, this lkit reads manifest schema {SCHEMA}",
                                where=where, hint="rebuild with this lkit to regenerate the manifest")
        try:
            columns = data["file_columns"]
            if list(columns) != list(FILE_COLUMNS):
                raise ValueError(f"file_columns are {columns!r}, expected {list(FILE_COLUMNS)!r}")
            origins = [Origin(str(o[0]), str(o[1]), str(o[2]), None if o[3] is None else str(o[3]))
                       for o in data["origins"]]
            files = {}
            for row in data["files"]:
                rec = FileRecord(str(row[0]), str(row[1]), int(row[2]), int(row[3]), int(row[4]), int(row[5]),
                                 row[6], row[7], int(row[8]))
                if not 0 <= rec.origin < len(origins):
                    raise ValueError(f"file {rec.path!r} names origin {rec.origin}, there are {len(origins)}")
                files[rec.path] = rec
            kernel = data["kernel"]
            return cls(
                name=str(data["name"]), key=str(data["key"]),
                images={str(s): ImageRecord(**i) for s, i in data["images"].items()},
                kernel=KernelRecord(**kernel) if kernel else None,
                containers={str(s): ContainerRecord(**c) for s, c in data["containers"].items()},
                origins=origins, files=files,
                formats={str(f): [ArtifactRecord(**a) for a in arts] for f, arts in data["formats"].items()})
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            what = f"missing field {exc.args[0]!r}" if isinstance(exc, KeyError) else str(exc)
            raise ManifestError(f"malformed build manifest: {what}", where=where,
                                hint="manifests are written by lkit; rebuild to regenerate it") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BuildManifest:
        p = Path(path)
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"no such manifest: {p}", hint="`lkit build` writes it into <dir>/.lkit/") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read the manifest: {exc}", where=str(p)) from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            truncated = not text.rstrip().endswith("}") or exc.pos >= len(text.rstrip()) - 1
            raise ManifestError(("the manifest is truncated" if truncated else f"not valid JSON: {exc.msg}"),
                                where=f"{p}:{exc.lineno}",
                                hint="it was cut short or edited; rebuild (`lkit build`) to write it again") from None
        return cls.from_json(data, where=str(p))

    # ---- queries ------------------------------------------------------------------------------
    def origin_of(self, path: str) -> Origin | None:
        rec = self.files.get(path)
        return self.origins[rec.origin] if rec is not None else None

    def digest(self) -> str:
        return hashlib.sha256(self.dumps().encode()).hexdigest()


def _plain(obj: Any) -> dict[str, Any]:
    return {k: v for k, v in vars(obj).items()}


def manifest_path(outdir: Path, name: str) -> Path:
    """Where the builder writes the manifest of `name`'s build in `outdir`."""
    return outdir / ".lkit" / f"{name}.manifest.json"


def role_of(artifact: str) -> str:
    """kernel, initrd, cmdline, modules or image, from an output's file name (or figure name)."""
    if artifact in ("kernel", "initrd", "cmdline"):
        return artifact
    for suffix, role in ROLES:
        if artifact.endswith(suffix):
            return role
    return "image"


# ---- making a manifest from an assembly ---------------------------------------------------------


def _repository(ref: str) -> str:
    """lkit/containerd:1.6 -> lkit/containerd: the init slot survives a tag bump."""
    try:
        parsed = refs.Reference.parse(ref)
    except LkitError:
        return ref
    path = parsed.path[len("library/"):] if parsed.domain == "docker.io" and parsed.path.startswith("library/") else parsed.path
    return path if parsed.domain == "docker.io" else f"{parsed.domain}/{path}"


def slots_of(spec: Any) -> dict[str, tuple[str, str]]:
    """LinuxKit location (init[0], services[1] ...) -> (slot, image reference as the spec gives it)."""
    out: dict[str, tuple[str, str]] = {}
    if spec.kernel is not None:
        out["kernel"] = ("kernel", spec.kernel.image)
    for index, ref in enumerate(spec.init):
        out[f"init[{index}]"] = (f"init/{_repository(ref)}", ref)
    for section, index, entry in spec.entries():
        out[f"{section}[{index}]"] = (f"{section}/{entry.name}", entry.image)
    for index, volume in enumerate(spec.volumes):
        out[f"volume[{index}]"] = (f"volumes/{volume.name}", volume.image or "")
    return out


def _slot_for(location: str, slots: dict[str, tuple[str, str]]) -> str:
    if location in slots:
        return slots[location][0]
    if location.startswith("files["):
        return "files"
    if location == "init":
        return "init"
    return "lkit"


def _clean(name: str) -> str:
    name = name.strip("/")
    while name.startswith("./"):
        name = name[2:].lstrip("/")
    return posixpath.normpath(name) if name else ""


def _sha256(content: Content) -> str:
    h = hashlib.sha256()
    for chunk in content.chunks():
        h.update(chunk)
    return h.hexdigest()


class _Digests:
    """sha256 of file contents; those of a verified, immutable uncompressed layer in the store are
    kept in the store (`<store>/lkit-digests/<diff_id hex>.json`, offset:size -> sha256), so a build
    from known images does not hash them again."""

    def __init__(self) -> None:
        self.tables: dict[Path, dict[str, str]] = {}
        self.dirty: set[Path] = set()

    def of(self, content: Content) -> str:
        source = content.source
        layers = next((p for p in source.parents[:2] if p.name == "lkit-uncompressed"), None) if source else None
        if source is None or layers is None or not _HEX64.match(source.name):
            return _sha256(content)
        table_path = layers.parent / "lkit-digests" / f"{source.name}.json"
        table = self.tables.get(table_path)
        if table is None:
            try:
                loaded = json.loads(table_path.read_text())
                table = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                table = {}
            self.tables[table_path] = table
        key = f"{content.offset}:{content.size}"
        digest = table.get(key)
        if not isinstance(digest, str) or not _HEX64.match(digest):
            digest = table[key] = _sha256(content)
            self.dirty.add(table_path)
        return digest

    def save(self) -> None:
        for path in sorted(self.dirty):
            try:
                write_text(path, json.dumps(self.tables[path], sort_keys=True, separators=(",", ":")))
            except OSError:
                pass  # a read-only store: the digests are made again next time
        self.dirty.clear()


def _read(tree: Tree, path: str, limit: int = 16 << 20) -> bytes | None:
    node = tree.lookup(path)
    if node is None or node.kind != "file" or node.content is None or node.content.length > limit:
        return None
    return b"".join(node.content.chunks())


def kernel_version(content: Content) -> str | None:
    """The version string an x86 bzImage carries (boot protocol: header 'HdrS', kernel_version)."""
    head = b""
    for chunk in content.chunks(1 << 16):
        head += chunk
        if len(head) >= 1 << 16:
            break
    if len(head) < 0x210 or head[0x202:0x206] != b"HdrS":
        return None
    pointer = int.from_bytes(head[0x20E:0x210], "little")
    start = pointer + 0x200
    if not pointer or start >= len(head):
        return None
    raw = head[start:start + 256].split(b"\0", 1)[0]
    return raw.decode("ascii", "replace").split(" ", 1)[0] or None


def parse_dpkg_status(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for para in data.decode("utf-8", "replace").split("\n\n"):
        fields = dict(line.split(": ", 1) for line in para.splitlines() if ": " in line and not line.startswith(" "))
        if "Package" in fields and "Version" in fields and "installed" in fields.get("Status", "installed"):
            out[fields["Package"]] = fields["Version"]
    return out


def parse_apk_db(data: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for para in data.decode("utf-8", "replace").split("\n\n"):
        fields = {line[:1]: line[2:] for line in para.splitlines() if len(line) > 2 and line[1] == ":"}
        if "P" in fields and "V" in fields:
            out[fields["P"]] = fields["V"]
    return out


def _packages(labels: dict[str, str], tree: Tree, base: str) -> tuple[dict[str, str] | None, str]:
    raw = labels.get(PACKAGES_LABEL)
    if raw:
        try:
            value = json.loads(raw)
            if isinstance(value, dict):
                return {str(k): str(v) for k, v in sorted(value.items())}, "label"
        except ValueError:
            pass
    for rel, parse, name in ((DPKG_STATUS, parse_dpkg_status, "dpkg"), (APK_DB, parse_apk_db, "apk")):
        data = _read(tree, posixpath.join(base, rel) if base else rel)
        if data:
            found = parse(data)
            if found:
                return dict(sorted(found.items())), name
    return None, "unknown"


def _mount_text(m: dict[str, Any]) -> str:
    opts = ",".join(str(o) for o in m.get("options") or [])
    return f"{m.get('destination', '')} {m.get('type', '')} {m.get('source', '')}" + (f" {opts}" if opts else "")


def _container(tree: Tree, section: str, index: int, entry: Any, ref: str) -> ContainerRecord:
    prefix = ociconfig.bundle_prefix(section, index, entry.name)
    config_raw = _read(tree, f"{prefix}/config.json") or b"{}"
    runtime_raw = _read(tree, f"{prefix}/runtime.json") or b"{}"
    try:
        config = json.loads(config_raw)
    except ValueError:
        config = {}
    process = config.get("process") or {}
    caps = process.get("capabilities") or {}
    linux = config.get("linux") or {}
    user = process.get("user") or {}
    namespaces = sorted(f"{ns.get('type')}" + (f":{ns['path']}" if ns.get("path") else "")
                        for ns in linux.get("namespaces") or [])
    return ContainerRecord(
        slot=f"{section}/{entry.name}", section=section, name=entry.name, index=index, image=ref,
        where=str(entry.where) if entry.where else "",
        config_sha256=hashlib.sha256(config_raw).hexdigest(), runtime_sha256=hashlib.sha256(runtime_raw).hexdigest(),
        capabilities={s: sorted(caps.get(s) or []) for s in CAP_SETS if s in caps},
        mounts=[_mount_text(m) for m in config.get("mounts") or []],
        namespaces=namespaces,
        oom_score_adj=process.get("oomScoreAdj"),
        readonly=bool((config.get("root") or {}).get("readonly", False)),
        command=[str(a) for a in process.get("args") or []],
        env=[str(e) for e in process.get("env") or []],
        user=f"{user.get('uid', 0)}:{user.get('gid', 0)}" + (
            "+" + ",".join(map(str, user["additionalGids"])) if user.get("additionalGids") else ""),
        cwd=str(process.get("cwd", "")))


def manifest_of(spec: Any, assembly: Any, resolve: Callable[[str], Any], key: str) -> BuildManifest:
    """The manifest of an assembled spec (formats are added by `with_formats`)."""
    tree: Tree = assembly.tree
    slots = slots_of(spec)
    # Which stream entry wrote each path last: its LinuxKit records say where it came from.
    origin_index: dict[Origin, int] = {}
    path_origin: dict[str, int] = {}
    for header in assembly.stream:
        location = header.pax.get("LINUXKIT.location", "")
        source = header.pax.get("LINUXKIT.source", "")
        layer = None
        content = header.content
        if isinstance(content, Content) and content.source is not None and _HEX64.match(content.source.name):
            layer = "sha256:" + content.source.name
        origin = Origin(_slot_for(location, slots), location, source, layer)
        index = origin_index.setdefault(origin, len(origin_index))
        path_origin[_clean(header.name)] = index
    lkit_origin = origin_index.setdefault(Origin("lkit", "", "", None), len(origin_index))
    files: dict[str, FileRecord] = {}
    digests = _Digests()
    for path, node in tree.walk():
        files[path] = _record(path, node, path_origin.get(path, lkit_origin), digests)
    digests.save()
    manifest = BuildManifest(name=spec.name, key=key, origins=list(origin_index), files=files)
    # Images, with their packages.
    for location, (slot, ref) in slots.items():
        if not ref:
            continue
        image = resolve(ref)
        base = ""
        if location.startswith(("onboot", "onshutdown", "services")):
            section, number = location[:-1].split("[")
            entry = getattr(spec, section)[int(number)]
            base = ociconfig.bundle_prefix(section, int(number), entry.name) + "/rootfs"
            manifest.containers[slot] = _container(tree, section, int(number), entry, ref)
        elif location.startswith("volume["):
            base = f"containers/volumes/{slot.split('/', 1)[1]}/lower"
        packages, how = _packages(image.labels, tree, base) if location != "kernel" else (
            _packages(image.labels, Tree(), ""))
        manifest.images[slot] = ImageRecord(slot=slot, ref=ref, digest=image.digest, packages=packages,
                                            packages_from=how)
    if spec.kernel is not None and assembly.kernel is not None:
        modules = sorted(posixpath.basename(p) for p in files
                         if p.startswith("lib/modules/") and re.search(r"\.ko(\.[a-z]+)?$", p))
        kernel = assembly.kernel.kernel
        version = kernel_version(kernel) or next(
            (p.split("/")[2] for p in files if p.count("/") == 2 and p.startswith("lib/modules/")), None)
        manifest.kernel = KernelRecord(version=version, cmdline=assembly.cmdline, modules=modules,
                                       size=kernel.length, sha256=_sha256(kernel))
    return manifest


def _record(path: str, node: FsNode, origin: int, digests: _Digests) -> FileRecord:
    if node.kind == "file" and node.content is not None:
        return FileRecord(path, "f", node.mode, node.uid, node.gid, node.content.length, digests.of(node.content),
                          None, origin)
    link = node.target if node.kind in ("symlink", "hardlink") else None
    return FileRecord(path, TYPE_CODE[node.kind], node.mode, node.uid, node.gid, 0, None, link, origin)


def with_formats(manifest: BuildManifest, artifacts: dict[str, Iterable[tuple[str, int, str]]]) -> BuildManifest:
    """The manifest with each format's output files, given as (name, size, sha256), set."""
    for fmt, arts in sorted(artifacts.items()):
        manifest.formats[fmt] = [ArtifactRecord(name=name, role=role_of(name), size=size, sha256=sha256)
                                 for name, size, sha256 in arts]
    return manifest

"""Assemble a spec's root filesystem the way LinuxKit does, as a Tree.

Order (LinuxKit's): kernel image files and kernel.tar, init images flattened into `/`, the onboot,
onshutdown and service bundles, then the `files` entries. Container bundles get LinuxKit's image filter
(some files dropped, /etc/hosts replaced, mount points created) and config.json/runtime.json from
`lkit.build.ociconfig`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lkit.build import ociconfig
from lkit.build.tree import Content, Node, Tree
from lkit.errors import BuildError, ImageError, SpecError
from lkit.images.layers import iter_layer
from lkit.images.store import Image, Store
from lkit.spec.model import FileEntry, ImageEntry, Spec

# Paths LinuxKit drops from every image tar, and the files it writes in their place.
DROPPED = frozenset({".dockerenv", "Dockerfile", "dev/console", "dev/pts", "dev/shm", "etc/hostname"})
HOSTS = b"127.0.0.1       localhost\n::1     localhost ip6-localhost ip6-loopback\n"
CONTAINER_DIRS = ("dev", "dev/pts", "dev/shm", "etc", "proc", "sys")

# Files of the kernel image that go to boot/ instead of into the initrd's root.
BOOT_DIR = "boot"


@dataclass
class KernelFiles:
    kernel: Content
    ucode: Content | None = None


@dataclass
class Assembly:
    """The result of assembly: the tree and what the output writers need beside it."""

    tree: Tree
    kernel: KernelFiles | None
    cmdline: str
    images: dict[str, str] = field(default_factory=dict)  # image reference -> manifest digest


def _apply_layers(tree: Tree, store: Store, image: Image, base: Node, *, container: bool) -> None:
    for layer, diff_id in zip(image.layers, image.diff_ids):
        tar_path = store.uncompressed_layer(layer, diff_id)
        _apply_layer_tar(tree, tar_path, image.ref, base, container=container)


def _apply_layer_tar(tree: Tree, tar_path: Path, image_ref: str, base: Node, *, container: bool, prefix: str = "") -> None:
    for entry in iter_layer(tar_path, image_ref):
        path = prefix + entry.path
        if container and entry.path in DROPPED:
            continue
        where = f"{image_ref}: {entry.path}"
        try:
            if entry.kind == "dir":
                tree.add_dir(path, entry.mode, entry.uid, entry.gid, base=base, where=where)
            elif entry.kind == "file":
                content = Content(source=tar_path, offset=entry.offset, size=entry.size)
                tree.add_file(path, content, entry.mode, entry.uid, entry.gid, base=base, where=where)
            elif entry.kind == "symlink":
                tree.add_symlink(path, entry.linkname, entry.uid, entry.gid, base=base, where=where)
            elif entry.kind == "hardlink":
                target = tree.lookup(prefix + entry.linkname, base)
                if target is None or target.kind != "file":
                    raise ImageError(f"hard link {entry.path!r} points at {entry.linkname!r}, which is not a file of this image",
                                     where=image_ref)
                tree.add_file(path, target.content or b"", target.mode, target.uid, target.gid, base=base, where=where)
            elif entry.kind == "whiteout":
                tree.remove(path, base=base)
            elif entry.kind == "opaque":
                tree.clear_dir(path, base=base)
        except BuildError as exc:
            raise ImageError(exc.message, where=where, hint=exc.hint) from None


def _container_fixups(tree: Tree, base: Node) -> None:
    """LinuxKit's changes to a container image: mount points exist, /etc/hosts and /etc/mtab set."""
    for d in CONTAINER_DIRS:
        tree.ensure_dir(d, base=base)
    tree.add_file("etc/hosts", HOSTS, 0o644, base=base)
    if tree.lookup("etc/mtab", base) is None:
        tree.add_symlink("etc/mtab", "/proc/mounts", base=base)


class Assembler:
    """Builds the Tree for one spec from the images in `store`."""

    def __init__(self, spec: Spec, store: Store, *, resolve: Callable[[str], Image] | None = None) -> None:
        self.spec = spec
        self.store = store
        self.resolve = resolve or store.resolve
        self.idmap = ociconfig.IdMap.from_spec(spec)
        self.tree = Tree()
        self.images: dict[str, str] = {}

    def _image(self, ref: str, where: object) -> Image:
        try:
            image = self.resolve(ref)
        except ImageError as exc:
            raise ImageError(exc.message, where=f"{where}" if where else exc.where, hint=exc.hint) from None
        self.images[ref] = image.digest
        return image

    def _layers(self, tree: Tree, image: Image, base: Node, *, container: bool, where: object) -> None:
        """Apply an image's layers; an error names the spec entry (`where`) and the image."""
        try:
            _apply_layers(tree, self.store, image, base, container=container)
        except ImageError as exc:
            detail = f"{exc.where}: {exc.message}" if exc.where else exc.message
            if image.ref not in detail:
                detail = f"image {image.ref}: {detail}"
            raise ImageError(detail, where=str(where) if where else None, hint=exc.hint) from None

    def _init_where(self, ref: str) -> str:
        return f"{self.spec.sources[0]}: init {ref}" if self.spec.sources else f"init {ref}"

    def assemble(self) -> Assembly:
        kernel = self._kernel()
        for ref in self.spec.init:
            image = self._image(ref, self._init_where(ref))
            self._layers(self.tree, image, self.tree.root, container=False, where=self._init_where(ref))
        for section in ("onboot", "onshutdown", "services"):
            for index, entry in enumerate(getattr(self.spec, section)):
                self._bundle(entry, ociconfig.bundle_prefix(section, index, entry.name))
        for volume in self.spec.volumes:
            if volume.image:
                image = self._image(volume.image, volume.where)
                base = self.tree.subtree(f"containers/volumes/{volume.name}")
                self._layers(self.tree, image, base, container=False, where=f"{volume.where}: volume {volume.name}")
        for entry in self.spec.files:
            self._file(entry)
        cmdline = self.spec.kernel.cmdline if self.spec.kernel else ""
        return Assembly(self.tree, kernel, cmdline, dict(self.images))

    def _kernel(self) -> KernelFiles | None:
        spec_kernel = self.spec.kernel
        if spec_kernel is None:
            return None
        image = self._image(spec_kernel.image, spec_kernel.where)
        scratch = Tree()
        self._layers(scratch, image, scratch.root, container=False, where=f"{spec_kernel.where}: kernel.image")

        def file_of(name: str) -> Content | None:
            node = scratch.lookup(name)
            return node.content if node is not None and node.kind == "file" else None

        kernel = file_of(spec_kernel.binary)
        if kernel is None:
            raise ImageError(f"kernel image has no file {spec_kernel.binary!r}", where=f"{spec_kernel.where}: kernel.image {image.ref}",
                             hint="set kernel.binary to the kernel's file name in the image")
        if spec_kernel.tar and spec_kernel.tar != "none":
            tar = file_of(spec_kernel.tar)
            if tar is None:
                raise ImageError(f"kernel image has no file {spec_kernel.tar!r}", where=f"{spec_kernel.where}: kernel.image {image.ref}",
                                 hint="set kernel.tar: none if the image has no modules tar")
            self._unpack_kernel_tar(tar, image.ref)
        ucode = None
        if spec_kernel.ucode:
            ucode = file_of(spec_kernel.ucode)
            if ucode is None:
                raise ImageError(f"kernel image has no ucode file {spec_kernel.ucode!r}", where=f"{spec_kernel.where}: kernel.ucode")
        return KernelFiles(kernel=kernel, ucode=ucode)

    def _unpack_kernel_tar(self, tar: Content, image_ref: str) -> None:
        """kernel.tar is a tar inside a layer: its entries are ranges of the same layer file."""
        if tar.source is None:
            raise ImageError("kernel.tar is not stored in a layer", where=image_ref)
        window = _TarWindow(tar.source, tar.offset, tar.size, self.store.root)
        _apply_layer_tar(self.tree, window.path(), f"{image_ref} kernel.tar", self.tree.root, container=False)

    def _bundle(self, entry: ImageEntry, path: str) -> None:
        image = self._image(entry.image, entry.where)
        section = path.split("/")[1] if path.startswith("containers/") else "entry"
        info = ociconfig.ImageInfo(ref=image.ref, config=image.config.get("config") or {})
        _check_runtime_config(info, f"{entry.where}: {section} {entry.name}")
        try:
            bundle = ociconfig.generate(entry, info, self.idmap, prefix=path)
        except ImageError as exc:
            detail = f"{exc.where}: {exc.message}" if exc.where else exc.message
            raise ImageError(detail, where=f"{entry.where}: {section} {entry.name}", hint=exc.hint) from None
        self.tree.add_file(f"{path}/config.json", bundle.config_json(), 0o644)
        self.tree.add_file(f"{path}/runtime.json", bundle.runtime_json(), 0o644)
        if bundle.readonly:
            root = self.tree.subtree(f"{path}/rootfs")
        else:
            root = self.tree.subtree(f"{path}/lower")
            self.tree.ensure_dir(f"{path}/tmp")
            self.tree.ensure_dir(f"{path}/rootfs")
        self._layers(self.tree, image, root, container=True, where=f"{entry.where}: {section} {entry.name}")
        _container_fixups(self.tree, root)

    def _file(self, entry: FileEntry) -> None:
        where = str(entry.where) if entry.where else entry.path
        uid = self.idmap.resolve(entry.uid, where) if isinstance(entry.uid, str) else entry.uid
        gid = self.idmap.resolve(entry.gid, where) if isinstance(entry.gid, str) else entry.gid
        if entry.directory:
            mode = 0o700 if entry.mode is None else entry.mode
            self.tree.add_dir(entry.path, mode, uid, gid, where=where)
            return
        if entry.symlink is not None:
            self.tree.add_symlink(entry.path, entry.symlink, uid, gid, where=where)
            return
        mode = 0o600 if entry.mode is None else entry.mode
        if entry.contents is not None:
            data = entry.contents.encode()
        elif entry.metadata is not None:
            merged = self.spec.to_dict()
            data = (json.dumps(merged, sort_keys=True) if entry.metadata == "json" else yaml.safe_dump(merged, sort_keys=True)).encode()
        elif entry.source is not None:
            source = allowed_source(entry, self.spec)
            if source is None:
                return
            data = source.read_bytes()
        else:
            data = b""
        self.tree.add_file(entry.path, data, mode, uid, gid, where=where)


# Image config fields the bundle generator uses, and the JSON types the OCI image spec gives them.
_CONFIG_LISTS = ("Entrypoint", "Cmd", "Env")
_CONFIG_STRINGS = ("WorkingDir", "User")


def _check_runtime_config(info: ociconfig.ImageInfo, where: str) -> None:
    """A hostile or broken image config is an ImageError naming the image, not a crash or a bad bundle."""
    config = info.config
    if not isinstance(config, dict):
        raise ImageError(f"image {info.ref}: config is not an object", where=where)
    for key in _CONFIG_LISTS:
        value = config.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ImageError(f"image {info.ref}: config {key} must be a list of strings, got {value!r:.80}",
                             where=where, hint="rebuild the image with a valid config")
    for key in _CONFIG_STRINGS:
        value = config.get(key)
        if value is not None and not isinstance(value, str):
            raise ImageError(f"image {info.ref}: config {key} must be a string, got {value!r:.80}",
                             where=where, hint="rebuild the image with a valid config")


def allowed_source_roots(spec: Spec) -> list[Path]:
    """Where `files[].source` may read from: the spec's folders, $HOME, and $LKIT_FILES_FROM."""
    roots = [Path(p).resolve().parent for p in spec.sources]
    roots.append(Path.home().resolve())
    roots += [Path(p).resolve() for p in os.environ.get("LKIT_FILES_FROM", "").split(os.pathsep) if p]
    return roots


def allowed_source(entry: FileEntry, spec: Spec) -> Path | None:
    assert entry.source is not None
    where = str(entry.where) if entry.where else entry.path
    base = Path(entry.where.file).resolve().parent if entry.where and entry.where.file else Path.cwd()
    raw = Path(os.path.expanduser(entry.source))
    path = (raw if raw.is_absolute() else base / raw).resolve()
    roots = allowed_source_roots(spec)
    if not any(path == r or r in path.parents for r in roots):
        raise SpecError(f"files source {entry.source!r} resolves to {path}, outside the allowed folders",
                        where=where, hint="allowed: " + ", ".join(map(str, roots)) + " (add more with LKIT_FILES_FROM)")
    if not path.exists():
        if entry.optional:
            return None
        raise SpecError(f"files source {entry.source!r} does not exist ({path})", where=where, hint="set optional: true to allow that")
    if not path.is_file():
        raise SpecError(f"files source {entry.source!r} is not a regular file ({path})", where=where)
    return path


class _TarWindow:
    """A copy of a tar embedded in a layer, cached by position, so iter_layer can read it as a file."""

    def __init__(self, source: Path, offset: int, size: int, cache_root: Path) -> None:
        self.source, self.offset, self.size = source, offset, size
        self.cache = cache_root / "lkit-embedded" / f"{source.name}-{offset}-{size}.tar"

    def path(self) -> Path:
        if self.cache.exists() and self.cache.stat().st_size == self.size:
            return self.cache
        self.cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as out:
            for chunk in Content(source=self.source, offset=self.offset, size=self.size).chunks():
                out.write(chunk)
        os.replace(tmp, self.cache)
        return self.cache

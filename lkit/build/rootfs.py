"""Assemble a spec's root filesystem the way LinuxKit does, as a Tree.

Order and rules are LinuxKit's (src/cmd/linuxkit/moby/build/build.go and image.go): the kernel
(boot/kernel, boot/cmdline, boot/ucode.cpio and kernel.tar's files), the init images flattened into
`/`, the volumes, the onboot, onshutdown and service bundles, the `files` entries, and last an SPDX
SBOM. Every image, init and volumes included, goes through LinuxKit's image filter: some files are
dropped, /etc/hosts and /etc/resolv.conf are replaced, and a skeleton (dev, dev/pts, dev/shm, etc,
proc, sys, etc/mtab) is written over whatever the image had. Entries from layers keep their mtimes;
what the builder makes gets LinuxKit's fixed time.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from lkit.build import metadata, ociconfig, sbom
from lkit.build.tree import DEFAULT_MTIME, Content, Node, Tree
from lkit.errors import BuildError, ImageError, SpecError
from lkit.images import refs
from lkit.images.layers import iter_layer
from lkit.images.store import Image, Store
from lkit.spec.model import FileEntry, ImageEntry, Spec, Volume

# LinuxKit's image filter (moby/build/image.go): paths dropped from every image, files replaced, and
# the entries written after every image whatever it held.
DROPPED = frozenset({".dockerenv", "Dockerfile", "dev/console", "dev/pts", "dev/shm", "etc/hostname"})
HOSTS = (b"127.0.0.1       localhost\n::1     localhost ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\n"
         b"ff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n")
RESOLV_CONF = b"\n# no resolv.conf configured\n"
# In the root (init images and volumes), /etc/resolv.conf is this symlink: somewhere writable.
RESOLV_SYMLINK = "/run/resolvconf/resolv.conf"
SKELETON_DIRS = ("dev", "dev/pts", "dev/shm", "etc", "proc", "sys")
APK_DB = "lib/apk/db/installed"
# LinuxKit's merged apk database header sets no ModTime: Go's tar writes its zero time as 0.
APK_DB_MTIME = 0

# Files of the kernel image that go to boot/; the initrd leaves out everything under boot/.
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


@dataclass
class _Applied:
    """What applying one image's layers saw that LinuxKit's filter needs afterwards."""

    apk_db: Content | None = None


def _apply_layers(tree: Tree, store: Store, image: Image, base: Node, base_path: str, *, filtered: bool) -> _Applied:
    seen = _Applied()
    for layer, diff_id in zip(image.layers, image.diff_ids):
        tar_path = store.uncompressed_layer(layer, diff_id)
        _apply_layer_tar(tree, tar_path, image.ref, base, base_path, filtered=filtered, seen=seen)
    return seen


def _apply_layer_tar(tree: Tree, tar_path: Path, image_ref: str, base: Node, base_path: str, *, filtered: bool,
                     seen: _Applied | None = None) -> None:
    """One layer into `base` (at `base_path` from the root). Whiteouts hide lower layers' entries;
    an opaque marker does not (LinuxKit flattens images with go-containerregistry's mutate.Extract,
    which treats `.wh..wh..opq` as the whiteout of a file of that name)."""
    for entry in iter_layer(tar_path, image_ref):
        path = entry.path
        if filtered and path in DROPPED:
            continue
        where = f"{image_ref}: {entry.path}"
        try:
            if entry.kind == "dir":
                tree.add_dir(path, entry.mode, entry.uid, entry.gid, base=base, where=where, mtime=entry.mtime)
            elif entry.kind == "file":
                content = Content(source=tar_path, offset=entry.offset, size=entry.size)
                tree.add_file(path, content, entry.mode, entry.uid, entry.gid, base=base, where=where, mtime=entry.mtime)
                if seen is not None and path == APK_DB:
                    seen.apk_db = content
            elif entry.kind == "symlink":
                tree.add_symlink(path, entry.linkname, entry.uid, entry.gid, base=base, where=where, mode=entry.mode,
                                 mtime=entry.mtime)
            elif entry.kind == "hardlink":
                linked = tree.lookup(entry.linkname, base)
                if linked is None or linked.kind not in ("file", "hardlink"):
                    raise ImageError(f"layer entry {entry.path!r} is a hardlink to {entry.linkname!r}, which the image "
                                     "does not have as a regular file", where=where,
                                     hint="the image is unsafe to use; rebuild it from trusted sources")
                target = posixpath.join(base_path, entry.linkname) if base_path else entry.linkname
                tree.add_node(path, Node("hardlink", entry.mode, entry.uid, entry.gid, target=target, mtime=entry.mtime),
                              base=base, where=where)
            elif entry.kind == "fifo":
                tree.add_node(path, Node("fifo", entry.mode, entry.uid, entry.gid, mtime=entry.mtime), base=base, where=where)
            elif entry.kind == "whiteout":
                tree.remove(path, base=base)
                if seen is not None and path == APK_DB:
                    seen.apk_db = None
        except BuildError as exc:
            raise ImageError(exc.message, where=where, hint=exc.hint) from None


def _skeleton(tree: Tree, base: Node, *, resolv_symlink: bool) -> None:
    """What LinuxKit's filter writes after every image: the skeleton dirs (over the image's own, with
    LinuxKit's mode and time), its /etc/hosts, /etc/resolv.conf (a file in containers, a symlink to
    a writable place in the root), and /etc/mtab unless the image has one (then only its time)."""
    for d in SKELETON_DIRS:
        tree.add_dir(d, 0o755, base=base)
    tree.add_file("etc/hosts", HOSTS, 0o644, base=base)
    mtab = tree.lookup("etc/mtab", base)
    if mtab is not None:
        mtab.mtime = DEFAULT_MTIME
    else:
        tree.add_symlink("etc/mtab", "/proc/mounts", base=base, mode=0o755)
    if resolv_symlink:
        tree.add_symlink("etc/resolv.conf", RESOLV_SYMLINK, base=base, mode=0o644)
    else:
        tree.add_file("etc/resolv.conf", RESOLV_CONF, 0o644, base=base)


class Assembler:
    """Builds the Tree for one spec from the images in `store`."""

    def __init__(self, spec: Spec, store: Store, *, resolve: Callable[[str], Image] | None = None,
                 with_sbom: bool = True) -> None:
        self.spec = spec
        self.store = store
        self.resolve = resolve or store.resolve
        self.idmap = ociconfig.IdMap.from_spec(spec)
        self.tree = Tree()
        self.images: dict[str, str] = {}
        self.with_sbom = with_sbom
        self._unpacked: dict[str, str] = {}  # normalised image reference -> where its first bundle has it

    def _image(self, ref: str, where: object) -> Image:
        try:
            image = self.resolve(ref)
        except ImageError as exc:
            raise ImageError(exc.message, where=f"{where}" if where else exc.where, hint=exc.hint) from None
        self.images[ref] = image.digest
        return image

    def _layers(self, image: Image, base_path: str, *, filtered: bool, where: object,
                tree: Tree | None = None) -> _Applied:
        """Apply an image's layers at `base_path`; an error names the spec entry (`where`) and the image."""
        tree = tree or self.tree
        base = tree.subtree(base_path) if base_path else tree.root
        try:
            return _apply_layers(tree, self.store, image, base, base_path, filtered=filtered)
        except ImageError as exc:
            detail = f"{exc.where}: {exc.message}" if exc.where else exc.message
            if image.ref not in detail:
                detail = f"image {image.ref}: {detail}"
            raise ImageError(detail, where=str(where) if where else None, hint=exc.hint) from None

    def _prefix_dirs(self, path: str) -> None:
        """LinuxKit's tarPrefix: every component of `path` as a 0755 directory of its own."""
        parts = path.split("/")
        for n in range(1, len(parts) + 1):
            self.tree.add_dir("/".join(parts[:n]), 0o755)

    def _init_where(self, ref: str) -> str:
        return f"{self.spec.sources[0]}: init {ref}" if self.spec.sources else f"init {ref}"

    def assemble(self) -> Assembly:
        kernel = self._kernel()
        apk_dbs: list[Content] = []
        for ref in self.spec.init:
            image = self._image(ref, self._init_where(ref))
            applied = self._layers(image, "", filtered=True, where=self._init_where(ref))
            _skeleton(self.tree, self.tree.root, resolv_symlink=True)
            if applied.apk_db is not None:
                apk_dbs.append(applied.apk_db)
        if len(apk_dbs) > 1:
            # LinuxKit's apkTarWriter: several init images' apk databases are joined, not overwritten.
            joined = b"".join(b"".join(db.chunks()) + b"\n\n" for db in apk_dbs)
            self.tree.add_file(APK_DB, joined, 0o644, mtime=APK_DB_MTIME)
        for volume in self.spec.volumes:
            self._volume(volume)
        for section in ("onboot", "onshutdown", "services"):
            for index, entry in enumerate(getattr(self.spec, section)):
                self._bundle(entry, ociconfig.bundle_prefix(section, index, entry.name))
        added: set[str] = set()
        for entry in self.spec.files:
            self._file(entry, added)
        if self.with_sbom:
            self.tree.add_file(sbom.FILENAME, sbom.document(self.spec, self.images), 0o644)
        cmdline = self.spec.kernel.cmdline if self.spec.kernel else ""
        return Assembly(self.tree, kernel, cmdline, dict(self.images))

    def _kernel(self) -> KernelFiles | None:
        spec_kernel = self.spec.kernel
        if spec_kernel is None:
            return None
        image = self._image(spec_kernel.image, spec_kernel.where)
        scratch = Tree()
        self._layers(image, "", filtered=False, where=f"{spec_kernel.where}: kernel.image", tree=scratch)

        def node_of(name: str) -> Node | None:
            node = scratch.lookup(name)
            return node if node is not None and node.kind == "file" else None

        kernel = node_of(spec_kernel.binary)
        if kernel is None or kernel.content is None:
            raise ImageError(f"kernel image has no file {spec_kernel.binary!r}", where=f"{spec_kernel.where}: kernel.image {image.ref}",
                             hint="set kernel.binary to the kernel's file name in the image")
        ucode = None
        if spec_kernel.ucode:
            ucode = node_of(spec_kernel.ucode)
            if ucode is None or ucode.content is None:
                raise ImageError(f"kernel image has no ucode file {spec_kernel.ucode!r}", where=f"{spec_kernel.where}: kernel.ucode")
            self.tree.add_file("boot/ucode.cpio", ucode.content, ucode.mode)
        self.tree.add_dir(BOOT_DIR, 0o755)
        self.tree.add_file("boot/cmdline", spec_kernel.cmdline.encode(), 0o644)
        self.tree.add_file("boot/kernel", kernel.content, kernel.mode)
        if spec_kernel.tar and spec_kernel.tar != "none":
            tar = node_of(spec_kernel.tar)
            if tar is None or tar.content is None:
                raise ImageError(f"kernel image has no file {spec_kernel.tar!r}", where=f"{spec_kernel.where}: kernel.image {image.ref}",
                                 hint="set kernel.tar: none if the image has no modules tar")
            self._unpack_kernel_tar(tar.content, image.ref)
        return KernelFiles(kernel=kernel.content, ucode=ucode.content if ucode else None)

    def _unpack_kernel_tar(self, tar: Content, image_ref: str) -> None:
        """kernel.tar is a tar inside a layer: its entries are ranges of the same layer file."""
        if tar.source is None:
            raise ImageError("kernel.tar is not stored in a layer", where=image_ref)
        window = _TarWindow(tar.source, tar.offset, tar.size, self.store.root)
        _apply_layer_tar(self.tree, window.path(), f"{image_ref} kernel.tar", self.tree.root, "", filtered=False)

    def _volume(self, volume: Volume) -> None:
        """containers/volumes/NAME/{lower,tmp,merged}; the image (if any) unpacked in lower/."""
        base = f"containers/volumes/{volume.name}"
        self._prefix_dirs(f"{base}/lower")
        if volume.image:
            if volume.format == "oci":
                raise BuildError(f"volume {volume.name}: format oci is not supported by lkit yet",
                                 where=str(volume.where), hint="use format: filesystem (the default)")
            image = self._image(volume.image, volume.where)
            self._layers(image, f"{base}/lower", filtered=True, where=f"{volume.where}: volume {volume.name}")
            _skeleton(self.tree, self.tree.subtree(f"{base}/lower"), resolv_symlink=True)
        self.tree.add_dir(f"{base}/tmp", 0o755)
        self.tree.add_dir(f"{base}/merged", 0o755)

    def _bundle(self, entry: ImageEntry, path: str) -> None:
        image = self._image(entry.image, entry.where)
        section = path.split("/")[1] if path.startswith("containers/") else "entry"
        info = ociconfig.ImageInfo(ref=image.ref, config=image.config.get("config") or {})
        _check_runtime_config(info, f"{entry.where}: {section} {entry.name}")
        key = refs.normalise(entry.image)
        shared = self._unpacked.get(key)
        try:
            bundle = ociconfig.generate(entry, info, self.idmap, prefix=path, root=shared,
                                        volumes={v.name: v for v in self.spec.volumes})
        except ImageError as exc:
            detail = f"{exc.where}: {exc.message}" if exc.where else exc.message
            raise ImageError(detail, where=f"{entry.where}: {section} {entry.name}", hint=exc.hint) from None
        if shared is None:
            # The first container of an image unpacks it; later ones mount that copy (LinuxKit's dupMap).
            self._prefix_dirs(bundle.root)
            self._layers(image, bundle.root, filtered=True, where=f"{entry.where}: {section} {entry.name}")
            _skeleton(self.tree, self.tree.subtree(bundle.root), resolv_symlink=False)
            self._unpacked[key] = bundle.root
        else:
            self._prefix_dirs(path)
        self.tree.add_file(f"{path}/config.json", bundle.config_json(), 0o644)
        if not bundle.readonly:
            self.tree.add_dir(f"{path}/tmp", 0o755)
            self.tree.add_dir(f"{path}/rootfs", 0o755)
        elif shared is not None:
            self.tree.add_dir(f"{path}/rootfs", 0o755)
        self.tree.add_file(f"{path}/runtime.json", bundle.runtime_json(), 0o644)

    def _file(self, entry: FileEntry, added: set[str]) -> None:
        """LinuxKit's `files` rules, its quirk included: each missing parent directory gets the file's
        owner and the file's mode with x added where r or w is (`etc/x` mode 0600 makes `etc` 0700)."""
        where = str(entry.where) if entry.where else entry.path
        uid = self.idmap.resolve(entry.uid, where) if isinstance(entry.uid, str) else entry.uid
        gid = self.idmap.resolve(entry.gid, where) if isinstance(entry.gid, str) else entry.gid
        mode = entry.effective_mode
        data = b""
        if not entry.directory and entry.symlink is None:
            if entry.contents is not None:
                data = entry.contents.encode()
            elif entry.metadata is not None:
                data = metadata.render(self.spec, entry.metadata)
            elif entry.source is not None:
                source = allowed_source(entry, self.spec)
                if source is None:
                    return
                data = source.read_bytes()
        parent = posixpath.dirname(entry.path)
        if parent not in ("", ".", "/"):
            parts = [p for p in parent.split("/") if p not in ("", ".")]
            for n in range(1, len(parts) + 1):
                prefix = "/".join(parts[:n])
                if prefix not in added:
                    self.tree.add_dir(prefix, dir_mode(mode), uid, gid, where=where)
                    added.add(prefix)
        added.add(entry.path)
        if entry.directory:
            self.tree.add_dir(entry.path, mode, uid, gid, where=where)
        elif entry.symlink is not None:
            self.tree.add_symlink(entry.path, entry.symlink, uid, gid, where=where, mode=mode)
        else:
            self.tree.add_file(entry.path, data, mode, uid, gid, where=where)


def dir_mode(mode: int) -> int:
    """LinuxKit's mode for the parents of a `files` entry: x added to each class that has any bit."""
    for bits, x in ((0o700, 0o100), (0o070, 0o010), (0o007, 0o001)):
        if mode & bits:
            mode |= x
    return mode


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

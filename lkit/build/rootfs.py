"""Assemble a spec's root filesystem the way LinuxKit does: as a Tree, and as LinuxKit's tar stream.

Order and rules are LinuxKit's (src/cmd/linuxkit/moby/build/build.go and image.go): the kernel
(boot/kernel, boot/cmdline, boot/ucode.cpio and kernel.tar's files), the init images flattened into
`/`, the volumes, the onboot, onshutdown and service bundles, the `files` entries, and last an SPDX
SBOM. Every image, init and volumes included, goes through LinuxKit's image filter: some files are
dropped, /etc/hosts and /etc/resolv.conf are replaced, and a skeleton (dev, dev/pts, dev/shm, etc,
proc, sys, etc/mtab) is written after whatever the image had. Images are flattened as LinuxKit's
go-containerregistry does it (top layer first, whiteouts hide lower entries, opaque markers do not).

Every entry goes two ways: into the Tree (the final state, with chroot-safe placement: what the
initrd and the disk formats are made from) and into `stream`, the headers LinuxKit's builder writes
in its order, duplicates and LINUXKIT.source/location records included (the `tar` output, written by
`lkit.build.gotar` with Go's bytes). Entries from layers keep their mtimes; what the builder makes
gets LinuxKit's fixed time.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

from lkit.build import gotar, metadata, ociconfig, sbom
from lkit.build.gotar import GoHeader
from lkit.build.tree import DEFAULT_MTIME, Content, FsNode, NodeKind, Tree
from lkit.errors import BuildError, ImageError, LkitError, SpecError
from lkit.images import refs
from lkit.images.layers import LayerEntry, iter_layer
from lkit.images.store import Image, Store
from lkit.spec.model import FileEntry, ImageEntry, Spec, Volume

# LinuxKit's image filter (moby/build/image.go): paths dropped from every image, files replaced, and
# the entries written after every image whatever it held (its `touch` table, in its sorted order).
DROPPED = frozenset({".dockerenv", "Dockerfile", "dev/console", "dev/pts", "dev/shm", "etc/hostname"})
HOSTS = (b"127.0.0.1       localhost\n::1     localhost ip6-localhost ip6-loopback\nfe00::0 ip6-localnet\n"
         b"ff00::0 ip6-mcastprefix\nff02::1 ip6-allnodes\nff02::2 ip6-allrouters\n")
RESOLV_CONF = b"\n# no resolv.conf configured\n"
# In the root (init images and volumes), /etc/resolv.conf is this symlink: somewhere writable.
RESOLV_SYMLINK = "/run/resolvconf/resolv.conf"
# The touch table's keys are "dev/", "etc/"...; flattened names never end in "/", so of these only
# etc/mtab can be found in an image: the directories are always written again (mode 0755, root).
SKELETON = ("dev", "dev/pts", "dev/shm", "etc", "etc/hosts", "etc/mtab", "etc/resolv.conf", "proc", "sys")
APK_DB = "lib/apk/db/installed"
# LinuxKit's merged apk database header sets no ModTime: Go's tar writes its zero time as 0.
APK_DB_MTIME = 0
BOOT_DIR = "boot"
_KIND_FLAG = {"dir": gotar.TYPE_DIR, "file": gotar.TYPE_REG, "symlink": gotar.TYPE_SYMLINK,
              "hardlink": gotar.TYPE_LINK, "fifo": gotar.TYPE_FIFO}


@dataclass
class KernelFiles:
    kernel: Content
    ucode: Content | None = None


@dataclass
class Assembly:
    """The result of assembly: the tree, LinuxKit's stream of it, and what the output writers need."""

    tree: Tree
    kernel: KernelFiles | None
    cmdline: str
    images: dict[str, str] = field(default_factory=dict)  # image reference -> manifest digest
    stream: list[GoHeader] = field(default_factory=list)


def flatten(store: Store, image: Image) -> list[tuple[LayerEntry, Path]]:
    """An image's files as go-containerregistry's mutate.Extract gives them to LinuxKit: top layer
    first; a path already seen in an upper layer, or under a whited-out or non-directory path, is
    skipped; whiteouts are not emitted, and an opaque marker only hides a file of its own name."""
    seen: dict[str, bool] = {}  # path -> hides what is below it
    out: list[tuple[LayerEntry, Path]] = []
    tars = [store.uncompressed_layer(layer, diff_id) for layer, diff_id in zip(image.layers, image.diff_ids)]
    for tar_path in reversed(tars):
        for entry in iter_layer(tar_path, image.ref, root=True):
            tombstone = entry.kind in ("whiteout", "opaque")
            key = posixpath.join(entry.path, ".wh..opq") if entry.kind == "opaque" else entry.path
            if key in seen or _in_whiteout_dir(seen, key):
                continue
            seen[key] = tombstone or entry.kind != "dir"
            if not tombstone:
                out.append((entry, tar_path))
    return out


def _in_whiteout_dir(seen: dict[str, bool], path: str) -> bool:
    while True:
        parent = posixpath.dirname(path) or "."
        if parent == path:
            return False
        if seen.get(parent):
            return True
        path = parent


class _Emitter:
    """Writes each entry to the Tree (inside a chroot `base`) and to LinuxKit's stream (by full name)."""

    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self.stream: list[GoHeader] = []

    def emit(self, name: str, node: FsNode, *, pax: dict[str, str], base: FsNode | None = None, rel: str | None = None,
             where: str = "", header: GoHeader | None = None) -> None:
        """`name`: the stream's name; `rel`: the tree path inside `base` (default: `name` from the root)."""
        rel = name if rel is None else rel
        path = rel.strip("/")
        if path in ("", "."):
            if node.kind == "dir":
                target = base or self.tree.root
                target.mode, target.uid, target.gid, target.mtime = node.mode, node.uid, node.gid, node.mtime
        else:
            self.tree.add_node(path, node, base=base, where=where)
        if header is None:
            header = GoHeader(name=name, typeflag=_KIND_FLAG[node.kind], mode=node.mode, uid=node.uid, gid=node.gid,
                              mtime=node.mtime, linkname=node.target)
        if node.kind == "file" and node.content is not None:
            header.size, header.content = node.content.length, node.content
        header.pax = {**header.pax, **pax}
        self.stream.append(header)

    def prefix_dirs(self, path: str, pax: dict[str, str]) -> None:
        """LinuxKit's tarPrefix: a 0755 directory for every component of `path` (given with a final /)."""
        parts = path.rstrip("/").split("/")
        for n in range(1, len(parts) + 1):
            self.emit("/".join(parts[:n]), FsNode(NodeKind.DIR, 0o755, 0, 0), pax=pax)


def _naming(exc: BuildError | ImageError, image: Image, where: object) -> ImageError:
    """An error in an image, told at the spec entry that uses it (`where`), naming the image."""
    detail = f"{exc.where}: {exc.message}" if exc.where else exc.message
    if image.ref not in detail:
        detail = f"image {image.ref}: {detail}"
    return ImageError(detail, where=str(where) if where else None, hint=exc.hint)


def _records(source: str, location: str) -> dict[str, str]:
    return {"LINUXKIT.source": source, "LINUXKIT.location": location}


def _layer_header(entry: LayerEntry, name: str, linkname: str) -> GoHeader:
    pax = dict(entry.pax)
    mtime: int | Decimal = Decimal(pax["mtime"]) if "mtime" in pax else entry.mtime
    return GoHeader(name=name, typeflag=_KIND_FLAG[entry.kind], mode=entry.mode, uid=entry.uid, gid=entry.gid,
                    mtime=mtime, linkname=linkname, uname=entry.uname, gname=entry.gname, pax=pax)


class RootfsAssembler:
    """Builds the Tree and LinuxKit's stream for one spec from the images in `store`."""

    def __init__(self, spec: Spec, store: Store, *, resolve: Callable[[str], Image] | None = None,
                 with_sbom: bool = True) -> None:
        self.spec = spec
        self.store = store
        self.resolve = resolve or store.resolve
        self.idmap = ociconfig.IdMap.from_spec(spec)
        self.tree = Tree()
        self.out = _Emitter(self.tree)
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

    def _image_tar(self, image: Image, prefix: str, location: str, *, resolv_symlink: bool, where: object,
                   apk: list[Content] | None = None) -> None:
        """LinuxKit's ImageTar: the prefix directories, the filtered image, the skeleton."""
        ref = refs.normalise(image.ref)
        pax = _records(ref, location)
        if prefix:
            self.out.prefix_dirs(prefix, pax)
        base_path = prefix.rstrip("/")
        base = self.tree.subtree(base_path) if base_path else self.tree.root
        found_mtab = False
        hardlinks: list[LayerEntry] = []
        try:
            for entry, tar_path in flatten(self.store, image):
                if entry.path in DROPPED:
                    continue
                name = prefix + entry.path
                header = _layer_header(entry, name, "")
                if entry.path in ("etc/hosts", "etc/resolv.conf"):
                    node = self._replaced(entry.path, header, resolv_symlink=resolv_symlink)
                else:
                    if entry.path == "etc/mtab":
                        found_mtab = True
                        header.mtime = DEFAULT_MTIME
                    node = self._layer_node(entry, tar_path, base_path, header)
                if entry.kind == "hardlink":
                    hardlinks.append(entry)
                if node.kind == "file" and entry.path == APK_DB and apk is not None:
                    apk.append(node.content)  # type: ignore[arg-type]
                self.out.emit(name, node, pax=pax, base=base, rel=entry.path, header=header,
                              where=f"{image.ref}: {entry.path}")
            for entry in hardlinks:  # a link may name a file of a lower layer, which comes later
                linked = self.tree.lookup(entry.linkname, base)
                if linked is None or linked.kind not in ("file", "hardlink"):
                    raise ImageError(f"layer entry {entry.path!r} is a hardlink to {entry.linkname!r}, which the image "
                                     "does not have as a regular file", where=f"{image.ref}: {entry.path}",
                                     hint="the image is unsafe to use; rebuild it from trusted sources")
        except (BuildError, ImageError) as exc:
            raise _naming(exc, image, where) from None
        self._skeleton(prefix, base, pax, resolv_symlink=resolv_symlink, found_mtab=found_mtab)

    @staticmethod
    def _replaced(path: str, header: GoHeader, *, resolv_symlink: bool) -> FsNode:
        """An image's own etc/hosts or etc/resolv.conf: LinuxKit keeps its header, replaces the rest."""
        header.mtime = DEFAULT_MTIME
        if path == "etc/resolv.conf" and resolv_symlink:
            header.typeflag, header.linkname = gotar.TYPE_SYMLINK, RESOLV_SYMLINK
            return FsNode(NodeKind.SYMLINK, header.mode, header.uid, header.gid, target=RESOLV_SYMLINK)
        header.typeflag = gotar.TYPE_REG
        data = HOSTS if path == "etc/hosts" else RESOLV_CONF
        return FsNode(NodeKind.FILE, header.mode, header.uid, header.gid, content=Content(data=data))

    def _layer_node(self, entry: LayerEntry, tar_path: Path, base_path: str, header: GoHeader) -> FsNode:
        if entry.kind == "file":
            return FsNode(NodeKind.FILE, entry.mode, entry.uid, entry.gid, mtime=int(header.mtime),
                        content=Content(source=tar_path, offset=entry.offset, size=entry.size))
        if entry.kind == "hardlink":
            target = posixpath.join(base_path, entry.linkname) if base_path else entry.linkname
            header.linkname = target  # LinuxKit prefixes a hard link's target too
            return FsNode(NodeKind.HARDLINK, entry.mode, entry.uid, entry.gid, target=target, mtime=int(header.mtime))
        if entry.kind == "symlink":
            header.linkname = entry.linkname
            return FsNode(NodeKind.SYMLINK, entry.mode, entry.uid, entry.gid, target=entry.linkname, mtime=int(header.mtime))
        return FsNode(NodeKind(entry.kind), entry.mode, entry.uid, entry.gid, mtime=int(header.mtime))

    def _skeleton(self, prefix: str, base: FsNode, pax: dict[str, str], *, resolv_symlink: bool, found_mtab: bool) -> None:
        for path in SKELETON:
            if path == "etc/mtab":
                if found_mtab:
                    continue
                node = FsNode(NodeKind.SYMLINK, 0o755, target="/proc/mounts")
            elif path == "etc/hosts":
                node = FsNode(NodeKind.FILE, 0o644, content=Content(data=HOSTS))
            elif path == "etc/resolv.conf":
                node = (FsNode(NodeKind.SYMLINK, 0o644, target=RESOLV_SYMLINK) if resolv_symlink else
                        FsNode(NodeKind.FILE, 0o644, content=Content(data=RESOLV_CONF)))
            else:
                node = FsNode(NodeKind.DIR, 0o755)
            self.out.emit(prefix + path, node, pax=pax, base=base, rel=path)

    def _init_where(self, ref: str) -> str:
        return f"{self.spec.sources[0]}: init {ref}" if self.spec.sources else f"init {ref}"

    def assemble(self) -> Assembly:
        self._uncompress_layers()
        kernel = self._kernel()
        apk_dbs: list[Content] = []
        for index, ref in enumerate(self.spec.init):
            image = self._image(ref, self._init_where(ref))
            self._image_tar(image, "", f"init[{index}]", resolv_symlink=True, where=self._init_where(ref), apk=apk_dbs)
        if len(apk_dbs) > 1:
            # LinuxKit's apkTarWriter: several init images' apk databases are joined, not overwritten.
            joined = b"".join(b"".join(db.chunks()) + b"\n\n" for db in apk_dbs)
            node = FsNode(NodeKind.FILE, 0o644, content=Content(data=joined), mtime=APK_DB_MTIME)
            self.out.emit(APK_DB, node, pax=_records("LINUXKIT.apkinit", "init"),
                          header=GoHeader(name=APK_DB, typeflag=gotar.TYPE_REG, mode=0o644, mtime=0, format_pax=False))
        for index, volume in enumerate(self.spec.volumes):
            self._volume(volume, index)
        for section in ("onboot", "onshutdown", "services"):
            for index, entry in enumerate(getattr(self.spec, section)):
                self._bundle(entry, ociconfig.bundle_prefix(section, index, entry.name), f"{section}[{index}]")
        added: set[str] = set()
        for index, entry in enumerate(self.spec.files):
            self._file(entry, index, added)
        if self.with_sbom:
            self.out.emit(sbom.FILENAME, FsNode(NodeKind.FILE, 0o644, content=Content(data=sbom.document(self.spec, self.images))),
                          pax={})
        cmdline = self.spec.kernel.cmdline if self.spec.kernel else ""
        return Assembly(self.tree, kernel, cmdline, dict(self.images), self.out.stream)

    def _uncompress_layers(self) -> None:
        """Every layer the spec uses, uncompressed in parallel before the (serial) assembly reads them.
        Images that do not resolve are left to the assembly, which names them."""
        images = []
        for ref in self.spec.images():
            try:
                images.append(self.resolve(ref))
            except LkitError:
                continue
        self.store.uncompress_layers(images)

    def _kernel(self) -> KernelFiles | None:
        """LinuxKit's kernelFilter over the kernel image: boot/, boot/cmdline and boot/kernel where the
        kernel file is, boot/ucode.cpio where the ucode is, kernel.tar's own entries where it is."""
        spec_kernel = self.spec.kernel
        if spec_kernel is None:
            return None
        image = self._image(spec_kernel.image, spec_kernel.where)
        ref = refs.normalise(image.ref)
        kernel: Content | None = None
        ucode: Content | None = None
        found_tar = False
        where = f"{spec_kernel.where}: kernel.image {image.ref}"
        try:
            files = flatten(self.store, image)
        except (BuildError, ImageError) as exc:
            raise _naming(exc, image, f"{spec_kernel.where}: kernel.image") from None
        for entry, tar_path in files:
            if entry.path in DROPPED or entry.kind != "file" or entry.path not in (
                    spec_kernel.binary, spec_kernel.tar, spec_kernel.ucode):
                continue
            content = Content(source=tar_path, offset=entry.offset, size=entry.size)
            layer_pax = {**dict(entry.pax), **_records(ref, "kernel")}
            boot = GoHeader(name=BOOT_DIR, typeflag=gotar.TYPE_DIR, mode=0o755, mtime=DEFAULT_MTIME, pax=dict(layer_pax))
            if entry.path == spec_kernel.binary:
                if kernel is not None:
                    raise ImageError("found more than one possible kernel image", where=where)
                if ucode is None:
                    self.out.emit(BOOT_DIR, FsNode(NodeKind.DIR, 0o755), pax={}, header=boot)
                cmdline = spec_kernel.cmdline.encode()
                self.out.emit("boot/cmdline", FsNode(NodeKind.FILE, 0o644, content=Content(data=cmdline)), pax={},
                              header=GoHeader(name="boot/cmdline", typeflag=gotar.TYPE_REG, mode=0o644,
                                              mtime=DEFAULT_MTIME, pax=dict(layer_pax)))
                self.out.emit("boot/kernel", FsNode(NodeKind.FILE, entry.mode, content=content), pax={},
                              header=GoHeader(name="boot/kernel", typeflag=gotar.TYPE_REG, mode=entry.mode,
                                              mtime=DEFAULT_MTIME, pax=dict(layer_pax)))
                kernel = content
            elif entry.path == spec_kernel.tar and spec_kernel.tar not in (None, "none"):
                found_tar = True
                self._kernel_tar(content, image.ref, ref)
            elif entry.path == spec_kernel.ucode:
                if kernel is None:
                    self.out.emit(BOOT_DIR, FsNode(NodeKind.DIR, 0o755), pax={}, header=boot)
                self.out.emit("boot/ucode.cpio", FsNode(NodeKind.FILE, entry.mode, content=content), pax={},
                              header=GoHeader(name="boot/ucode.cpio", typeflag=gotar.TYPE_REG, mode=entry.mode,
                                              mtime=DEFAULT_MTIME, pax=dict(layer_pax)))
                ucode = content
        if kernel is None:
            raise ImageError(f"kernel image has no file {spec_kernel.binary!r}", where=where,
                             hint="set kernel.binary to the kernel's file name in the image")
        if spec_kernel.tar and spec_kernel.tar != "none" and not found_tar:
            raise ImageError(f"kernel image has no file {spec_kernel.tar!r}", where=where,
                             hint="set kernel.tar: none if the image has no modules tar")
        if spec_kernel.ucode and ucode is None:
            raise ImageError(f"kernel image has no ucode file {spec_kernel.ucode!r}", where=f"{spec_kernel.where}: kernel.ucode")
        return KernelFiles(kernel=kernel, ucode=ucode)

    def _kernel_tar(self, tar: Content, image_ref: str, ref: str) -> None:
        """kernel.tar's entries, as they are (names not cleaned), with LinuxKit's records added."""
        if tar.source is None:
            raise ImageError("kernel.tar is not stored in a layer", where=image_ref)
        window = _TarWindow(tar.source, tar.offset, tar.size, self.store.root).path()
        where = f"{self.spec.kernel.where}: kernel.tar" if self.spec.kernel else "kernel.tar"
        try:
            self._kernel_tar_entries(window, image_ref, ref)
        except (BuildError, ImageError) as exc:
            raise ImageError(exc.message if exc.where is None else f"{exc.where}: {exc.message}", where=where,
                             hint=exc.hint) from None

    def _kernel_tar_entries(self, window: Path, image_ref: str, ref: str) -> None:
        for entry in iter_layer(window, f"{image_ref} kernel.tar", root=True):
            if entry.kind in ("whiteout", "opaque"):
                continue
            header = _layer_header(entry, entry.name, "")
            node = self._layer_node(entry, window, "", header)
            self.out.emit(entry.name, node, pax=_records(ref, "kernel"), rel=entry.path, header=header,
                          where=f"{image_ref} kernel.tar: {entry.path}")

    def _volume(self, volume: Volume, index: int) -> None:
        """containers/volumes/NAME/{lower,tmp,merged}; the image (if any) unpacked in lower/."""
        base = f"containers/volumes/{volume.name}"
        location = f"volume[{index}]"
        if volume.image:
            if volume.format == "oci":
                raise BuildError(f"volume {volume.name}: format oci is not supported by lkit yet",
                                 where=str(volume.where), hint="use format: filesystem (the default)")
            image = self._image(volume.image, volume.where)
            self._image_tar(image, f"{base}/lower/", location, resolv_symlink=True,
                            where=f"{volume.where}: volume {volume.name}")
        else:
            self.out.prefix_dirs(f"{base}/lower/", _records("empty", location))
        pax = _records("linuxkit.volumes", location)
        self.out.emit(f"{base}/tmp/", FsNode(NodeKind.DIR, 0o755), pax=pax)
        self.out.emit(f"{base}/merged/", FsNode(NodeKind.DIR, 0o755), pax=pax)

    def _bundle(self, entry: ImageEntry, path: str, location: str) -> None:
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
        pax = _records(key, location)
        if shared is None:
            # The first container of an image unpacks it; later ones mount that copy (LinuxKit's dupMap).
            self._image_tar(image, bundle.root + "/", location, resolv_symlink=False,
                            where=f"{entry.where}: {section} {entry.name}")
            self._unpacked[key] = bundle.root
        else:
            self.out.prefix_dirs(path + "/", pax)
        self.out.emit(f"{path}/config.json", FsNode(NodeKind.FILE, 0o644, content=Content(data=bundle.config_json())), pax=pax)
        if not bundle.readonly:
            self.out.emit(f"{path}/tmp", FsNode(NodeKind.DIR, 0o755), pax=pax)
            self.out.emit(f"{path}/rootfs", FsNode(NodeKind.DIR, 0o755), pax=pax)
        elif shared is not None:
            self.out.emit(f"{path}/rootfs", FsNode(NodeKind.DIR, 0o755), pax=pax)
        self.out.emit(f"{path}/runtime.json", FsNode(NodeKind.FILE, 0o644, content=Content(data=bundle.runtime_json())), pax=pax)

    def _file(self, entry: FileEntry, index: int, added: set[str]) -> None:
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
        pax = _records("linuxkit.files", f"files[{index}]")
        name = entry.written_path
        name = name[1:] if name.startswith("/") else name
        parent = posixpath.dirname(name)
        root = ""
        for part in parent.split("/"):
            if part in (".", "/", ""):
                continue
            root = f"{root}/{part}" if root else part
            if root not in added:
                self.out.emit(root, FsNode(NodeKind.DIR, dir_mode(mode), uid, gid), pax=pax, where=where)
                added.add(root)
        added.add(name)
        if entry.directory:
            node = FsNode(NodeKind.DIR, mode, uid, gid)
        elif entry.symlink is not None:
            node = FsNode(NodeKind.SYMLINK, mode, uid, gid, target=entry.symlink)
        else:
            node = FsNode(NodeKind.FILE, mode, uid, gid, content=Content(data=data))
        self.out.emit(name, node, pax=pax, where=where)


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

"""fixtures/pkgs/<name>/build.yml -> one deterministic OCI image built from Debian packages.

Why: lkit's base images (kernel, init, runc, ...) must come from a trusted, pinned source without
Docker. A build.yml names Debian packages and says which of their files make up the image; the
resolved versions and .deb checksums are pinned in build.lock beside it (build.arm64.lock for
arm64: one lock per architecture). The format:

    image: lkit/nginx              # required: repository name (stored as docker.io/lkit/nginx)
    tag: "1.22"                    # required: the tag
    packages:                      # required: Debian bookworm packages to fetch (of the architecture
      - nginx                      #   built: --arch); a package name, or
      - {via: "linux-image-cloud-{arch}", match: "linux-image-*-cloud-{arch}"}
                                   #   the Depends of `via` whose name matches the glob; `{arch}` is
                                   #   the Debian architecture (also in take paths)
    take:                          # required: applied in order; a later item replaces a path
      - binaries: [/usr/sbin/nginx, "/usr/sbin/runc:/usr/bin/runc"]   # SRC[:DEST], with the
                                   #   symlink chain, PT_INTERP and the DT_NEEDED closure
      - libraries: [libseccomp.so.2]            # sonames, with their closure
      - paths: [/etc/nginx/mime.types, "/usr/share/doc/x:/doc"]       # trees as they are
      - busybox: /bin/busybox      # the binary + a link per applet (never replacing a taken file)
      - certificates: {from: /usr/share/ca-certificates, to: /etc/ssl/certs/ca-certificates.crt}
      - kernel: {modules: [virtio_net, ...], arm64: [gpio_keys, ...]}
                                   # /kernel + /kernel.tar with those modules (plus the architecture's
                                   #   own list) + deps; built-in ones are skipped and reported
    dirs: ["/tmp:1777", /run]      # optional: empty directories PATH[:OCTAL MODE] (default 0755)
    users: {www-data: 33}          # optional: /etc/passwd + /etc/group (root:0 always); a value
                                   #   may be {uid, gid, home, shell}
    files: files/                  # optional: a tree copied over the root last (0755 if the host
                                   #   file is executable, else 0644; directories 0755)
    config: {Entrypoint: [..], Cmd: [..], Env: [..], WorkingDir: /, User: ..}  # optional
    label: {capabilities: [..], binds: [..], readonly: true}  # optional: org.mobyproject.config

Every entry is owned by root and stamped 2017-04-18 16:30 UTC; entries are sorted; the layer is an
uncompressed GNU tar without pax headers. The image carries the label `org.lkit.pkgbuild.inputs`,
the hash of build.yml, build.lock, files/ and this builder's source (every module of this package and
lkit.images.debian): a build whose inputs are unchanged is a no-op.

Architectures (`lkit pkg build --arch arm64`): the image is built from that architecture's Debian
packages, with an image config naming it (arm64: architecture arm64, variant v8), and is tagged for
its platform only: a name built for amd64 and arm64 is an OCI image index of both (Store.tag_platform),
whose linux/amd64 manifest is the amd64-only build's.

Modules: buildfile (build.yml -> BuildSpec), lock (build.lock), assemble (take items -> ImageTree),
host_files (files/), layer (ImageTree, the layer tar); this one runs a build.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import LkitError, SpecError
from lkit.images import debian, oci
from lkit.images.pkgbuild.assemble import TakeApplier, assemble, kernel_tar, passwd_group
from lkit.images.pkgbuild.buildfile import BuildSpec, PackageRef, Take, User, load_build
from lkit.images.pkgbuild.host_files import HostFile, image_mode, overlay_files, snapshot_files
from lkit.images.pkgbuild.layer import EPOCH, ImageFile, ImageTree, write_layer_tar
from lkit.images.pkgbuild.lock import (Locked, lock_name, match_lock, read_lock, resolve_packages, update_command,
                                       write_lock)
from lkit.images.store import Store

__all__ = ["EPOCH", "BuildResult", "BuildSpec", "HostFile", "ImageFile", "ImageTree", "Locked", "PackageRef",
           "Take", "TakeApplier", "User", "assemble", "build", "find_build_dirs", "image_config", "image_mode",
           "inputs_hash", "kernel_tar", "load_build", "lock_name", "match_lock", "overlay_files", "passwd_group", "read_lock",
           "resolve_packages", "snapshot_files", "write_layer_tar", "write_lock"]

BUILDER_VERSION = "1"
INPUTS_LABEL = "org.lkit.pkgbuild.inputs"
PACKAGES_LABEL = "org.lkit.pkgbuild.packages"   # {"name": "version"} of build.lock, as JSON
MOBY_LABEL = "org.mobyproject.config"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


# -- inputs, store ------------------------------------------------------------------------------


def inputs_hash(spec: BuildSpec, files: list[HostFile]) -> str:
    """Hash of everything the image is made from: build.yml, its architecture's lock, files/, this
    package's code (and, for another architecture than amd64, its name)."""
    h = hashlib.sha256(f"lkit-pkgbuild {BUILDER_VERSION}\n".encode())

    def add(tag: str, data: bytes) -> None:
        h.update(f"{tag} {len(data)}\n".encode())
        h.update(data)

    if spec.arch is not arch_table.DEFAULT:
        add("arch", spec.arch.name.encode())
    add("build.yml", (spec.directory / "build.yml").read_bytes())
    add(lock_name(spec.arch), (spec.directory / lock_name(spec.arch)).read_bytes())
    add(f"source {debian.__name__}", Path(debian.__file__ or "").read_bytes())
    for source in sorted(Path(__file__).parent.glob("*.py")):  # every module of this package
        add(f"source {__name__}/{source.name}", source.read_bytes())
    for f in files:
        add(f"{f.kind} {f.rel} {f.mode:o}", f.data)
    return "sha256:" + h.hexdigest()


def image_config(spec: BuildSpec, inputs: str, locked: Iterable[Locked] = ()) -> dict[str, Any]:
    config = dict(spec.config)
    config.setdefault("Env", [DEFAULT_PATH])
    config.setdefault("WorkingDir", "/")
    labels = {INPUTS_LABEL: inputs}
    packages = {e.name: e.version for e in locked}
    if packages:  # what build manifests (lkit.build.manifest) report as the image's packages
        labels[PACKAGES_LABEL] = json.dumps(packages, sort_keys=True, separators=(",", ":"))
    if spec.label is not None:
        labels[MOBY_LABEL] = json.dumps(spec.label, sort_keys=True, separators=(",", ":"))
    config["Labels"] = labels
    return config


@dataclass(frozen=True)
class BuildResult:
    name: str
    ref: str
    digest: str      # the manifest of this architecture (what the name resolves to for its platform)
    size: int        # compressed bytes: layers + config + manifest
    status: str      # "built" or "unchanged"
    seconds: float
    arch: str = arch_table.DEFAULT.name

    def line(self) -> str:
        return (f"{self.ref:<28} {self.digest}  {self.size / 1e6:7.2f} MB  {self.status} ({self.seconds:.1f} s)"
                + ("" if self.arch == arch_table.DEFAULT.name else f" [{self.arch}]"))


def _image_size(store: Store, ref: str, platform: str = arch_table.DEFAULT.platform) -> tuple[str, int, str | None]:
    img = store.resolve(ref, platform)
    size = sum(layer.size for layer in img.layers) + len(store.read_blob(img.manifest["config"]["digest"]))
    return img.digest, size, img.labels.get(INPUTS_LABEL)


def build(directory: Path, store: Store, *, update: bool = False,
          log: Callable[[str], None] = lambda _msg: None, arch: Arch = arch_table.DEFAULT) -> BuildResult:
    """Build DIR/build.yml for `arch` into `store` (no-op when its inputs are unchanged)."""
    started = time.monotonic()
    spec = load_build(Path(directory), arch)
    lock_path = spec.directory / lock_name(arch)
    old = read_lock(lock_path) if lock_path.exists() else []
    if update:
        locked = resolve_packages(spec, old)
        if locked != old or not lock_path.exists():
            write_lock(lock_path, locked, arch)
            log(f"{spec.name}: wrote {lock_path}")
    elif not lock_path.exists():
        raise SpecError(f"no {lock_path.name} beside {spec.directory / 'build.yml'}",
                        where=str(spec.directory / "build.yml"),
                        hint=f"resolve and pin the {arch.debian} packages with "
                             f"`{update_command(arch)} {spec.directory}`")
    else:
        locked = match_lock(spec, old, lock_path)
    files = snapshot_files(spec.files) if spec.files else []
    inputs = inputs_hash(spec, files)
    if store.lookup(spec.ref) is not None:
        try:
            digest, size, previous = _image_size(store, spec.ref, arch.platform)
        except LkitError:
            previous = None
        if previous == inputs:
            return BuildResult(spec.name, spec.ref, digest, size, "unchanged", time.monotonic() - started, arch.name)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"lkit-pkg-{spec.name}-")))
        debs = [(e.name, debian.download(e.name, e.version, e.sha256, arch=arch)[0]) for e in locked]
        fs = debian.PackageFS.open(debs, scratch)
        notes: list[str] = []
        tree = assemble(spec, fs, locked, scratch, files, notes)
        for note in notes:
            log(f"{spec.name}: {note}")
        unused = [e.name for e in locked if e.name not in fs.used]
        if unused:
            log(f"{spec.name}: nothing was taken from package(s) {', '.join(unused)}; drop them from build.yml?")
        layer = scratch / "layer.tar"
        with open(layer, "wb") as fh:
            write_layer_tar(fh, tree.entries)
        oci.add_image(store, spec.ref, [layer], config=image_config(spec, inputs, locked), platform=arch.platform)
    digest, size, _ = _image_size(store, spec.ref, arch.platform)
    return BuildResult(spec.name, spec.ref, digest, size, "built", time.monotonic() - started, arch.name)


def find_build_dirs(paths: Iterable[Path]) -> list[Path]:
    """Each path holding a build.yml, or every sub-folder of a path that does (sorted)."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if (p / "build.yml").is_file():
            out.append(p)
        elif p.is_dir():
            subs = sorted(d for d in p.iterdir() if (d / "build.yml").is_file())
            if not subs:
                raise SpecError(f"{p} has no build.yml and no sub-folder with one", where=str(p))
            out.extend(subs)
        else:
            raise SpecError(f"no such directory: {p}", where=str(p))
    unique: dict[Path, Path] = {}
    for d in out:
        unique.setdefault(d.resolve(), d)
    return list(unique.values())

"""fixtures/pkgs/<name>/build.yml -> one deterministic OCI image built from Debian packages.

Why: lkit's base images (kernel, init, runc, ...) must come from a trusted, pinned source without
Docker. A build.yml names Debian packages and says which of their files make up the image; the
resolved versions and .deb checksums are pinned in build.lock beside it. The format:

    image: lkit/nginx              # required: repository name (stored as docker.io/lkit/nginx)
    tag: "1.22"                    # required: the tag
    packages:                      # required: Debian bookworm amd64 packages to fetch
      - nginx                      #   a package name, or
      - {via: linux-image-cloud-amd64, match: "linux-image-*-cloud-amd64"}
                                   #   the Depends of `via` whose name matches the glob
    take:                          # required: applied in order; a later item replaces a path
      - binaries: [/usr/sbin/nginx, "/usr/sbin/runc:/usr/bin/runc"]   # SRC[:DEST], with the
                                   #   symlink chain, PT_INTERP and the DT_NEEDED closure
      - libraries: [libseccomp.so.2]            # sonames, with their closure
      - paths: [/etc/nginx/mime.types, "/usr/share/doc/x:/doc"]       # trees as they are
      - busybox: /bin/busybox      # the binary + a link per applet (never replacing a taken file)
      - certificates: {from: /usr/share/ca-certificates, to: /etc/ssl/certs/ca-certificates.crt}
      - kernel: {modules: [virtio_net, ...]}    # /kernel + /kernel.tar with those modules + deps
    dirs: ["/tmp:1777", /run]      # optional: empty directories PATH[:OCTAL MODE] (default 0755)
    users: {www-data: 33}          # optional: /etc/passwd + /etc/group (root:0 always); a value
                                   #   may be {uid, gid, home, shell}
    files: files/                  # optional: a tree copied over the root last (0755 if the host
                                   #   file is executable, else 0644; directories 0755)
    config: {Entrypoint: [..], Cmd: [..], Env: [..], WorkingDir: /, User: ..}  # optional
    label: {capabilities: [..], binds: [..], readonly: true}  # optional: org.mobyproject.config

Every entry is owned by root and stamped 2017-04-18 16:30 UTC; entries are sorted; the layer is an
uncompressed GNU tar without pax headers. The image carries the label `org.lkit.pkgbuild.inputs`,
the hash of build.yml, build.lock, files/ and this builder's source: a build whose inputs are
unchanged is a no-op; and `org.lkit.pkgbuild.packages`, build.lock's packages and versions (JSON),
which build manifests report.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import json
import os
import posixpath
import re
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lkit.core import buildtime
from lkit.errors import ImageError, LkitError, SpecError
from lkit.images import debian, oci
from lkit.images.store import Store
from lkit.spec import schema
from lkit.spec.yamlmarks import Node, load_yaml

EPOCH = buildtime.EPOCH
BUILDER_VERSION = "1"
INPUTS_LABEL = "org.lkit.pkgbuild.inputs"
PACKAGES_LABEL = "org.lkit.pkgbuild.packages"   # {"name": "version"} of build.lock, as JSON
MOBY_LABEL = "org.mobyproject.config"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64", "usr/lib64", "lib", "usr/lib")
TOP_KEYS = ("image", "tag", "packages", "take", "dirs", "users", "files", "config", "label")
TAKE_KINDS = ("binaries", "libraries", "paths", "busybox", "certificates", "kernel")
CONFIG_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")
NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*$")


# -- build.yml ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PackageRef:
    """One `packages:` item: a name, or the dependency of `via` whose name matches `match`."""

    name: str | None = None
    via: str | None = None
    match: str | None = None
    line: int | None = None

    def describe(self) -> str:
        return self.name or f"{{via: {self.via}, match: {self.match}}}"


@dataclass(frozen=True)
class Take:
    kind: str
    value: Any
    where: str


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass
class BuildSpec:
    """A validated build.yml."""

    directory: Path
    image: str
    tag: str
    packages: list[PackageRef]
    take: list[Take]
    dirs: list[tuple[str, int]] = field(default_factory=list)
    users: list[User] = field(default_factory=list)
    files: Path | None = None
    config: dict[str, Any] = field(default_factory=dict)
    label: dict[str, Any] | None = None

    @property
    def ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def name(self) -> str:
        return self.directory.name


def _abs_path(node: Node) -> str:
    text = node.as_str()
    if not text.startswith("/") or "\0" in text or ".." in text.split("/"):
        raise node.error(f"{text!r} must be an absolute path without '..'")
    return text


def _src_dest(node: Node) -> tuple[str, str]:
    text = node.as_str()
    src, _, dest = text.partition(":")
    for part in (src, dest or src):
        if not part.startswith("/") or ".." in part.split("/"):
            raise node.error(f"{text!r}: expected /SRC or /SRC:/DEST (absolute paths, no '..')")
    return src, dest or src


def _parse_take(node: Node) -> Take:
    item = node.mapping(allowed=TAKE_KINDS)
    if len(item) != 1:
        raise node.error("each take item has exactly one key", hint="one of: " + ", ".join(TAKE_KINDS))
    kind, value = next(iter(item.items()))
    where = value.where
    if kind in ("binaries", "paths"):
        items = value.sequence()
        if not items:
            raise value.error("must not be empty")
        return Take(kind, [_src_dest(i) for i in items], where)
    if kind == "libraries":
        names = value.as_str_list()
        for i, n in zip(value.sequence(), names):
            if "/" in n:
                raise i.error(f"{n!r}: give a soname such as libseccomp.so.2, not a path")
        return Take(kind, names, where)
    if kind == "busybox":
        return Take(kind, _abs_path(value), where)
    if kind == "certificates":
        f = value.mapping(allowed=("from", "to"), required=("from", "to"))
        return Take(kind, (_abs_path(f["from"]), _abs_path(f["to"])), where)
    f = value.mapping(allowed=("modules",), required=("modules",))
    mods = f["modules"].as_str_list()
    if not mods:
        raise f["modules"].error("must not be empty")
    return Take(kind, [m.replace("-", "_") for m in mods], where)


def _parse_user(name: str, node: Node) -> User:
    if not USER_RE.match(name):
        raise node.error(f"invalid user name {name!r}")
    if isinstance(node.value, dict):
        f = node.mapping(allowed=("uid", "gid", "home", "shell"), required=("uid",))
        uid = f["uid"].as_int()
        gid = f["gid"].as_int() if "gid" in f else uid
        home = f["home"].as_str() if "home" in f else "/nonexistent"
        shell = f["shell"].as_str() if "shell" in f else "/usr/sbin/nologin"
    else:
        uid = gid = node.as_int()
        home, shell = "/nonexistent", "/usr/sbin/nologin"
    if not 0 <= uid < 65536 or not 0 <= gid < 65536:
        raise node.error(f"uid/gid of {name} must be 0..65535")
    if any(":" in s or "\n" in s for s in (home, shell)):
        raise node.error("home and shell must not contain ':' or newlines")
    return User(name, uid, gid, home, shell)


def _parse_config(node: Node) -> dict[str, Any]:
    f = node.mapping(allowed=CONFIG_KEYS)
    out: dict[str, Any] = {}
    for key, child in f.items():
        if key in ("Entrypoint", "Cmd", "Env"):
            out[key] = child.as_str_list()
            if key == "Env":
                for item, text in zip(child.sequence(), out[key]):
                    if "=" not in text:
                        raise item.error(f"{text!r} is not NAME=VALUE")
        elif key == "WorkingDir":
            out[key] = _abs_path(child)
        else:
            out[key] = child.as_str()
    return out


def load_build(directory: Path) -> BuildSpec:
    """Read and strictly validate DIR/build.yml (SpecError with file:line and field)."""
    directory = Path(directory)
    path = directory / "build.yml"
    doc = load_yaml(path)
    top = doc.mapping(allowed=TOP_KEYS, required=("image", "tag", "packages", "take"))
    image = top["image"].as_str()
    if not NAME_RE.match(image):
        raise top["image"].error(f"invalid image name {image!r}", hint="lowercase, e.g. lkit/nginx")
    tag = top["tag"].as_str(hint='quote the tag: tag: "6.1"')
    if not TAG_RE.match(tag):
        raise top["tag"].error(f"invalid tag {tag!r}")
    packages: list[PackageRef] = []
    for item in top["packages"].sequence():
        if isinstance(item.value, dict):
            f = item.mapping(allowed=("via", "match"), required=("via", "match"))
            ref = PackageRef(via=f["via"].as_str(), match=f["match"].as_str(), line=item.line)
            if not PKG_RE.match(ref.via or ""):
                raise f["via"].error(f"invalid Debian package name {ref.via!r}")
        else:
            name = item.as_str()
            if not PKG_RE.match(name):
                raise item.error(f"invalid Debian package name {name!r}", hint="e.g. busybox-static (no version)")
            ref = PackageRef(name=name, line=item.line)
        packages.append(ref)
    if not packages:
        raise top["packages"].error("must list at least one package")
    take = [_parse_take(item) for item in top["take"].sequence()]
    if not take:
        raise top["take"].error("must not be empty")
    dirs: list[tuple[str, int]] = []
    for item in top["dirs"].sequence() if "dirs" in top else []:
        text = item.as_str()
        p, _, mode = text.partition(":")
        if not p.startswith("/") or ".." in p.split("/") or (mode and not re.fullmatch(r"[0-7]{3,4}", mode)):
            raise item.error(f"{text!r}: expected /PATH or /PATH:MODE (octal, e.g. /tmp:1777)")
        dirs.append((debian.norm(p), int(mode or "755", 8)))
    users: list[User] = []
    if "users" in top:
        users = [_parse_user(k, v) for k, v in top["users"].mapping().items()]
    files = None
    if "files" in top:
        rel = top["files"].as_str()
        files = (directory / rel).resolve()
        if not files.is_dir() or not files.is_relative_to(directory.resolve()):
            raise top["files"].error(f"{rel!r} is not a directory inside {directory}")
    config = _parse_config(top["config"]) if "config" in top else {}
    label = None
    if "label" in top:
        fields = top["label"].mapping(allowed=tuple(schema.IMAGE_FIELDS))
        schema.image_config(top["label"], fields)  # validate exactly as a spec entry is validated
        label = top["label"].plain()
    return BuildSpec(directory, image, tag, packages, take, dirs, users, files, config, label)


# -- build.lock ---------------------------------------------------------------------------------

LOCK_HEADER = ("# lkit build.lock: the Debian packages (bookworm, amd64) build.yml resolved to.\n"
               "# Obeyed by `lkit pkg build`; re-resolve with `lkit pkg build --update`.\n")


@dataclass(frozen=True)
class Locked:
    name: str
    version: str
    sha256: str
    via: str | None = None

    def line(self) -> str:
        return f"{self.name} {self.version} sha256:{self.sha256}" + (f" via={self.via}" if self.via else "")


def read_lock(path: Path) -> list[Locked]:
    out: list[Locked] = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        m = re.fullmatch(r"sha256:([0-9a-f]{64})", parts[2]) if len(parts) in (3, 4) else None
        via = parts[3][4:] if len(parts) == 4 and parts[3].startswith("via=") else None
        if m is None or (len(parts) == 4 and via is None):
            raise SpecError("expected 'NAME VERSION sha256:HEX [via=PACKAGE]'", where=f"{path}:{number}",
                            hint="regenerate it with `lkit pkg build --update`")
        out.append(Locked(parts[0], parts[1], m.group(1), via))
    return out


def write_lock(path: Path, entries: Iterable[Locked]) -> None:
    text = LOCK_HEADER + "".join(e.line() + "\n" for e in entries)
    _write_atomic(path, text.encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def match_lock(spec: BuildSpec, locked: list[Locked], lock_path: Path) -> list[Locked]:
    """The lock entries for spec.packages in order; any difference is an error asking for --update."""
    hint = f"run `lkit pkg build --update {spec.directory}` to re-resolve build.lock"
    if len(locked) != len(spec.packages):
        raise SpecError(f"build.lock has {len(locked)} packages, build.yml lists {len(spec.packages)}",
                        where=str(lock_path), hint=hint)
    for ref, entry in zip(spec.packages, locked):
        ok = (entry.name == ref.name and entry.via is None) if ref.name else (
            entry.via == ref.via and fnmatch.fnmatchcase(entry.name, ref.match or ""))
        if not ok:
            raise SpecError(f"build.lock entry {entry.name} does not match packages item {ref.describe()}",
                            where=f"{spec.directory / 'build.yml'}:{ref.line}", hint=hint)
    return locked


def resolve_packages(spec: BuildSpec, old: list[Locked]) -> list[Locked]:
    """--update: the candidate version of each package (via: the matching dependency), downloaded."""
    known = {(e.name, e.version): e.sha256 for e in old}
    vias = sorted({r.via for r in spec.packages if r.via})
    via_versions = debian.candidate_versions(vias) if vias else {}
    chosen: list[tuple[str, str | None]] = []
    for ref in spec.packages:
        if ref.name:
            chosen.append((ref.name, None))
            continue
        assert ref.via and ref.match
        deps = [d for d in debian.depends(ref.via, via_versions[ref.via]) if fnmatch.fnmatchcase(d, ref.match)]
        if len(deps) != 1:
            raise SpecError(f"{ref.via} depends on {deps or 'no package'} matching {ref.match!r}; need one",
                            where=f"{spec.directory / 'build.yml'}:{ref.line}")
        chosen.append((deps[0], ref.via))
    versions = debian.candidate_versions([name for name, _via in chosen])
    out: list[Locked] = []
    for name, via in chosen:
        _path, sha = debian.download(name, versions[name], known.get((name, versions[name])))
        out.append(Locked(name, versions[name], sha, via))
    return out


# -- the image tree ------------------------------------------------------------------------------


@dataclass
class Entry:
    kind: str                  # "file", "dir", "symlink"
    mode: int
    data: bytes = b""
    link: str = ""
    uid: int = 0
    gid: int = 0


@dataclass
class ImageTree:
    """The image's files by relative path; later additions replace earlier ones."""

    entries: dict[str, Entry] = field(default_factory=dict)

    def add(self, path: str, entry: Entry, *, replace: bool = True) -> None:
        path = debian.norm(path)
        if not path:
            return
        if not replace and path in self.entries:
            return
        self.entries[path] = entry


def write_tar(fileobj: Any, entries: dict[str, Entry]) -> None:
    """A deterministic GNU tar: parents added, sorted, root-owned, fixed mtime, no pax headers."""
    full = dict(entries)
    for path in list(entries):
        parent = posixpath.dirname(path)
        while parent and parent not in full:
            full[parent] = Entry("dir", 0o755)
            parent = posixpath.dirname(parent)
    with tarfile.open(fileobj=fileobj, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for path in sorted(full):
            e = full[path]
            info = tarfile.TarInfo(path)
            info.mtime = EPOCH
            info.uid, info.gid, info.uname, info.gname = e.uid, e.gid, "", ""
            info.mode = e.mode & 0o7777
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tf.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.link
                tf.addfile(info)
            else:
                info.size = len(e.data)
                tf.addfile(info, io.BytesIO(e.data))


@dataclass
class Assembler:
    """Applies take items to an ImageTree, reading from the fetched packages."""

    fs: debian.PackageFS
    tree: ImageTree
    scratch: Path
    owners: dict[str, Locked]

    def copy_chain(self, src: str, dest: str | None = None) -> str:
        """Copy `src` (following and copying its symlinks); with `dest`, the final file lands there."""
        path = debian.norm(src)
        for _ in range(40):
            parent = self.fs.resolve(posixpath.dirname(path))
            path = posixpath.join(parent, posixpath.basename(path)) if parent else posixpath.basename(path)
            entry = self.fs.entries.get(path)
            if entry is None:
                raise ImageError(f"/{debian.norm(src)} is not in the packages (at /{path})")
            if entry.kind != "symlink":
                break
            self.fs.used.add(entry.package)
            if dest is None:
                self.tree.add(path, Entry("symlink", 0o777, link=entry.linkname))
            target = entry.linkname if entry.linkname.startswith("/") else posixpath.join("/" + parent, entry.linkname)
            path = debian.norm(target)
        else:
            raise ImageError(f"/{debian.norm(src)}: too many symbolic links")
        if entry.kind == "dir":
            self.tree.add(dest or path, Entry("dir", entry.mode))
        else:
            self.tree.add(dest or path, Entry("file", entry.mode, self.fs.read(path)))
        return path

    def binary(self, src: str, dest: str, where: str) -> None:
        path = self.copy_chain(src, None if src == dest else dest)
        self.closure(path, where, set())

    def closure(self, path: str, where: str, seen: set[str]) -> None:
        data = self.fs.read(path)
        if not debian.is_elf(data) or path in seen:
            return
        seen.add(path)
        deps = debian.elf_deps(data, "/" + path)
        if deps.interp:
            self.closure(self.copy_chain(deps.interp), where, seen)
        origin = posixpath.dirname(path)
        search = [debian.norm(p.replace("$ORIGIN", "/" + origin).replace("${ORIGIN}", "/" + origin))
                  for p in deps.runpath] + list(LIB_DIRS)
        for soname in deps.needed:
            self.library(soname, search, "/" + path, where, seen)

    def library(self, soname: str, search: Iterable[str], needed_by: str, where: str, seen: set[str]) -> None:
        for directory in search:
            candidate = posixpath.join(directory, soname)
            if self.fs.exists(candidate):
                self.closure(self.copy_chain(candidate), where, seen)
                return
        owner = self.fs.entries[debian.norm(needed_by)].package if debian.norm(needed_by) in self.fs.entries else None
        hint = "add the Debian package that ships it to packages:"
        if owner and owner in self.owners:
            locked = self.owners[owner]
            hint += f" {owner} depends on {', '.join(debian.depends(owner, locked.version)) or 'nothing'}"
        raise ImageError(f"{soname} (needed by {needed_by}) is in none of the fetched packages", where=where, hint=hint)

    def paths(self, src: str, dest: str) -> None:
        root = self.fs.resolve(src)
        if root not in self.fs.entries:
            raise ImageError(f"{src} is not in the packages")
        if debian.norm(src) != root and src == dest:
            self.copy_chain(src)  # keep the link itself too
        base_dest = debian.norm(dest)
        for p in self.fs.walk(root):
            e = self.fs.entries[p]
            out = posixpath.join(base_dest, p[len(root):].lstrip("/")) if p != root else base_dest
            if e.kind == "dir":
                self.tree.add(out, Entry("dir", e.mode))
            elif e.kind == "symlink":
                self.fs.used.add(e.package)
                self.tree.add(out, Entry("symlink", 0o777, link=e.linkname))
            else:
                self.tree.add(out, Entry("file", e.mode, self.fs.read(p)))

    def busybox(self, src: str) -> None:
        path = self.copy_chain(src)
        tool = self.scratch / "busybox"
        tool.write_bytes(self.fs.read(path))
        tool.chmod(0o755)
        try:
            out = subprocess.run([str(tool), "--list-full"], capture_output=True, text=True, timeout=30, check=True,
                                 stdin=subprocess.DEVNULL).stdout
        except (subprocess.SubprocessError, OSError) as exc:
            raise ImageError(f"cannot list the applets of /{path}: {exc}") from exc
        for applet in sorted(set(out.split())):
            if debian.norm(applet) != path:
                self.tree.add(applet, Entry("symlink", 0o777, link="/" + path), replace=False)

    def certificates(self, src: str, dest: str) -> None:
        certs = [p for p in self.fs.walk(src) if p.endswith(".crt") and self.fs.entries[p].kind == "file"]
        if not certs:
            raise ImageError(f"no *.crt files under {src}")
        bundle = b"".join(self.fs.read(p).rstrip(b"\n") + b"\n" for p in certs)
        self.tree.add(dest, Entry("file", 0o644, bundle))

    def kernel(self, modules: list[str], where: str) -> None:
        vmlinuz = [p for p in self.fs.entries if re.fullmatch(r"boot/vmlinuz-.+", p)]
        versions = sorted({p.split("/")[2] for p in self.fs.entries if p.startswith("lib/modules/") and p.count("/") >= 2})
        if len(vmlinuz) != 1 or len(versions) != 1:
            raise ImageError(f"expected one kernel in the packages, found {vmlinuz} and modules {versions}", where=where)
        self.tree.add("kernel", Entry("file", 0o644, self.fs.read(vmlinuz[0])))
        self.tree.add("kernel.tar", Entry("file", 0o644, kernel_tar(self.fs, versions[0], modules, where)))


def kernel_tar(fs: debian.PackageFS, version: str, wanted: list[str], where: str) -> bytes:
    """lib/modules/VERSION with `wanted` modules, their `depends=` closure, modules.dep and .alias."""
    base = f"lib/modules/{version}"
    by_name = {posixpath.basename(p)[:-3].replace("-", "_"): p for p in fs.entries
               if p.startswith(base + "/kernel/") and p.endswith(".ko")}
    builtin_file = f"{base}/modules.builtin"
    builtin = set()
    if builtin_file in fs.entries:
        builtin = {posixpath.basename(line)[:-3].replace("-", "_")
                   for line in fs.read(builtin_file).decode().split() if line.endswith(".ko")}
    info: dict[str, dict[str, list[str]]] = {}
    todo = list(wanted)
    while todo:
        name = todo.pop(0)
        if name in info or name in builtin:
            continue
        if name not in by_name:
            raise ImageError(f"kernel module {name!r} is neither in {base}/kernel nor built in", where=where)
        info[name] = debian.modinfo(fs.read(by_name[name]), by_name[name])
        todo.extend(d.replace("-", "_") for d in ",".join(info[name].get("depends", [""])).split(",") if d)

    def direct(name: str) -> list[str]:
        return [d.replace("-", "_") for d in ",".join(info[name].get("depends", [""])).split(",")
                if d and d.replace("-", "_") in info]

    def load_order(name: str) -> list[str]:
        """Every dependency of `name`, each after all of its own dependencies (load order)."""
        out: list[str] = []

        def visit(n: str) -> None:
            for d in sorted(direct(n)):
                visit(d)
                if d not in out:
                    out.append(d)
        visit(name)
        return out

    rel = {n: by_name[n][len(base) + 1:] for n in info}
    entries: dict[str, Entry] = {}
    dep_lines: list[str] = []
    alias_lines: list[str] = []
    for name in sorted(info, key=lambda n: rel[n]):
        entries[by_name[name]] = Entry("file", 0o644, fs.read(by_name[name]))
        # modules.dep lists dependencies so that the last one is loaded first (depmod's order)
        deps = list(reversed(load_order(name)))
        dep_lines.append(f"{rel[name]}:" + "".join(f" {rel[d]}" for d in deps) + "\n")
        alias_lines.extend(f"alias {a} {name}\n" for a in info[name].get("alias", []))
    entries[f"{base}/modules.dep"] = Entry("file", 0o644, "".join(dep_lines).encode())
    entries[f"{base}/modules.alias"] = Entry("file", 0o644, "".join(sorted(alias_lines)).encode())
    for extra in ("modules.builtin", "modules.builtin.modinfo"):  # modprobe of a built-in is a no-op
        if f"{base}/{extra}" in fs.entries:
            entries[f"{base}/{extra}"] = Entry("file", 0o644, fs.read(f"{base}/{extra}"))
    entries[f"{base}/modules.order"] = Entry("file", 0o644, "".join(
        f"{rel[n]}\n" for n in sorted(info, key=lambda n: rel[n])).encode())
    buf = io.BytesIO()
    write_tar(buf, entries)
    return buf.getvalue()


def passwd_group(users: list[User]) -> tuple[bytes, bytes]:
    all_users = [User("root", 0, 0, "/root", "/bin/sh")] + [u for u in users if u.name != "root"]
    passwd = "".join(f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{u.shell}\n" for u in all_users)
    groups: dict[int, str] = {}
    for u in all_users:
        groups.setdefault(u.gid, u.name)
    group = "".join(f"{name}:x:{gid}:\n" for gid, name in sorted(groups.items()))
    return passwd.encode(), group.encode()


@dataclass(frozen=True)
class HostFile:
    rel: str
    kind: str        # "file", "dir", "symlink"
    mode: int
    data: bytes      # file contents or symlink target


def image_mode(host_mode: int, kind: str) -> int:
    """The mode a host file gets in the image: 0755 for directories and executables, else 0644.

    Why: a checkout's permission bits depend on the umask (002 makes them group-writable) and git
    keeps only the exec bit, so copying them would give another image digest per machine.
    """
    if kind == "dir" or host_mode & 0o111:
        return 0o755
    return 0o644


def snapshot_files(root: Path) -> list[HostFile]:
    """files/ read once, sorted: the same bytes are hashed and copied even if it changes meanwhile.

    Modes are normalised by `image_mode` (only the exec bit of a file counts).
    """
    out: list[HostFile] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                out.append(HostFile(rel, "symlink", 0o777, os.readlink(full).encode()))
            elif stat.S_ISDIR(st.st_mode):
                out.append(HostFile(rel, "dir", image_mode(st.st_mode, "dir"), b""))
            elif stat.S_ISREG(st.st_mode):
                out.append(HostFile(rel, "file", image_mode(st.st_mode, "file"), full.read_bytes()))
            else:
                raise ImageError(f"{full}: only files, directories and symlinks can be copied into an image")
    return out


def overlay_files(tree: ImageTree, files: list[HostFile]) -> None:
    """Copy a host tree over the image (modes from `image_mode`, owner root, fixed times)."""
    for f in files:
        if f.kind == "symlink":
            tree.add(f.rel, Entry("symlink", 0o777, link=f.data.decode()))
        else:
            tree.add(f.rel, Entry(f.kind, f.mode, f.data))


def assemble(spec: BuildSpec, fs: debian.PackageFS, locked: list[Locked], scratch: Path,
             files: list[HostFile]) -> ImageTree:
    tree = ImageTree()
    owners = {e.name: e for e in locked}
    asm = Assembler(fs, tree, scratch, owners)
    for take in spec.take:
        try:
            if take.kind == "binaries":
                for src, dest in take.value:
                    asm.binary(src, dest, take.where)
            elif take.kind == "libraries":
                for soname in take.value:
                    asm.library(soname, LIB_DIRS, "libraries:", take.where, set())
            elif take.kind == "paths":
                for src, dest in take.value:
                    asm.paths(src, dest)
            elif take.kind == "busybox":
                asm.busybox(take.value)
            elif take.kind == "certificates":
                asm.certificates(*take.value)
            elif take.kind == "kernel":
                asm.kernel(take.value, take.where)
        except ImageError as exc:
            raise ImageError(exc.message, where=exc.where or take.where, hint=exc.hint) from None
    for path, mode in spec.dirs:
        tree.add(path, Entry("dir", mode))
    if spec.users:
        passwd, group = passwd_group(spec.users)
        tree.add("etc/passwd", Entry("file", 0o644, passwd))
        tree.add("etc/group", Entry("file", 0o644, group))
    overlay_files(tree, files)
    return tree


# -- inputs, store ------------------------------------------------------------------------------


def inputs_hash(spec: BuildSpec, files: list[HostFile]) -> str:
    """Hash of everything the image is made from: build.yml, build.lock, files/, this code."""
    h = hashlib.sha256(f"lkit-pkgbuild {BUILDER_VERSION}\n".encode())

    def add(tag: str, data: bytes) -> None:
        h.update(f"{tag} {len(data)}\n".encode())
        h.update(data)

    add("build.yml", (spec.directory / "build.yml").read_bytes())
    add("build.lock", (spec.directory / "build.lock").read_bytes())
    for module in (debian, sys.modules[__name__]):
        add(f"source {module.__name__}", Path(module.__file__ or "").read_bytes())
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
    digest: str
    size: int        # compressed bytes: layers + config + manifest
    status: str      # "built" or "unchanged"
    seconds: float

    def line(self) -> str:
        return f"{self.ref:<28} {self.digest}  {self.size / 1e6:7.2f} MB  {self.status} ({self.seconds:.1f} s)"


def _image_size(store: Store, ref: str) -> tuple[str, int, str | None]:
    img = store.resolve(ref)
    size = sum(layer.size for layer in img.layers) + len(store.read_blob(img.manifest["config"]["digest"]))
    return img.digest, size, img.labels.get(INPUTS_LABEL)


def build(directory: Path, store: Store, *, update: bool = False,
          log: Callable[[str], None] = lambda _msg: None) -> BuildResult:
    """Build DIR/build.yml into `store` (no-op when its inputs are unchanged). Returns what happened."""
    started = time.monotonic()
    spec = load_build(Path(directory))
    lock_path = spec.directory / "build.lock"
    old = read_lock(lock_path) if lock_path.exists() else []
    if update:
        locked = resolve_packages(spec, old)
        if locked != old or not lock_path.exists():
            write_lock(lock_path, locked)
            log(f"{spec.name}: wrote {lock_path}")
    elif not lock_path.exists():
        raise SpecError(f"no build.lock beside {spec.directory / 'build.yml'}",
                        where=str(spec.directory / "build.yml"),
                        hint=f"resolve and pin the packages with `lkit pkg build --update {spec.directory}`")
    else:
        locked = match_lock(spec, old, lock_path)
    files = snapshot_files(spec.files) if spec.files else []
    inputs = inputs_hash(spec, files)
    if store.lookup(spec.ref) is not None:
        try:
            digest, size, previous = _image_size(store, spec.ref)
        except LkitError:
            previous = None
        if previous == inputs:
            return BuildResult(spec.name, spec.ref, digest, size, "unchanged", time.monotonic() - started)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"lkit-pkg-{spec.name}-")))
        debs = [(e.name, debian.download(e.name, e.version, e.sha256)[0]) for e in locked]
        fs = debian.PackageFS.open(debs, scratch)
        tree = assemble(spec, fs, locked, scratch, files)
        unused = [e.name for e in locked if e.name not in fs.used]
        if unused:
            log(f"{spec.name}: nothing was taken from package(s) {', '.join(unused)}; drop them from build.yml?")
        layer = scratch / "layer.tar"
        with open(layer, "wb") as fh:
            write_tar(fh, tree.entries)
        oci.add_image(store, spec.ref, [layer], config=image_config(spec, inputs, locked))
    digest, size, _ = _image_size(store, spec.ref)
    return BuildResult(spec.name, spec.ref, digest, size, "built", time.monotonic() - started)


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

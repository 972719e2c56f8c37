"""build.yml: its format (see the package's docstring), read and strictly validated into a BuildSpec.

One build.yml serves every architecture: `{arch}` in a package name, a `via`/`match` or a take path
stands for the Debian architecture being built (amd64, arm64), a packages item may list packages
of one architecture (`amd64: [libgcrypt20]`) and a kernel item may add modules for one
architecture (`arm64: [gpio_keys, ...]`). load_build reads it for one architecture.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.images import debian
from lkit.spec import schema
from lkit.spec.yamlmarks import YamlNode, load_yaml

TOP_KEYS = ("image", "tag", "packages", "take", "dirs", "users", "files", "config", "label")
TAKE_KINDS = ("binaries", "libraries", "paths", "busybox", "certificates", "kernel")
CONFIG_KEYS = ("Entrypoint", "Cmd", "Env", "WorkingDir", "User")
NAME_RE = re.compile(r"^[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
PKG_RE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
USER_RE = re.compile(r"^[a-z_][a-z0-9_-]*$")
ARCH_PLACEHOLDER = "{arch}"


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
    arch: Arch = arch_table.DEFAULT

    @property
    def ref(self) -> str:
        return f"{self.image}:{self.tag}"

    @property
    def name(self) -> str:
        return self.directory.name


def _abs_path(node: YamlNode, arch: Arch | None = None) -> str:
    text = node.as_str()
    if arch is not None:
        text = text.replace(ARCH_PLACEHOLDER, arch.debian)
    if not text.startswith("/") or "\0" in text or ".." in text.split("/"):
        raise node.error(f"{text!r} must be an absolute path without '..'")
    return text


def _src_dest(node: YamlNode, arch: Arch) -> tuple[str, str]:
    text = node.as_str().replace(ARCH_PLACEHOLDER, arch.debian)
    src, _, dest = text.partition(":")
    for part in (src, dest or src):
        if not part.startswith("/") or ".." in part.split("/"):
            raise node.error(f"{text!r}: expected /SRC or /SRC:/DEST (absolute paths, no '..')")
    return src, dest or src


def _parse_take(node: YamlNode, arch: Arch) -> Take:
    item = node.mapping(allowed=TAKE_KINDS)
    if len(item) != 1:
        raise node.error("each take item has exactly one key", hint="one of: " + ", ".join(TAKE_KINDS))
    kind, value = next(iter(item.items()))
    where = value.where
    if kind in ("binaries", "paths"):
        items = value.sequence()
        if not items:
            raise value.error("must not be empty")
        return Take(kind, [_src_dest(i, arch) for i in items], where)
    if kind == "libraries":
        names = value.as_str_list()
        for i, n in zip(value.sequence(), names):
            if "/" in n:
                raise i.error(f"{n!r}: give a soname such as libseccomp.so.2, not a path")
        return Take(kind, names, where)
    if kind == "busybox":
        return Take(kind, _abs_path(value, arch), where)
    if kind == "certificates":
        f = value.mapping(allowed=("from", "to"), required=("from", "to"))
        return Take(kind, (_abs_path(f["from"], arch), _abs_path(f["to"], arch)), where)
    # kernel: `modules` for every architecture, plus `<arch>: [...]` for one
    f = value.mapping(allowed=("modules", *arch_table.NAMES), required=("modules",))
    mods = f["modules"].as_str_list()
    if not mods:
        raise f["modules"].error("must not be empty")
    extra = f[arch.name].as_str_list() if arch.name in f else []
    for name in arch_table.NAMES:
        if name in f:
            f[name].as_str_list()  # every architecture's list is checked, not only the one built
    return Take(kind, [m.replace("-", "_") for m in mods + extra], where)


def _parse_user(name: str, node: YamlNode) -> User:
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


def _parse_config(node: YamlNode) -> dict[str, Any]:
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


def _package_name(node: YamlNode, arch: Arch) -> str:
    name = node.as_str().replace(ARCH_PLACEHOLDER, arch.debian)
    if not PKG_RE.match(name):
        raise node.error(f"invalid Debian package name {name!r}", hint="e.g. busybox-static (no version)")
    return name


def load_build(directory: Path, arch: Arch = arch_table.DEFAULT) -> BuildSpec:
    """Read and strictly validate DIR/build.yml for `arch` (SpecError with file:line and field)."""
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
        if isinstance(item.value, dict) and set(item.value) & set(arch_table.NAMES):
            # {amd64: [libgcrypt20]}: packages of one architecture (its build links them, another's
            # does not); every architecture's names are checked, only the one built is fetched
            for key, node in item.mapping(allowed=arch_table.NAMES).items():
                refs = [PackageRef(name=_package_name(sub, arch), line=sub.line) for sub in node.sequence()]
                if key == arch.name:
                    packages.extend(refs)
        elif isinstance(item.value, dict):
            f = item.mapping(allowed=("via", "match"), required=("via", "match"))
            ref = PackageRef(via=f["via"].as_str().replace(ARCH_PLACEHOLDER, arch.debian),
                             match=f["match"].as_str().replace(ARCH_PLACEHOLDER, arch.debian), line=item.line)
            if not PKG_RE.match(ref.via or ""):
                raise f["via"].error(f"invalid Debian package name {ref.via!r}")
            packages.append(ref)
        else:
            packages.append(PackageRef(name=_package_name(item, arch), line=item.line))
    if not packages:
        raise top["packages"].error("must list at least one package")
    take = [_parse_take(item, arch) for item in top["take"].sequence()]
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
    return BuildSpec(directory, image, tag, packages, take, dirs, users, files, config, label, arch)

"""take items -> ImageTree: binaries with their ELF closure, libraries, paths, busybox applets,
CA certificates, the kernel with a module tree; then dirs, users and files/ (the build's order).

For one architecture (BuildSpec.arch): libraries are searched in its multiarch directories, every
ELF file taken (binaries, their libraries and loader, busybox, kernel modules) must be for its
machine, and busybox is asked for its applets through qemu-user when it is not the host's.
"""

from __future__ import annotations

import io
import posixpath
import re
import shutil
import subprocess
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import ImageError
from lkit.images import debian
from lkit.images.pkgbuild.buildfile import BuildSpec, User
from lkit.images.pkgbuild.host_files import HostFile, overlay_files
from lkit.images.pkgbuild.layer import ImageFile, ImageTree, write_layer_tar
from lkit.images.pkgbuild.lock import Locked

LIB_DIRS = arch_table.DEFAULT.lib_dirs  # amd64's; a build searches its own architecture's (Arch.lib_dirs)


@dataclass
class TakeApplier:
    """Applies take items to an ImageTree, reading from the fetched packages."""

    fs: debian.PackageFS
    tree: ImageTree
    scratch: Path
    owners: dict[str, Locked]
    arch: Arch = arch_table.DEFAULT
    notes: list[str] = field(default_factory=list)  # what the build should tell (built-in modules)

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
                self.tree.add(path, ImageFile("symlink", 0o777, link=entry.linkname))
            target = entry.linkname if entry.linkname.startswith("/") else posixpath.join("/" + parent, entry.linkname)
            path = debian.norm(target)
        else:
            raise ImageError(f"/{debian.norm(src)}: too many symbolic links")
        if entry.kind == "dir":
            self.tree.add(dest or path, ImageFile("dir", entry.mode))
        else:
            self.tree.add(dest or path, ImageFile("file", entry.mode, self.fs.read(path)))
        return path

    def binary(self, src: str, dest: str, where: str) -> None:
        path = self.copy_chain(src, None if src == dest else dest)
        self.closure(path, where, set())

    def closure(self, path: str, where: str, seen: set[str]) -> None:
        data = self.fs.read(path)
        if not debian.is_elf(data) or path in seen:
            return
        seen.add(path)
        debian.check_elf_machine(data, self.arch, "/" + path)
        deps = debian.elf_deps(data, "/" + path)
        if deps.interp:
            self.closure(self.copy_chain(deps.interp), where, seen)
        origin = posixpath.dirname(path)
        search = [debian.norm(p.replace("$ORIGIN", "/" + origin).replace("${ORIGIN}", "/" + origin))
                  for p in deps.runpath] + list(self.arch.lib_dirs)
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
                self.tree.add(out, ImageFile("dir", e.mode))
            elif e.kind == "symlink":
                self.fs.used.add(e.package)
                self.tree.add(out, ImageFile("symlink", 0o777, link=e.linkname))
            else:
                self.tree.add(out, ImageFile("file", e.mode, self.fs.read(p)))

    def busybox(self, src: str) -> None:
        path = self.copy_chain(src)
        tool = self.scratch / "busybox"
        data = self.fs.read(path)
        if debian.is_elf(data):
            debian.check_elf_machine(data, self.arch, "/" + path)
        tool.write_bytes(data)
        tool.chmod(0o755)
        argv = [*self._runner(), str(tool), "--list-full"]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True,
                                 stdin=subprocess.DEVNULL).stdout
        except (subprocess.SubprocessError, OSError) as exc:
            raise ImageError(f"cannot list the applets of /{path}: {exc}") from exc
        for applet in sorted(set(out.split())):
            if debian.norm(applet) != path:
                self.tree.add(applet, ImageFile("symlink", 0o777, link="/" + path), replace=False)

    def _runner(self) -> list[str]:
        """How to run one of this architecture's (static) binaries here: directly, or under qemu-user."""
        if self.arch is arch_table.host():
            return []
        emulator = shutil.which(self.arch.qemu_user)
        if emulator is None:
            raise ImageError(f"listing busybox's applets of an {self.arch.name} image needs {self.arch.qemu_user} "
                             f"on this {arch_table.host().name} host",
                             hint="apt-get install qemu-user (scripts/setup installs it)")
        return [emulator]

    def certificates(self, src: str, dest: str) -> None:
        certs = [p for p in self.fs.walk(src) if p.endswith(".crt") and self.fs.entries[p].kind == "file"]
        if not certs:
            raise ImageError(f"no *.crt files under {src}")
        bundle = b"".join(self.fs.read(p).rstrip(b"\n") + b"\n" for p in certs)
        self.tree.add(dest, ImageFile("file", 0o644, bundle))

    def kernel(self, modules: list[str], where: str) -> None:
        vmlinuz = [p for p in self.fs.entries if re.fullmatch(r"boot/vmlinuz-.+", p)]
        versions = sorted({p.split("/")[2] for p in self.fs.entries if p.startswith("lib/modules/") and p.count("/") >= 2})
        if len(vmlinuz) != 1 or len(versions) != 1:
            raise ImageError(f"expected one kernel in the packages, found {vmlinuz} and modules {versions}", where=where)
        image = self.fs.read(vmlinuz[0])
        check_kernel(image, self.arch, "/" + vmlinuz[0])
        self.tree.add("kernel", ImageFile("file", 0o644, image))
        builtin: list[str] = []
        self.tree.add("kernel.tar", ImageFile("file", 0o644, kernel_tar(self.fs, versions[0], modules, where,
                                                                          arch=self.arch, builtin_out=builtin)))
        if builtin:
            self.notes.append(f"kernel {versions[0]}: built in, so not in kernel.tar (modprobe of them "
                              f"succeeds): {', '.join(builtin)}")


ARM64_IMAGE_MAGIC = b"ARM\x64"  # at offset 0x38 of an arm64 kernel Image (Documentation/arm64/booting.rst)


def check_kernel(data: bytes, arch: Arch, where: str) -> None:
    """Refuse a kernel that is not `arch`'s (another architecture's, or a format lkit cannot boot).

    amd64: a bzImage ("HdrS" at 0x202). arm64: an Image ("ARM\\x64" at 0x38), as Debian's arm64
    vmlinuz is; a gzip-compressed Image.gz (LinuxKit's arm64 /kernel) is recognised too, inflating
    only its first bytes.
    """
    if arch.kernel_format == "bzImage":
        ok = data[0x202:0x206] == b"HdrS"
    elif arch.kernel_format == "Image":
        head = data[:0x40]
        if data[:2] == b"\x1f\x8b":
            try:
                head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 0x40)
            except zlib.error:
                head = b""
        ok = head[0x38:0x3C] == ARM64_IMAGE_MAGIC
    else:  # a new Arch names a format this check does not know yet
        ok = True
    if not ok:
        raise ImageError(f"{where} is not an {arch.name} kernel ({arch.kernel_format})",
                         hint=f"take the kernel from the {arch.debian} package (linux-image-cloud-{arch.debian})")


def kernel_tar(fs: debian.PackageFS, version: str, wanted: list[str], where: str, *,
               arch: Arch = arch_table.DEFAULT, builtin_out: list[str] | None = None) -> bytes:
    """lib/modules/VERSION with `wanted` modules, their `depends=` closure, modules.dep and .alias.

    A wanted module the kernel has built in (modules.builtin) is skipped and, sorted, added to
    `builtin_out`: the same build.yml serves kernels that build it in and kernels that do not.
    """
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
        if name in info:
            continue
        if name in builtin:
            if builtin_out is not None and name in wanted and name not in builtin_out:
                builtin_out.append(name)
            continue
        if name not in by_name:
            raise ImageError(f"kernel module {name!r} is neither in {base}/kernel nor built in", where=where)
        data = fs.read(by_name[name])
        if debian.is_elf(data):
            debian.check_elf_machine(data, arch, "/" + by_name[name])
        info[name] = debian.modinfo(data, by_name[name])
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
    entries: dict[str, ImageFile] = {}
    dep_lines: list[str] = []
    alias_lines: list[str] = []
    for name in sorted(info, key=lambda n: rel[n]):
        entries[by_name[name]] = ImageFile("file", 0o644, fs.read(by_name[name]))
        # modules.dep lists dependencies so that the last one is loaded first (depmod's order)
        deps = list(reversed(load_order(name)))
        dep_lines.append(f"{rel[name]}:" + "".join(f" {rel[d]}" for d in deps) + "\n")
        alias_lines.extend(f"alias {a} {name}\n" for a in info[name].get("alias", []))
    entries[f"{base}/modules.dep"] = ImageFile("file", 0o644, "".join(dep_lines).encode())
    entries[f"{base}/modules.alias"] = ImageFile("file", 0o644, "".join(sorted(alias_lines)).encode())
    for extra in ("modules.builtin", "modules.builtin.modinfo"):  # modprobe of a built-in is a no-op
        if f"{base}/{extra}" in fs.entries:
            entries[f"{base}/{extra}"] = ImageFile("file", 0o644, fs.read(f"{base}/{extra}"))
    entries[f"{base}/modules.order"] = ImageFile("file", 0o644, "".join(
        f"{rel[n]}\n" for n in sorted(info, key=lambda n: rel[n])).encode())
    buf = io.BytesIO()
    write_layer_tar(buf, entries)
    if builtin_out is not None:
        builtin_out.sort()
    return buf.getvalue()


def passwd_group(users: list[User]) -> tuple[bytes, bytes]:
    all_users = [User("root", 0, 0, "/root", "/bin/sh")] + [u for u in users if u.name != "root"]
    passwd = "".join(f"{u.name}:x:{u.uid}:{u.gid}:{u.name}:{u.home}:{u.shell}\n" for u in all_users)
    groups: dict[int, str] = {}
    for u in all_users:
        groups.setdefault(u.gid, u.name)
    group = "".join(f"{name}:x:{gid}:\n" for gid, name in sorted(groups.items()))
    return passwd.encode(), group.encode()



def assemble(spec: BuildSpec, fs: debian.PackageFS, locked: list[Locked], scratch: Path,
             files: list[HostFile], notes: list[str] | None = None) -> ImageTree:
    tree = ImageTree()
    owners = {e.name: e for e in locked}
    asm = TakeApplier(fs, tree, scratch, owners, spec.arch)
    for take in spec.take:
        try:
            if take.kind == "binaries":
                for src, dest in take.value:
                    asm.binary(src, dest, take.where)
            elif take.kind == "libraries":
                for soname in take.value:
                    asm.library(soname, spec.arch.lib_dirs, "libraries:", take.where, set())
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
        tree.add(path, ImageFile("dir", mode))
    if spec.users:
        passwd, group = passwd_group(spec.users)
        tree.add("etc/passwd", ImageFile("file", 0o644, passwd))
        tree.add("etc/group", ImageFile("file", 0o644, group))
    overlay_files(tree, files)
    if notes is not None:
        notes.extend(asm.notes)
    return tree

"""build.lock: the Debian versions and .deb checksums build.yml resolved to; read, written, matched
against build.yml, and re-resolved (`lkit pkg build --update`).

One lock per architecture beside build.yml: build.lock for amd64 (the name it always had) and
build.<arch>.lock for the others (build.arm64.lock), each naming its Debian architecture in its header.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import SpecError
from lkit.images import debian
from lkit.images.pkgbuild.buildfile import BuildSpec


def lock_name(arch: Arch = arch_table.DEFAULT) -> str:
    """build.lock (amd64, the default architecture) or build.<arch>.lock."""
    return "build.lock" if arch is arch_table.DEFAULT else f"build.{arch.name}.lock"


def update_command(arch: Arch = arch_table.DEFAULT) -> str:
    return "lkit pkg build --update" + ("" if arch is arch_table.DEFAULT else f" --arch {arch.name}")


def lock_header(arch: Arch = arch_table.DEFAULT) -> str:
    return (f"# lkit {lock_name(arch)}: the Debian packages (bookworm, {arch.debian}) build.yml resolved to.\n"
            f"# Obeyed by `lkit pkg build`; re-resolve with `{update_command(arch)}`.\n")


LOCK_HEADER = lock_header()


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


def write_lock(path: Path, entries: Iterable[Locked], arch: Arch = arch_table.DEFAULT) -> None:
    text = lock_header(arch) + "".join(e.line() + "\n" for e in entries)
    _write_atomic(path, text.encode())


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def match_lock(spec: BuildSpec, locked: list[Locked], lock_path: Path) -> list[Locked]:
    """The lock entries for spec.packages in order; any difference is an error asking for --update."""
    hint = f"run `{update_command(spec.arch)} {spec.directory}` to re-resolve {lock_name(spec.arch)}"
    if len(locked) != len(spec.packages):
        raise SpecError(f"{lock_name(spec.arch)} has {len(locked)} packages, build.yml lists {len(spec.packages)}",
                        where=str(lock_path), hint=hint)
    for ref, entry in zip(spec.packages, locked):
        ok = (entry.name == ref.name and entry.via is None) if ref.name else (
            entry.via == ref.via and fnmatch.fnmatchcase(entry.name, ref.match or ""))
        if not ok:
            raise SpecError(f"{lock_name(spec.arch)} entry {entry.name} does not match packages item {ref.describe()}",
                            where=f"{spec.directory / 'build.yml'}:{ref.line}", hint=hint)
    return locked


def resolve_packages(spec: BuildSpec, old: list[Locked]) -> list[Locked]:
    """--update: the candidate version of each package (via: the matching dependency), downloaded."""
    known = {(e.name, e.version): e.sha256 for e in old}
    vias = sorted({r.via for r in spec.packages if r.via})
    arch = spec.arch
    via_versions = debian.candidate_versions(vias, arch) if vias else {}
    chosen: list[tuple[str, str | None]] = []
    for ref in spec.packages:
        if ref.name:
            chosen.append((ref.name, None))
            continue
        assert ref.via and ref.match
        deps = [d for d in debian.depends(ref.via, via_versions[ref.via], arch) if fnmatch.fnmatchcase(d, ref.match)]
        if len(deps) != 1:
            raise SpecError(f"{ref.via} depends on {deps or 'no package'} matching {ref.match!r}; need one",
                            where=f"{spec.directory / 'build.yml'}:{ref.line}")
        chosen.append((deps[0], ref.via))
    versions = debian.candidate_versions([name for name, _via in chosen], arch)
    out: list[Locked] = []
    for name, via in chosen:
        _path, sha = debian.download(name, versions[name], known.get((name, versions[name])), arch=arch)
        out.append(Locked(name, versions[name], sha, via))
    return out

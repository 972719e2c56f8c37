"""Files of Debian packages for the architecture an image is built for, not the host's.

An amd64 host has its own systemd-boot-efi and busybox-static installed; an arm64 image needs the
arm64 builds of the same files (linuxaa64.efi.stub, systemd-bootaa64.efi, an aarch64 busybox). They
are taken from PACKAGE:ARCH at the *same Debian version* as the host's installed PACKAGE (so an arm64
build is as pinned and reproducible as an amd64 one), downloaded once with `apt-get download` (dpkg
needs the foreign architecture: `dpkg --add-architecture arm64 && apt-get update`), read out of the
.deb with lkit.images.debian (nothing is installed on the host) and cached under
$XDG_CACHE_HOME/lkit/arch-files/ARCH/PACKAGE_VERSION/PATH.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from lkit.build.outputs._tools import data_file, package_version
from lkit.core import arch as arch_table
from lkit.core.arch import Arch
from lkit.errors import InfraError


def cache_dir() -> Path:
    from lkit.images.debian import cache_root
    return cache_root() / "arch-files"


def package_file(path: str, package: str, arch: Arch) -> Path:
    """`path` from Debian package `package` built for `arch` (the host's installed file for its own)."""
    if arch == arch_table.host():
        return data_file(path, package)
    from lkit.images import debian

    version = package_version(package)
    if version == "unknown":   # not installed on the host: the foreign package's candidate
        debian.check_apt_lists()
        policy = debian._run(["apt-cache", "policy", "--", f"{package}:{arch.debian}"]).stdout
        found = re.search(r"^\s+Candidate:\s*(\S+)", policy, re.M)
        if found is None or found.group(1) == "(none)":
            raise InfraError(f"Debian package {package}:{arch.debian} has no installable candidate version",
                             hint=f"dpkg --add-architecture {arch.debian} && apt-get update")
        version = found.group(1)
    cached = cache_dir() / arch.debian / f"{package}_{version.replace(':', '%3a')}" / path.lstrip("/")
    if cached.is_file():
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=cache_dir()) as tmp:
        proc = debian._run(["apt-get", "download", "-q", "--", f"{package}:{arch.debian}={version}"],
                           cwd=Path(tmp), timeout=debian.APT_TIMEOUT)
        debs = sorted(Path(tmp).glob("*.deb"))
        if proc.returncode != 0 or len(debs) != 1:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise InfraError(f"cannot download {package}:{arch.debian}={version} (the {arch.name} build of the "
                             f"host's {package}): {detail[-1] if detail else 'no .deb'}",
                             hint=f"dpkg --add-architecture {arch.debian} && apt-get update")
        fs = debian.PackageFS.open([(package, debs[0])], Path(tmp))
        try:
            data = fs.read(path)
        except KeyError:
            raise InfraError(f"{package}:{arch.debian}={version} has no {path}") from None
        staged = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
        staged.write_bytes(data)
        os.replace(staged, cached)
    return cached

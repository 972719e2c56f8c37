"""Authenticode signatures on the EFI binaries lkit builds (Secure Boot), with Debian's sbsign.

RSA PKCS#1 v1.5 signatures are deterministic, but sbsign 0.9.4 also puts the current time in the
PKCS#7 signed attributes (signingTime): two signatures a second apart differ. So sbsign runs under
libfaketime with the clock frozen at lkit's build time (SOURCE_DATE_EPOCH, 2017-04-18 16:30 UTC):
the same binary and key give the same bytes, and signed builds stay deterministic. UEFI firmware
does not check signing times. Only builds asked to sign use this; unsigned outputs are unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from lkit.core import buildtime
from lkit.core.secureboot import KeySet
from lkit.errors import BuildError, InfraError


LIBFAKETIME = ("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1", "/usr/lib/faketime/libfaketime.so.1")


def frozen_clock_env() -> dict[str, str]:
    """The environment that runs a program with its clock frozen at lkit's build time (libfaketime)."""
    lib = next((p for p in LIBFAKETIME if Path(p).is_file()), None)
    if lib is None:
        raise InfraError("libfaketime not found: lkit signs EFI binaries with a fixed signing time so that "
                         "signed builds are deterministic", hint="install the Debian package libfaketime")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(buildtime.EPOCH))
    env = dict(os.environ, TZ="UTC", FAKETIME=stamp, FAKETIME_DONT_FAKE_MONOTONIC="1")
    env["LD_PRELOAD"] = ":".join(filter(None, [lib, os.environ.get("LD_PRELOAD")]))
    return env


def sign_efi(src: Path, out: Path, keys: KeySet) -> Path:
    """Write `src` signed with the db key to `out` (atomically, deterministically)."""
    if shutil.which("sbsign") is None:
        raise InfraError("sbsign not found: it signs EFI binaries for Secure Boot",
                         hint="install the Debian package sbsigntool")
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    done = subprocess.run(["sbsign", "--key", str(keys.db_key), "--cert", str(keys.db), "--output", str(tmp),
                           str(src)], capture_output=True, text=True, timeout=120, check=False,
                          env=frozen_clock_env())
    if done.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise BuildError(f"sbsign could not sign {src.name} with {keys.db}: "
                         f"{(done.stderr or done.stdout).strip()[-500:]}",
                         hint=f"the db key and certificate must belong together ({keys.origin})")
    os.replace(tmp, out)
    return out


def verify_efi(path: Path, cert: Path) -> bool:
    """Whether `path` carries a valid signature by `cert` (sbverify)."""
    done = subprocess.run(["sbverify", "--cert", str(cert), str(path)], capture_output=True, text=True,
                          timeout=120, check=False)
    return done.returncode == 0

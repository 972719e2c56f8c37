"""Authenticode signatures on the EFI binaries lkit builds (Secure Boot), with Debian's sbsign.

sbsign signs with RSA PKCS#1 v1.5 and no signing time, so the same binary and key give the same
bytes: signed builds stay deterministic. Only builds asked to sign use this; unsigned outputs are
unchanged.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from lkit.core.secureboot import KeySet
from lkit.errors import BuildError, InfraError


def sign_efi(src: Path, out: Path, keys: KeySet) -> Path:
    """Write `src` signed with the db key to `out` (atomically)."""
    if shutil.which("sbsign") is None:
        raise InfraError("sbsign not found: it signs EFI binaries for Secure Boot",
                         hint="install the Debian package sbsigntool")
    tmp = out.with_name(out.name + ".tmp")
    tmp.unlink(missing_ok=True)
    done = subprocess.run(["sbsign", "--key", str(keys.db_key), "--cert", str(keys.db), "--output", str(tmp),
                           str(src)], capture_output=True, text=True, timeout=120, check=False)
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

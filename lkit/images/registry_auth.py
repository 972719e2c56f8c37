"""Registry credentials the way docker finds them: ~/.docker/config.json auths and credential helpers.

Also parses WWW-Authenticate challenges. Secrets are only ever held in memory and sent to the
registry (or its token realm) that asked for them.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from lkit.errors import ImageError

DOCKER_HUB_KEYS = ("https://index.docker.io/v1/", "index.docker.io", "docker.io", "registry-1.docker.io")
HELPER_TIMEOUT = 30


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"


@dataclass(frozen=True)
class Challenge:
    """One parsed WWW-Authenticate challenge: scheme ('bearer' / 'basic') and its parameters."""

    scheme: str
    params: dict[str, str]


_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge:
    """'Bearer realm="https://auth",service="reg",scope="repository:x:pull"' -> Challenge."""
    scheme, _, rest = header.strip().partition(" ")
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)).replace('\\"', '"')
              for m in _PARAM.finditer(rest)}
    return Challenge(scheme.lower(), params)


def docker_config_path() -> Path:
    base = os.environ.get("DOCKER_CONFIG")
    return (Path(base) if base else Path.home() / ".docker") / "config.json"


def _keys_for(registry: str) -> list[str]:
    """config.json keys that may hold credentials for `registry` (docker's own spellings)."""
    if registry in ("docker.io", "registry-1.docker.io", "index.docker.io"):
        return list(DOCKER_HUB_KEYS)
    return [registry, f"https://{registry}", f"http://{registry}", f"https://{registry}/v1/",
            f"https://{registry}/v2/"]


def load_credentials(registry: str, config_path: Path | None = None) -> Credentials | None:
    """Credentials for `registry` from credHelpers, credsStore or auths; None when there are none."""
    path = config_path or docker_config_path()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read docker credentials: {exc}",
                         hint="fix the file or point DOCKER_CONFIG at a directory with a valid config.json") from None
    if not isinstance(config, dict):
        raise ImageError(f"{path}: docker config is not a JSON object")
    keys = _keys_for(registry)
    helpers = config.get("credHelpers") or {}
    for key in keys:
        if key in helpers:
            return _from_helper(str(helpers[key]), key, path)
    auths = config.get("auths") or {}
    for key in keys:
        entry = auths.get(key)
        if isinstance(entry, dict):
            creds = _from_auth_entry(entry, key, path)
            if creds:
                return creds
    if config.get("credsStore"):
        return _from_helper(str(config["credsStore"]), keys[0], path, missing_ok=True)
    return None


def _from_auth_entry(entry: dict, key: str, path: Path) -> Credentials | None:
    if entry.get("auth"):
        try:
            user, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            if not sep:
                raise ValueError("no colon")
        except (ValueError, UnicodeDecodeError):
            raise ImageError(f"{path}: auths[{key!r}].auth is not base64 of USER:PASSWORD") from None
        return Credentials(user, password)
    if entry.get("username") and entry.get("password"):
        return Credentials(str(entry["username"]), str(entry["password"]))
    if entry.get("identitytoken"):
        return Credentials("<token>", str(entry["identitytoken"]))
    return None


def _from_helper(helper: str, server: str, path: Path, missing_ok: bool = False) -> Credentials | None:
    """Run `docker-credential-HELPER get` (server URL on stdin), as docker does."""
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", helper):
        raise ImageError(f"{path}: credential helper name {helper!r} is not a plain program name")
    exe = shutil.which(f"docker-credential-{helper}")
    if exe is None:
        if missing_ok:
            return None
        raise ImageError(f"{path}: credential helper docker-credential-{helper} for {server} is not installed",
                         hint="install it or remove it from credHelpers")
    try:
        proc = subprocess.run([exe, "get"], input=server.encode(), capture_output=True, timeout=HELPER_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise ImageError(f"credential helper docker-credential-{helper} did not answer in {HELPER_TIMEOUT}s") from None
    if proc.returncode != 0:
        text = proc.stdout.decode(errors="replace").strip() or proc.stderr.decode(errors="replace").strip()
        if "credentials not found" in text.lower():
            return None
        raise ImageError(f"credential helper docker-credential-{helper} failed for {server}: {text}")
    try:
        data = json.loads(proc.stdout)
        return Credentials(str(data["Username"]), str(data["Secret"]))
    except (ValueError, KeyError, TypeError):
        raise ImageError(f"credential helper docker-credential-{helper} printed no Username/Secret JSON") from None

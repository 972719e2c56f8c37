"""Command-line options (`--lkit-*`), each with an ini key of the same name (`lkit_*`)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from lkit.build.outputs.base import FORMAT_NAMES
from lkit.machine.accel import AUTO, CHOICES
from lkit.pytest_plugin.shard import Shard

# (option name without --lkit-, ini/help text, default, type)
_OPTIONS: list[tuple[str, str, str | None]] = [
    ("suites", "folders (relative to rootdir) whose *.yml specs are collected", "suites"),
    ("formats", "comma-separated output formats to test (default: each spec's own list)", None),
    ("firmware", "comma-separated firmware variants of EFI formats: efi, efi-secureboot (default: each spec's "
                 "`firmware:`, else efi); variants are named FORMAT@FIRMWARE, efi keeps the plain name", None),
    ("arch", "comma-separated architectures to test: amd64, arm64 (default: each spec's `arch:`, else the "
             "host's); variants of other architectures than amd64 are named ARCH.FORMAT", None),
    ("accel", "accelerator: auto (probe KVM, fall back to TCG), kvm or tcg", "auto"),
    ("timeout-multiplier", "multiply every guest timeout (default: by accelerator, TCG 1.0 of the budgets given)", None),
    ("store", "OCI image store (default: $LKIT_STORE or ~/.cache/lkit/store)", None),
    ("build-dir", "where specs are built (default: <rootdir>/build)", None),
    ("prebuilt", "test artifacts already built instead of building: a folder (e.g. linuxkit's outputs), or "
                 "oci://REGISTRY/REPO:TAG where `lkit build --push` / --lkit-push put them", None),
    ("push", "push each spec's build as an OCI artifact to oci://REGISTRY/REPO:TAG (oci+http:// for a "
             "loopback registry): shards then test it with --lkit-prebuilt", None),
    ("report-dir", "where runs write reports (default: <rootdir>/reports)", None),
    ("baseline", "baseline JSON to compare this run with; regressions fail the run", None),
    ("thresholds", "regression thresholds, e.g. 'size=5%,time=25%,time_floor=1.5s'", None),
    ("quarantine", "quarantine YAML (test id patterns with a reason and an expiry date)", None),
    ("cpus", "vCPUs per VM (default: 2 under KVM, 1 under TCG, where QEMU 7.2 livelocks some SMP guests; "
             "a spec's NAME.test.yml `cpus:` wins)", None),
    ("boots", "boot each format this many times in all; boot figures are the median, the spread feeds the gate", "1"),
    ("reruns", "how many times a failed boot is retried before it counts (recorded in reports)", "1"),
    ("keep-vm", "on a failed check, keep the VM running this many seconds for debugging (prints its sockets)", "0"),
    ("no-determinism", "skip the second build that checks byte-identical outputs", None),
    ("shard", "run shard K of N (e.g. 2/3; also $LKIT_SHARD): (spec, format) groups split deterministically, "
              "balanced by --lkit-baseline's timings when given", None),
]


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("lkit", "lkit: build, boot and check LinuxKit specs")
    for name, text, default in _OPTIONS:
        dest = "lkit_" + name.replace("-", "_")
        if name == "no-determinism":
            group.addoption(f"--lkit-{name}", action="store_true", dest=dest, default=None, help=text)
            parser.addini(dest, text, type="bool", default=False)
            continue
        group.addoption(f"--lkit-{name}", dest=dest, default=None, metavar=name.upper().replace("-", "_"), help=text)
        parser.addini(dest, text, default=default)


def _name_list(config: pytest.Config, name: str, what: str, known: tuple[str, ...], note: str = "") -> list[str] | None:
    """A comma-separated option of known names (--lkit-firmware, --lkit-arch); None when not given."""
    text = _get(config, name)
    if not text:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise pytest.UsageError(f"--lkit-{name}: unknown {what} {', '.join(unknown) or '(none given)'}; "
                                f"known: {', '.join(known)}{note}")
    return names


def _get(config: pytest.Config, name: str) -> str | None:
    return _get_with_base(config, name)[0]


def _get_with_base(config: pytest.Config, name: str) -> tuple[str | None, Path]:
    """The option's value and the folder a relative path in it is relative to: the current folder
    for the command line, the ini file's folder (rootdir) for an ini key."""
    dest = "lkit_" + name.replace("-", "_")
    value = config.getoption(dest)
    base = Path(config.invocation_params.dir)
    if value is None:
        value = config.getini(dest)
        base = Path(config.rootpath)
    if value in ("", None):
        return None, base
    return (str(value) if not isinstance(value, bool) else ("1" if value else None)), base


def oci(text: str | None) -> bool:
    return bool(text) and str(text).startswith(("oci://", "oci+http://"))


def _location(config: pytest.Config, name: str) -> str | None:
    text = _get(config, name)
    if text and not oci(text):
        raise pytest.UsageError(f"--lkit-{name}: {text!r} is not oci://REGISTRY/REPO:TAG (or oci+http:// for a "
                                "registry on localhost)")
    return text


@dataclass
class Settings:
    rootdir: Path
    suites: list[Path]
    formats: list[str] | None
    accel: str
    timeout_multiplier: float | None
    store: Path | None
    build_dir: Path
    prebuilt: Path | None
    report_dir: Path
    baseline: Path | None
    thresholds: str | None
    quarantine: Path | None
    cpus: int | None
    boots: int
    reruns: int
    keep_vm: float
    determinism: bool
    shard: Shard | None = None
    prebuilt_oci: str | None = None   # oci://... given to --lkit-prebuilt
    push: str | None = None           # oci://... given to --lkit-push
    firmware: list[str] | None = None  # --lkit-firmware: every spec's firmware variants
    arch: list[str] | None = None      # --lkit-arch: every spec's architectures

    @property
    def uses_prebuilt(self) -> bool:
        """Artifacts come from elsewhere (a folder or a registry): nothing is built in this run."""
        return self.prebuilt is not None or self.prebuilt_oci is not None

    @classmethod
    def from_config(cls, config: pytest.Config) -> Settings:
        root = Path(config.rootpath)

        def path(name: str) -> Path | None:
            value, base = _get_with_base(config, name)
            return (base / value).resolve() if value else None

        formats = _get(config, "formats")
        if formats:
            wanted = [f.strip() for f in formats.split(",") if f.strip()]
            unknown = [f for f in wanted if f not in FORMAT_NAMES]
            if unknown:
                raise pytest.UsageError(f"--lkit-formats: unknown format(s) {', '.join(unknown)}; known: {', '.join(FORMAT_NAMES)}")
        from lkit.core.arch import NAMES as ARCHES
        from lkit.pytest_plugin.variants import NAMES as FIRMWARES

        firmware = _name_list(config, "firmware", "firmware", FIRMWARES)
        arches = _name_list(config, "arch", "architecture", ARCHES, " (LinuxKit's names, not x86_64/aarch64)")
        accel = _get(config, "accel") or AUTO
        if accel not in CHOICES:
            raise pytest.UsageError(f"--lkit-accel: {accel!r} is not one of auto, kvm, tcg")
        multiplier = _get(config, "timeout-multiplier")
        try:
            reruns = int(_get(config, "reruns") or 0)
            boots = int(_get(config, "boots") or 1)
            cpus = int(_get(config, "cpus") or 0) or None
            keep_vm = float(_get(config, "keep-vm") or 0)
            factor = float(multiplier) if multiplier else None
        except ValueError as exc:  # a number option given a non-number
            raise pytest.UsageError(f"lkit option: {exc}") from None
        suites_value, suites_base = _get_with_base(config, "suites")
        if suites_value is None:
            suites_base = root
        # the command line, then $LKIT_SHARD (a CI matrix sets it per job), then the ini key
        prebuilt_text = _get(config, "prebuilt")
        shard_from = [(config.getoption("lkit_shard"), "--lkit-shard"), (os.environ.get("LKIT_SHARD"), "LKIT_SHARD"),
                      (_get(config, "shard"), "ini key lkit_shard")]
        shard = next((Shard.parse(text, where) for text, where in shard_from if text), None)
        store = path("store") or (Path(os.environ["LKIT_STORE"]) if os.environ.get("LKIT_STORE") else None)
        return cls(
            rootdir=root,
            suites=[(suites_base / s.strip()).resolve() for s in (suites_value or "suites").split(",")],
            formats=[f.strip() for f in formats.split(",")] if formats else None,
            accel=accel,
            timeout_multiplier=factor,
            store=store,
            build_dir=path("build-dir") or root / "build",
            prebuilt=None if oci(prebuilt_text) else path("prebuilt"),
            prebuilt_oci=prebuilt_text if oci(prebuilt_text) else None,
            push=_location(config, "push"),
            report_dir=path("report-dir") or root / "reports",
            baseline=path("baseline"),
            thresholds=_get(config, "thresholds"),
            quarantine=path("quarantine"),
            cpus=cpus if cpus is None else max(1, cpus),
            boots=max(1, boots),
            reruns=reruns,
            keep_vm=keep_vm,
            determinism=not bool(_get(config, "no-determinism")),
            shard=shard,
            firmware=firmware,
            arch=arches,
        )

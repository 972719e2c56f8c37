#!/usr/bin/env python3
"""Boot benchmark: median of N boots per output format, from `cont` to "lkit: services started",
against the floor measured in the same run: the same kernel and firmware with a bare shell-only
initrd (lkit.machine.testguest), so the ratio shows what lkit's init and containers cost.

    python bench/boot.py OUTDIR/NAME [--runs 5] [--formats kernel+initrd,iso-efi] [--json out.json]
    python bench/boot.py build/linuxkit/linuxkit --arm64 build/linuxkit/arm64/linuxkit --runs 3

OUTDIR/NAME is the prefix of built outputs (`lkit build` writes NAME-kernel, NAME.iso, ...); every
bootable format found there is measured. `--arm64 PREFIX` also boots the same spec's arm64 outputs
(`lkit build --arch arm64`) in the same run, each format beside its amd64 row with the ratio (TCG on an
x86 host: what an x86-only CI pays for arm64). Each boot is bounded; QEMU is always stopped.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lkit.core import arch as arch_table  # noqa: E402
from lkit.core.arch import Arch  # noqa: E402
from lkit.errors import LkitError  # noqa: E402
from lkit.machine.artifacts import FORMAT_KINDS, BootTarget, boot_target, expand_prefix  # noqa: E402
from lkit.machine.testguest import sample_guest  # noqa: E402
from lkit.machine.vm import Machine  # noqa: E402

MARKER = r"lkit: services started"
TARGET_RATIO = {"kernel+initrd": 1.5, "iso-bios": 1.5, "iso-efi": 1.3}   # issue 3


@dataclass
class Row:
    name: str
    efi: bool
    arch: str
    seconds: list[float]
    failures: list[str]
    stages: dict[str, list[float]]      # timeline stage -> host seconds from `cont`, one per boot

    @property
    def median(self) -> float | None:
        return statistics.median(self.seconds) if self.seconds else None


def boot_once(target: BootTarget, timeout: float, accel: str, cpus: int | None,
              arch: Arch = arch_table.DEFAULT) -> tuple[float, dict[str, float]]:
    """Seconds from `cont` to the marker (host clock) for one boot, and to every stage before it."""
    with tempfile.TemporaryDirectory(prefix="lkit-bench-") as tmp:
        with Machine(target, workdir=Path(tmp), accel=accel, cpus=cpus, timeout_multiplier=1.0, arch=arch) as m:
            entry = m.wait_for_marker("services", timeout)
            stages = {name: host for name, host, _guest in m.timeline.as_list()}
            m.shutdown(timeout=5)   # bounded; quit/kill follow if the guest ignores the power button
            return entry.host, stages


def floor_key(arch: str, efi: bool) -> tuple[str, bool]:
    """Which floor a row is measured against: its architecture's, through the firmware it boots by."""
    return arch, efi or arch_table.ARCHES[arch].uefi_always


def measure(name: str, target: BootTarget, runs: int, timeout: float, accel: str, cpus: int | None,
            arch: Arch = arch_table.DEFAULT) -> Row:
    row = Row(name, target.efi, arch.name, [], [], {})
    for i in range(runs):
        try:
            took, stages = boot_once(target, timeout, accel, cpus, arch)
            row.seconds.append(took)
            for stage, at in stages.items():
                row.stages.setdefault(stage, []).append(at)
            status = f"{took:.2f}s"
        except LkitError as exc:
            row.failures.append(str(exc).splitlines()[0])
            status = "failed: " + row.failures[-1][:100]
        print(f"  {name} run {i + 1}/{runs}: {status}", file=sys.stderr)
    return row


def available_formats(prefix: Path) -> dict[str, list[Path]]:
    files = expand_prefix(prefix)
    found: dict[str, list[Path]] = {}
    for fmt in FORMAT_KINDS:
        try:
            boot_target(fmt, files)
        except LkitError:
            continue
        found[fmt] = files
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("prefix", type=Path, help="OUTDIR/NAME of built outputs")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--formats", help="comma-separated formats (default: every bootable one found)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds per boot (default 300)")
    ap.add_argument("--accel", default="tcg", choices=("auto", "kvm", "tcg"))
    ap.add_argument("--cpus", type=int, help="vCPUs per VM (default: lkit's, 1 under TCG)")
    ap.add_argument("--json", type=Path, help="also write the results as JSON")
    ap.add_argument("--arm64", type=Path, metavar="PREFIX",
                    help="also boot the arm64 outputs at PREFIX (lkit build --arch arm64) beside amd64's")
    args = ap.parse_args(argv)

    formats = available_formats(args.prefix)
    if args.formats:
        wanted = args.formats.split(",")
        missing = [f for f in wanted if f not in formats]
        if missing:
            print(f"bench: no outputs for {', '.join(missing)} under {args.prefix}*", file=sys.stderr)
            return 2
        formats = {f: formats[f] for f in wanted}
    if not formats:
        print(f"bench: no bootable outputs start with {args.prefix}", file=sys.stderr)
        return 2

    plan: list[tuple[Arch, Path, dict[str, list[Path]]]] = [(arch_table.AMD64, args.prefix, formats)]
    if args.arm64:
        arm = available_formats(args.arm64)
        plan.append((arch_table.ARM64, args.arm64, {f: arm[f] for f in formats if f in arm}))
    floors: dict[tuple[str, bool], Row] = {}
    rows: list[Row] = []
    for arch, prefix, found in plan:
        bare = sample_guest(shell_only=True, arch=arch)
        kernel = next((f for f in expand_prefix(prefix) if f.name.endswith("-kernel")), bare.kernel)
        # an architecture that boots every kernel through UEFI (arm64) has one floor, the EFI one
        for efi in sorted({floor_key(arch.name, boot_target(f, files).efi)[1] for f, files in found.items()}):
            floor = BootTarget("kernel+initrd", "direct", efi, kernel=kernel, initrd=bare.initrd,
                               cmdline=f"console={arch.console} panic=-1 loglevel=6")
            label = ("floor-efi" if efi else "floor-bios") + ("" if arch == arch_table.AMD64 else f"-{arch.name}")
            floors[(arch.name, efi)] = measure(label, floor, args.runs, args.timeout, args.accel, args.cpus, arch)
        for fmt, files in found.items():
            name = fmt if arch == arch_table.AMD64 else f"{arch.name}.{fmt}"
            rows.append(measure(name, boot_target(fmt, files), args.runs, args.timeout, args.accel, args.cpus, arch))
    amd64 = {r.name: r.median for r in rows if r.arch == arch_table.AMD64.name}

    print(f"\nboot to '{MARKER}' ({args.accel}, {args.cpus or 'default'} vCPU, median of {args.runs}; floor = same "
          "kernel/firmware, shell-only initrd; vs amd64 = over the same format's amd64 median)")
    print(f"{'format':<20} {'median s':>9} {'min':>7} {'max':>7} {'floor s':>8} {'ratio':>6} {'target':>6} "
          f"{'vs amd64':>8} {'failed':>6}")
    for row in [*floors.values(), *rows]:
        floor_s = floors[floor_key(row.arch, row.efi)].median
        med = row.median
        ratio = f"{med / floor_s:.2f}" if med is not None and floor_s else "-"
        target = f"{TARGET_RATIO[row.name]:.1f}" if row.name in TARGET_RATIO else "-"
        base = amd64.get(row.name.split(".", 1)[-1]) if row.arch != arch_table.AMD64.name else None
        versus = f"{med / base:.2f}" if med is not None and base else "-"
        print(f"{row.name:<20} {med if med is not None else float('nan'):9.2f} "
              f"{min(row.seconds, default=float('nan')):7.2f} {max(row.seconds, default=float('nan')):7.2f} "
              f"{floor_s if floor_s is not None else float('nan'):8.2f} {ratio:>6} {target:>6} {versus:>8} "
              f"{len(row.failures):>6}")
    print("\nwhere the time goes: median seconds from `cont` to each stage")
    for row in rows:
        print(f"  {row.name:<18} " + "  ".join(f"{stage} {statistics.median(at):.1f}"
                                                 for stage, at in row.stages.items()))
    if args.json:
        data = {"marker": MARKER, "accel": args.accel, "cpus": args.cpus, "runs": args.runs,
                "rows": [{**asdict(r), "median": r.median, "floor": floors[floor_key(r.arch, r.efi)].median}
                         for r in [*floors.values(), *rows]]}
        tmp = args.json.with_name(f".{args.json.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        os.replace(tmp, args.json)
    return 0 if all(not r.failures for r in rows) else 1


if __name__ == "__main__":
    t = time.monotonic()
    try:
        code = main()
    except KeyboardInterrupt:
        code = 130
    print(f"bench: {time.monotonic() - t:.0f}s", file=sys.stderr)
    sys.exit(code)

#!/usr/bin/env python3
"""Registry benchmark: pull throughput and cold pull-and-build times against a loopback registry.

    python bench/registry.py [--spec suites/linuxkit.yml] [--pulls 5] [--builds 3]

Starts Debian's docker-registry on a random 127.0.0.1 port, pushes the spec's lkit/* base images from
the default store (fill it first: lkit pkg build fixtures/pkgs/*), then measures:

pull kernel   : `pull` of lkit/kernel into an empty store, in process; MB/s of compressed bytes
                (layers + config + manifest); median of --pulls, the store wiped between runs
pull all      : every image of the spec into an empty store (`lkit cache pull`, a child process)
cold build    : `lkit build -f FORMAT` of the spec rewritten to the registry, empty store and empty
                build cache each time (so every image is pulled); median of --builds, per format
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lkit.images.registry import pull, push  # noqa: E402
from lkit.images.store import Store  # noqa: E402

FORMATS = ("kernel+initrd", "iso-bios", "iso-efi")
SHORT_REF = re.compile(r'(?<![\w./:-])lkit/[a-z0-9][a-z0-9._-]*:[\w][\w.-]*')


@contextlib.contextmanager
def loopback_registry(tmp: Path) -> Iterator[str]:
    """docker-registry on a free 127.0.0.1 port; yields host:port; always killed."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = {"version": 0.1, "log": {"level": "error"},
              "storage": {"filesystem": {"rootdirectory": str(tmp / "data")}},
              "http": {"addr": f"127.0.0.1:{port}"}}
    (tmp / "config.yml").write_text(json.dumps(config))
    exe = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    with open(tmp / "registry.log", "wb") as log:
        proc = subprocess.Popen([exe, "serve", str(tmp / "config.yml")], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"docker-registry did not start (see {tmp / 'registry.log'})")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait(timeout=10)


def image_bytes(store: Store, ref: str) -> int:
    """Compressed bytes a pull moves: layers + config + manifest."""
    img = store.resolve(ref)
    config = img.manifest["config"]["size"]
    return sum(layer.size for layer in img.layers) + config + store.blob_path(img.digest).stat().st_size


def lkit(args: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one `lkit` child process; exits on failure."""
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "lkit.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"lkit {' '.join(args)} failed:\n{done.stdout}{done.stderr}")
    return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "suites" / "linuxkit.yml")
    parser.add_argument("--pulls", type=int, default=5)
    parser.add_argument("--builds", type=int, default=3)
    args = parser.parse_args()
    default = Store.default()
    text = args.spec.read_text()
    images = sorted(set(SHORT_REF.findall(text)))
    kernel = next(ref for ref in images if ref.startswith("lkit/kernel:"))
    rows: list[tuple[str, str, str]] = []

    def record(name: str, median: str, runs: str) -> None:
        rows.append((name, median, runs))
        print(f"  {name}: {median} ({runs})", file=sys.stderr, flush=True)  # progress; the table follows
    with tempfile.TemporaryDirectory(prefix="lkit-bench-registry.") as tmp_name, \
            loopback_registry(Path(tmp_name)) as addr:
        tmp = Path(tmp_name)
        for ref in images:
            push(default, ref, dest=f"{addr}/{ref}", insecure=True)
        docker_cfg = tmp / "docker"
        docker_cfg.mkdir()
        (docker_cfg / "config.json").write_text('{"auths": {}}')
        env = {k: v for k, v in os.environ.items() if k not in ("LKIT_STORE", "LKIT_BUILD_CACHE")}
        env["DOCKER_CONFIG"] = str(docker_cfg)

        size = image_bytes(default, kernel)
        rates = []
        for i in range(args.pulls):
            store_dir = tmp / f"pull-{i}"
            started = time.monotonic()
            pull(Store(store_dir), f"{addr}/{kernel}", insecure=True)
            rates.append(size / 1e6 / (time.monotonic() - started))
            shutil.rmtree(store_dir)
        record(f"pull {kernel} ({size / 1e6:.1f} MB)", f"{statistics.median(rates):.1f} MB/s",
               ", ".join(f"{r:.1f}" for r in rates))

        total = sum(image_bytes(default, ref) for ref in images)
        times = []
        for i in range(args.builds):
            store_dir = tmp / f"all-{i}"
            times.append(lkit(["cache", "--store", str(store_dir), "pull", "--plain-http",
                               *(f"{addr}/{ref}" for ref in images)], env))
            shutil.rmtree(store_dir)
        record(f"pull all {len(images)} images ({total / 1e6:.1f} MB)", f"{statistics.median(times):.2f} s",
               ", ".join(f"{t:.2f}" for t in times))

        spec = tmp / args.spec.name
        spec.write_text(SHORT_REF.sub(lambda m: f"{addr}/{m.group(0)}", text))
        for fmt in FORMATS:
            times = []
            for i in range(args.builds):
                run = tmp / f"build-{fmt}-{i}"
                build_env = {**env, "LKIT_BUILD_CACHE": str(run / "cache")}
                times.append(lkit(["build", "--store", str(run / "store"), "--dir", str(run / "out"),
                                   "--plain-http", "-f", fmt, str(spec)], build_env))
                shutil.rmtree(run)
            record(f"cold pull+build {fmt}", f"{statistics.median(times):.2f} s",
                   ", ".join(f"{t:.2f}" for t in times))

    width = max(len(r[0]) for r in rows)
    print(f"{'measure':<{width}}  {'median':>12}  runs")
    for name, median, runs in rows:
        print(f"{name:<{width}}  {median:>12}  {runs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

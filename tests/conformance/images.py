"""Small synthetic OCI images for the LinuxKit conformance cases, built byte-reproducibly.

Every layer is a PAX tar written here with fixed mtimes (1600000000 + n, deliberately not LinuxKit's
2017-04-18 default, so a rewritten mtime is visible), empty uname/gname, and stored with lkit's own
`add_image` (deterministic gzip and JSON). Running this twice gives the same digests.

    python -m tests.conformance.images OUTDIR

writes an lkit store at OUTDIR/store and OUTDIR/images.tar (`lkit cache export`, an OCI layout tar
that `linuxkit cache import` reads), and prints `REF<TAB>DIGEST` per image.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from lkit.images.oci import add_image, canonical_json
from lkit.images.store import OCI_INDEX, OCI_MANIFEST, Descriptor, Store

T0 = 1600000000
INDEX_REF = "lkitconf/volume-index:1"  # an OCI image index over lkitconf/volume:1  # base mtime; each image/layer adds its own offset


@dataclass
class E:
    """One tar entry. kind: file, dir, symlink, link (hard), fifo, char, block."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int | None = None
    uid: int = 0
    gid: int = 0
    mtime: int = T0
    link: str = ""
    major: int = 0
    minor: int = 0


_KINDS = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "link": tarfile.LNKTYPE,
          "fifo": tarfile.FIFOTYPE, "char": tarfile.CHRTYPE, "block": tarfile.BLKTYPE}


def tar_bytes(entries: list[E]) -> bytes:
    """A PAX tar of `entries`, in order; no uname/gname, integer mtimes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            ti = tarfile.TarInfo(e.name)
            ti.type = _KINDS[e.kind]
            default = 0o755 if e.kind == "dir" else (0o777 if e.kind == "symlink" else 0o644)
            ti.mode = default if e.mode is None else e.mode
            ti.uid, ti.gid = e.uid, e.gid
            ti.uname = ti.gname = ""
            ti.mtime = e.mtime
            ti.linkname = e.link
            ti.devmajor, ti.devminor = e.major, e.minor
            if e.kind == "file":
                ti.size = len(e.data)
                tf.addfile(ti, io.BytesIO(e.data))
            else:
                ti.size = 0
                tf.addfile(ti)
    return buf.getvalue()


def noise(seed: str, size: int) -> bytes:
    """`size` deterministic pseudo-random bytes."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _mt(base: int, entries: list[E]) -> list[E]:
    """Give entries that kept the default mtime a distinct one: base + position."""
    for i, e in enumerate(entries):
        if e.mtime == T0:
            e.mtime = base + i
    return entries


@dataclass
class Img:
    ref: str
    layers: list[list[E]]
    config: dict = field(default_factory=dict)


# --- the images --------------------------------------------------------------------------------------

def _kernel_tar() -> bytes:
    m = T0 + 5000
    return tar_bytes([
        E("lib/", "dir", mtime=m),
        E("lib/modules/", "dir", mtime=m + 1),
        E("lib/modules/6.1.0-test/", "dir", mtime=m + 2),
        E("lib/modules/6.1.0-test/kernel/", "dir", mode=0o750, mtime=m + 3),
        E("lib/modules/6.1.0-test/kernel/test.ko", data=noise("ko", 700), mode=0o600, mtime=m + 4),
        E("lib/modules/6.1.0-test/modules.dep", data=b"kernel/test.ko:\n", mtime=m + 5),
        E("lib/modules/6.1.0-test/build", "symlink", link="/usr/src/linux-6.1.0-test", mtime=m + 6),
    ])


def kernel_images() -> list[Img]:
    common = [
        E("kernel", data=noise("kernel", 4096), mode=0o644),
        E("kernel.tar", data=_kernel_tar(), mode=0o644),
        E("System.map", data=b"ffffffff81000000 T _text\n"),  # not extracted by LinuxKit
        E("etc/", "dir"),
        E("etc/hostname", data=b"kernelhost\n"),
    ]
    ucode = common + [E("ucode.cpio", data=noise("ucode", 512), mode=0o600)]
    return [
        Img("lkitconf/kernel:1", [_mt(T0 + 100, common)], {"Cmd": ["/bin/true"]}),
        Img("lkitconf/kernel-ucode:1", [_mt(T0 + 200, ucode)], {}),
    ]


def init_images() -> list[Img]:
    a = [
        E("bin/", "dir"),
        E("bin/busybox", data=noise("busybox", 300), mode=0o755),
        E("dev/", "dir", mode=0o750),
        E("dev/console", "char", mode=0o600, major=5, minor=1),  # dropped by both (LinuxKit's exclude list)
        E("etc/", "dir", mode=0o750),
        E("etc/hostname", data=b"init-a\n"),
        E("etc/hosts", data=b"10.0.0.1 init-a\n", mode=0o600),
        E("etc/resolv.conf", data=b"nameserver 10.0.0.53\n", mode=0o640),
        E("etc/init.d/", "dir"),
        E("etc/init.d/rcS", data=b"#!/bin/sh\necho rcS\n", mode=0o755),
        E("lib/", "dir"),
        E("lib/apk/", "dir"),
        E("lib/apk/db/", "dir"),
        E("lib/apk/db/installed", data=b"P:init-a\nV:1.0-r0\nA:x86_64\n\n"),  # 30 bytes
        E("sbin/", "dir"),
        E("sbin/init", data=b"#!/bin/sh\nexec /bin/busybox init\n", mode=0o755),
        E("var/", "dir"),
        E("var/empty/", "dir", mode=0o700),
    ]
    b = [
        E("etc/", "dir"),
        E("etc/hostname", data=b"init-b\n"),
        E("etc/init.d/", "dir", mode=0o700),
        E("etc/init.d/010-b", data=b"#!/bin/sh\necho b\n", mode=0o750, uid=0, gid=10),
        E("lib/", "dir"),
        E("lib/apk/", "dir"),
        E("lib/apk/db/", "dir"),
        E("lib/apk/db/installed", data=b"P:init-b\nV:2.5-r1\nA:x86_64\n\n"),  # 30 bytes
        E("sbin/", "dir"),
        E("sbin/init", data=b"#!/bin/sh\necho init-b\n", mode=0o700),
        E("tmp/", "dir", mode=0o1777),
        E("usr/", "dir"),
        E("usr/bin/", "dir"),
        E("usr/bin/ctr", data=noise("ctr", 200), mode=0o755),
    ]
    return [
        Img("lkitconf/init-a:1", [_mt(T0 + 300, a)], {"Cmd": ["/sbin/init"]}),
        Img("lkitconf/init-b:1", [_mt(T0 + 400, b)], {}),
    ]


def _base_layers(with_etc: bool, seed: str) -> list[list[E]]:
    l1 = [
        E("Dockerfile", data=b"FROM scratch\n"),  # LinuxKit drops it
        E("bin/", "dir"),
        E("bin/sh", data=noise(seed + "sh", 256), mode=0o755),
        E("bin/ash", "symlink", link="sh"),
        E("bin/su", data=noise(seed + "su", 64), mode=0o4755),
        E("bin/sgid", data=b"sgid\n", mode=0o2711, gid=42),
        E("bin/sh-hard", "link", link="bin/sh"),
        E("dev/", "dir"),
        E("dev/shm/", "dir", mode=0o1777),
        E("opt/", "dir"),
        E("opt/app/", "dir", mode=0o750, uid=1000, gid=1000),
        E("opt/app/deep/", "dir", mode=0o700, uid=1000, gid=1000),
        E("opt/app/deep/er/", "dir", mode=0o711, uid=1000, gid=1001),
        E("opt/app/deep/er/file", data=b"deep\n", mode=0o600, uid=1000, gid=1001),
        E("opt/app/weird", data=b"weird modes\n", mode=0o6741, uid=65534, gid=65534),
        E("run/", "dir"),
        E("run/fifo", "fifo", mode=0o620, uid=1000, gid=1000),
        E("usr/", "dir"),
        E("usr/bin/", "dir"),
        E("usr/bin/sh", "symlink", link="/bin/sh"),
        E("usr/bin/odd", data=b"odd\n", mode=0o751, uid=1000, gid=1001),
        E("var/", "dir"),
        E("var/lib/", "dir"),
        E("var/lib/gone", data=b"whited out in layer 2\n"),
        E("var/lib/kept", data=b"kept\n"),
        E("var/cache/", "dir", mode=0o700),
        E("var/cache/a", data=b"a\n"),
        E("var/cache/sub/", "dir"),
        E("var/cache/sub/b", data=b"b\n"),
    ]
    if with_etc:
        l1 += [
            E("etc/", "dir", mode=0o711),
            E("etc/hosts", data=b"192.168.1.1 base\n", mode=0o600),
            E("etc/resolv.conf", data=b"nameserver 192.168.1.53\n", mode=0o640, uid=1000),
            E("etc/mtab", data=b"rootfs / rootfs rw 0 0\n", mode=0o444),
            E("etc/hostname", data=b"base\n"),
            E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        ]
    else:
        l1 += [
            E("etc/", "dir"),
            E("etc/passwd", data=b"root:x:0:0:root:/root:/bin/sh\n"),
        ]
    l1 = _mt(T0 + 1000, l1)
    l2 = _mt(T0 + 2000, [
        E("./opt/", "dir", mode=0o700),  # "./" prefix, and a mode change of a lower-layer directory
        E("./opt/new", data=b"layer 2\n"),
        E("usr/bin/odd-link", "link", link="usr/bin/odd"),  # hard link to a file of the lower layer
        E("var/", "dir"),
        E("var/lib/", "dir"),
        E("var/lib/.wh.gone"),
        E("var/cache/", "dir", mode=0o755),
        E("var/cache/.wh..wh..opq"),
        E("var/cache/c", data=b"c from layer 2\n"),
    ])
    return [l1, l2]


def base_images() -> list[Img]:
    cfg = {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}
    return [
        Img("lkitconf/base:1", _base_layers(True, "base"), cfg),
        Img("lkitconf/base-noetc:1", _base_layers(False, "noetc"), cfg),
    ]


MOBY_LABEL = {
    "capabilities": ["CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_CHOWN"],
    "ambient": ["CAP_NET_ADMIN"],
    "binds": ["/var/run:/var/run", "/etc/resolv.conf:/etc/resolv.conf:ro", "/lib/modules:/lib/modules:ro,rslave"],
    "mounts": [{"type": "cgroup", "options": ["rw", "nosuid", "noexec", "nodev", "relatime"]},
               {"destination": "/run/x", "type": "tmpfs", "source": "tmpfs", "options": ["size=1m"]}],
    "tmpfs": ["/tmp:size=10m,mode=1777"],
    "readonly": True,
    "net": "host",
    "pid": "host",
    "uts": "new",
    "uid": "svc-a",
    "gid": 7,
    "additionalGids": ["svc-b", 20],
    "noNewPrivileges": True,
    "oomScoreAdj": -500,
    "hostname": "from-label",
    "env": ["FROM_LABEL=1", "PATH=/sbin:/bin"],
    "cwd": "/label",
    "command": ["/bin/labelled", "--from-label"],
    "sysctl": {"net.ipv4.ip_forward": "1", "kernel.shmmax": "65536"},
    "rlimits": ["nofile,1024,2048", "RLIMIT_CORE,unlimited,unlimited"],
    "annotations": {"org.example.label": "yes", "zz": "last"},
    "maskedPaths": ["/proc/kcore"],
    "readonlyPaths": ["/proc/sys"],
    "rootfsPropagation": "shared",
    "cgroupsPath": "/lkit/labelled",
    "runtime": {
        "mkdir": ["/var/lib/labelled", "/run/labelled"],
        "mounts": [{"type": "bind", "source": "/var/lib/labelled", "destination": "/var/lib/labelled",
                    "options": ["rbind", "rw"]}],
        "interfaces": [{"name": "eth1", "add": "veth", "peer": "veth-l", "createInRoot": True},
                       {"name": "wlan0"}],
        "bindNS": {"net": "/run/netns/labelled", "ipc": "/run/ipcns/labelled"},
        "cgroups": ["systemreserved", "podruntime"],
        "namespace": "labelled-ns",
    },
}


# A small label with no container names in it, usable in any spec.
CAPS_LABEL = {
    "capabilities": ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"],
    "binds": ["/var/run:/var/run"],
    "readonly": True,
}


def other_images() -> list[Img]:
    labelled = _mt(T0 + 3000, [
        E("bin/", "dir"),
        E("bin/labelled", data=noise("labelled", 128), mode=0o755),
        E("etc/", "dir"),
        E("etc/labelled.conf", data=b"x=1\n"),
    ])
    cmd = _mt(T0 + 3100, [
        E("bin/", "dir"),
        E("bin/app", data=noise("app", 96), mode=0o755),
        E("srv/", "dir"),
        E("srv/app/", "dir"),
        E("srv/app/données.txt", data="non-ASCII name é\n".encode()),
    ])
    caps = _mt(T0 + 3300, [
        E("bin/", "dir"),
        E("bin/caps", data=noise("caps", 64), mode=0o755),
    ])
    volume = _mt(T0 + 3200, [
        E("data/", "dir", mode=0o770, uid=33, gid=33),
        E("data/file.txt", data=b"volume data\n", uid=33, gid=33),
        E("data/sub/", "dir"),
        E("data/sub/link", "symlink", link="../file.txt"),
        E("etc/", "dir"),
        E("etc/hosts", data=b"volume hosts\n"),
    ])
    return [
        Img("lkitconf/labelled:1", [labelled], {
            "Cmd": ["/bin/labelled"],
            "Labels": {"org.mobyproject.config": json.dumps(MOBY_LABEL, sort_keys=True),
                       "org.opencontainers.image.title": "labelled"}}),
        Img("lkitconf/cmd:1", [cmd], {
            "Entrypoint": ["/bin/app", "--flag=<a&b>"],
            "Cmd": ["run", "ünïcödé", "x>y"],
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin", "GREETING=<héllo & wörld>", "HTML=<b>&amp;</b>",
                    "EMPTY=", "EMOJI=\u2603 \U0001F600"],
            "WorkingDir": "/srv/app",
            "User": "1000:1000",
            "Labels": {"org.example.note": "a <label> & more"}}),
        Img("lkitconf/caps:1", [caps], {
            "Cmd": ["/bin/caps"],
            "Labels": {"org.mobyproject.config": json.dumps(CAPS_LABEL)}}),
        Img("lkitconf/volume:1", [volume], {}),
        # A device node: LinuxKit unpacks it; lkit refuses it (nodes are made at boot, never by a layer).
        Img("lkitconf/devnode:1", [_mt(T0 + 3400, [E("dev/", "dir"), E("dev/null", "char", mode=0o666, major=1, minor=3),
                                                   E("bin/", "dir"), E("bin/x", data=b"x\n", mode=0o755)])],
            {"Cmd": ["/bin/x"]}),
    ]


def all_images() -> list[Img]:
    return kernel_images() + init_images() + base_images() + other_images()


def install(store: Store) -> dict[str, str]:
    """Write every conformance image into `store`; returns {ref: manifest digest}."""
    out: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lkitconf-") as td:
        for n, img in enumerate(all_images()):
            paths = []
            for i, layer in enumerate(img.layers):
                p = Path(td) / f"{n}-{i}.tar"
                p.write_bytes(tar_bytes(layer))
                paths.append(p)
            image = add_image(store, img.ref, paths, config=img.config, platform="linux/amd64")
            out[img.ref] = image.digest
    # An OCI index over the volume image: LinuxKit's `format: oci` volumes need an index.
    size = store.blob_path(out["lkitconf/volume:1"]).stat().st_size
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": out["lkitconf/volume:1"], "size": size,
         "platform": {"architecture": "amd64", "os": "linux"}}]}
    digest, size = store.put_blob(canonical_json(index))
    store.tag(INDEX_REF, Descriptor(OCI_INDEX, digest, size))
    out[INDEX_REF] = digest
    return out


def refs() -> list[str]:
    return [img.ref for img in all_images()] + [INDEX_REF]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.conformance.images", description=__doc__.split("\n")[0])
    ap.add_argument("outdir", type=Path)
    ap.add_argument("--no-export", action="store_true", help="only write OUTDIR/store")
    args = ap.parse_args(argv)
    store_dir = args.outdir / "store"
    store_dir.mkdir(parents=True, exist_ok=True)
    digests = install(Store(store_dir))
    if not args.no_export:
        subprocess.run([sys.executable, "-m", "lkit.cli", "cache", "--store", str(store_dir), "export",
                        *digests, "-o", str(args.outdir / "images.tar")], check=True, stdout=subprocess.DEVNULL)
    for ref, digest in digests.items():
        print(f"{ref}\t{digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

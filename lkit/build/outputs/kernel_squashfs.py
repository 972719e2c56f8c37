"""kernel+squashfs: NAME-kernel, NAME-cmdline, NAME-squashfs.img and NAME-squashfs-initrd.img.

Like LinuxKit's: the root filesystem (without boot/) as a squashfs image, made with mksquashfs from
the root tar (ownership and modes as the tar says, every time fixed, reproducible), plus the kernel
and its command line. Boot it with the squashfs as the first virtio disk (/dev/vda).

Difference from LinuxKit: LinuxKit's kernels have squashfs and virtio_blk built in and mount the
image as root directly (root=/dev/vda). Debian's kernel has both only as modules, so lkit adds a
small stage-1 initrd, NAME-squashfs-initrd.img (pass it as the initrd): static busybox plus the
squashfs/virtio modules copied from the root's own /lib/modules; its /init loads them, mounts the
squashfs read-only (root= on the command line, default /dev/vda), copies it into a tmpfs and
switch_roots into that (runc needs a real root, not the initramfs) and runs the root's init
(init= on the command line, else /init, else /sbin/init).

Stage 1's busybox must run on the image's architecture: the root's own static busybox when it is one
of that architecture, else Debian's busybox-static for it (the host's installed one for amd64; for
arm64 busybox-static:arm64 at the host's busybox-static version, lkit.build.outputs._archfiles).
"""

from __future__ import annotations

import shutil
import struct
import tarfile
from pathlib import Path

from lkit.core import formats
from lkit.build.outputs._cpio import CpioWriter
from lkit.build.outputs._deliver import deliver
from lkit.build.outputs._archfiles import package_file
from lkit.build.outputs._modules import load_order, modules_in_tar
from lkit.build.outputs._tools import run
from lkit.build.outputs.base import SOURCE_DATE_EPOCH, BootFiles, OutputFormat
from lkit.core import arch as arch_table
from lkit.core.arch import Arch

# What stage 1 needs to reach a squashfs on a virtio disk (dependencies are added from .modinfo).
STAGE1_MODULES = ["virtio_pci", "virtio_blk", "squashfs"]
HOST_BUSYBOX = "/bin/busybox"        # Debian busybox-static: used when the root has no static busybox

STAGE1_INIT = """#!/bin/busybox sh
# lkit stage 1 for kernel+squashfs: load modules, mount the squashfs root, copy to tmpfs, switch.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "lkit-stage1: $*"; sleep 1; poweroff -f; }
for m in $(cat /etc/stage1-modules); do
  insmod "/lib/stage1/$m.ko" || echo "lkit-stage1: insmod $m failed"
done
root=/dev/vda
init=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    root=*) root="${arg#root=}" ;;
    init=*) init="${arg#init=}" ;;
  esac
done
i=0
while [ ! -b "$root" ]; do
  i=$((i + 1))
  [ "$i" -gt 200 ] && fail "root device $root did not appear within 20 s"
  sleep 0.1
done
mkdir -p /lower /newroot
mount -t squashfs -o ro "$root" /lower || fail "cannot mount $root as squashfs"
mount -t tmpfs -o mode=0755 rootfs /newroot || fail "cannot mount tmpfs"
cp -a /lower/. /newroot/ || fail "cannot copy the root into tmpfs"
umount /lower
if [ -z "$init" ]; then
  for c in /init /sbin/init; do
    if [ -x "/newroot$c" ] || [ -L "/newroot$c" ]; then init="$c"; break; fi
  done
fi
[ -n "$init" ] || fail "no /init or /sbin/init in the root filesystem"
echo "lkit-stage1: root $root on tmpfs, starting $init"
umount /proc
umount /sys
umount -l /dev
exec switch_root /newroot "$init"
"""


def filenames(name: str) -> list[str]:
    return formats.FORMATS["kernel+squashfs"].filenames(name)


def _is_static_elf(data: bytes, arch: Arch | None = None) -> bool:
    """True for an ELF64 executable without a PT_INTERP program header (statically linked), of
    `arch`'s machine when given."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return False
    if arch is not None and struct.unpack_from("<H", data, 0x12)[0] != arch.elf_machine:
        return False
    phoff = struct.unpack_from("<Q", data, 0x20)[0]
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    return all(struct.unpack_from("<I", data, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def _root_busybox(tar: tarfile.TarFile, arch: Arch = arch_table.DEFAULT) -> bytes | None:
    for name in ("bin/busybox", "./bin/busybox", "usr/bin/busybox", "./usr/bin/busybox"):
        try:
            member = tar.getmember(name)
        except KeyError:
            continue
        f = tar.extractfile(member) if member.isfile() else None
        if f is not None:
            data = f.read()
            if _is_static_elf(data, arch):
                return data
    return None


def _strip_boot(src: tarfile.TarFile, out: Path) -> None:
    """The root tar without boot/ (kernel, cmdline, ucode live outside the squashfs, as in LinuxKit)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src.getmembers():
            name = member.name.removeprefix("./")
            if name == "boot" or name.startswith("boot/"):
                continue
            dst.addfile(member, src.extractfile(member) if member.isfile() else None)


def stage1_initrd(tar: tarfile.TarFile, arch: Arch = arch_table.DEFAULT) -> bytes:
    """gzip newc cpio: busybox, the modules stage 1 needs (in load order) and its /init."""
    busybox = _root_busybox(tar, arch) or package_file(HOST_BUSYBOX, "busybox-static", arch).read_bytes()
    modules = load_order(STAGE1_MODULES, modules_in_tar(tar))
    cpio = CpioWriter()
    for d in ("bin", "dev", "proc", "sys", "lib/stage1", "etc"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("bin/busybox", busybox, 0o755)
    cpio.file("init", STAGE1_INIT.encode(), 0o755)
    for m in modules:
        cpio.file(f"lib/stage1/{m.name}.ko", m.data)
    cpio.file("etc/stage1-modules", "".join(f"{m.name}\n" for m in modules).encode())
    return cpio.gzip()


def write(files: BootFiles, outdir: Path) -> list[Path]:
    work = files.workdir / "kernel-squashfs"
    work.mkdir(parents=True, exist_ok=True)
    kernel_name, cmdline_name, squashfs_name, initrd_name = filenames(files.name)
    rootfs_tar = work / "rootfs.tar"
    with tarfile.open(files.rootfs_tar(), "r:") as tar:
        _strip_boot(tar, rootfs_tar)
        (work / initrd_name).write_bytes(stage1_initrd(tar, files.arch))
    squashfs = work / squashfs_name
    squashfs.unlink(missing_ok=True)
    epoch = str(SOURCE_DATE_EPOCH)
    run(["mksquashfs", "-", squashfs, "-tar", "-noappend", "-comp", "gzip", "-all-time", epoch,
         "-mkfs-time", epoch, "-quiet", "-no-progress"], stdin_path=rootfs_tar,
        drop_env=["SOURCE_DATE_EPOCH"])
    shutil.copyfile(files.kernel, work / kernel_name)
    (work / cmdline_name).write_text(files.cmdline)
    return [deliver(work / n, outdir, n) for n in (kernel_name, cmdline_name, squashfs_name, initrd_name)]


FORMAT = OutputFormat(formats.FORMATS["kernel+squashfs"], write)

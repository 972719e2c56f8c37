"""Shared image directories and volumes, built as LinuxKit builds them, work in the booted guest."""

WRITER = "/containers/onboot/000-writer"


def pid_of(machine, marker: str) -> str:
    pids = machine.succeed(
        "for p in /proc/[0-9]*; do tr '\\0' ' ' <$p/cmdline 2>/dev/null | "
        f"grep -qx '/bin/busybox sleep {marker} ' && echo ${{p#/proc/}}; done; true").split()
    assert pids, f"no sleep {marker} running"
    return pids[0]


def test_the_image_is_unpacked_once(machine):
    machine.succeed(f"test -d {WRITER}/lower/bin")
    for service in ("reader", "idler"):
        machine.fail(f"test -e /containers/services/{service}/lower")
    # reader (read-only) binds the writer's copy: mountinfo's 4th field is the bound directory.
    info = [line.split() for line in machine.succeed("cat /proc/self/mountinfo").splitlines()]
    reader = [f for f in info if f[4] == "/containers/services/reader/rootfs"]
    assert reader and reader[0][3].endswith(f"{WRITER}/lower"), reader
    mounts = machine.succeed("cat /proc/mounts")
    idler = [line for line in mounts.splitlines() if line.split()[1] == "/containers/services/idler/rootfs"]
    assert idler and f"lowerdir={WRITER}/lower" in idler[0], idler


def test_services_run_from_the_shared_copy(machine):
    for marker in ("1000000", "1000001"):
        machine.succeed(f"test -x /proc/{pid_of(machine, marker)}/root/bin/busybox")


def test_volume_holds_its_image_and_what_onboot_wrote(machine):
    merged = "/containers/volumes/data/merged"
    machine.succeed(f"grep -q ' {merged} overlay ' /proc/mounts")
    machine.succeed(f"test -s {merged}/etc/ssl/certs/ca-certificates.crt")
    assert machine.succeed(f"cat {merged}/hello").strip() == "written-at-boot"


def test_service_sees_the_volume_through_its_bind(machine):
    pid = pid_of(machine, "1000000")
    assert machine.succeed(f"cat /proc/{pid}/root/data/hello").strip() == "written-at-boot"

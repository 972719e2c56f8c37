"""RedisOS answers the Redis protocol from the host, through QEMU's port forward."""

import socket
import time


def resp(*words: str) -> bytes:
    """A Redis command in RESP, the protocol's wire form."""
    out = f"*{len(words)}\r\n".encode()
    for w in words:
        data = w.encode()
        out += b"$%d\r\n%s\r\n" % (len(data), data)
    return out


def ask(conn: socket.socket, *words: str) -> bytes:
    conn.sendall(resp(*words))
    reply = b""
    while not reply.endswith(b"\r\n") or (reply.startswith(b"$") and reply.count(b"\r\n") < 2):
        chunk = conn.recv(4096)
        if not chunk:
            break
        reply += chunk
    return reply


def test_set_then_get_from_the_host(lkit_vm):
    port = lkit_vm.forward_port(6379)
    deadline = time.monotonic() + 60
    while True:
        try:
            conn = socket.create_connection(("127.0.0.1", port), timeout=5)
            conn.settimeout(10)
            if ask(conn, "PING") == b"+PONG\r\n":
                break
            conn.close()
        except OSError:
            pass
        assert time.monotonic() < deadline, "redis never answered PING"
        time.sleep(1)
    with conn:
        assert ask(conn, "SET", "lkit", "works") == b"+OK\r\n"
        assert ask(conn, "GET", "lkit") == b"$5\r\nworks\r\n"


def test_redis_runs_without_capabilities(host):
    # No capabilities in the spec or the image label: LinuxKit gives the container none.
    pids = host.check_output("pidof redis-server").split()
    assert pids
    status = host.file(f"/proc/{pids[0]}/status").content_string
    cap_eff = next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:"))
    assert int(cap_eff, 16) == 0

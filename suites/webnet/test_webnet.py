"""The web server and its client, together on the suite's private network (see webnet.test.yml).

Each test runs once per format of the suite, on the machines the built-in checks booted: `machines`
gives each VM by name, `hosts` each one's testinfra Host.
"""

import re

SERVER_URL = "http://10.0.3.1/"


def _tries(machine) -> list[str]:
    """The client's fetch log: one line per try (`webclient ok ...` / `webclient failed ...`)."""
    return machine.succeed("cat /var/log/webclient.log").splitlines()


def _wait_for_try(machine, outcome: str, after: int, timeout: float = 60) -> str:
    """The first try logged after line `after` with this outcome (ok | failed)."""
    machine.wait_until_succeeds(f"tail -n +{after + 1} /var/log/webclient.log | grep -q '^webclient {outcome} '",
                                timeout)
    return next(line for line in _tries(machine)[after:] if line.startswith(f"webclient {outcome} "))


def test_server_listens_on_its_private_address(hosts):
    server = hosts["server"]
    assert "10.0.3.1" in server.interface("eth1").addresses
    assert server.socket("tcp://0.0.0.0:80").is_listening


def test_client_fetches_the_page_over_the_private_network(machines):
    client = machines["client"]
    line = _wait_for_try(client, "ok", 0)
    assert line.startswith(f"webclient ok {SERVER_URL}")
    page = client.succeed(f"wget -q -O - {SERVER_URL}")
    assert "lkit-nginx-ok" in page
    # the client reached the server's address through eth1, and learned its MAC there
    assert re.search(r"\(10\.0\.3\.1\) at 52:54:00:4c:4b:01 .* on eth1", client.succeed("arp -n"))


def test_cut_link_makes_the_client_fail_and_restoring_it_makes_it_pass(machines):
    client = machines["client"]
    before = len(_tries(client))
    client.block()
    try:
        failed = _wait_for_try(client, "failed", before)
        assert SERVER_URL in failed
        assert client.run(f"wget -q -O - {SERVER_URL}", timeout=20).rc != 0
    finally:
        client.unblock()
    after = len(_tries(client))
    _wait_for_try(client, "ok", after)

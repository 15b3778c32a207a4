"""tests/netns.py, the namespaces that keep tests off the machine's LAN address, and the guard that keeps
tests and benchmarks using them."""

from __future__ import annotations

import ast
import ipaddress
import subprocess

import pytest

from .conftest import HOST_NETWORK
from .netns import SUBNET, SUITE_SUBNET, available, ipv4_addresses, veth_pair
from .support import ROOT

# What only makes sense inside a namespace of the test's own: the addresses aioice would gather, and (in a
# benchmark, which conftest.py does not put in one) a WebRTC peer, which gathers them.
REACHING_OUT = {"get_host_addresses", "get_adapters"}
PEERS = {"RTCPeerConnection", "Resident", "Subscriber"}


def namespaces() -> set[str]:
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    return {line.split()[0] for line in listed.splitlines() if line.strip()}


def test_the_suite_runs_where_the_lan_is_out_of_reach() -> None:
    """The session fixture (tests/conftest.py) put this worker in a namespace of its own: the only
    addresses are loopback and the suite's private one, so no test can use the machine's LAN address."""
    if HOST_NETWORK or available() is not None:
        pytest.skip("running on the host's network (PANEL_TEST_HOST_NETWORK=1, or no root)")
    addresses = ipv4_addresses()
    assert addresses - {"127.0.0.1"} and all(
        a == "127.0.0.1" or ipaddress.ip_address(a) in SUITE_SUBNET for a in addresses), addresses


def test_a_pair_has_its_own_addresses_and_leaves_nothing_behind() -> None:
    if (why := available()) is not None:
        pytest.skip(why)
    home = ipv4_addresses()
    with pytest.raises(RuntimeError, match="the body failed"), veth_pair("selftest") as pair:
        assert pair.panel.addresses() == {"127.0.0.1", pair.panel.address}
        assert pair.servers.addresses() == {"127.0.0.1", pair.servers.address}
        assert {pair.panel.address, pair.servers.address} <= {str(h) for h in SUBNET.hosts()}
        assert ipv4_addresses() == home  # the host saw no interface come or go
        sleeper = pair.servers.popen(["sleep", "60"], log=subprocess.DEVNULL)
        made = {pair.panel.name, pair.servers.name}
        assert made <= namespaces()
        with pair.panel.entered():
            assert ipv4_addresses() == {"127.0.0.1", pair.panel.address}
        assert ipv4_addresses() == home  # back where it was
        raise RuntimeError("the body failed")
    assert sleeper.poll() is not None, "a process started in the namespace outlived it"
    assert not made & namespaces()


def test_tests_and_benches_look_for_addresses_only_inside_a_namespace() -> None:
    """The regression guard for issue 9 item 7: a module that asks for the machine's interface addresses
    (what aioice gathers, what the old ICE tests bound their servers to) must run in tests/netns.py's
    namespaces, where those addresses are the pair's."""
    offenders, users = [], []
    for path in sorted([*(ROOT / "tests").glob("*.py"), *(ROOT / "bench").glob("*.py")]):
        watched = REACHING_OUT | (PEERS if path.parent.name == "bench" else set())
        text = path.read_text()
        if path.name == "netns.py" or not any(name in text for name in watched):
            continue  # parse only the candidates: the whole suite takes seconds
        tree = ast.parse(text)
        names = {n.attr if isinstance(n, ast.Attribute) else n.id for n in ast.walk(tree)
                 if isinstance(n, (ast.Attribute, ast.Name))}
        if not names & watched:
            continue
        users.append(path.name)
        if not any(isinstance(n, ast.ImportFrom) and (n.module or "").endswith("netns") for n in ast.walk(tree)):
            offenders.append(f"{path.relative_to(ROOT)}: {sorted(names & watched)}")
    assert not offenders, "these ask for the machine's addresses outside a namespace:\n" + "\n".join(offenders)
    assert {"test_media_ice.py", "bench_media.py", "bench_sfu.py"} <= set(users)  # it sees what it guards

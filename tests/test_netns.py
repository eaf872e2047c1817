"""Self-test of the network-namespace harness (tests/netns.py): cabling, multicast, link cuts,
packet loss, and that nothing is left behind or touches the root namespace."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest

from tests.netns import (
    HOST_IFACE,
    NAMESPACE_PREFIX,
    Host,
    list_namespaces,
    netns_hosts,
    require_netns,
)

pytestmark = pytest.mark.netns

TCP_SERVER = """
import socket, sys
family = socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET
server = socket.socket(family, socket.SOCK_STREAM)
server.bind((sys.argv[1], 7000))
server.listen()
print("listening", flush=True)
while True:
    connection, _ = server.accept()
    connection.sendall(b"hello from " + sys.argv[1].encode())
    connection.close()
"""

TCP_CLIENT = """
import socket, sys
with socket.create_connection((sys.argv[1], 7000), timeout=1) as connection:
    print(connection.recv(100).decode())
"""

MULTICAST_RECEIVER = """
import socket, struct, sys
receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
receiver.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
receiver.bind(("239.255.77.1", 7001))
membership = socket.inet_aton("239.255.77.1") + socket.inet_aton(sys.argv[1])
receiver.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, membership)
print("joined", flush=True)
received = 0
while True:
    data = receiver.recv(100)
    if data == b"end":
        break
    received += 1
print(received, flush=True)
"""

MULTICAST_SENDER = """
import socket, sys
sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
for number in range(int(sys.argv[2])):
    sender.sendto(str(number).encode(), ("239.255.77.1", 7001))
for _ in range(60):  # at 50% loss, all 60 copies are lost once in 10^18 runs
    sender.sendto(b"end", ("239.255.77.1", 7001))
"""


def python(code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", code, *args]


def serve_tcp(host: Host, address: str) -> None:
    server = host.popen(python(TCP_SERVER, address), stdout=subprocess.PIPE, text=True)
    assert server.stdout is not None
    assert server.stdout.readline().strip() == "listening"


def reaches(client: Host, address: str) -> bool:
    result = client.run(python(TCP_CLIENT, address), check=False)
    return result.returncode == 0 and result.stdout.strip() == f"hello from {address}"


def multicast_received(sender: Host, receiver: Host, count: int) -> int:
    listening = receiver.popen(
        python(MULTICAST_RECEIVER, receiver.ip), stdout=subprocess.PIPE, text=True
    )
    assert listening.stdout is not None
    assert listening.stdout.readline().strip() == "joined"
    sender.run(python(MULTICAST_SENDER, sender.ip, str(count)))
    output, _ = listening.communicate(timeout=10)
    return int(output)


def root_links() -> set[str]:
    out = subprocess.run(["ip", "-o", "link"], check=True, capture_output=True, text=True)
    return {line.split(":")[1].strip() for line in out.stdout.splitlines()}


def test_hosts_reach_each_other_over_ipv4_and_ipv6(
    netns_hosts: Callable[[int], list[Host]],
) -> None:
    host_a, host_b, host_c = netns_hosts(3)
    for address in (host_b.ip, host_b.ip6):
        serve_tcp(host_b, address)
        assert reaches(host_a, address)
        assert reaches(host_c, address)


def test_multicast_crosses_the_bridge(netns_hosts: Callable[[int], list[Host]]) -> None:
    host_a, host_b = netns_hosts(2)
    assert multicast_received(host_a, host_b, 20) == 20


@pytest.mark.parametrize("side", ["bridge", "host"])
def test_a_downed_link_cuts_the_host_off_until_it_is_up_again(
    netns_hosts: Callable[[int], list[Host]], side: str
) -> None:
    host_a, host_b = netns_hosts(2)
    serve_tcp(host_b, host_b.ip)
    host_b.link_down(side)
    assert not reaches(host_a, host_b.ip)
    host_b.link_up(side)
    assert reaches(host_a, host_b.ip)


def test_dropped_packets(netns_hosts: Callable[[int], list[Host]]) -> None:
    host_a, host_b = netns_hosts(2)
    serve_tcp(host_b, host_b.ip)
    host_b.drop_packets(100)
    assert not reaches(host_a, host_b.ip)
    host_b.clear_drops()
    assert reaches(host_a, host_b.ip)

    host_b.drop_packets(50)
    received = multicast_received(host_a, host_b, 400)
    print(f"\n{received} of 400 datagrams arrived at 50% loss")
    assert 100 < received < 300  # binomial(400, 0.5): mean 200, standard deviation 10


def test_names_prefixes_and_addresses() -> None:
    with netns_hosts(2) as hosts:
        for index, host in enumerate(hosts):
            assert host.namespace.startswith(f"{NAMESPACE_PREFIX}{os.getpid()}-")
            assert host.iface == HOST_IFACE
            assert len(host.switch_port) <= 15
            assert host.ip.endswith(f".{index + 1}")
            assert host.namespace in list_namespaces()
        assert len({host.ip.rsplit(".", 1)[0] for host in hosts}) == 1


def test_everything_is_removed_even_when_the_test_fails() -> None:
    require_netns()
    links_before = root_links()
    with pytest.raises(RuntimeError), netns_hosts(2) as hosts:
        namespaces = {host.namespace for host in hosts} | {hosts[0].switch_namespace}
        sleeper = hosts[0].popen(["sleep", "600"])
        assert root_links() == links_before
        raise RuntimeError("the test body failed")
    assert not namespaces & set(list_namespaces())
    assert sleeper.poll() is not None
    assert root_links() == links_before

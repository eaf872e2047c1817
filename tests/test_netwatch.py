"""rtnetlink messages in, "what came up" out (p2psync/netwatch.py), on hand-built datagrams
laid out as the kernel sends them."""

import socket
import struct

from p2psync import netwatch
from p2psync.netwatch import AddressMessage, LinkMessage, LinkWatch, parse

IFF_UP, IFF_RUNNING, IFF_LOOPBACK = 0x1, 0x40, 0x8


def attribute(kind: int, value: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(value), kind) + value
    return raw + b"\0" * (-len(raw) % 4)


def message(kind: int, body: bytes) -> bytes:
    return struct.pack("=LHHLL", 16 + len(body), kind, 0, 0, 0) + body


def link(index: int, name: str, flags: int, kind: int = netwatch.RTM_NEWLINK) -> bytes:
    info = struct.pack("=BxHiII", socket.AF_UNSPEC, 1, index, flags, 0xFFFFFFFF)
    return message(kind, info + attribute(netwatch.IFLA_IFNAME, name.encode() + b"\0"))


def address(index: int, ip: str, scope: int = 0, kind: int = netwatch.RTM_NEWADDR) -> bytes:
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    packed = socket.inet_pton(family, ip)
    head = struct.pack("=BBBBI", family, 24, 0, scope, index)
    return message(kind, head + attribute(netwatch.IFA_ADDRESS, packed))


def test_parse_reads_links_and_addresses_and_skips_the_rest() -> None:
    datagram = (
        link(2, "eth0", IFF_UP | IFF_RUNNING)
        + message(3, b"\0" * 4)  # NLMSG_DONE
        + address(2, "10.0.0.2")
        + address(1, "127.0.0.1", scope=254)
        + link(3, "wlan0", IFF_UP, kind=netwatch.RTM_DELLINK)
    )
    assert parse(datagram) == [
        LinkMessage(2, "eth0", running=True, loopback=False),
        AddressMessage(2, socket.inet_aton("10.0.0.2"), host_scope=False),
        AddressMessage(1, socket.inet_aton("127.0.0.1"), host_scope=True),
        LinkMessage(3, "wlan0", running=False, loopback=False, removed=True),
    ]


def test_parse_survives_truncated_and_garbage_datagrams() -> None:
    whole = link(2, "eth0", IFF_UP | IFF_RUNNING)
    for cut in range(len(whole)):
        parse(whole[:cut])
    assert parse(b"\xff" * 40) == []
    assert parse(struct.pack("=LHHLL", 3, 16, 0, 0, 0)) == []  # a length shorter than a header


def test_a_link_is_news_when_it_comes_up_not_while_it_stays_up() -> None:
    watch = LinkWatch()
    up, down = IFF_UP | IFF_RUNNING, IFF_UP  # carrier lost: still administratively up
    assert watch.feed(parse(link(2, "eth0", up))) == ["link eth0 is up"]  # first word of it
    assert watch.feed(parse(link(2, "eth0", up))) == []  # a repeat (statistics, mtu...)
    assert watch.feed(parse(link(2, "eth0", down))) == []
    assert watch.feed(parse(link(2, "eth0", down))) == []
    assert watch.feed(parse(link(2, "eth0", up))) == ["link eth0 is up"]
    assert watch.feed(parse(link(1, "lo", up | IFF_LOOPBACK))) == []


def test_an_address_is_news_once_until_it_goes_away() -> None:
    watch = LinkWatch()
    assert watch.feed(parse(address(2, "fd00::2"))) == ["new address on link 2"]
    assert watch.feed(parse(address(2, "fd00::2"))) == []  # a lifetime refresh (router advert)
    assert watch.feed(parse(address(1, "::1", scope=254))) == []
    watch.feed(parse(address(2, "fd00::2", kind=netwatch.RTM_DELADDR)))
    assert watch.feed(parse(address(2, "fd00::2"))) == ["new address on link 2"]


def test_a_removed_link_coming_back_is_news() -> None:
    watch = LinkWatch()
    watch.feed(parse(link(4, "usb0", IFF_UP | IFF_RUNNING)))
    watch.feed(parse(link(4, "usb0", 0, kind=netwatch.RTM_DELLINK)))
    assert watch.feed(parse(link(5, "usb0", IFF_UP | IFF_RUNNING))) == ["link usb0 is up"]


def test_the_socket_opens_here_or_says_why_not() -> None:
    sock = netwatch.open_socket()  # receives only; joining the groups sends nothing anywhere
    if sock is not None:
        sock.close()

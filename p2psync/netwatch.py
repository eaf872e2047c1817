"""Network changes of this host, as they happen: a link coming up, an address appearing.

Listens to the kernel's rtnetlink multicast groups (Linux; elsewhere, and where netlink is not
allowed, `changes` reports nothing and returns). Only receives from the kernel: it sends no
packet anywhere. What it reports is a hint to try peers again at once; it is never trusted for
anything else. The parsing and the "what is new" bookkeeping are pure (`LinkWatch`).
"""

import logging
import socket
import struct
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import trio

log = logging.getLogger(__name__)

NETLINK_ROUTE = 0
RTMGRP_LINK = 0x1
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100
RTM_NEWLINK, RTM_DELLINK, RTM_NEWADDR, RTM_DELADDR = 16, 17, 20, 21
NLMSG_HEADER = struct.Struct("=LHHLL")  # length, type, flags, sequence, port id
IFINFOMSG = struct.Struct("=BxHiII")  # family, device type, index, flags, change mask
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefix length, flags, scope, index
RTATTR = struct.Struct("=HH")  # length, type
IFLA_IFNAME = 3
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP, IFF_LOOPBACK, IFF_RUNNING = 0x1, 0x8, 0x40
RT_SCOPE_HOST = 254
RECEIVE_BYTES = 64 * 1024


@dataclass(frozen=True)
class LinkMessage:
    index: int
    name: str
    running: bool  # administratively up with a carrier
    loopback: bool
    removed: bool = False


@dataclass(frozen=True)
class AddressMessage:
    index: int
    address: bytes
    host_scope: bool  # loopback addresses: never a way to a peer
    removed: bool = False


def _align(length: int) -> int:
    return (length + 3) & ~3


def _attributes(data: bytes, offset: int, end: int) -> Iterator[tuple[int, bytes]]:
    while offset + RTATTR.size <= end:
        length, kind = RTATTR.unpack_from(data, offset)
        if length < RTATTR.size:
            return
        yield kind, data[offset + RTATTR.size : offset + length]
        offset += _align(length)


def parse(data: bytes) -> list[LinkMessage | AddressMessage]:
    """The link and address messages in one datagram from an rtnetlink socket (others skipped)."""
    found: list[LinkMessage | AddressMessage] = []
    offset = 0
    while offset + NLMSG_HEADER.size <= len(data):
        length, kind, _, _, _ = NLMSG_HEADER.unpack_from(data, offset)
        if length < NLMSG_HEADER.size or offset + length > len(data):
            break
        body, end = offset + NLMSG_HEADER.size, offset + length
        if kind in (RTM_NEWLINK, RTM_DELLINK) and body + IFINFOMSG.size <= end:
            _, _, index, flags, _ = IFINFOMSG.unpack_from(data, body)
            attributes = _attributes(data, body + IFINFOMSG.size, end)
            names = [value for kind_, value in attributes if kind_ == IFLA_IFNAME]
            found.append(
                LinkMessage(
                    index=index,
                    name=names[0].rstrip(b"\0").decode(errors="replace") if names else "",
                    running=flags & (IFF_UP | IFF_RUNNING) == IFF_UP | IFF_RUNNING,
                    loopback=bool(flags & IFF_LOOPBACK),
                    removed=kind == RTM_DELLINK,
                )
            )
        elif kind in (RTM_NEWADDR, RTM_DELADDR) and body + IFADDRMSG.size <= end:
            _, _, _, scope, index = IFADDRMSG.unpack_from(data, body)
            values = dict(_attributes(data, body + IFADDRMSG.size, end))
            address = values.get(IFA_LOCAL) or values.get(IFA_ADDRESS) or b""
            found.append(
                AddressMessage(index, address, scope >= RT_SCOPE_HOST, kind == RTM_DELADDR)
            )
        offset += _align(length)
    return found


@dataclass
class LinkWatch:
    """What changed for the better, from a stream of rtnetlink messages: a link that was not
    running and now is, an address not seen before. Links and addresses present before the
    first message about them count as new once (a harmless extra redial)."""

    running: dict[int, bool] = field(default_factory=dict)
    addresses: set[tuple[int, bytes]] = field(default_factory=set)

    def feed(self, messages: list[LinkMessage | AddressMessage]) -> list[str]:
        news: list[str] = []
        for message in messages:
            if isinstance(message, LinkMessage):
                was = self.running.pop(message.index, False)
                if message.removed or message.loopback:
                    continue
                self.running[message.index] = message.running
                if message.running and not was:
                    news.append(f"link {message.name or message.index} is up")
            elif message.removed:
                self.addresses.discard((message.index, message.address))
            elif not message.host_scope and (message.index, message.address) not in self.addresses:
                self.addresses.add((message.index, message.address))
                news.append(f"new address on link {message.index}")
        return news


def open_socket() -> socket.socket | None:
    try:
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
    except (AttributeError, OSError) as exc:  # not Linux, or not allowed here
        log.debug("not following network changes: %s", exc)
        return None
    try:
        sock.bind((0, RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        log.debug("not following network changes: %s", exc)
        return None
    return sock


async def changes() -> AsyncIterator[list[str]]:
    """Each batch of news (what came up) as it arrives; ends at once where netlink is missing."""
    sock = open_socket()
    if sock is None:
        return
    watch = LinkWatch()
    with sock:
        while True:
            await trio.lowlevel.wait_readable(sock)
            try:
                data = sock.recv(RECEIVE_BYTES)
            except BlockingIOError:
                continue
            except OSError as exc:  # ENOBUFS: messages were lost; something surely changed
                log.debug("network change messages lost: %s", exc)
                yield ["network changes were missed"]
                continue
            news = watch.feed(parse(data))
            if news:
                yield news

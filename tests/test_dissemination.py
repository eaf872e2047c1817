"""End-to-end: each entry crosses each link once, and a skipped relay is sent after all.

Real daemons on 127.0.0.1. Counts come from the `peers` call's `entries_received`. A sender sends
in its local apply order, over one TCP stream per link, so once a device holds a marker written
by X after X applied an entry, anything X would ever relay of that entry over that link has
arrived: the counts below are final when the markers are in, without waiting for time to pass.
"""

import contextlib
import select
import socket
import threading

import pytest

from p2psync.client import ControlError
from tests.daemons import DaemonProcess, introduce, running, wait_for, wait_for_value

pytestmark = pytest.mark.slow


def received(daemon: DaemonProcess) -> int:
    return sum(peer["entries_received"] for peer in daemon.call("peers"))


def peer_named(daemon: DaemonProcess, name: str) -> dict:
    """The daemon's entry for a peer; empty while membership is still settling."""
    return next((peer for peer in daemon.call("peers") if peer["name"] == name), {})


def everyone_has(daemons, collection: str, keys: dict[str, object]) -> None:
    for daemon in daemons:
        for key, value in keys.items():
            wait_for_value(daemon, collection, key, value)


def marker_round(daemons, collection: str) -> None:
    """Every daemon writes a marker; returns when every daemon holds every marker."""
    for daemon in daemons:
        daemon.call("put", collection=collection, key=daemon.name, value=1)
    everyone_has(daemons, collection, {d.name: 1 for d in daemons})


def test_in_a_full_mesh_each_device_receives_a_write_once(tmp_path):
    names = "abcd"
    daemons = [DaemonProcess(tmp_path, name) for name in names]
    for number, daemon in enumerate(daemons):  # one dialler per pair: no session is replaced
        daemon.peers = [other.address for other in daemons[:number]]
        daemon.write_config()
    with running(*daemons):
        introduce(*daemons)

        def meshed() -> bool:
            return all(
                peer["connected"] and peer["direct_actors"] == 3
                for daemon in daemons
                for peer in daemon.call("peers")
            )

        wait_for(meshed, "every peer to say it hears from 3 writers directly", *daemons)
        marker_round(daemons, "warm")  # what trust wrote has reached everyone
        before = [received(d) for d in daemons]
        a = daemons[0]
        a.call("put", collection="notes", key="once", value="from a")
        everyone_has(daemons[1:], "notes", {"once": "from a"})
        for daemon in daemons[1:]:  # after they applied a's write: flushes any relay of it
            daemon.call("put", collection="flush", key=daemon.name, value=1)
        everyone_has(daemons, "flush", {d.name: 1 for d in daemons[1:]})
        # a: the 3 flush markers; b, c, d: a's write and the 2 other markers; nothing twice
        assert [received(d) - b for d, b in zip(daemons, before, strict=True)] == [3, 3, 3, 3]


def test_a_line_still_relays_everything_and_each_entry_crosses_each_link_once(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    c = DaemonProcess(tmp_path, "c", peers=[b.address])
    d = DaemonProcess(tmp_path, "d", peers=[c.address])
    line = [a, b, c, d]
    with running(*line):
        introduce(*line)
        marker_round(line, "warm")
        before = [received(x) for x in line]
        a.call("put", collection="notes", key="west", value="a")
        d.call("put", collection="notes", key="east", value="d")
        everyone_has(line, "notes", {"west": "a", "east": "d"})
        a.call("put", collection="flush", key="a", value=1)
        d.call("put", collection="flush", key="d", value=1)
        everyone_has(line, "flush", {"a": 1, "d": 1})
        assert [received(x) - n for x, n in zip(line, before, strict=True)] == [2, 4, 4, 2]


class FreezableProxy:
    """A TCP forwarder on 127.0.0.1 whose link can be frozen: bytes stop in both directions
    while both connections stay open (a link that died without a FIN), and no new connection
    is accepted after that."""

    def __init__(self, target: str) -> None:
        host, port = target.rsplit(":", 1)
        self.target = (host, int(port))
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.frozen = threading.Event()
        self.sockets: list[socket.socket] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        pairs: dict[socket.socket, socket.socket] = {}
        while not self.frozen.is_set():
            readable, _, _ = select.select([self.listener, *pairs], [], [], 0.05)
            for sock in readable:
                if self.frozen.is_set():
                    break  # what is read from now on is lost with the link
                if sock is self.listener:
                    inner, _ = self.listener.accept()
                    try:
                        outer = socket.create_connection(self.target)
                    except OSError:  # a is not listening yet: b dials again
                        inner.close()
                        continue
                    pairs[inner], pairs[outer] = outer, inner
                    self.sockets += [inner, outer]
                    continue
                with contextlib.suppress(OSError):
                    data = sock.recv(65536)
                    if data:
                        pairs[sock].sendall(data)
                        continue
                other = pairs.pop(sock)
                pairs.pop(other, None)
                sock.close()
                other.close()
        self.listener.close()  # the dialler finds nobody here from now on

    def freeze(self) -> None:
        """Returns once nothing more is forwarded."""
        self.frozen.set()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def close(self) -> None:
        self.frozen.set()
        self.thread.join(5)
        for sock in self.sockets:
            sock.close()


def test_a_relay_skipped_for_a_direct_link_is_sent_when_that_link_goes(tmp_path):
    # a and b talk through a proxy that the test freezes; c talks to both directly
    a = DaemonProcess(tmp_path, "a", idle_timeout=5)
    proxy = FreezableProxy(a.address)
    b = DaemonProcess(tmp_path, "b", peers=[proxy.address], idle_timeout=5)
    c = DaemonProcess(tmp_path, "c", peers=[a.address, b.address])
    try:
        with running(a, b, c):
            introduce(a, b, c)
            wait_for(
                lambda: (
                    peer_named(c, "b").get("direct_actors") == 2
                    and peer_named(b, "a").get("connected")
                ),
                "b to hear from a directly, and to tell c so",
                a,
                b,
                c,
            )
            proxy.freeze()
            a.call("put", collection="notes", key="k", value="from a")
            wait_for_value(c, "notes", "k", "from a")
            c.call("put", collection="notes", key="marker", value="from c")
            wait_for_value(b, "notes", "marker", "from c")
            # c applied a's write before its marker: had it relayed it, b would hold it now
            with pytest.raises(ControlError, match="not_found"):
                b.call("get", collection="notes", key="k")
            from_c = peer_named(b, "c")["entries_received"]
            # b gives up on the silent a; c hears that b lost its direct link and rewinds
            wait_for_value(b, "notes", "k", "from a", timeout=30)
            assert not peer_named(b, "a")["connected"]
            assert peer_named(b, "c")["entries_received"] > from_c
    finally:
        proxy.close()


def test_status_counts_only_what_a_peer_gets_from_us_and_no_have_follows_a_direct_write(tmp_path):
    """In a full mesh each device hears a's write from a itself: c is never told b's seq of a
    (no `have` for a claimed writer), and c's `peers` row for b does not count a's entries as
    lacking on b, since a, not c, delivers them."""
    a, b, c = (DaemonProcess(tmp_path, name) for name in "abc")
    b.peers, c.peers = [a.address], [a.address, b.address]
    b.write_config()
    c.write_config()
    with running(a, b, c):
        introduce(a, b, c)
        wait_for(
            lambda: peer_named(c, "b").get("direct_actors") == 2
            and peer_named(b, "c").get("direct_actors") == 2,
            "b and c to say they hear from a and each other directly",
            a, b, c,
        )
        marker_round([a, b, c], "warm")
        a.call("put", collection="notes", key="direct", value="from a")
        everyone_has([b, c], "notes", {"direct": "from a"})
        row = peer_named(c, "b")
        assert row["they_lack"] == 0 and row["we_lack"] == 0, row
        bytes_before = peer_named(c, "b")["bytes_sent"]
        for number in range(20):
            a.call("put", collection="notes", key=f"more-{number}", value=number)
        everyone_has([b, c], "notes", {"more-19": 19})
        # a marker from b, sent after b applied a's writes: c has all b would say by then
        b.call("put", collection="flush", key="b", value=1)
        everyone_has([c], "flush", {"b": 1})
        assert peer_named(c, "b")["they_lack"] == 0
        # c sent b nothing about a's 20 writes (pings aside: well under one `have` per write)
        assert peer_named(c, "b")["bytes_sent"] - bytes_before < 20 * 40

"""A member under an attacker's control against real daemons (issue 8).

Daemons run as subprocesses on 127.0.0.1 (tests/daemons.py); the attacker is `HostileMember`
(tests/hostile_peer.py): a device the daemons trust, speaking the protocol over real TLS with the
package's own session and entry code and its own signing key. Each test checks what the issue
says a member must not be able to do: get an honest device disconnected, slip in writes under
another device's name, stop the household from writing or syncing, undo its revocation, make
writes stick after it, or fill a daemon's memory. The replica-level versions of the same rules
are in tests/test_membership.py and tests/test_intake.py.
"""

import itertools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from p2psync import entry, hlc, identity, membership
from p2psync.client import ControlError
from p2psync.wire import encode_frame
from tests.daemons import (
    DaemonProcess,
    introduce,
    log_since,
    log_size,
    running,
    wait_for,
    wait_for_value,
)
from tests.hostile_peer import HostileMember, chain, heads_of, raw_frame

pytestmark = pytest.mark.slow


def peers(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {peer["device"]: peer for peer in daemon.call("peers")}


def connected(daemon: DaemonProcess, device_id: str) -> bool:
    return bool(peers(daemon).get(device_id, {}).get("connected"))


def value_of(daemon: DaemonProcess, collection: str, key: str) -> Any:
    try:
        return daemon.call("get", collection=collection, key=key)["value"]
    except ControlError as exc:
        if exc.code == "not_found":
            return None
        raise


def note(text: str) -> entry.Op:
    return entry.put("notes", text, msgpack.packb(text))


@contextmanager
def household(tmp_path: Path, *names: str) -> Iterator[tuple[DaemonProcess, ...]]:
    """Daemons in a line (each dials the one before it), all trusting each other, connected."""
    daemons: list[DaemonProcess] = []
    for name in names:
        dials = [daemons[-1].address] if daemons else []
        daemons.append(DaemonProcess(tmp_path, name, peers=dials))
    with running(*daemons):
        introduce(*daemons)
        ids = [d.device_id for d in daemons]
        for before, after in itertools.pairwise(daemons):
            wait_for(
                lambda b=before, a=after: connected(a, b.device_id) and connected(b, a.device_id),
                f"{after.name} connected to {before.name}",
                *daemons,
            )
        assert len(set(ids)) == len(daemons)
        yield tuple(daemons)


def blamed(daemon: DaemonProcess, device_id: str, mark: int) -> list[str]:
    """Lines of the daemon's log since `mark` that close or blame `device_id`'s session."""
    said = (
        f"peer {device_id} disconnected",
        f"peer {device_id} broke",
        f"disconnecting {device_id}",
    )
    return [line for line in log_since(daemon, mark).splitlines() if any(s in line for s in said)]


def b_wrote_and_mallory_is_in(
    tmp_path: Path, a: DaemonProcess, b: DaemonProcess
) -> tuple[HostileMember, str, int]:
    """B's first write has reached A, and Mallory is a member of A's household: Mallory, the
    actor B writes as, and where A's log stood then."""
    mallory = HostileMember(tmp_path)
    mallory.admitted_by(a)
    b.call("put", collection="notes", key="first", value="from b")
    wait_for_value(a, "notes", "first", "from b")
    return mallory, b.call("status")["actor"], log_size(a)


def test_an_entry_under_another_devices_name_gets_the_forger_dropped_not_the_device(tmp_path):
    with household(tmp_path, "a", "b") as (a, b):
        mallory, b_actor, mark = b_wrote_and_mallory_is_in(tmp_path, a, b)
        with mallory.connect(a) as attack:
            attack.hello()
            head = heads_of(attack.fetch_log())[b_actor]
            # B's next entry, signed with Mallory's own key: a member can build it, but it is
            # not what B's key signed.
            [forged] = chain(b_actor, [[note("forged")]], head)
            attack.send_entries([(forged.raw, mallory.sign(forged))])
            reason = attack.wait_closed()
        assert reason is not None and "not its origin's" in reason, attack.events
        logged = log_since(a, mark)
        assert f"peer {mallory.device_id} broke the protocol" in logged
        assert "not its origin's" in logged
        b.call("put", collection="notes", key="second", value="from b")  # B's seq that was forged
        wait_for_value(a, "notes", "second", "from b")
        assert value_of(a, "notes", "forged") is None
        assert blamed(a, b.device_id, mark) == [] and connected(a, b.device_id)


def test_unsigned_forgeries_of_the_next_entry_never_block_the_honest_relay(tmp_path):
    # A - C - B in a line: B's real entries reach A only through C, the honest relay.
    with household(tmp_path, "a", "c", "b") as (a, c, b):
        mallory, b_actor, mark = b_wrote_and_mallory_is_in(tmp_path, a, b)
        with mallory.connect(a) as attack:
            attack.hello()
            head = heads_of(attack.fetch_log())[b_actor]
            # Unsigned copies of B's next three entries: they extend B's chain as A holds it,
            # and A cannot tell them from the real ones until a signature arrives.
            forged = chain(b_actor, [[note(f"forged {n}")] for n in range(3)], head)
            attack.send_entries([(f.raw, None) for f in forged])
            assert attack.roundtrip(), "unsigned entries wait: no reason to hang up yet"
            b.call("put", collection="notes", key="genuine", value="from b")
            attack.wait_closed()  # raises unless A hangs up on the forger
        wait_for_value(a, "notes", "genuine", "from b")
        logged = log_since(a, mark)
        forged = f"peer {mallory.device_id} broke the protocol: it sent a forged copy of {b_actor}"
        assert forged in logged
        assert all(value_of(a, "notes", f"forged {n}") is None for n in range(3))
        for honest in (b, c):
            assert blamed(a, honest.device_id, mark) == [], "only the forger is dropped"
        assert connected(a, c.device_id) and connected(c, b.device_id)
        b.call("put", collection="notes", key="later", value="from b")
        wait_for_value(a, "notes", "later", "from b")


EPOCHS = 320


def test_huge_and_many_actors_do_not_stop_the_household_from_writing_or_syncing(tmp_path):
    with household(tmp_path, "a", "b") as (a, b):
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a)
        marks = {d.name: log_size(d) for d in (a, b)}
        with mallory.connect(a) as attack:
            attack.hello()
            # 0.1.0 accepted and relayed this, and every later local write on every device
            # failed: the actor went into every entry's context.
            huge_actor = f"{mallory.device_id}/{'f' * 4_000_000}"
            [huge] = chain(huge_actor, [[note("huge")]])
            attack.send_entries([(huge.raw, mallory.sign(huge))])
            reason = attack.wait_closed()
        assert reason is not None and "actor must be" in reason, reason
        with mallory.connect(a) as attack:
            attack.hello()
            # Many actors the allowed way: every epoch's first entry retires the one before,
            # so the device never has more than one open epoch, and each is a new vector slot.
            made, retires = [], []
            for n in range(EPOCHS):
                [first] = chain(mallory.new_actor(), [[note(f"m{n}")]], retires=retires)
                made.append((first.raw, mallory.sign(first)))
                retires = [(first.actor, 1, first.hash)]
            for start in range(0, EPOCHS, 100):
                assert attack.send_entries(made[start : start + 100])
            assert attack.roundtrip(), attack.events
            attack.finish()
        assert value_of(a, "notes", f"m{EPOCHS - 1}") == f"m{EPOCHS - 1}"
        wait_for_value(b, "notes", f"m{EPOCHS - 1}", f"m{EPOCHS - 1}")  # relayed by A
        records = a.call("status")["records"]
        assert records >= EPOCHS
        a.call("put", collection="notes", key="from a", value="still writing")
        wait_for_value(b, "notes", "from a", "still writing")
        b.call("put", collection="notes", key="from b", value="still writing")
        wait_for_value(a, "notes", "from b", "still writing")
        assert blamed(a, b.device_id, marks["a"]) == [] == blamed(b, a.device_id, marks["b"])
        # B starts again: a new session, a new epoch, hellos and vectors with 320 more actors.
        b.stop()
        b.start()
        b.call("put", collection="notes", key="after restart", value="from b")
        wait_for_value(a, "notes", "after restart", "from b")
        assert a.call("status")["records"] == b.call("status")["records"] == records + 3
        for daemon in (a, b):
            logged = log_since(daemon, marks[daemon.name])
            assert " over the " not in logged and "bytes; the limit is" not in logged
            assert "Traceback" not in logged


def far_future_hlc() -> int:
    """A year ahead: a record stamped so would win every last-writer-wins comparison."""
    return hlc.from_millis(int(time.time() * 1000) + 365 * 24 * 3600 * 1000)


def devices_record(daemon: DaemonProcess, device_id: str) -> Any:
    return daemon.call("get", collection=membership.DEVICES, key=device_id, all=True)


def test_a_pre_signed_un_revocation_and_writes_relayed_after_the_revocation_do_not_stick(
    tmp_path,
):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b", peers=[a.address])
    with running(a, b):
        introduce(a, b)
        a_id, a_actor = a.device_id, a.call("status")["actor"]
        wait_for(lambda: connected(b, a_id), "b connected to a", a, b)
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a, b)
        observer = HostileMember(tmp_path, "observer")  # reads A's log, as any member may
        observer.admitted_by(a)
        shared = entry.put("notes", "shared", msgpack.packb("before the revocation"))
        [before] = chain(mallory.new_actor(), [[shared]])
        with mallory.connect(b) as member:
            member.hello()
            member.send_entries([(before.raw, mallory.sign(before))])
            assert member.roundtrip()
            member.finish()
        wait_for_value(a, "notes", "shared", "before the revocation")  # relayed by B

        # While still a member, Mallory signs a record of itself as not revoked, whose context
        # claims A's next write (which is going to be the revocation), stamped to win any
        # last-writer-wins comparison. It holds on to it for later.
        with observer.connect(a) as watching:
            watching.hello()
            a_next = heads_of(watching.fetch_log())[a_actor][0] + 1
            watching.finish()
        still_here = membership.device_value(mallory.identity.cert_pem, "still here", a_id)
        [unrevoke] = chain(
            mallory.new_actor(),
            [[entry.put(membership.DEVICES, mallory.device_id, still_here)]],
            context={a_actor: a_next},
            hlc=far_future_hlc(),
        )

        # A revokes Mallory while B is away; B comes back without a path to A.
        b.stop()
        b.peers = []
        b.write_config()
        a.call("revoke", device=mallory.device_id)
        with observer.connect(a) as watching:
            watching.hello()
            [revocation] = [
                e for e in watching.fetch_log() if (e.actor, e.seq) == (a_actor, a_next)
            ]
            watching.finish()
        assert [(op.collection, op.key) for op in revocation.ops] == [
            (membership.DEVICES, mallory.device_id)
        ], "the un-revocation's context names exactly the revocation"
        b_mark = log_size(b)
        b.start()

        # Mallory hands B the pre-signed record and new writes on the epoch A cut; B has not
        # heard of the revocation, so it applies the writes (the record waits for A's entry).
        after = chain(
            before.actor,
            [
                [entry.put("notes", "shared", msgpack.packb("after the revocation"))],
                [note("own")],
            ],
            (1, before.hash),
        )
        with mallory.connect(b) as member:
            member.hello()
            first, last = after
            items = [(unrevoke.raw, mallory.sign(unrevoke)), (first.raw, None)]
            items.append((last.raw, mallory.sign(last)))  # one signature vouches for both
            member.send_entries(items)
            assert member.roundtrip()
            assert value_of(b, "notes", "own") == "own", "B relays a write made after the cut"
            b.call("put", collection="notes", key="shared", value="b saw mallory's write")

            # A and B meet. B learns of the revocation from A's log and drops Mallory.
            b.peers = [a.address]
            b.write_config()
            b.call("reload")
            member.wait_closed(timeout=20)

        def settled() -> bool:
            return all(
                peers(d)[mallory.device_id]["revoked"]
                and value_of(d, "notes", "own") is None
                and value_of(d, "notes", "shared") == "b saw mallory's write"
                for d in (a, b)
            )

        wait_for(settled, "both to drop mallory's writes after the revocation", a, b)
        for daemon in (a, b):
            view = daemon.call("get", collection="notes", key="shared", all=True)
            assert not view["conflict"], view
        assert devices_record(a, mallory.device_id) == devices_record(b, mallory.device_id)
        assert a.call("status")["records"] == b.call("status")["records"]
        assert a.call("scan", collection="notes") == b.call("scan", collection="notes")
        # B did consider the held record once the revocation arrived, and refused it.
        assert "refused 1 entries that no member may accept" in log_since(b, b_mark)


LARGE_ENTRIES = 300
LARGE_VALUE = 3_900_000  # each entry just under the 4 MiB entry limit, as in the issue
MiB = 1024 * 1024


def memory_kib(daemon: DaemonProcess, field: str) -> int:
    """VmRSS (resident now) or VmHWM (the most it was resident) of the daemon, in KiB."""
    assert daemon.process is not None
    with open(f"/proc/{daemon.process.pid}/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{daemon.process.pid}/status")


@dataclass
class Flood:
    a: DaemonProcess
    b: DaemonProcess
    mallory: HostileMember
    sent: int
    sessions: int
    drops: int
    before_kib: int  # the daemon's RSS before the flood
    after_kib: int  # ... once Mallory left and an honest write went through
    peak_kib: int  # the most it ever held


@pytest.fixture(scope="module")
def flood(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flood]:
    """300 large unsigned entries sent to A by a member, once for the tests below."""
    tmp_path = tmp_path_factory.mktemp("flood")
    with household(tmp_path, "a", "b") as (a, b):
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a)
        with mallory.connect(a) as warm_up:  # the first session's imports and buffers
            warm_up.hello()
            assert warm_up.roundtrip()
            warm_up.finish()
        before = memory_kib(a, "VmRSS")
        mark = log_size(a)
        actor, head = mallory.new_actor(), (0, entry.GENESIS_HASH)
        blob = b"\x00" * LARGE_VALUE
        sent, sessions, attack = 0, 0, None
        started = time.monotonic()
        # Entries that never reach a signature (1.2 GB in all): each session gets as far as its
        # allowance lets it, and Mallory comes back for more until all of them went out.
        while sent < LARGE_ENTRIES:
            if attack is None or attack.closed:
                if attack is not None:
                    attack.finish()
                wait_for(lambda: not connected(a, mallory.device_id), "a to drop mallory", a)
                attack = mallory.connect(a)
                attack.hello()
                sessions += 1
            [large] = chain(actor, [[entry.put("blobs", str(sent), blob)]], head)
            if attack.send_entries([(large.raw, None)]):
                sent, head = sent + 1, (large.seq, large.hash)
        assert attack is not None
        attack.finish()
        flooded = time.monotonic() - started
        wait_for(lambda: not connected(a, mallory.device_id), "a to drop mallory", a)
        drops = log_since(a, mark).count(
            f"peer {mallory.device_id} broke the protocol: sent more than 33,554,432 bytes"
        )
        position = a.call("status")["position"]
        b.call("put", collection="notes", key="after the flood", value="from b")
        wait_for_value(a, "notes", "after the flood", "from b", since=position)
        after, peak = memory_kib(a, "VmRSS"), memory_kib(a, "VmHWM")
        print(
            f"\n{sent} entries of {LARGE_VALUE / MiB:.1f} MiB in {sessions} sessions, {drops} "
            f"dropped at the allowance, in {flooded:.1f} s; daemon RSS {before / 1024:.0f} MiB "
            f"before, {after / 1024:.0f} MiB after, peak {peak / 1024:.0f} MiB"
        )
        yield Flood(a, b, mallory, sent, sessions, drops, before, after, peak)


def test_large_unsigned_entries_get_the_member_dropped_at_its_allowance(flood):
    a = flood.a
    # At most 8 entries fit the 32 MiB allowance; socket buffers hold a few more per session.
    assert flood.sent == LARGE_ENTRIES
    assert flood.drops >= LARGE_ENTRIES // 16 and flood.sessions >= flood.drops
    assert a.call("status")["records"] == 1, "nothing of the flood was stored"
    started = time.monotonic()
    assert a.call("status")["peers_connected"] == 1
    assert time.monotonic() - started < 1.0
    assert blamed(a, flood.b.device_id, 0) == []
    flood.b.call("put", collection="notes", key="still", value="syncing")
    wait_for_value(a, "notes", "still", "syncing")


def test_the_memory_of_large_unsigned_entries_is_bounded_and_freed_when_the_member_leaves(flood):
    grown, peak = flood.after_kib - flood.before_kib, flood.peak_kib - flood.before_kib
    assert grown * 1024 < 200 * MiB, "what waited is freed when the peer leaves"
    assert peak * 1024 < 400 * MiB, "the 0.1.0 daemon held 2.3 GB"


# Frames a member may send that break a protocol rule; each must end that member's session.
BAD_FIELDS = [
    {"t": "hello", "v": "2", "id": "me", "s": {}},
    {"t": "vector", "s": 7, "vv": {}},
    {"t": "vector", "s": "default", "vv": {"someone": -1}},
    {"t": "entries", "s": "default", "i": "not a list"},
    {"t": "entries", "s": "default", "i": [[1, None]]},
    {"t": "entries", "s": "default", "i": [[msgpack.packb({"s": "default"}), None]]},
    {"t": "caught_up", "s": "default", "vv": [1, 2]},
    {"t": "bye", "r": 5},
    {"t": 5},
]
FATAL = ("bye", "junk", "truncated", "oversized", "bad_field", "bad_signature", "bad_chain")
valid_frames = st.one_of(
    st.sampled_from(["hello", "vector", "ping", "future", "fork"]).map(lambda k: (k, 0)),
    st.tuples(st.sampled_from(["signed", "signed", "unsigned"]), st.integers(1, 3)),
)
frames = st.one_of(
    valid_frames,
    st.sampled_from(["bye", "oversized", "bad_signature", "bad_chain"]).map(lambda k: (k, 0)),
    st.tuples(st.just("junk"), st.binary(min_size=1, max_size=40)),
    st.tuples(st.just("truncated"), st.integers(1, 100)),
    st.tuples(st.just("bad_field"), st.integers(0, len(BAD_FIELDS) - 1)),
)
# Mostly a hello first, then valid frames, then anything: a session that dies at its first
# frame says little about what the daemon does with the frames a member may send.
sessions = st.tuples(
    st.sampled_from([True, True, True, False]),
    st.lists(valid_frames, max_size=6),
    st.lists(frames, max_size=3),
).map(lambda s: [("hello", 0)] * s[0] + s[1] + s[2])


class Member:
    """Mallory's side of the property: plays frames and predicts what the daemon applied."""

    def __init__(self, mallory: HostileMember, daemon: DaemonProcess) -> None:
        self.mallory, self.daemon = mallory, daemon
        self.actor = mallory.new_actor()
        self.stranger = identity.DeviceIdentity.generate()  # signs what Mallory's key did not
        self.head = (0, entry.GENESIS_HASH)  # of Mallory's chain, as the daemon holds it
        self.written = 0
        self.set_aside: list[str] = []  # epochs Mallory forked: no device holds any of them

    def entries(self, count: int, after: tuple[int, bytes]) -> list[entry.LogEntry]:
        self.written += count
        made = [[note(f"h{self.written - count + n}")] for n in range(count)]
        return chain(self.actor, made, after)

    def play(self, actions: list[tuple[str, Any]]) -> None:
        """Send `actions` on a new session; afterwards `head` is what the daemon must hold."""
        with self.mallory.connect(self.daemon) as conn:
            hello = conn.hello_bytes()
            greeted, alive, tip, set_aside = False, True, self.head, False
            for kind, arg in actions:
                # before the daemon's hello, anything but a hello breaks the protocol
                alive = kind not in FATAL and (greeted or kind == "hello")
                if kind == "hello":
                    alive = not greeted  # a second hello breaks it too
                    greeted, data = True, hello
                elif kind in ("vector", "ping", "future", "bye"):
                    message = {
                        "vector": {"t": "vector", "s": "default", "vv": {}},
                        "ping": {"t": "ping"},
                        "future": {"t": "from-a-newer-version", "x": 1},
                        "bye": {"t": "bye", "r": "leaving"},
                    }[kind]
                    data = encode_frame(message)
                elif kind in ("signed", "unsigned"):
                    made = self.entries(arg, tip)
                    items = [(e.raw, None) for e in made]
                    if kind == "signed":
                        items[-1] = (made[-1].raw, self.mallory.sign(made[-1]))
                    data = encode_frame({"t": "entries", "s": "default", "i": items})
                    if alive and not set_aside:
                        tip = (made[-1].seq, made[-1].hash)
                        if kind == "signed":
                            self.head = tip  # it releases the unsigned ones before it too
                elif kind == "fork":
                    # a validly signed entry of Mallory's that does not follow its chain: a
                    # fork, after which that epoch is set aside on every device (its later
                    # entries are refused, quietly); after unsigned entries of this session,
                    # a broken chain
                    [made] = chain(self.actor, [[note("fork")]], (tip[0], bytes(32)))
                    data = encode_frame(
                        {"t": "entries", "s": "default", "i": [(made.raw, self.mallory.sign(made))]}
                    )
                    # (a first entry that claims a predecessor is malformed, not a fork)
                    alive = alive and tip == self.head and tip[0] > 0
                    set_aside = set_aside or (alive and greeted)
                elif kind == "bad_signature":
                    [made] = self.entries(1, tip)
                    signature = self.stranger.sign(
                        entry.head_message(made.share, made.actor, made.seq, made.hash)
                    )
                    data = encode_frame(
                        {"t": "entries", "s": "default", "i": [(made.raw, signature)]}
                    )
                elif kind == "bad_chain":
                    first, second = self.entries(2, tip)
                    [second] = chain(self.actor, [list(second.ops)], (first.seq, bytes(32)))
                    items = [(first.raw, None), (second.raw, self.mallory.sign(second))]
                    data = encode_frame({"t": "entries", "s": "default", "i": items})
                elif kind == "junk":
                    data = arg
                elif kind == "truncated":
                    data = raw_frame(msgpack.packb({"t": "ping", "pad": b"x" * 200})[:arg], 220)
                elif kind == "oversized":
                    data = raw_frame(b"\x80" * 64, 2**31)
                else:
                    data = raw_frame(msgpack.packb(BAD_FIELDS[arg]))
                conn.send(data)
                if not alive:
                    break  # nothing after it is read (or it is swallowed by a cut frame)
            if alive and greeted:
                assert conn.roundtrip(), f"the daemon hung up on valid frames: {conn.events}"
            conn.finish()
        if set_aside:  # the daemon holds none of that epoch now; go on as a new one
            self.set_aside.append(self.actor)
            self.actor, self.head = self.mallory.new_actor(), (0, entry.GENESIS_HASH)

    def daemon_vector(self, daemon: DaemonProcess) -> dict[str, int]:
        with self.mallory.connect(daemon) as conn:
            conn.hello()
            vector = conn.vector()
            conn.finish()
        return vector


def test_random_valid_and_invalid_frames_from_a_member_leave_the_daemon_serving(tmp_path):
    with household(tmp_path, "a", "b") as (a, b):
        mallory = HostileMember(tmp_path)
        mallory.admitted_by(a)
        member = Member(mallory, a)
        member.play([("hello", 0), ("signed", 1)])  # a chain to fork from
        assert member.head[0] == 1
        examples = []

        @settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow])
        @given(sessions)
        def property(actions: list[tuple[str, Any]]) -> None:
            examples.append(actions)
            wait_for(lambda: not connected(a, mallory.device_id), "a to drop mallory", a)
            member.play(actions)
            wait_for(lambda: not connected(a, mallory.device_id), "a to drop mallory", a)
            started = time.monotonic()
            a.call("status")
            assert time.monotonic() - started < 1.0, "status stays fast"
            held = member.daemon_vector(a).get(member.actor, 0)
            assert held == member.head[0], f"a holds #{held} of mallory, expected {member.head}"
            position = a.call("status")["position"]
            b.call("put", collection="honest", key=str(len(examples)), value=len(examples))
            wait_for_value(a, "honest", str(len(examples)), len(examples), since=position)

        property()
        assert len(examples) >= 10
        # B got Mallory's accepted entries through A and nothing else: both hold the same.
        wait_for(
            lambda: member.daemon_vector(a) == member.daemon_vector(b), "a and b to agree", a, b
        )
        assert a.call("status")["records"] == b.call("status")["records"]
        assert blamed(a, b.device_id, 0) == [] == blamed(b, a.device_id, 0)
        for daemon in (a, b):
            held = member.daemon_vector(daemon)
            assert all(actor not in held for actor in member.set_aside), "forked epochs set aside"

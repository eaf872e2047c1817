"""End-to-end: a household of real daemons on one LAN, found by mDNS and paired by code.

Each daemon runs inside its own network namespace (tests/netns.py), listens on its host's address,
announces itself only on that host's eth0, and is configured with no peer addresses at all: every
connection here starts from discovery or from pairing. The figures printed (discovery and
catch-up times) are measurements for the issue notes, never asserted beyond generous bounds.
"""

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psync import keystore
from p2psync.client import ControlError
from p2psync.instance_names import instance_label
from tests.daemons import (
    DaemonProcess,
    log_since,
    log_size,
    running,
    wait_for,
    wait_for_value,
)
from tests.netns import Host
from tests.test_discovery import (
    _read_lines,
    _unescape_avahi,
    assert_avahi_resolved,
    avahi_in,
    spawned,
)
from tests.test_pairing_service import PairStream, wrong_words

pytestmark = [pytest.mark.netns, pytest.mark.slow]

# mDNS keeps a device's PTR record 75 minutes: gone within seconds means the goodbye arrived.
GOODBYE_SECONDS = 5.0
DISCOVERY_SECONDS = 10.0
CUT_TABLE = "p2ps_cut"
LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


def lan_daemon(tmp_path: Path, host: Host, name: str, **options: Any) -> DaemonProcess:
    return DaemonProcess(
        tmp_path,
        name,
        netns=host.namespace,
        host=host.ip,
        discovery=True,
        interfaces=[host.iface],
        **options,
    )


def nearby(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {found["device"]: found for found in daemon.call("nearby")}


def peers(daemon: DaemonProcess) -> dict[str, dict[str, Any]]:
    return {peer["device"]: peer for peer in daemon.call("peers")}


def connected_to(daemon: DaemonProcess, *device_ids: str) -> bool:
    known = peers(daemon)
    return all(known.get(device_id, {}).get("connected") for device_id in device_ids)


def sees(daemon: DaemonProcess, *device_ids: str) -> bool:
    return set(device_ids) <= nearby(daemon).keys()


def misses(daemon: DaemonProcess, device_id: str) -> bool:
    return device_id not in nearby(daemon)


def logged(daemon: DaemonProcess, text: str, offset: int) -> bool:
    return text in log_since(daemon, offset)


def pair_by_code(inviter: DaemonProcess, joiner: DaemonProcess) -> float:
    """Pair through the control socket, the joiner finding the inviter by mDNS.

    Returns the moment `join` returned."""
    invitation = PairStream(inviter)
    try:
        joined = joiner.call("join", code=invitation.code)
        returned_at = time.monotonic()
        assert joined["device"] == inviter.device_id, joined
        assert invitation.outcome()["event"] == "paired"
    finally:
        invitation.close()
    return returned_at


def cut_between(first: Host, second: Host) -> None:
    """Make the switch drop every frame between two hosts (mDNS too); both still reach the rest.

    Undone by `heal_cuts`, or by the removal of the switch's namespace when the test ends."""
    rules = "; ".join(
        f'iifname "{src.switch_port}" oifname "{dst.switch_port}" drop'
        for src, dst in ((first, second), (second, first))
    )
    ruleset = (
        f"table bridge {CUT_TABLE} {{\n"
        f"  chain forward {{ type filter hook forward priority 0; policy accept; {rules}; }}\n"
        "}\n"
    )
    switch = ["ip", "netns", "exec", first.switch_namespace, "nft"]
    subprocess.run([*switch, "-f", "-"], input=ruleset, text=True, check=True)


def heal_cuts(host: Host) -> None:
    switch = ["ip", "netns", "exec", host.switch_namespace, "nft"]
    subprocess.run([*switch, "delete", "table", "bridge", CUT_TABLE], check=True)


def cli(daemon: DaemonProcess, *argv: str) -> list[str]:
    """The `p2psync` command line against a daemon's control socket (a filesystem path)."""
    return [sys.executable, "-m", "p2psync", "--socket", str(daemon.socket_path), *argv]


def test_three_devices_find_each_other_pair_by_code_and_sync(netns_hosts, tmp_path):
    host_a, host_b, host_c = netns_hosts(3)
    a = lan_daemon(tmp_path, host_a, "Anna's laptop")
    b = lan_daemon(tmp_path, host_b, "Küchen-PC")
    c = lan_daemon(tmp_path, host_c, "tv.living-room")
    daemons = (a, b, c)
    with running(*daemons):
        all_ready_at = time.monotonic()
        ids = {d.name: d.device_id for d in daemons}
        others = {d.name: {ids[o.name] for o in daemons if o is not d} for d in daemons}
        discovered_at: dict[str, float] = {}

        def everyone_sees_the_others() -> bool:
            for daemon in daemons:
                if daemon.name not in discovered_at and sees(daemon, *others[daemon.name]):
                    discovered_at[daemon.name] = time.monotonic()
            return len(discovered_at) == len(daemons)

        wait_for(
            everyone_sees_the_others,
            "each daemon to see the other two",
            *daemons,
            timeout=DISCOVERY_SECONDS,
        )
        for daemon in daemons:
            start = daemon.spawned_at
            print(
                f"\n{daemon.name}: both others nearby {discovered_at[daemon.name] - start:.2f} s"
                f" after its start (all three were ready after {all_ready_at - start:.2f} s)"
            )
            seen = nearby(daemon)
            assert seen.keys() == others[daemon.name]
            for other in daemons:
                if other is not daemon:
                    entry = seen[ids[other.name]]
                    assert entry["name"] == other.name
                    assert f"{other.host}:47100" in entry["addresses"]
                    assert entry["member"] is False and entry["pairing"] is None
        assert all(d.call("peers") == [] for d in daemons)

        a.call("put", collection="notes", key="welcome", value={"from": "a"})
        pairing = subprocess.Popen(cli(a, "pair"), stdout=subprocess.PIPE, text=True)
        try:
            code = read_code(pairing)
            joined = subprocess.run(
                cli(b, "join", code), capture_output=True, text=True, timeout=30
            )
            joined_at = time.monotonic()
            assert joined.returncode == 0, joined.stderr
            wait_for_value(b, "notes", "welcome", {"from": "a"})
            print(f"b: first record {time.monotonic() - joined_at:.3f} s after `join` returned")
            rest, _ = pairing.communicate(timeout=20)
        finally:
            pairing.kill()
            pairing.wait()
        assert pairing.returncode == 0
        assert b.device_id in rest and "Paired with" in rest
        assert a.device_id in joined.stdout

        joined_at = pair_by_code(b, c)  # the third joins through the second device
        wait_for_value(c, "notes", "welcome", {"from": "a"})
        print(f"c: first record {time.monotonic() - joined_at:.3f} s after `join` returned")

        for daemon in daemons:
            wait_for(
                partial(connected_to, daemon, *others[daemon.name]),
                f"{daemon.name} connected to both others",
                *daemons,
            )
            assert all(found["member"] for found in nearby(daemon).values())
            daemon.call("put", collection="notes", key=f"by {daemon.name}", value=daemon.name)
        for daemon in daemons:
            for writer in daemons:
                wait_for_value(daemon, "notes", f"by {writer.name}", writer.name)


def read_code(pairing: subprocess.Popen[str]) -> str:
    """The pairing code from the first lines `p2psync pair` prints."""
    assert pairing.stdout is not None
    for line in pairing.stdout:
        found = re.search(r"\b\d{1,3}-[a-z]+-[a-z]+\b", line)
        if found:
            return found.group(0)
    raise AssertionError(f"`p2psync pair` printed no code (exit code {pairing.wait()})")


def test_a_wrong_code_fails_both_sides_and_kills_the_code(netns_hosts, tmp_path):
    host_a, host_b = netns_hosts(2)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    with running(a, b):
        invitation = PairStream(a)
        try:
            with pytest.raises(ControlError) as wrong:
                b.call("join", code=wrong_words(invitation.code))  # found by mDNS
            assert wrong.value.code == "pairing_failed"
            outcome = invitation.outcome()
        finally:
            invitation.close()
        assert outcome["event"] == "pairing_failed", outcome
        assert a.call("status")["pairing"] is None
        with pytest.raises(ControlError) as late:
            b.call("join", code=invitation.code, address=a.address)
        assert late.value.code == "pairing_failed", "one guess per code: the right one is dead"
        wait_for(
            lambda: nearby(b).get(a.device_id, {"pairing": 0})["pairing"] is None,
            "a to stop announcing the dead code",
            a,
            b,
        )
        assert a.call("peers") == [] and b.call("peers") == []
        assert nearby(b)[a.device_id]["member"] is False


def test_an_expired_code_fails(netns_hosts, tmp_path):
    host_a, host_b = netns_hosts(2)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    with running(a, b):
        issued = time.monotonic()
        invitation = PairStream(a, ttl=10)
        try:
            outcome = invitation.outcome()  # the stream speaks again only at expiry
        finally:
            invitation.close()
        assert outcome["event"] == "pairing_failed"
        assert "expired" in outcome["error"]["message"]
        assert 9.0 <= time.monotonic() - issued <= 15.0
        with pytest.raises(ControlError) as late:
            b.call("join", code=invitation.code, address=a.address)
        assert late.value.code == "pairing_failed"
        assert "expired" in late.value.message
        # found by mDNS too: a keeps announcing the number of the code that ended, so b is told
        # why rather than that no device offers it
        with pytest.raises(ControlError) as found:
            b.call("join", code=invitation.code)
        assert "expired" in found.value.message and "no device" not in found.value.message
        assert nearby(b)[a.device_id]["pairing"] is None, "a offers no code"
        assert a.call("peers") == [] and b.call("peers") == []


def test_a_partition_heals_and_concurrent_writes_become_the_same_conflict_everywhere(
    netns_hosts, tmp_path
):
    host_a, host_b, host_c = netns_hosts(3)
    # A short idle timeout, so that the sessions across the cut notice it and end, and healing
    # goes through discovery and redialling rather than TCP retransmissions.
    a, b, c = daemons = [
        lan_daemon(tmp_path, host, name, idle_timeout=3)
        for host, name in ((host_a, "a"), (host_b, "b"), (host_c, "c"))
    ]
    with running(*daemons):
        ids = {d.name: d.device_id for d in daemons}
        pair_by_code(a, b)
        pair_by_code(a, c)
        for daemon in daemons:
            others = {ids[d.name] for d in daemons if d is not daemon}
            wait_for(
                partial(connected_to, daemon, *others),
                f"{daemon.name} connected to both others",
                *daemons,
            )
        a.call("put", collection="notes", key="meet", value="start")
        for daemon in daemons:
            wait_for_value(daemon, "notes", "meet", "start")

        host_c.link_down()
        cut_at = time.monotonic()
        wait_for(
            lambda: not connected_to(a, ids["c"]) and not connected_to(b, ids["c"]),
            "a and b to lose c",
            c,
        )
        wait_for(lambda: not any(p["connected"] for p in c.call("peers")), "c to lose a, b", c)
        print(f"\nsessions across the cut ended {time.monotonic() - cut_at:.2f} s after it")
        a.call("put", collection="notes", key="meet", value="said on a's side")
        b.call("put", collection="notes", key="left", value="b")
        c.call("put", collection="notes", key="meet", value="said on c's side")
        c.call("put", collection="notes", key="right", value="c")
        wait_for_value(a, "notes", "left", "b")  # the side of a and b still works

        host_c.link_up()
        healed_at = time.monotonic()
        for daemon in daemons:
            wait_for_value(daemon, "notes", "left", "b")
            wait_for_value(daemon, "notes", "right", "c")
            wait_for_value(daemon, "notes", "meet", "said on a's side")
            wait_for_value(daemon, "notes", "meet", "said on c's side")
        print(f"converged {time.monotonic() - healed_at:.2f} s after the link came back")

        views = [d.call("get", collection="notes", key="meet", all=True) for d in daemons]
        assert all(view["conflict"] for view in views), views
        assert len({json.dumps(view["value"]) for view in views}) == 1, "one winner everywhere"
        for view in views:
            assert sorted(s["value"] for s in view["siblings"]) == [
                "said on a's side",
                "said on c's side",
            ]
        for daemon in daemons:
            listed = daemon.call("conflicts")["items"]
            assert [(item["collection"], item["key"]) for item in listed] == [("notes", "meet")]


def test_a_stopped_daemon_says_goodbye_and_comes_back_connected(netns_hosts, tmp_path):
    host_a, host_b, host_c = netns_hosts(3)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    observer = lan_daemon(tmp_path, host_c, "observer")  # not a member: sees b only by mDNS
    with running(a, b, observer):
        a_id, b_id = a.device_id, b.device_id
        pair_by_code(a, b)
        wait_for(lambda: connected_to(a, b_id), "a connected to b", a, b)
        for watcher in (a, observer):
            wait_for(partial(sees, watcher, b_id), f"{watcher.name} to see b", watcher)

        stopping = time.monotonic()
        assert b.stop() == 0
        for watcher in (a, observer):
            wait_for(
                partial(misses, watcher, b_id),
                f"{watcher.name} to see b leave",
                watcher,
                timeout=GOODBYE_SECONDS,
            )
        print(
            f"\nb gone from both others' nearby {time.monotonic() - stopping:.2f} s after SIGTERM"
        )
        assert not connected_to(a, b_id)

        restarting = time.monotonic()
        b.start()
        for watcher in (a, observer):
            wait_for(
                partial(sees, watcher, b_id),
                f"{watcher.name} to see b again",
                watcher,
                b,
                timeout=DISCOVERY_SECONDS,
            )
        assert nearby(a)[b_id]["member"] is True and nearby(observer)[b_id]["member"] is False
        wait_for(
            lambda: connected_to(a, b_id) and connected_to(b, a_id), "a and b reconnected", a, b
        )
        print(f"b connected again {time.monotonic() - restarting:.2f} s after its restart")


def test_a_revocation_reaches_another_member_by_sync_and_both_refuse_the_device(
    netns_hosts, tmp_path
):
    """A revokes C; B learns it from A through ordinary sync, drops C and refuses it after.

    What proves that B learned it through a third device: the switch drops every frame between A
    and C (mDNS included) from before the daemons start. C joins by pairing with B, and A learns
    of C only from B's membership record. A and C never exchange a packet: A has no session with
    C to cut, whatever C may get of the revocation can only come from B, and the one way for it
    to reach B is A's log over the A-B session. So when B closes its live session with C and then
    refuses C's redials, that comes from B's own copy of the replicated membership. A's refusal
    is checked last: with the path restored and C restarted, C finds A by mDNS and dials it.
    """
    host_a, host_b, host_c = netns_hosts(3)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    c = lan_daemon(tmp_path, host_c, "c")
    cut_between(host_a, host_c)
    with running(a, b, c):
        a_id, c_id = a.device_id, c.device_id
        refusal = f"refused connection from {host_c.ip}:"
        pair_by_code(a, b)
        pair_by_code(b, c)
        wait_for(lambda: c_id in peers(a), "a to learn of c from b", a, b)
        wait_for(lambda: connected_to(b, a_id, c_id), "b connected to a and c", a, b, c)
        c.call("put", collection="notes", key="before", value="from c")
        wait_for_value(a, "notes", "before", "from c")  # relayed by b
        assert c_id not in nearby(a) and a_id not in nearby(c), "the cut holds"
        assert peers(a)[c_id]["address"] is None, "a never had a session with c"

        b_log = log_size(b)
        revoked = a.call("revoke", device=c_id)
        assert revoked["revoked"] is True
        wait_for(
            lambda: peers(b)[c_id]["revoked"] and not connected_to(b, c_id),
            "b to learn of the revocation and drop c",
            a,
            b,
        )
        wait_for(
            lambda: [r["by"] for r in c.call("status")["revoked"]] == ["b"],
            "c to be told by b, from b's own copy of the membership, that it was revoked",
            b,
            c,
        )
        assert f"disconnecting {c_id}: no longer a trusted member" in log_since(b, b_log)
        assert connected_to(b, a_id)

        heal_cuts(host_a)
        a_log = log_size(a)
        assert c.stop() == 0
        c.start()
        wait_for(lambda: a_id in nearby(c), "c to find a once the path is back", c)
        wait_for(partial(logged, a, refusal, a_log), "a to refuse c", a, c)
        wait_for(
            lambda: {r["by"] for r in c.call("status")["revoked"]} == {"a", "b"},
            "c to be told by both members after its restart",
            a,
            b,
            c,
        )
        c.call("put", collection="notes", key="after", value="from c")
        for member in (a, b):
            entry = peers(member)[c_id]
            assert entry["revoked"] and not entry["connected"]
            with pytest.raises(ControlError) as missing:
                member.call("get", collection="notes", key="after")
            assert missing.value.code == "not_found"


def test_members_stop_dialling_a_revoked_device(netns_hosts, tmp_path):
    """No member keeps dialling a device once it is revoked: every attempt would be refused.

    The revoked device does not know and keeps dialling the members, at least 0.25 s apart.
    Those refusals are the clock: six of them span 1.25 s at least, in which a member's own
    dialler (at once when the session ends, then 0.5-2 s apart) would have dialled C at least
    twice; at most the one attempt already under way when the revocation arrived may remain.
    """
    host_a, host_b, host_c = netns_hosts(3)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    c = lan_daemon(tmp_path, host_c, "c")
    with running(a, b, c):
        c_id = c.device_id
        pair_by_code(a, b)
        pair_by_code(a, c)  # b learns of c through sync, and dials it when it finds it nearby
        wait_for(partial(connected_to, b, c_id), "b connected to c", a, b, c)
        marks = {member.name: log_size(member) for member in (a, b)}
        a.call("revoke", device=c_id)
        wait_for(
            lambda: {"a", "b"} <= {r["by"] for r in c.call("status")["revoked"]},
            "c to be told by both members that it was revoked",
            a,
            b,
            c,
            timeout=30,
        )
        for member in (a, b):
            own_dials = log_since(member, marks[member.name]).count(
                f"refused connection from {host_c.ip}:{c.port}:"
            )
            assert own_dials <= 1, f"{member.name} dialled revoked c {own_dials} times"


def refused_dials_of(daemon: DaemonProcess, dialler: Host, offset: int, count: int) -> bool:
    """Whether `daemon` refused at least `count` incoming connections from `dialler`."""
    return len(refusals_of(daemon, dialler, offset)) >= count


def refusals_of(daemon: DaemonProcess, dialler: Host, offset: int) -> list[float]:
    """When `daemon` refused incoming connections from `dialler` (from its log's timestamps)."""
    pattern = re.compile(rf"^(\S+ \S+) .*refused connection from {re.escape(dialler.ip)}:(\d+):")
    times = []
    for line in log_since(daemon, offset).splitlines():
        refused = pattern.match(line)
        if refused and refused.group(2) != "47100":  # not our own dial to its listener
            times.append(datetime.strptime(refused.group(1), LOG_TIME).timestamp())
    return times


def test_a_revoked_device_is_told_who_revoked_it_and_stops_dialling(netns_hosts, tmp_path):
    """The member that revoked C closes C's session with a reason, and refuses C's redial with
    the same reason: C shows it in status and its log and stops dialling that member."""
    host_a, host_c = netns_hosts(2)
    a = lan_daemon(tmp_path, host_a, "a")
    c = lan_daemon(tmp_path, host_c, "c")
    with running(a, c):
        c_id = c.device_id
        pair_by_code(a, c)
        wait_for(partial(connected_to, a, c_id), "a connected to c", a, c)
        a.call("revoke", device=c_id)
        wait_for(lambda: c.call("status")["revoked"], "c to learn it was revoked", a, c)
        [told] = c.call("status")["revoked"]
        assert told["by"] == "a" and told["text"].startswith("this device was revoked by a at ")
        wait_for(lambda: "it stops syncing with that household" in c.log(), "c's log", c)
        mark = log_size(a)
        c.call("put", collection="notes", key="after", value="from c")
        assert refusals_of(a, host_c, mark) == [], "c does not dial a member that revoked it"


def notices_about(daemon: DaemonProcess, device_id: str) -> list[dict[str, Any]]:
    return [n for n in daemon.call("status")["notices"] if n["device"] == device_id]


def keys_in_order(tmp_path: Path, *daemons: DaemonProcess) -> None:
    """Give the daemons their keys before their first start, with device ids in the order the
    daemons are given: which of two sessions a daemon keeps depends on it (peers.preferred)."""
    made = [tmp_path / f"key-{n}" for n in range(len(daemons))]
    by_id = {keystore.load_or_create_identity(path).device_id: path for path in made}
    for daemon, device_id in zip(daemons, sorted(by_id), strict=True):
        shutil.copytree(by_id[device_id], daemon.state_dir)


def test_a_copy_of_a_state_dir_running_beside_the_original_is_named_and_loses_nothing(
    netns_hosts, tmp_path
):
    """B's state dir copied to another machine (a cloned VM, an SD card) and started there while
    B runs too: both copies write, every write reaches every device, and A names B."""
    host_a, host_b, host_copy = netns_hosts(3)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    # the same device name: the copy's config is a copy too
    copy = lan_daemon(tmp_path / "copy", host_copy, "b")
    # B's id after A's: before members kept a session per running copy, A then never gave up
    # its session with one copy for the other's.
    keys_in_order(tmp_path, a, b)
    with running(a, b):
        b_id = b.device_id
        pair_by_code(a, b)
        a.call("put", collection="notes", key="welcome", value="from a")
        wait_for_value(b, "notes", "welcome", "from a")
        assert b.stop() == 0
        shutil.copytree(b.state_dir, copy.state_dir)
        # Both write before either has met the household again (a, which carries every write
        # between them, is away): neither may reuse a seq the other writes, or the household
        # splits for good (0.1.0). With a there, one copy could get the other's write first and
        # continue that copy's epoch, and there would be nothing to name.
        assert a.stop() == 0
        with running(copy):
            b.start()
            assert copy.device_id == b_id
            b.call("put", collection="notes", key="by the original", value="b")
            copy.call("put", collection="notes", key="by the copy", value="b'")
            a.start()
            for daemon in (a, b, copy):
                wait_for_value(daemon, "notes", "by the original", "b", timeout=10)
                wait_for_value(daemon, "notes", "by the copy", "b'", timeout=10)
            # each copy speaks on its session with a once both are up: a sees both running
            b.call("put", collection="notes", key="later by the original", value="b")
            copy.call("put", collection="notes", key="later by the copy", value="b'")
            wait_for(
                lambda: {n["kind"] for n in notices_about(a, b_id)}
                == {"running_twice", "running_in_two_places"},
                "a to name b as running twice, and where",
                a,
                b,
                copy,
            )
            by_kind = {n["kind"]: n for n in notices_about(a, b_id)}
            twice = by_kind["running_twice"]
            assert twice["name"] == "b"
            assert twice["text"].startswith("b started twice from the same state")
            places = sorted([host_b.ip, host_copy.ip])
            assert by_kind["running_in_two_places"]["text"] == (
                f"b is running in two places: {places[0]} and {places[1]}"
            )
            for daemon in (a, b, copy):
                wait_for_value(daemon, "notes", "later by the original", "b", timeout=10)
                wait_for_value(daemon, "notes", "later by the copy", "b'", timeout=10)
            counts = {d.call("status")["records"] for d in (a, b, copy)}
            assert counts == {5}, counts


def backup_of_running(daemon: DaemonProcess, target: Path) -> None:
    """A consistent copy of a running daemon's state dir, as a backup tool would take it: the
    database through SQLite's online backup, the key files as they are."""
    shutil.copytree(
        daemon.state_dir,
        target,
        ignore=shutil.ignore_patterns("replica.db*", "daemon.lock"),
    )
    source = sqlite3.connect(daemon.state_dir / "replica.db")
    destination = sqlite3.connect(target / "replica.db")
    try:
        source.backup(destination)
    finally:
        source.close()
        destination.close()


def test_a_restored_backup_that_writes_before_meeting_a_peer_loses_nothing_and_is_reported(
    netns_hosts, tmp_path
):
    """B is restored from a backup older than its last writes and writes at once, before it
    meets A again: A keeps every write of both, B gets back what the backup lacked, and A says
    that B started from an older copy of its state."""
    host_a, host_b = netns_hosts(2)
    a = lan_daemon(tmp_path, host_a, "a")
    b = lan_daemon(tmp_path, host_b, "b")
    with running(a, b):
        b_id = b.device_id
        pair_by_code(a, b)
        b.call("put", collection="notes", key="before the backup", value="b")
        wait_for_value(a, "notes", "before the backup", "b")
        backup = tmp_path / "backup"
        backup_of_running(b, backup)
        b.call("put", collection="notes", key="after the backup", value="b")
        wait_for_value(a, "notes", "after the backup", "b")
        assert b.stop() == 0
        shutil.rmtree(b.state_dir)
        shutil.copytree(backup, b.state_dir)
        # A is away while B comes back and writes: otherwise B may first fetch its own later
        # entries from A, and then (rightly) it did not start from an older copy
        assert a.stop() == 0
        b.start()
        b.call("put", collection="notes", key="after the restore", value="b")
        a.start()
        wait_for_value(a, "notes", "after the restore", "b")
        wait_for_value(b, "notes", "after the backup", "b")
        wait_for(lambda: notices_about(a, b_id), "a to report b's restore", a, b)
        [notice] = notices_about(a, b_id)
        assert notice["kind"] == "restored", notice
        assert notice["text"].startswith("b started from an older copy of its state")
        for daemon in (a, b):
            keys = {item["key"] for item in daemon.call("scan", collection="notes")["items"]}
            assert keys == {"before the backup", "after the backup", "after the restore"}


@asynccontextmanager
async def avahi_browsing(host: Host) -> AsyncIterator[trio.Process]:
    """`avahi-browse -rp _p2psync._tcp` in `host`, with its own D-Bus and avahi-daemon there."""
    async with avahi_in(host) as env:
        browse_argv = ["avahi-browse", "-rp", "_p2psync._tcp"]
        async with spawned(host, browse_argv, env=env, stdout=subprocess.PIPE) as browse:
            yield browse


async def test_avahi_browse_sees_a_running_daemon_with_its_device_id(netns_hosts, tmp_path):
    host_a, host_b = netns_hosts(2)
    name = "Anna's iPad 2.0"
    daemon = lan_daemon(tmp_path, host_a, name)
    with running(daemon):  # started before any trio task exists, so blocking is harmless
        device_id = daemon.device_id
        async with avahi_browsing(host_b) as browse:
            assert browse.stdout is not None
            with trio.fail_after(15):
                line = await _read_lines(browse.stdout, lambda line: line[:2] == "=;")
    assert_avahi_resolved(line, instance_label(name, device_id), host_a, daemon.port, device_id)


async def test_rename_and_reload_change_the_announced_name_without_a_restart(netns_hosts, tmp_path):
    host_a, host_b = netns_hosts(2)
    daemon = lan_daemon(tmp_path, host_a, "Küche")
    with running(daemon):
        device_id = daemon.device_id
        async with avahi_browsing(host_b) as browse:
            assert browse.stdout is not None

            def announced(name: str) -> Callable[[str], bool]:
                label = instance_label(name, device_id)
                return lambda line: (
                    line[:2] == "=;" and _unescape_avahi(line.split(";")[3]) == label
                )

            with trio.fail_after(15):
                await _read_lines(browse.stdout, announced("Küche"))
            await trio.to_thread.run_sync(partial(daemon.call, "rename", name="living room.tv"))
            with trio.fail_after(10):
                line = await _read_lines(browse.stdout, announced("living room.tv"))
            assert_avahi_resolved(
                line, instance_label("living room.tv", device_id), host_a, daemon.port, device_id
            )
            daemon.name = "Anna's iPad 2.0"
            daemon.write_config()
            reload = await trio.to_thread.run_sync(partial(daemon.call, "reload"))
            assert reload["changed"] == ["device.name"]
            with trio.fail_after(10):
                await _read_lines(browse.stdout, announced("Anna's iPad 2.0"))

"""Pairing by code between real daemons on loopback (the inviter's address given explicitly)."""

import json
import socket

import pytest

from p2psync import pairing
from p2psync.client import ControlError
from p2psync.pairing_words import WORDS
from tests.daemons import DaemonProcess, log_since, log_size, running, wait_for, wait_for_value

pytestmark = pytest.mark.slow


class PairStream:
    """The `pair` stream of a daemon's control socket: the code first, the outcome later."""

    def __init__(self, daemon: DaemonProcess, ttl: int = 60, shares: tuple = ()) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(30)
        self.sock.connect(str(daemon.socket_path))
        request = {"id": 1, "method": "pair", "ttl": ttl, "shares": list(shares)}
        self.sock.sendall(json.dumps(request).encode() + b"\n")
        self.lines = self.sock.makefile("r")
        first = json.loads(self.lines.readline())
        assert first["ok"], first
        self.code = first["result"]["code"]

    def outcome(self) -> dict:
        return json.loads(self.lines.readline())

    def close(self) -> None:
        self.lines.close()
        self.sock.close()


def wrong_words(code: str) -> str:
    parsed = pairing.parse_code(code)
    others = [w for w in WORDS if w not in parsed.words][:2]
    return f"{parsed.nameplate}-{others[0]}-{others[1]}"


def test_join_by_code_records_both_devices_and_they_sync(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        invitation = PairStream(a)
        joined = b.call("join", code=invitation.code, address=a.address)
        assert joined["device"] == a.device_id and joined["name"] == "a"
        assert joined["shares"] == ["default"]
        outcome = invitation.outcome()
        invitation.close()
        shares = ["default"]
        assert outcome == {"event": "paired", "device": b.device_id, "name": "b", "shares": shares}
        a.call("put", collection="notes", key="hello", value="from a")
        wait_for_value(b, "notes", "hello", "from a")
        b.call("put", collection="notes", key="reply", value="from b")
        wait_for_value(a, "notes", "reply", "from b")


def test_pairing_can_place_the_new_device_in_shares_and_the_joiner_is_told(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        a.call("share_create", share="family")
        a.call("share_create", share="parents")
        a.call("put", share="family", collection="list", key="milk", value="2 l")
        a.call("put", share="parents", collection="gifts", key="bike", value="red")
        invitation = PairStream(a, shares=("family",))
        joined = b.call("join", code=invitation.code, address=a.address)
        assert joined["shares"] == ["default", "family"]
        assert invitation.outcome()["shares"] == ["default", "family"]
        invitation.close()
        wait_for_value(b, "list", "milk", "2 l")
        shown = a.call("share_show", share="family")
        assert {m["device"] for m in shown["members"]} == {a.device_id, b.device_id}
        b.call("put", share="family", collection="list", key="eggs", value=6)
        wait_for_value(a, "list", "eggs", 6)
        assert b.error("get", share="parents", collection="gifts", key="bike")["code"] == (
            "not_found"
        )
        assert "parents" not in {s["share"] for s in b.call("share_list")["shares"]}


def test_a_wrong_code_fails_both_sides_and_burns_the_code(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        invitation = PairStream(a)
        with pytest.raises(ControlError) as wrong:
            b.call("join", code=wrong_words(invitation.code), address=a.address)
        assert wrong.value.code == "pairing_failed"
        outcome = invitation.outcome()
        invitation.close()
        assert outcome["event"] == "pairing_failed"
        with pytest.raises(ControlError) as late:
            b.call("join", code=invitation.code, address=a.address)
        assert late.value.code == "pairing_failed", "one guess per code: the right one is dead too"
        assert all(not p["connected"] for p in b.call("peers"))


def test_an_unreadable_code_is_a_bad_request_with_a_suggestion(tmp_path):
    b = DaemonProcess(tmp_path, "b")
    with running(b):
        word = WORDS[0]
        with pytest.raises(ControlError) as typo:
            b.call("join", code=f"7-{word[:-1]}x-{word}", address="127.0.0.1:1")
        assert typo.value.code == "bad_request"
        assert "did you mean" in typo.value.message.lower() or word in typo.value.message


def pairing_ended(daemon: DaemonProcess) -> bool:
    return daemon.call("status")["pairing"] is None


def test_a_withdrawn_code_fails_saying_so_on_both_sides(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        invitation = PairStream(a, ttl=10)
        code = invitation.code
        mark = log_size(a)
        invitation.close()  # the person pressed Ctrl-C: the code is withdrawn
        # The daemon learns of the hang-up when it reads the closed connection: a join sent
        # before that would still pair (it raced the close 2 times in 11 under load).
        wait_for(lambda: pairing_ended(a), "a to see the pair stream closed", a)
        with pytest.raises(ControlError) as dead:
            b.call("join", code=code, address=a.address)
        assert dead.value.code == "pairing_failed"
        assert "withdrawn" in dead.value.message and "expired" not in dead.value.message
        nameplate = pairing.parse_code(code).nameplate
        logged = log_since(a, mark)
        assert f"pairing code number {nameplate} withdrawn" in logged
        assert f"refused: pairing code number {nameplate} was withdrawn" in logged
        assert (
            f"joining with pairing code number {nameplate} failed: the pairing code was "
            "withdrawn" in b.log()
        )


def test_joining_a_device_that_is_not_pairing_says_so_not_used_up(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        with pytest.raises(ControlError) as refused:
            b.call("join", code="7-guitar-orbit", address=a.address)
        assert refused.value.code == "pairing_failed"
        assert "not pairing" in refused.value.message
        assert "used up" not in refused.value.message
        assert "refused: no pairing code is active" in a.log()


def test_an_expired_code_says_expired_on_both_sides_and_the_inviter_logs_it(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        invitation = PairStream(a, ttl=10)
        outcome = invitation.outcome()  # the stream speaks again only at expiry
        invitation.close()
        assert outcome["event"] == "pairing_failed"
        assert "expired" in outcome["error"]["message"]
        with pytest.raises(ControlError) as late:
            b.call("join", code=invitation.code, address=a.address)
        assert "expired" in late.value.message
        assert "used up" not in late.value.message
        nameplate = pairing.parse_code(invitation.code).nameplate
        assert f"pairing code number {nameplate} expired unused" in a.log()
        assert f"refused: pairing code number {nameplate} expired" in a.log()


def test_a_code_replaced_by_a_newer_one_says_so_and_the_newer_one_works(tmp_path):
    a = DaemonProcess(tmp_path, "a")
    b = DaemonProcess(tmp_path, "b")
    with running(a, b):
        first = PairStream(a)
        second = PairStream(a)
        outcome = first.outcome()  # at once, not when its time would have run out
        first.close()
        assert outcome["event"] == "pairing_failed"
        assert "newer code replaced" in outcome["error"]["message"]
        if pairing.parse_code(first.code).nameplate != pairing.parse_code(second.code).nameplate:
            with pytest.raises(ControlError) as replaced:
                b.call("join", code=first.code, address=a.address)
            assert "withdrawn" in replaced.value.message
        joined = b.call("join", code=second.code, address=a.address)
        assert joined["device"] == a.device_id
        assert second.outcome()["event"] == "paired"
        second.close()

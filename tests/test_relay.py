"""The pure rules of "each entry crosses each link once" (p2psync/relay.py)."""

from p2psync import relay
from p2psync.relay import Outbox, Skipping

A, B, C, US = "A/00000001", "B/00000001", "C/00000001", "U/00000001"


def test_claims_come_from_the_shares_each_live_session_streams():
    found = relay.claims([(A, frozenset({"default", "photos"})), (B, frozenset({"default"}))])
    assert found == {"default": frozenset({A, B}), "photos": frozenset({A})}
    assert relay.claims([]) == {}


def test_lost_names_only_the_claims_that_went():
    before = {"default": frozenset({A, B}), "photos": frozenset({A})}
    after = {"default": frozenset({B, C})}
    assert relay.lost(before, after) == {"default": frozenset({A}), "photos": frozenset({A})}
    assert relay.lost(after, after) == {}


def test_a_sender_skips_what_the_peers_writers_deliver_but_never_its_own_entries():
    peer_claims = {"default": frozenset({A, US})}
    assert relay.skipped(peer_claims, "default", US) == frozenset({A})
    assert relay.skipped(peer_claims, "photos", US) == frozenset()


def test_skipped_actors_read_as_held_in_full_and_the_others_as_known():
    view = Skipping({A: 3, B: 5}, frozenset({A, C}))
    assert view.get(A, 0) == view.get(C, 0) == relay.HELD
    assert view.get(B, 0) == 5 and view.get("D/00000001", 0) == 0
    assert view[B] == 5 and set(view) == {A, B, C} and len(view) == 3


def test_idle_senders_raise_known_only_for_actors_they_did_not_skip():
    known = {A: 1}
    relay.raise_to(known, relay.without({A: 9, B: 4}, frozenset({A})))
    assert known == {A: 1, B: 4}
    relay.raise_to(known, {B: 2})
    assert known == {A: 1, B: 4}, "known only rises"


def test_relayed_actors_are_told_at_once_claimed_ones_never_and_never_the_peers_own():
    outbox = Outbox()
    ours = {"default": frozenset({B})}
    assert outbox.wanted(ours, peer_actor=C) == {}, "a claimed actor is not told while claimed"
    outbox.announced = dict(ours)
    outbox.note("default", {A, C})
    assert outbox.urgent
    assert outbox.wanted(ours, peer_actor=C) == {"default": {A}}
    assert not outbox.urgent and outbox.wanted(ours, peer_actor=C) == {}


def test_news_is_only_what_rose_since_last_told():
    outbox = Outbox()
    assert outbox.news({"default": {A: 3, B: 0}}) == {"default": {A: 3}}
    assert outbox.news({"default": {A: 3}}) == {}
    assert outbox.news({"default": {A: 4, B: 1}}) == {"default": {A: 4, B: 1}}


def test_a_lost_claim_is_told_at_once_and_the_new_claims_announced_after():
    outbox = Outbox()
    ours = {"default": frozenset({A, B})}
    assert outbox.direct_due(ours)
    outbox.announced = dict(ours)
    assert not outbox.direct_due(ours)
    now = {"default": frozenset({B})}
    assert outbox.wanted(now, peer_actor=None) == {"default": {A}}
    assert outbox.direct_due(now)

"""Intake: runs are released only up to a valid origin signature, queued per sending peer."""

import pytest

from p2psync import entry, identity
from p2psync.entry import IntegrityError
from p2psync.intake import Intake

ORIGIN = identity.DeviceIdentity.generate()
ACTOR = f"{ORIGIN.device_id}/0000abcd"
START = (0, entry.GENESIS_HASH)


def chain(count: int, value: bytes = b"v") -> list[entry.LogEntry]:
    made, prev = [], entry.GENESIS_HASH
    for seq in range(1, count + 1):
        made.append(entry.encode("s", ACTOR, seq, prev, seq, {}, [entry.put("c", "k", value)]))
        prev = made[-1].hash
    return made


def signature(made: entry.LogEntry) -> bytes:
    return ORIGIN.sign(entry.head_message("s", made.actor, made.seq, made.hash))


def keys(device: str) -> bytes | None:
    return ORIGIN.public_key if device == ORIGIN.device_id else None


def test_a_run_waits_for_its_signature_then_is_released_in_order():
    intake, (first, second) = Intake(), chain(2)
    intake.add("bob", first, None, START)
    assert intake.release(keys).verified == []
    intake.add("bob", second, signature(second), START)
    released = intake.release(keys)
    assert [v.entry.seq for v in released.verified] == [1, 2] and not released.offenders
    assert len(intake) == 0


def test_a_forgery_does_not_block_the_honest_copy_and_its_sender_is_named():
    intake, (real,) = Intake(), chain(1)
    (forged,) = chain(1, b"forged")
    intake.add("mallory", forged, None, START)
    intake.add("carol", real, signature(real), START)
    released = intake.release(keys)
    assert [v.entry.hash for v in released.verified] == [real.hash]
    assert set(released.offenders) == {"mallory"} and intake.pending_bytes("mallory") == 0


def test_a_bad_signature_names_the_peer_that_attached_it():
    intake, (real,) = Intake(), chain(1)
    intake.add("mallory", real, ORIGIN.sign(b"something else"), START)
    released = intake.release(keys)
    assert released.verified == [] and "signature" in released.offenders["mallory"]


def test_a_peer_contradicting_itself_or_over_its_allowance_is_refused():
    (real,), (forged,) = chain(1), chain(1, b"forged")
    intake = Intake()
    intake.add("mallory", real, None, START)
    with pytest.raises(IntegrityError, match="two different"):
        intake.add("mallory", forged, None, START)
    small = Intake(max_pending_bytes=len(chain(2)[1].raw))
    small.add("mallory", real, None, START)
    with pytest.raises(IntegrityError, match="bytes of entries"):
        small.add("mallory", chain(2)[1], None, START)
    small.add("bob", chain(2)[1], None, START)  # another peer's allowance is its own
    small.forget_peer("mallory")
    assert small.pending_bytes("mallory") == 0 and small.pending_bytes("bob") > 0


def test_a_validly_signed_branch_off_our_chain_is_a_fork_not_an_offence():
    ours, theirs = chain(2), chain(2, b"other branch")
    intake = Intake()
    intake.add("bob", theirs[1], signature(theirs[1]), (1, ours[0].hash))
    released = intake.release(keys)
    assert [(f.actor, f.seq, f.peer) for f in released.forks] == [(ACTOR, 2, "bob")]
    assert not released.offenders and not released.verified


def test_a_run_keeps_the_last_signature_and_one_per_mebibyte_and_checks_only_those():
    made = chain(40, b"x" * 100_000)  # 4 MB of entries, each one signed
    intake = Intake()
    intake.add("bob", made[0], b"junk where no signature is kept: never checked", START)
    for item in made[1:]:
        intake.add("bob", item, signature(item), START)
    released = intake.release(keys)
    assert not released.offenders and len(released.verified) == 40
    kept = [v for v in released.verified if v.signature is not None]
    assert kept[-1].entry is made[-1]
    assert 2 <= len(kept) <= 5, "about one signature per MiB is kept"


def test_a_kept_intermediate_signature_that_is_false_names_its_sender():
    made = chain(12, b"x" * 100_000)
    intake = Intake()
    for n, item in enumerate(made):
        intake.add("bob", item, signature(item) if n != 10 else b"false", START)
    released = intake.release(keys)
    assert "signature" in released.offenders.get("bob", "")

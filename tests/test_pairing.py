import contextlib
import copy
import datetime
import random
import string
from collections import Counter
from typing import Any

import msgpack
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from p2psync.pairing import (
    DEFAULT_TTL_MS,
    MAX_NAMEPLATE,
    CodeBurned,
    CodeExpired,
    CodeWithdrawn,
    InvalidCode,
    Inviter,
    InviterState,
    Joiner,
    JoinerState,
    NotPairing,
    PairingAborted,
    PairingCode,
    PairingError,
    PairingProtocolError,
    WrongCode,
    _confirmation,
    _edit_distance,
    _seal,
    ended_code,
    generate_code,
    parse_code,
    suggest_word,
)
from p2psync.pairing_words import WORDS

NOW = 1_700_000_000_000


def make_cert(common_name: str) -> bytes:
    key = Ed25519PrivateKey.generate()
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    start = datetime.datetime(2024, 1, 1, tzinfo=datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=36500))
        .sign(key, None)
    )
    return cert.public_bytes(serialization.Encoding.PEM)


INVITER_CERT = make_cert("inviter")
JOINER_CERT = make_cert("joiner")
ATTACKER_CERT = make_cert("attacker")
MEMBERS = [{"device_id": "MFRGG-ZDFMZ-K", "name": "Kitchen tablet", "cert_pem": b"..."}]
CODE = PairingCode(7, ("guitar", "orbit"))
OTHER_WORDS_SAME_NAMEPLATE = PairingCode(7, ("guitar", "ocean"))


def wire(message: dict[str, Any]) -> dict[str, Any]:
    """What the daemon's framing does to a message: a msgpack round trip."""
    return msgpack.unpackb(msgpack.packb(message, use_bin_type=True), raw=False)


def new_inviter(code: PairingCode = CODE, now_ms: int = NOW, cert: bytes = INVITER_CERT) -> Inviter:
    return Inviter(code, cert, "Living room", now_ms, members=MEMBERS)


def new_joiner(code: PairingCode = CODE, cert: bytes = JOINER_CERT) -> Joiner:
    return Joiner(code, cert, "Anna's laptop")


def exchange(inviter: Inviter, joiner: Joiner, now_ms: int = NOW) -> list[dict[str, Any]]:
    """A complete pairing; returns the four messages in the order they went."""
    [joiner_pake] = joiner.start()
    [inviter_pake] = inviter.receive(wire(joiner_pake), now_ms)
    [joiner_ident] = joiner.receive(wire(inviter_pake), now_ms)
    [inviter_ident] = inviter.receive(wire(joiner_ident), now_ms)
    assert joiner.receive(wire(inviter_ident), now_ms) == []
    return [joiner_pake, inviter_pake, joiner_ident, inviter_ident]


def up_to_joiner_ident(inviter: Inviter, joiner: Joiner) -> dict[str, Any]:
    [joiner_pake] = joiner.start()
    [inviter_pake] = inviter.receive(wire(joiner_pake), NOW)
    [joiner_ident] = joiner.receive(wire(inviter_pake), NOW)
    return joiner_ident


def forged_box(contents: dict[str, Any]) -> dict[str, Any]:
    """What an attacker without the code can build: a well-formed box under a key of its own."""
    key = ChaCha20Poly1305.generate_key()
    sealed = ChaCha20Poly1305(key).encrypt(bytes(12), msgpack.packb(contents), b"")
    return {"t": "ident", "box": sealed}


# --- the exchange -----------------------------------------------------------------------------


def test_successful_pairing_exchanges_certificates_names_and_members():
    inviter, joiner = new_inviter(), new_joiner()
    exchange(inviter, joiner)

    assert inviter.state is InviterState.DONE and joiner.state is JoinerState.DONE
    assert inviter.result is not None and joiner.result is not None
    assert inviter.result.peer_cert_pem == JOINER_CERT
    assert inviter.result.peer_name == "Anna's laptop"
    assert inviter.result.members == []
    assert joiner.result.peer_cert_pem == INVITER_CERT
    assert joiner.result.peer_name == "Living room"
    assert joiner.result.members == MEMBERS


def test_messages_have_the_documented_shapes_and_reveal_nothing_in_clear():
    messages = exchange(new_inviter(), new_joiner())
    joiner_pake, inviter_pake, joiner_ident, inviter_ident = messages

    assert joiner_pake.keys() == {"t", "nameplate", "msg"} and joiner_pake["nameplate"] == 7
    assert inviter_pake.keys() == {"t", "msg"}
    assert joiner_ident.keys() == inviter_ident.keys() == {"t", "box"}
    on_the_wire = b"".join(msgpack.packb(message) for message in messages)
    for secret in (INVITER_CERT, JOINER_CERT, b"Living room", b"Kitchen tablet", b"guitar"):
        assert secret not in on_the_wire


def test_wrong_code_fails_both_sides_and_burns_the_code():
    inviter, joiner = new_inviter(), new_joiner(OTHER_WORDS_SAME_NAMEPLATE)
    joiner_ident = up_to_joiner_ident(inviter, joiner)

    with pytest.raises(WrongCode, match="used up") as inviter_error:
        inviter.receive(wire(joiner_ident), NOW)
    assert inviter.state is InviterState.BURNED and inviter.result is None
    # The only thing the inviter sends back is the failure, never its certificate or members.
    [fail] = inviter_error.value.reply
    assert fail["t"] == "fail" and INVITER_CERT not in msgpack.packb(fail)

    with pytest.raises(WrongCode) as joiner_error:
        joiner.receive(wire(fail), NOW)
    assert joiner.state is JoinerState.FAILED and joiner.result is None
    assert joiner_error.value.reply == []

    legitimate = new_joiner()
    with pytest.raises(CodeBurned) as burned:
        inviter.receive(wire(legitimate.start()[0]), NOW)
    assert burned.value.reply[0]["error"] == "burned"
    with pytest.raises(CodeBurned):
        legitimate.receive(wire(burned.value.reply[0]), NOW)


def test_a_used_code_is_dead():
    inviter = new_inviter()
    exchange(inviter, new_joiner())
    with pytest.raises(CodeBurned):
        inviter.receive(wire(new_joiner().start()[0]), NOW)
    assert inviter.state is InviterState.DONE and inviter.result is not None


def test_a_second_attempt_during_a_pairing_burns_the_code_for_both():
    inviter, first = new_inviter(), new_joiner()
    joiner_ident = up_to_joiner_ident(inviter, first)

    with pytest.raises(CodeBurned, match="another device"):
        inviter.receive(wire(new_joiner().start()[0]), NOW)
    with pytest.raises(CodeBurned):
        inviter.receive(wire(joiner_ident), NOW)
    assert inviter.result is None


def test_code_expires_after_the_ttl():
    almost = new_inviter()
    exchange(almost, new_joiner(), now_ms=NOW + DEFAULT_TTL_MS - 1)
    assert almost.state is InviterState.DONE

    late = new_inviter()
    with pytest.raises(CodeExpired, match="expired") as error:
        late.receive(wire(new_joiner().start()[0]), NOW + DEFAULT_TTL_MS)
    assert late.state is InviterState.EXPIRED
    assert error.value.reply[0]["error"] == "expired"
    with pytest.raises(CodeExpired):
        late.receive(wire(new_joiner().start()[0]), NOW)


def test_code_expiring_midway_stops_the_pairing():
    inviter, joiner = new_inviter(), new_joiner()
    joiner_ident = up_to_joiner_ident(inviter, joiner)
    with pytest.raises(CodeExpired) as error:
        inviter.receive(wire(joiner_ident), NOW + DEFAULT_TTL_MS)
    assert inviter.result is None
    with pytest.raises(CodeExpired):
        joiner.receive(wire(error.value.reply[0]), NOW)


def test_custom_ttl():
    inviter = Inviter(CODE, INVITER_CERT, "Living room", NOW, ttl_ms=1000)
    with pytest.raises(CodeExpired):
        inviter.receive(wire(new_joiner().start()[0]), NOW + 1000)


def test_a_withdrawn_code_says_so_to_every_later_attempt_and_midway():
    inviter = new_inviter()
    inviter.withdraw()
    assert inviter.state is InviterState.WITHDRAWN
    with pytest.raises(CodeWithdrawn, match="withdrawn") as error:
        inviter.receive(wire(new_joiner().start()[0]), NOW)
    joiner = new_joiner()
    joiner.start()
    with pytest.raises(CodeWithdrawn):
        joiner.receive(wire(error.value.reply[0]), NOW)  # the joiner hears the same reason

    midway, joiner = new_inviter(), new_joiner()
    joiner_ident = up_to_joiner_ident(midway, joiner)
    midway.withdraw()
    with pytest.raises(CodeWithdrawn):
        midway.receive(wire(joiner_ident), NOW)
    assert midway.result is None


def test_ending_a_code_that_already_ended_keeps_how_it_ended():
    used = new_inviter()
    exchange(used, new_joiner())
    used.withdraw()
    used.expire()
    assert used.state is InviterState.DONE
    expired = new_inviter()
    expired.expire()
    expired.withdraw()
    assert expired.state is InviterState.EXPIRED
    assert isinstance(expired.refusal(), CodeExpired)


def test_an_attempt_on_an_ended_code_is_told_how_that_code_ended():
    old = new_inviter(PairingCode(5, ("guitar", "orbit")))
    old.expire()
    used = new_inviter(PairingCode(6, ("guitar", "orbit")))
    exchange(used, new_joiner(used.code))
    gone = new_inviter(PairingCode(5, ("guitar", "ocean")))  # a later code, same number
    gone.withdraw()
    ended = [old, used, gone]
    attempt = new_joiner(PairingCode(5, ("guitar", "orbit"))).start()[0]
    assert ended_code(wire(attempt), ended) is gone, "the latest code with that number"
    assert isinstance(gone.refusal(), CodeWithdrawn)
    assert ended_code(wire(new_joiner(used.code).start()[0]), ended) is used
    assert isinstance(used.refusal(), CodeBurned)
    assert ended_code(wire(new_joiner(PairingCode(9, CODE.words)).start()[0]), ended) is None
    assert ended_code({"t": "pake", "nameplate": True}, ended) is None
    assert ended_code("garbage", ended) is None
    assert ended_code(wire(attempt), [new_inviter(PairingCode(5, CODE.words))]) is None, (
        "a code still open has not ended"
    )


def test_a_device_that_is_not_pairing_says_so_not_that_a_code_is_used_up():
    joiner = new_joiner()
    joiner.start()
    with pytest.raises(NotPairing, match="not pairing") as error:
        joiner.receive(wire(NotPairing().reply[0]), NOW)
    assert "used up" not in str(error.value)


def test_replaying_a_recorded_joiner_to_a_new_inviter_fails():
    joiner_pake, _, joiner_ident, _ = exchange(new_inviter(), new_joiner())
    inviter = new_inviter()
    inviter.receive(wire(joiner_pake), NOW)
    with pytest.raises(WrongCode):
        inviter.receive(wire(joiner_ident), NOW)
    assert inviter.result is None


def test_replaying_a_recorded_inviter_to_a_new_joiner_fails():
    _, inviter_pake, _, inviter_ident = exchange(new_inviter(), new_joiner())
    joiner = new_joiner()
    joiner.start()
    joiner.receive(wire(inviter_pake), NOW)
    with pytest.raises(WrongCode):
        joiner.receive(wire(inviter_ident), NOW)
    assert joiner.result is None


def tampered(message: dict[str, Any], position: int, flip: int) -> dict[str, Any]:
    box = bytearray(message["box"])
    box[position % len(box)] ^= flip
    return {"t": "ident", "box": bytes(box)}


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_in_the_joiner_box_fails(position, flip):
    inviter, joiner = new_inviter(), new_joiner()
    joiner_ident = up_to_joiner_ident(inviter, joiner)
    with pytest.raises(WrongCode):
        inviter.receive(tampered(joiner_ident, position, flip), NOW)
    assert inviter.state is InviterState.BURNED and inviter.result is None


@settings(max_examples=40, deadline=None)
@given(position=st.integers(min_value=0), flip=st.integers(min_value=1, max_value=255))
def test_any_changed_byte_in_the_inviter_box_fails(position, flip):
    inviter, joiner = new_inviter(), new_joiner()
    [inviter_ident] = inviter.receive(up_to_joiner_ident(inviter, joiner), NOW)
    with pytest.raises(WrongCode):
        joiner.receive(tampered(inviter_ident, position, flip), NOW)
    assert joiner.result is None


def test_truncated_or_extended_boxes_fail():
    inviter, joiner = new_inviter(), new_joiner()
    box = up_to_joiner_ident(inviter, joiner)["box"]
    for changed in (box[:-1], box + b"\x00", b""):
        attempt = copy.deepcopy(inviter)
        with pytest.raises(WrongCode):
            attempt.receive({"t": "ident", "box": changed}, NOW)


def test_relaying_attacker_cannot_substitute_the_joiner_certificate():
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)  # the attacker relays both pake messages untouched
    substitute = {"cert_pem": ATTACKER_CERT, "name": "Anna's laptop", "confirm": bytes(32)}
    with pytest.raises(WrongCode):
        inviter.receive(forged_box(substitute), NOW)
    assert inviter.result is None and inviter.state is InviterState.BURNED


def test_relaying_attacker_cannot_substitute_the_inviter_certificate():
    inviter, joiner = new_inviter(), new_joiner()
    inviter.receive(up_to_joiner_ident(inviter, joiner), NOW)
    substitute = {
        "cert_pem": ATTACKER_CERT,
        "name": "Living room",
        "confirm": bytes(32),
        "members": [],
    }
    with pytest.raises(WrongCode):
        joiner.receive(forged_box(substitute), NOW)
    assert joiner.result is None


def test_man_in_the_middle_guessing_the_code_fails_both_ways_and_learns_nothing():
    """The attacker runs its own pairing with each side, using its best guess of the code."""
    inviter, joiner = new_inviter(), new_joiner()
    fake_inviter = new_inviter(OTHER_WORDS_SAME_NAMEPLATE, cert=ATTACKER_CERT)
    fake_joiner = new_joiner(OTHER_WORDS_SAME_NAMEPLATE, cert=ATTACKER_CERT)

    with pytest.raises(WrongCode):
        inviter.receive(up_to_joiner_ident(inviter, fake_joiner), NOW)
    # The real joiner's box does not open for the attacker: its certificate stays hidden.
    with pytest.raises(WrongCode):
        fake_inviter.receive(up_to_joiner_ident(fake_inviter, joiner), NOW)
    assert inviter.result is None and fake_inviter.result is None


def test_a_confirmation_binding_another_joiner_certificate_is_rejected():
    """A peer holding the session key (it knows the code) must still bind what it sends."""
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)
    keys = joiner._keys
    assert keys is not None
    other_binding = _confirmation(keys.joiner_confirm, keys.transcript, ATTACKER_CERT)
    contents = {"cert_pem": JOINER_CERT, "name": "Anna's laptop", "confirm": other_binding}
    with pytest.raises(PairingProtocolError, match="confirmation"):
        inviter.receive(_seal(keys.joiner_box, keys.transcript, contents), NOW)
    assert inviter.state is InviterState.BURNED and inviter.result is None


def test_the_inviter_confirmation_binds_both_certificates():
    """The joiner rejects an inviter that confirms having seen some other joiner certificate."""
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)
    keys = inviter._keys
    assert keys is not None
    other_binding = _confirmation(
        keys.inviter_confirm, keys.transcript, ATTACKER_CERT, INVITER_CERT
    )
    contents = {"cert_pem": INVITER_CERT, "name": "Living room", "confirm": other_binding}
    with pytest.raises(PairingProtocolError, match="confirmation"):
        joiner.receive(_seal(keys.inviter_box, keys.transcript, contents), NOW)
    assert joiner.result is None


@pytest.mark.parametrize(
    "plaintext",
    [
        b"\xc1",
        msgpack.packb([1, 2]),
        msgpack.packb({"cert_pem": "text", "name": "x", "confirm": b""}),
        msgpack.packb({"cert_pem": b"pem", "name": None, "confirm": b""}),
    ],
)
def test_a_box_that_opens_but_holds_garbage_is_a_protocol_error(plaintext):
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)
    keys = joiner._keys
    assert keys is not None
    box = ChaCha20Poly1305(keys.joiner_box).encrypt(bytes(12), plaintext, keys.transcript)
    with pytest.raises(PairingProtocolError):
        inviter.receive({"t": "ident", "box": box}, NOW)
    assert inviter.state is InviterState.BURNED


def test_members_must_be_a_list():
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)
    keys = inviter._keys
    assert keys is not None
    confirm = _confirmation(keys.inviter_confirm, keys.transcript, JOINER_CERT, INVITER_CERT)
    contents = {"cert_pem": INVITER_CERT, "name": "x", "confirm": confirm, "members": "all"}
    with pytest.raises(PairingProtocolError, match="members"):
        joiner.receive(_seal(keys.inviter_box, keys.transcript, contents), NOW)


# --- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "pake",
        {},
        {"t": 3},
        {"t": "ident", "box": b"x"},
        {"t": "pake", "msg": b"B" + bytes(32)},
        {"t": "pake", "nameplate": 8, "msg": b"A" + bytes(32)},
        {"t": "pake", "nameplate": True, "msg": b"A" + bytes(32)},
        {"t": "pake", "nameplate": 7, "msg": "text"},
        {"t": "pake", "nameplate": 7, "msg": b""},
        {"t": "pake", "nameplate": 7, "msg": b"A" + b"\xff" * 32},
        {"t": "pake", "nameplate": 7, "msg": b"B" + b"\x02" * 32},
    ],
)
def test_garbage_before_any_exchange_leaves_the_inviter_waiting(message):
    inviter = new_inviter()
    with pytest.raises(PairingProtocolError):
        inviter.receive(message, NOW)
    assert inviter.state is InviterState.WAITING
    exchange(inviter, new_joiner())
    assert inviter.state is InviterState.DONE


def test_a_different_nameplate_is_named_in_the_error():
    with pytest.raises(PairingProtocolError, match="code number 7, not 8"):
        new_inviter().receive(new_joiner(PairingCode(8, CODE.words)).start()[0], NOW)


@pytest.mark.parametrize(
    "message",
    [{"t": "ident"}, {"t": "ident", "box": "text"}, {"t": "hello"}, {"t": "done", "box": b""}],
)
def test_garbage_after_the_exchange_started_burns_the_code(message):
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)
    with pytest.raises(PairingProtocolError):
        inviter.receive(message, NOW)
    assert inviter.state is InviterState.BURNED


def test_joiner_abandoning_after_pake_burns_the_code():
    inviter, joiner = new_inviter(), new_joiner()
    up_to_joiner_ident(inviter, joiner)
    with pytest.raises(PairingAborted, match="'changed my mind'") as error:
        inviter.receive({"t": "fail", "reason": "changed my mind"}, NOW)
    assert error.value.reply == []
    assert inviter.state is InviterState.BURNED


@settings(max_examples=200, deadline=None)
@given(
    message=st.dictionaries(
        st.sampled_from(["t", "msg", "nameplate", "box", "error", "reason"]),
        st.one_of(
            st.sampled_from(["pake", "ident", "fail", "wrong-code"]),
            st.binary(max_size=40),
            st.integers(),
            st.none(),
            st.text(max_size=5),
        ),
    )
)
def test_arbitrary_messages_only_ever_raise_pairing_errors(message):
    inviter, joiner = new_inviter(), new_joiner()
    joiner.start()
    for side in (inviter, joiner):
        with contextlib.suppress(PairingError):
            side.receive(message, NOW)


def test_joiner_misuse_and_messages_after_the_end():
    joiner = new_joiner()
    with pytest.raises(RuntimeError):
        joiner.receive({"t": "pake", "msg": b""}, NOW)
    exchange(new_inviter(), joiner)
    with pytest.raises(RuntimeError):
        joiner.start()
    with pytest.raises(PairingProtocolError):
        joiner.receive({"t": "fail", "reason": "late"}, NOW)
    assert joiner.state is JoinerState.DONE and joiner.result is not None


def test_inviter_refuses_members_that_cannot_travel():
    with pytest.raises(TypeError):
        Inviter(CODE, INVITER_CERT, "Living room", NOW, members=[object()])


# --- codes ------------------------------------------------------------------------------------


def scripted(*chunks: bytes):
    pending = list(chunks)

    def random_bytes(count: int) -> bytes:
        chunk = pending.pop(0)
        assert len(chunk) == count
        return chunk

    return random_bytes


def test_each_random_byte_picks_its_own_word():
    for value in range(256):
        code = generate_code(scripted(b"\x00\x00", bytes([value, 255 - value])))
        assert code.words == (WORDS[value], WORDS[255 - value])


def test_nameplate_rejection_sampling_keeps_it_uniform():
    first_rejected = (65536 - 65536 % MAX_NAMEPLATE).to_bytes(2, "big")
    assert generate_code(scripted(first_rejected, b"\x00\x00", b"\x00\x00")).nameplate == 1
    last_accepted = (65536 - 65536 % MAX_NAMEPLATE - 1).to_bytes(2, "big")
    assert generate_code(scripted(last_accepted, b"\x00\x00")).nameplate == MAX_NAMEPLATE


def chi_square(counts: Counter, categories: int, draws: int) -> float:
    expected = draws / categories
    return sum((counts.get(i, 0) - expected) ** 2 / expected for i in range(categories))


def test_generated_codes_are_uniform_over_words_and_nameplates():
    source = random.Random(20240601)
    draws = 100_000
    codes = [generate_code(source.randbytes) for _ in range(draws)]
    index = {word: i for i, word in enumerate(WORDS)}
    word_counts = Counter(index[word] for code in codes for word in code.words)
    nameplate_counts = Counter(code.nameplate - 1 for code in codes)
    # Chi-square bounds far in the tail (mean = categories - 1, sd = sqrt(2 * that)); a biased
    # mapping such as `byte % 200` lands far above them. The nameplate's modulo bias is too small
    # for a sample to see: the rejection-sampling test checks it exactly.
    assert chi_square(word_counts, 256, 2 * draws) < 255 + 6 * (2 * 255) ** 0.5
    assert chi_square(nameplate_counts, MAX_NAMEPLATE, draws) < 998 + 6 * (2 * 998) ** 0.5
    assert len(nameplate_counts) == MAX_NAMEPLATE


@pytest.mark.parametrize(
    "typed",
    [
        "7-guitar-orbit",
        "7 guitar orbit",
        "  7-Guitar-ORBIT\n",
        "7  guitar\t orbit",
        "7 - guitar - orbit",
        "007_guitar_orbit",
        "7-guitar orbit-",
    ],
)
def test_parse_is_tolerant(typed):
    code = parse_code(typed)
    assert code == CODE
    assert code.password == b"7-guitar-orbit"


@pytest.mark.parametrize(
    ("typed", "complaint"),
    [
        ("7-gutiar-orbit", "unknown word 'gutiar' (did you mean 'guitar'?)"),
        ("7-guitar-orbt", "unknown word 'orbt' (did you mean 'orbit'?)"),
        ("7-xylophone-qqq", "unknown word 'xylophone'; unknown word 'qqq'"),
        ("", "empty"),
        ("guitar-orbit-7", "starts with the number"),
        ("٣-guitar-orbit", "starts with the number"),
        ("0-guitar-orbit", "out of range"),
        ("1000-guitar-orbit", "out of range"),
        ("7-guitar", "2 words after the number, this one has 1"),
        ("7-guitar-orbit-ocean", "this one has 3"),
    ],
)
def test_parse_names_what_is_wrong(typed, complaint):
    with pytest.raises(InvalidCode) as error:
        parse_code(typed)
    assert complaint in str(error.value)


def test_code_objects_validate_themselves():
    with pytest.raises(InvalidCode):
        PairingCode(7, ("guitar", "gutiar"))
    with pytest.raises(InvalidCode):
        PairingCode(1000, ("guitar", "orbit"))


@given(
    nameplate=st.integers(min_value=1, max_value=MAX_NAMEPLATE),
    first=st.sampled_from(WORDS),
    second=st.sampled_from(WORDS),
    gaps=st.lists(st.text(alphabet=" -_\t", min_size=1, max_size=3), min_size=2, max_size=2),
    padding=st.text(alphabet=" \t\n", max_size=3),
    upper=st.lists(st.booleans(), min_size=20, max_size=20),
)
def test_format_parse_round_trip(nameplate, first, second, gaps, padding, upper):
    code = PairingCode(nameplate, (first, second))
    assert parse_code(str(code)) == code
    sloppy = padding + str(nameplate) + gaps[0] + first + gaps[1] + second + padding
    sloppy = "".join(c.upper() if up else c for c, up in zip(sloppy, upper * 3, strict=False))
    assert parse_code(sloppy) == code


# --- the word list ----------------------------------------------------------------------------


def test_edit_distance_counts_adjacent_swaps_as_one_edit():
    assert _edit_distance("kitten", "sitting") == 3
    assert _edit_distance("gutiar", "guitar") == 1
    assert _edit_distance("", "abc") == 3
    assert _edit_distance("abc", "abc") == 0
    assert _edit_distance("ca", "abc") == 3


def test_word_list_shape():
    assert len(WORDS) == 256 and len(set(WORDS)) == 256
    for word in WORDS:
        assert 3 <= len(word) <= 7 and set(word) <= set(string.ascii_lowercase), word


def test_every_two_words_are_at_least_three_edits_apart():
    """Stronger than 2: one typo then never makes another valid word (which would spend the
    code's one guess) and always has exactly one nearest word."""
    too_close = [
        (a, b)
        for i, a in enumerate(WORDS)
        for b in WORDS[i + 1 :]
        if abs(len(a) - len(b)) < 3 and _edit_distance(a, b) < 3
    ]
    assert too_close == []


def single_typos(word: str, alphabet: str = string.ascii_lowercase) -> set[str]:
    deletions = {word[:i] + word[i + 1 :] for i in range(len(word))}
    swaps = {word[:i] + word[i + 1] + word[i] + word[i + 2 :] for i in range(len(word) - 1)}
    replacements = {word[:i] + c + word[i + 1 :] for i in range(len(word)) for c in alphabet}
    insertions = {word[:i] + c + word[i:] for i in range(len(word) + 1) for c in alphabet}
    return (deletions | swaps | replacements | insertions) - {word}


@settings(max_examples=60, deadline=None)
@given(word=st.sampled_from(WORDS), pick=st.randoms(use_true_random=False))
def test_a_single_typo_is_never_a_word_and_is_suggested_back(word, pick):
    typos = sorted(single_typos(word))
    for typo in pick.sample(typos, 10):
        assert typo not in WORDS
        assert suggest_word(typo) == word
        with pytest.raises(InvalidCode, match=f"did you mean '{word}'"):
            parse_code(f"12 {typo} {word}")


def test_no_suggestion_for_something_unrelated():
    assert suggest_word("zzzzzzzz") is None
    assert suggest_word("a" * 1000) is None

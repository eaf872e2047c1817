"""Tests for p2psync.instance_names: labels from device names and back, and packets written by
zeroconf itself (DNSOutgoing) made to carry dotted labels whole, read back by zeroconf's parser."""

from __future__ import annotations

import hypothesis.strategies as st
from hypothesis import given
from zeroconf import (
    DNSAddress,
    DNSIncoming,
    DNSOutgoing,
    DNSPointer,
    DNSQuestion,
    DNSService,
    DNSText,
)
from zeroconf.const import (
    _CLASS_IN,
    _FLAGS_QR_QUERY,
    _FLAGS_QR_RESPONSE,
    _TYPE_A,
    _TYPE_ANY,
    _TYPE_PTR,
    _TYPE_SRV,
    _TYPE_TXT,
)

from p2psync.instance_names import (
    LEGACY_DOT_STAND_IN,
    MAX_LABEL_BYTES,
    SERVICE_TYPE,
    DottedLabels,
    device_name_from_label,
    instance_label,
    label_from_service_name,
    service_name_for,
)

DEVICE_A = "MFRGG-ZDFMZ-GQ3TS-A"
DEVICE_B = "NBSWY-3DPEB-3W64T-B"


def test_label_keeps_a_plain_name_and_appends_the_short_device_id() -> None:
    assert instance_label("Living room", DEVICE_A) == "Living room (MFRGGZDF)"


def test_label_keeps_dots_and_drops_control_characters() -> None:
    label = instance_label("Anna's iPad 2.0\n", DEVICE_A)
    assert label == "Anna's iPad 2.0 (MFRGGZDF)"
    assert device_name_from_label(label, DEVICE_A) == "Anna's iPad 2.0"


def test_a_label_announced_by_0_3_0_reads_back_with_its_dots() -> None:
    old = f"living room{LEGACY_DOT_STAND_IN}tv (MFRGGZDF)"
    assert device_name_from_label(old, DEVICE_A) == "living room.tv"


def test_label_of_a_long_non_ascii_name_fits_63_bytes_without_splitting_a_letter() -> None:
    label = instance_label("Küchen" * 20, DEVICE_A)
    assert len(label.encode()) <= MAX_LABEL_BYTES
    assert label.endswith(" (MFRGGZDF)")
    assert label.startswith("KüchenKüchen")


def test_same_name_on_two_devices_gives_two_labels() -> None:
    assert instance_label("Laptop", DEVICE_A) != instance_label("Laptop", DEVICE_B)


def test_empty_name_still_gives_a_label() -> None:
    assert instance_label(" \t", DEVICE_A) == "p2psync (MFRGGZDF)"


@given(st.text(max_size=80))
def test_any_name_gives_one_valid_label(name: str) -> None:
    label = instance_label(name, DEVICE_A)
    assert 0 < len(label.encode()) <= MAX_LABEL_BYTES
    assert not any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in label)


VISIBLE = st.characters(blacklist_categories=["Cc", "Cs", "Zs", "Zl", "Zp"])


@given(st.text(VISIBLE, min_size=1, max_size=12))
def test_short_names_survive_the_round_trip(name: str) -> None:
    if LEGACY_DOT_STAND_IN not in name:
        assert device_name_from_label(instance_label(name, DEVICE_A), DEVICE_A) == name


def _answer_packet(name: str) -> bytes:
    """What zeroconf writes to announce `name`: PTR, SRV and TXT, compressed as it does."""
    out = DNSOutgoing(_FLAGS_QR_RESPONSE)
    out.add_answer_at_time(DNSPointer(SERVICE_TYPE, _TYPE_PTR, _CLASS_IN, 120, name), 0)
    out.add_answer_at_time(
        DNSService(name, _TYPE_SRV, _CLASS_IN, 120, 0, 0, 22000, "p2psync-x.local."), 0
    )
    out.add_answer_at_time(DNSText(name, _TYPE_TXT, _CLASS_IN, 120, b"\x05id=AB"), 0)
    return out.packets()[0]


def test_zeroconf_alone_splits_a_dotted_label() -> None:
    """Why DottedLabels exists: if this fails, zeroconf learnt escaping and it can go."""
    name = service_name_for("living room.tv (MFRGGZDF)")
    pointer = DNSIncoming(_answer_packet(name)).answers()[0]
    assert isinstance(pointer, DNSPointer)
    assert b"\x0bliving room\x0dtv (MFRGGZDF)" in _answer_packet(name)


def test_joined_packet_carries_each_dotted_label_as_one_label() -> None:
    name = service_name_for("living room.tv (MFRGGZDF)")
    labels = DottedLabels()
    labels.remember(name)
    packet = labels.join(_answer_packet(name))
    assert b"\x0bliving room" not in packet
    assert packet.count(b"\x19living room.tv (MFRGGZDF)") == 1  # then compression pointers
    answers = DNSIncoming(packet).answers()
    assert [a.name for a in answers] == [SERVICE_TYPE, name, name]
    assert isinstance(answers[0], DNSPointer) and answers[0].alias == name
    assert isinstance(answers[1], DNSService) and answers[1].port == 22000


def test_a_name_whose_tail_was_written_before_is_joined_too() -> None:
    """An address record first: "local" is then a pointer inside our service type."""
    name = service_name_for("living room.tv (MFRGGZDF)")
    labels = DottedLabels()
    labels.remember(name)
    out = DNSOutgoing(_FLAGS_QR_RESPONSE)
    host = "p2psync-x.local."
    out.add_answer_at_time(DNSAddress(host, _TYPE_A, _CLASS_IN, 120, bytes([10, 0, 0, 2])), 0)
    out.add_answer_at_time(DNSText(name, _TYPE_TXT, _CLASS_IN, 120, b"\x05id=AB"), 0)
    written = out.packets()[0]
    assert b"\x08_p2psync\x04_tcp\xc0" in written  # the tail is a pointer
    answers = DNSIncoming(labels.join(written)).answers()
    assert [a.name for a in answers] == [host, name]
    assert b"\x19living room.tv (MFRGGZDF)" in labels.join(written)


def test_odd_dots_and_backslashes_survive() -> None:
    for label in ("a..b (X)", "St. (X)", "back\\slash.dot (X)", "1.2.3 (X)"):
        name = service_name_for(label)
        labels = DottedLabels()
        labels.remember(name)
        packet = labels.join(_answer_packet(name))
        pointer = DNSIncoming(packet).answers()[0]
        assert isinstance(pointer, DNSPointer)
        assert label_from_service_name(pointer.alias) == label
        assert bytes([len(label.encode())]) + label.encode() in packet


def test_questions_about_a_browsed_dotted_name_are_joined_too() -> None:
    name = service_name_for("Anna's iPad 2.0 (NBSWY3DP)")
    labels = DottedLabels()
    labels.remember(name)
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    out.add_question(DNSQuestion(name, _TYPE_ANY, _CLASS_IN))
    question = DNSIncoming(labels.join(out.packets()[0])).questions[0]
    assert question.name == name
    assert b"\x1aAnna's iPad 2.0 (NBSWY3DP)" in labels.join(out.packets()[0])


def test_plain_and_foreign_names_are_left_alone() -> None:
    labels = DottedLabels()
    labels.remember(service_name_for("Küche (MFRGGZDF)"))
    labels.remember("printer.office._ipp._tcp.local.")
    packet = _answer_packet("printer.office._ipp._tcp.local.")
    assert labels.join(packet) == packet


def test_a_forgotten_name_is_no_longer_joined() -> None:
    name = service_name_for("living room.tv (MFRGGZDF)")
    labels = DottedLabels()
    labels.remember(name)
    labels.forget(name)
    assert labels.join(_answer_packet(name)) == _answer_packet(name)

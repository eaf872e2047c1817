"""Values on the wire (p2psync/client/values.py): bytes tagged going out and decoded coming back,
what JSON cannot carry refused before sending, and a real daemon keeping bytes as bytes."""

import json
from pathlib import Path

import pytest

from p2psync.client import Client
from p2psync.client.values import decode_value, parse_line, request_line
from tests.daemons import DaemonProcess, running


def test_bytes_are_tagged_and_text_stays_utf8() -> None:
    line = request_line({"method": "put", "value": {"b": b"\x00\xff", "t": "ünï", "l": (1, 2)}})
    assert line.endswith(b"\n") and b"\\u" not in line  # UTF-8, not escapes
    assert json.loads(line) == {
        "method": "put",
        "value": {"b": {"$base64": "AP8="}, "t": "ünï", "l": [1, 2]},
    }
    assert json.loads(request_line({"v": bytearray(b"a")}))["v"] == {"$base64": "YQ=="}


def test_what_json_cannot_carry_is_refused() -> None:
    with pytest.raises(TypeError, match="type set"):
        request_line({"v": {1}})
    for number in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            request_line({"v": number})


def test_the_base64_tag_becomes_bytes_and_other_tags_stay() -> None:
    shown = {
        "b": {"$base64": "AAE="},
        "nested": [{"$base64": ""}],
        "ext": {"$ext": 5, "$base64": "AAE="},
        "float": {"$float": "NaN"},
        "not base64": {"$base64": "***"},
        "not text": {"$base64": 5},
    }
    assert decode_value(shown) == {
        "b": b"\x00\x01",
        "nested": [b""],
        "ext": {"$ext": 5, "$base64": "AAE="},
        "float": {"$float": "NaN"},
        "not base64": {"$base64": "***"},
        "not text": {"$base64": 5},
    }


def test_received_lines_must_be_json_in_utf8() -> None:
    assert parse_line(b'{"a": "\xc3\xbc"}\n') == {"a": "ü"}
    for broken in (b"<html>\n", b'{"a": "\xff"}\n'):
        with pytest.raises(ValueError):
            parse_line(broken)


def test_a_daemon_gives_bytes_back_as_bytes_wherever_they_are(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "kitchen")
    value = {"photo": bytes(range(256)), "thumbs": [b"", b"\x00" * 1000], "name": "cat"}
    with running(daemon), Client(daemon.socket_path) as client:
        client.put("c", "k", value)
        assert client.get("c", "k").value == value
        assert client.scan("c").items[0].value == value

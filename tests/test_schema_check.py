"""The check of control lines against the protocol's JSON Schema (tests/schema_check.py): what it
catches, and that the tests' daemons run under it."""

import json
from pathlib import Path
from typing import Any

import pytest

from tests.daemons import DaemonProcess, running, schema_checked
from tests.schema_check import ConnectionCheck, errors, event_errors

DEVICE = "V4TH3-AXRC4-7VFHX-COVCC-WBIP3-642MQ-AWHR7"


def line(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode() + b"\n"


def conversation(requests: list[bytes], answers: list[bytes]) -> list[str]:
    found: list[str] = []
    check = ConnectionCheck(found.append)
    for request in requests:
        check.received(request)
    for answer in answers:
        check.sent(answer)
    return found


WRITTEN = {"position": 3, "seq": 2, "hlc": 117667372855066624, "version": "AAAAAAAAAAAAAAAA"}


def test_valid_requests_and_answers_pass() -> None:
    assert (
        conversation(
            [line({"id": 1, "method": "put", "collection": "c", "key": "k", "value": None})],
            [line({"id": 1, "ok": True, "result": WRITTEN})],
        )
        == []
    )


def test_a_result_of_the_wrong_shape_is_caught() -> None:
    found = conversation(
        [line({"id": 1, "method": "put", "collection": "c", "key": "k", "value": 1})],
        [line({"id": 1, "ok": True, "result": {"position": 3}})],
    )
    assert len(found) == 1 and "'version' is a required property" in found[0]


def test_a_request_the_schema_refuses_must_be_refused_by_the_daemon() -> None:
    misspelt = line({"id": 1, "method": "scan", "collection": "c", "limt": 5})
    carried_out = conversation([misspelt], [line({"id": 1, "ok": True, "result": {}})])
    assert len(carried_out) == 1 and "carried out by the daemon" in carried_out[0]
    refused = {"id": 1, "ok": False, "error": {"code": "bad_request", "message": "unknown"}}
    assert conversation([misspelt], [line(refused)]) == []
    not_found = {"id": 1, "ok": False, "error": {"code": "not_found", "message": "?"}}
    assert "answered not_found" in conversation([misspelt], [line(not_found)])[0]


def test_events_after_a_watch_and_oversized_lines_are_followed() -> None:
    found = conversation(
        [
            b"x" * (2 * 1024 * 1024) + b"\n",
            b"\n",  # blank: no answer
            line({"id": 2, "method": "watch", "since": 0}),
            line({"id": 3, "method": "status"}),  # never answered: the connection streams
        ],
        [
            line({"id": None, "ok": False, "error": {"code": "too_large", "message": "m"}}),
            line({"id": 2, "ok": True, "result": {"position": 0}}),
            line({"event": "caught_up", "position": 0}),
            line({"event": "heartbeat"}),  # no position: wrong
        ],
    )
    assert len(found) == 1 and "an event of watch" in found[0]


def test_unknown_error_codes_and_events_break_the_schema() -> None:
    assert errors("response", {"id": 1, "ok": False, "error": {"code": "oops", "message": ""}})
    assert event_errors({"event": "change", "position": 1, "share": "default"})
    assert event_errors({"event": "frobnicated"})
    assert not event_errors({"event": "peer", "device": DEVICE, "name": None, "connected": False})
    members = {"event": "membership", "change": "share_members", "share": "s", "members": []}
    assert event_errors(members)  # no added, no removed
    assert event_errors({**members, "added": [], "removed": [DEVICE]})  # no names
    assert not event_errors({**members, "added": [], "removed": [DEVICE], "names": {DEVICE: None}})


@pytest.mark.skipif(not schema_checked(), reason="P2PSYNC_SCHEMA_CHECK is not 1")
def test_the_tests_daemons_run_under_the_check_and_fail_their_test_on_a_violation(
    tmp_path: Path,
) -> None:
    daemon = DaemonProcess(tmp_path, "a")
    with running(daemon):
        assert daemon.process is not None
        command = Path(f"/proc/{daemon.process.pid}/cmdline").read_bytes().split(b"\0")
        assert b"tests.schema_daemon" in command
        assert daemon.call("hello")["protocol"] == "1.0"
    daemon.violations_path.write_text("a line: something wrong\n")
    with pytest.raises(AssertionError, match="something wrong"):
        daemon.check_schema_violations()
    daemon.check_schema_violations()  # reported once

"""One control connection (p2psync/control/connection.py): framing, junk, oversized lines, limits,
pipelining, and what the daemon refuses before any method runs."""

import json
import os
import shlex
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from p2psync.control.lines import MAX_LINE_BYTES
from tests.control_harness import (
    Served,
    control_lines,
)
from tests.daemons import DaemonProcess, running

TIMEOUT = 10


async def test_junk_gets_stable_error_codes_and_the_connection_carries_on(served: Served) -> None:
    client = await served.connect()
    junk: list[tuple[bytes, str]] = [
        (b"this is not json\n", "bad_request"),
        (b"[1, 2]\n", "bad_request"),
        (b'{"id": 1}\n', "bad_request"),
        (b'{"method": 5}\n', "bad_request"),
        (b"NaN\n", "bad_request"),
        (b"\xff\xfe\n", "bad_request"),
        (b'{"method": "frobnicate"}\n', "unknown_method"),
        (b'{"method": "get", "collection": "c"}\n', "bad_request"),
        (b'{"method": "get", "collection": "c", "key": 5}\n', "bad_request"),
        (b'{"method": "get", "collection": "", "key": "k"}\n', "bad_request"),
        (b'{"method": "get", "collection": "c", "key": "k", "all": "yes"}\n', "bad_request"),
        (b'{"method": "put", "collection": "c", "key": "k"}\n', "bad_request"),
        (
            b'{"method": "put", "collection": "c", "key": "k", "value": 18446744073709551616}\n',
            "bad_request",
        ),
        (b'{"method": "put", "collection": "_devices", "key": "k", "value": 1}\n', "bad_request"),
        (
            b'{"method": "put", "collection": "c", "key": "k", "value": 1, "schema_version": 1.5}'
            b"\n",
            "bad_request",
        ),
        (b"[" * 100_000 + b"\n", "bad_request"),
    ]
    for line, code in junk:
        await client.send(line)
        response = await client.receive()
        assert response["ok"] is False
        assert response["error"]["code"] == code, (line[:60], response)
        assert "Traceback" not in response["error"]["message"]
    unknown = (await client.error("frobnicate"))["message"]
    assert "frobnicate" in unknown and "put" in unknown
    await client.send(b"\n   \n")  # blank lines are not requests
    assert (await client.result("status"))["device"] == served.household.device_id


async def test_oversized_line_is_skipped_and_the_next_request_is_answered(served: Served) -> None:
    client = await served.connect()
    huge = {"method": "put", "collection": "c", "key": "big", "value": "x" * MAX_LINE_BYTES}
    await client.send(json.dumps(huge).encode() + b"\n" + b'{"id": 2, "method": "status"}\n')
    too_large = await client.receive()
    assert too_large["ok"] is False and too_large["error"]["code"] == "too_large"
    assert too_large["id"] is None
    after = await client.receive()
    assert after["id"] == 2 and after["ok"] is True
    assert (await client.error("get", collection="c", key="big"))["code"] == "not_found"


async def test_a_junk_or_stuck_client_does_not_affect_another(served: Served) -> None:
    stuck = await served.connect()
    await stuck.send(b'{"method": "status", "padding": "' + b"y" * 500_000)  # never finished
    flooding = await served.connect()
    # thousands of requests whose answers it never reads: its own socket fills, nobody else's
    await flooding.stream.send_all(b'{"method":"id"}\n' * 3000 + b"garbage\n" * 100)
    good = await served.connect()
    for i in range(20):
        await good.result("put", collection="c", key=str(i), value=i)
        assert (await good.result("get", collection="c", key=str(i)))["value"] == i
    await stuck.stream.aclose()
    await flooding.stream.aclose()
    assert (await good.result("status"))["device"] == served.household.device_id


async def test_answers_a_client_does_not_read_are_not_computed_ahead(served: Served) -> None:
    replica = served.household.node.replica
    scans = []
    real_scan = replica.scan

    def scan(*args: Any) -> list:
        scans.append(args)
        return real_scan(*args)

    replica.scan = scan  # type: ignore[method-assign]
    writer = await served.connect()
    ops = [
        {"op": "put", "collection": "big", "key": f"{i:03}", "value": "v" * 1000}
        for i in range(100)
    ]
    await writer.result("transaction", ops=ops)
    greedy = await served.connect()
    await greedy.stream.send_all(b'{"method": "scan", "collection": "big"}\n' * 200)
    with trio.fail_after(TIMEOUT):
        await trio.testing.wait_all_tasks_blocked(cushion=0.05)
    # 200 pages of 100 kB were asked for; only those that fit in 1 MiB + the socket were made
    assert 5 < len(scans) < 40
    assert len((await writer.result("scan", collection="big"))["items"]) == 100


async def test_pipelined_writes_commit_in_order_and_reads_see_them(served: Served) -> None:
    client = await served.connect()
    requests: list[dict[str, Any]] = [
        {"id": i, "method": "put", "collection": "c", "key": "k", "value": i} for i in range(300)
    ]
    requests.append({"id": "read", "method": "get", "collection": "c", "key": "k"})
    await client.stream.send_all(b"".join(json.dumps(r).encode() + b"\n" for r in requests))
    responses = [await client.receive() for _ in requests]
    assert [r["id"] for r in responses] == [r["id"] for r in requests]
    positions = [r["result"]["position"] for r in responses[:-1]]
    assert positions == sorted(positions) and len(set(positions)) == 300
    assert responses[-1]["result"]["value"] == 299


def test_lone_surrogates_and_non_finite_numbers_are_bad_requests(tmp_path: Path) -> None:
    daemon = DaemonProcess(tmp_path, "a")
    put = b'"method":"put","collection":"c","key":"k"'
    cases = [
        (b'{"id":1,"method":"put","collection":"c","key":"\\ud800","value":1}', "'key'"),
        (b'{"id":2,"method":"put","collection":"\\udc00x","key":"k","value":1}', "'collection'"),
        (b'{"id":3,' + put + b',"value":1,"type":"\\uDBFF"}', "'type'"),
        (b'{"id":4,' + put + b',"value":{"a":["ok","\\ud800"]}}', "'value.a[1]'"),
        (b'{"id":5,' + put + b',"value":{"\\ud800":1}}', "a key in 'value'"),
        (b'{"id":6,"method":"get","collection":"c","key":"\\ud800"}', "'key'"),
        (
            b'{"id":7,"method":"transaction","ops":[{"op":"put","collection":"c","key":"a",'
            b'"value":1},{"op":"delete","collection":"c","key":"\\ud801"}]}',
            "'ops[1].key'",
        ),
        (b'{"id":"\\ud800","method":"status"}', "'id'"),
        (b'{"id":9,' + put + b',"value":1e400}', "1e400"),
        (b'{"id":10,' + put + b',"value":[1,-1e999]}', "-1e999"),
        (b'{"id":11,' + put + b',"value":NaN}', "NaN"),
        (b'{"id":12,' + put + b',"value":{"x":Infinity}}', "Infinity"),
        (b'{"id":13,' + put + b',"value":-Infinity}', "Infinity"),
        (b'{"id":14,"method":"scan","collection":"c","limit":1e400}', "1e400"),
    ]
    valid_pair = b'{"id":15,' + put + b',"value":"\\ud83d\\ude00 1e300","type":"\\u00e9"}'
    with running(daemon):
        answers = control_lines(daemon, [line + b"\n" for line, _ in cases] + [valid_pair + b"\n"])
        for (line, where), answer in zip(cases, answers, strict=False):
            assert answer["ok"] is False, (line, answer)
            assert answer["error"]["code"] == "bad_request", (line, answer)
            assert where in answer["error"]["message"], (line, answer)
        assert "'key' is not valid Unicode text" in answers[0]["error"]["message"]
        assert "finite" in answers[8]["error"]["message"]
        assert answers[7]["id"] == "\ud800"  # the id comes back, escaped, so it can be matched
        assert answers[-1]["ok"] is True, answers[-1]
        stored = daemon.call("get", collection="c", key="k")
        assert stored["value"] == "\U0001f600 1e300" and stored["type"] == "é"
        assert daemon.call("scan", collection="c")["items"] == [stored]  # nothing else got in
        logged = daemon.log()
    assert "Traceback" not in logged and "ERROR" not in logged


class DaemonOnASmallDisk(DaemonProcess):
    """A daemon whose state dir is a 2 MiB tmpfs, mounted in a private mount namespace of its
    own (unshare -m): the test's view of the file system is untouched, and the mount is gone
    with the daemon. A real ENOSPC, not a simulated one."""

    def command(self) -> list[str]:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        daemon = shlex.join(super().command())
        mount = (
            f"mount -t tmpfs -o size=2m,mode=0700 p2psync-test {shlex.quote(str(self.state_dir))}"
        )
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f"{mount} && exec {daemon}",
        ]


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare(1) to mount a small tmpfs in a private mount namespace",
)
def test_a_full_disk_answers_disk_full_and_reads_keep_working(tmp_path: Path) -> None:
    daemon = DaemonOnASmallDisk(tmp_path, "a")
    with running(daemon):
        daemon.call("put", collection="c", key="first", value="kept")
        chunk = "x" * 64 * 1024
        refused = None
        for i in range(200):  # 2 MiB fills after about 30 of these
            answer = control_lines(
                daemon,
                [
                    json.dumps(
                        {
                            "id": i,
                            "method": "put",
                            "collection": "c",
                            "key": f"k{i}",
                            "value": chunk,
                        }
                    ).encode()
                    + b"\n"
                ],
            )[0]
            if not answer["ok"]:
                refused = answer
                break
        assert refused is not None, "the disk never filled"
        assert refused["error"]["code"] == "disk_full", refused
        assert "disk" in refused["error"]["message"] and "full" in refused["error"]["message"]
        assert daemon.call("get", collection="c", key="first")["value"] == "kept"
        assert daemon.call("status")["records"] >= 2
        written = daemon.call("scan", collection="c", limit=1000)["items"]
        assert [item["key"] for item in written][:1] == ["first"]
        transaction = control_lines(
            daemon,
            [
                json.dumps(
                    {
                        "id": "t",
                        "method": "transaction",
                        "ops": [{"op": "put", "collection": "c", "key": "t", "value": chunk}],
                    }
                ).encode()
                + b"\n"
            ],
        )[0]
        assert transaction["error"]["code"] == "disk_full", transaction
        logged = daemon.log()
    assert "Traceback" not in logged and "ERROR" not in logged
    assert "the disk is full" in logged

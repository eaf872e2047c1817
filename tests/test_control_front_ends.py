"""The daemon's side of its control front-end, over a real node, replica and front-end process
(p2psync/control/front_ends.py)."""

import logging
import os
import signal
import subprocess

import trio

from tests.control_harness import TIMEOUT, start_served

EVERYWHERE: frozenset[int] = frozenset()


def front_end_pid() -> int:
    found = subprocess.run(
        ["pgrep", "-P", str(os.getpid()), "-f", "p2psync.control.front_end_process"],
        capture_output=True,
        text=True,
    ).stdout.split()
    assert len(found) == 1, found
    return int(found[0])


async def test_writes_through_the_front_end_commit_and_answer_as_the_daemon_does(tmp_path):
    async with trio.open_nursery() as nursery:
        served = await start_served(nursery, tmp_path, EVERYWHERE)
        _company = await served.connect()  # a client alone would be handed to the daemon
        client = await served.connect()
        written = await client.result("put", collection="c", key="a", value={"n": 1}, type="t")
        assert set(written) == {"position", "seq", "hlc", "version"}
        found = await client.result("get", collection="c", key="a")  # now the daemon's
        assert found["value"] == {"n": 1} and found["version"] == written["version"]
        other = await served.connect()
        refused = await other.error("put", collection="c", key="a", value=2, if_version="nope")
        assert refused["code"] == "conflict" and "c/a" in refused["message"]
        done = await other.result(
            "transaction",
            ops=[
                {"op": "put", "collection": "c", "key": "b", "value": 1},
                {"op": "delete", "collection": "c", "key": "a", "if_version": written["version"]},
            ],
        )
        assert done["position"] == written["position"] + 1
        assert await other.error("put", collection="c", key="x") == {
            "code": "bad_request",
            "message": "missing parameter 'value' (null is a value: send null)",
        }
        nursery.cancel_scope.cancel()


async def test_many_clients_pipelining_writes_get_every_answer_in_order(tmp_path):
    async with trio.open_nursery() as nursery:
        served = await start_served(nursery, tmp_path, EVERYWHERE)
        clients = [await served.connect() for _ in range(8)]

        async def write(number: int) -> None:
            client = clients[number]
            for n in range(50):
                await client.send(
                    {
                        "id": n,
                        "method": "put",
                        "collection": f"c{number}",
                        "key": f"{n}",
                        "value": n,
                    }
                )
            answers = [await client.receive() for _ in range(50)]
            assert [a["id"] for a in answers] == list(range(50))
            positions = [a["result"]["position"] for a in answers]
            assert positions == sorted(positions)

        async with trio.open_nursery() as writers:
            for number in range(8):
                writers.start_soon(write, number)
        listed = (await clients[0].result("collections"))["collections"]
        assert {c["collection"]: c["records"] for c in listed} == {f"c{n}": 50 for n in range(8)}
        nursery.cancel_scope.cancel()


async def test_if_the_front_end_dies_the_daemon_serves_the_socket_itself(tmp_path, caplog):
    caplog.set_level(logging.ERROR, "p2psync.control")
    async with trio.open_nursery() as nursery:
        served = await start_served(nursery, tmp_path, EVERYWHERE)
        watcher = await served.connect()
        await watcher.result("watch", collection="c")  # handed over: the daemon's from here
        assert (await watcher.receive())["event"] == "caught_up"
        writer = await served.connect()
        await writer.result("put", collection="c", key="a", value=1)
        assert [c["key"] for c in (await watcher.receive())["changes"]] == ["a"]
        os.kill(front_end_pid(), signal.SIGKILL)
        with trio.fail_after(TIMEOUT):
            while "serving the control socket here" not in caplog.text:
                await trio.sleep(0.01)
        later = await served.connect()
        await later.result("put", collection="c", key="b", value=2)
        event = await watcher.receive()  # a handed-over connection lives on
        assert [c["key"] for c in event["changes"]] == ["b"]
        nursery.cancel_scope.cancel()

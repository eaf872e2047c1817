"""The control socket's methods about the daemon itself (p2psync/control/methods_admin.py)."""

from p2psync import __version__
from p2psync.control.lines import MAX_IN_FLIGHT, MAX_LINE_BYTES
from p2psync.control.methods_data import SCAN_MAX_LIMIT
from p2psync.control.schema import PARAMETERS
from tests.control_harness import Served


async def test_id_status_and_peers_pass_through(served: Served) -> None:
    client = await served.connect()
    own = await client.result("id")
    replica = served.household.node.replica
    assert own == {
        "device": replica.device_id,
        "name": "kitchen",
        "cert": replica.identity.cert_pem.decode(),
    }
    assert (await client.result("status"))["device"] == replica.device_id
    assert await client.result("peers") == [{"device": "PEER", "connected": False}]


async def test_hello_tells_the_protocol_the_daemon_and_what_this_client_may_use(
    served: Served,
) -> None:
    client = await served.connect()
    hello = await client.result("hello", client="tests/1.0")
    assert hello["protocol"] == "1.0"
    assert hello["daemon"] == __version__
    assert hello["device"] == served.household.device_id
    assert hello["capabilities"] == sorted(hello["capabilities"])
    assert {
        "watch.caught_up",
        "watch.heartbeat",
        "watch.events",
        "if_version",
        "scan.deleted",
        "collections",
        "pipelining",
        "bytes.base64",
    } <= set(hello["capabilities"])
    assert hello["limits"]["max_line_bytes"] == MAX_LINE_BYTES
    assert hello["limits"]["max_pending_requests"] == MAX_IN_FLIGHT
    assert hello["limits"]["scan_max_limit"] == SCAN_MAX_LIMIT
    assert hello["limits"]["max_transaction_bytes"] == MAX_LINE_BYTES
    assert all(isinstance(v, int) and 0 < v < 2**53 for v in hello["limits"].values())
    # an admin may use every method the server has, hello itself included
    assert hello["methods"] == sorted(PARAMETERS)
    assert (await client.result("hello"))["methods"] == hello["methods"]  # client is optional
    assert (await client.error("hello", client=5))["code"] == "bad_request"

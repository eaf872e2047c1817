"""The control socket's methods about the daemon itself (p2psync/control/methods_admin.py)."""

from tests.control_harness import (
    Served,
)


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

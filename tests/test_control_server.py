"""The control server's dispatch (p2psync/control/server.py): ids echoed, unknown methods, failures
of methods turned into error codes."""

import pytest

from tests.control_harness import (
    Served,
)


async def test_response_echoes_any_json_id(served: Served) -> None:
    client = await served.connect()
    for request_id in [7, "x", {"nested": [1]}, None]:
        await client.send({"id": request_id, "method": "status"})
        assert (await client.receive())["id"] == request_id
    await client.send({"method": "status"})
    assert (await client.receive())["id"] is None


async def test_context_errors_become_codes_and_unexpected_ones_stay_internal(
    served: Served, caplog: pytest.LogCaptureFixture
) -> None:
    client = await served.connect()
    assert (await client.error("revoke", device="ABC"))["code"] == "not_found"
    forgotten = await client.error("forget", device="ABC")
    assert forgotten["message"] == "no device ABC in this household"
    assert (await client.error("trust", cert="junk"))["code"] == "bad_request"
    assert (await client.error("trust"))["code"] == "bad_request"
    assert (await client.error("reload"))["code"] == "conflict"
    served.household.status_error = RuntimeError("secret detail")
    internal = await client.error("status")
    assert internal["code"] == "internal" and "secret" not in internal["message"]
    assert "secret detail" in caplog.text
    served.household.status_error = None
    assert (await client.result("status"))["device"] == served.household.device_id

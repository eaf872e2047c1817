"""What control protocol 1.0 declares (p2psync/control/schema.py): parameters of every method,
unknown ones refused by name, and docs/control-protocol.schema.json held to the same table."""

import json
from pathlib import Path
from typing import Any

import pytest

from p2psync.control.errors import BAD_REQUEST, RequestError
from p2psync.control.schema import (
    OP_PARAMETERS,
    PARAMETERS,
    check_op_parameters,
    check_parameters,
)
from tests.control_harness import Served

SCHEMA_PATH = Path(__file__).parent.parent / "docs" / "control-protocol.schema.json"


def test_an_unknown_parameter_is_named_with_the_known_ones() -> None:
    check_parameters("scan", {"id": 1, "method": "scan", "collection": "c", "limit": 5})
    with pytest.raises(RequestError) as misspelt:
        check_parameters("scan", {"method": "scan", "collection": "c", "limt": 5})
    assert misspelt.value.code == BAD_REQUEST
    assert misspelt.value.message == (
        "unknown parameter 'limt' for scan; known: after, collection, deleted, limit, "
        "max_schema_version, min_schema_version, prefix, share, type"
    )
    with pytest.raises(RequestError, match=r"^unknown parameters 'a', 'b' for status; known: none"):
        check_parameters("status", {"method": "status", "a": 1, "b": None})  # null: still unknown
    check_op_parameters({"op": "put", "collection": "c", "key": "k", "value": 1, "if_version": ""})
    with pytest.raises(RequestError, match="unknown parameter 'share' for an op of a transaction"):
        check_op_parameters({"op": "put", "share": "s"})  # the share is the transaction's


async def test_every_method_refuses_an_unknown_parameter_before_it_runs(served: Served) -> None:
    client = await served.connect()
    for method in sorted(PARAMETERS):
        refused = await client.error(method, frobnicate=1)
        assert refused["code"] == "bad_request", method
        assert refused["message"].startswith(f"unknown parameter 'frobnicate' for {method};")
    # nothing ran: no pairing began, no watch turned the connection into a stream
    assert (await client.result("id"))["device"] == served.household.device_id


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


async def test_the_json_schema_lists_exactly_the_methods_the_server_dispatches(
    served: Served,
) -> None:
    client = await served.connect()
    unknown = await client.error("frobnicate")
    dispatched = set(unknown["message"].partition("known: ")[2].split(", "))
    assert "get" in dispatched and "grant" in dispatched  # the whole list, grants included
    found = schema()["$defs"]
    assert set(found["method"]["enum"]) == dispatched == set(PARAMETERS)
    for method in dispatched:
        for kind in ("request", "result"):
            assert f"{kind}.{method}" in found, (kind, method)
    requests = {rule["if"]["properties"]["method"]["const"] for rule in found["request"]["allOf"]}
    assert requests == dispatched


def test_the_json_schema_of_each_request_takes_the_declared_parameters() -> None:
    found = schema()["$defs"]
    for method, names in PARAMETERS.items():
        request = found[f"request.{method}"]
        assert request["additionalProperties"] is False, method
        assert set(request["properties"]) == {"id", "method", *names}, method
        assert request["properties"]["method"] == {"const": method}, method
    assert set(found["op"]["properties"]) == set(OP_PARAMETERS)

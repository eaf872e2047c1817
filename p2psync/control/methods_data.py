"""What the control socket's data methods mean: reading records, resolving conflicts, the ops of
writes (trio).

It owns `get`, `scan`, `conflicts` and `resolve`, and turns `put`, `delete` and `transaction`
requests into the ops the connection queues for group commit. Everything goes through the node
(the replica's database thread); parameters and JSON shapes are `api.py`'s. It holds no merge
rule and no access rule (an app's requests reach it only once `access.py` allowed them).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from .. import entry as entries
from ..entry import Op
from ..node import Node
from ..vectors import device_of
from .api import (
    collection_param,
    param,
    record_json,
    share_param,
    transaction_ops,
    write_op,
)
from .errors import BAD_REQUEST, CONFLICT, NOT_FOUND, RequestError

SCAN_DEFAULT_LIMIT = 100
SCAN_MAX_LIMIT = 1000
SCAN_PAGE_VALUE_BYTES = 4 * 1024 * 1024  # a scan page ends early rather than grow past this
CONFLICTS_LIMIT = 1000

Call = Callable[[dict[str, Any]], Awaitable[Any]]
WriteOps = Callable[[dict[str, Any]], list[Op]]


class DataMethods:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.calls: dict[str, Call] = {
            "get": self.get,
            "scan": self.scan,
            "conflicts": self.conflicts,
            "resolve": self.resolve,
        }
        # answered when their transaction commits (see connection.py)
        self.writes: dict[str, WriteOps] = {
            "put": lambda request: [write_op(request, "put")],
            "delete": lambda request: [write_op(request, "delete")],
            "transaction": transaction_ops,
        }

    async def get(self, request: dict[str, Any]) -> Any:
        share, collection = share_param(request), collection_param(request)
        key: str = param(request, "key", str)
        everything: bool = param(request, "all", bool, False)
        view = await self.node.call(self.node.replica.get, share, collection, key)
        if view is None:
            raise RequestError(NOT_FOUND, f"no record {collection}/{key}")
        if view.deleted and not view.conflict and not everything:
            raise RequestError(
                NOT_FOUND, f"{collection}/{key} was deleted (by {device_of(view.winner.actor)})"
            )
        return record_json(view, siblings=everything or view.conflict)

    async def scan(self, request: dict[str, Any]) -> Any:
        share, collection = share_param(request), collection_param(request)
        prefix: str = param(request, "prefix", str, "")
        after: str | None = param(request, "after", str, None)
        limit: int = param(request, "limit", int, SCAN_DEFAULT_LIMIT)
        if not 1 <= limit <= SCAN_MAX_LIMIT:
            raise RequestError(BAD_REQUEST, f"'limit' must be between 1 and {SCAN_MAX_LIMIT}")
        views = await self.node.call(
            self.node.replica.scan, share, collection, prefix, after, limit
        )
        items: list[dict[str, Any]] = []
        size = 0
        for view in views:
            size += len(view.winner.value or b"")
            if items and size > SCAN_PAGE_VALUE_BYTES:
                break
            items.append(record_json(view, siblings=False))
        more = len(views) == limit or len(items) < len(views)
        return {"items": items, "next": items[-1]["key"] if more and items else None}

    async def conflicts(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        collection = collection_param(request) if request.get("collection") is not None else None
        views = await self.node.call(
            self.node.replica.conflicts, share, collection, CONFLICTS_LIMIT + 1
        )
        return {
            "items": [record_json(v, siblings=True) for v in views[:CONFLICTS_LIMIT]],
            "more": len(views) > CONFLICTS_LIMIT,
        }

    async def resolve(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        pick = param(request, "pick", dict, None)
        if (pick is None) == ("value" not in request):
            raise RequestError(BAD_REQUEST, "give either 'value' or 'pick': {origin, hlc}")
        if pick is None:
            op = write_op(request, "put")
        else:
            op = await self._picked_op(share, request, pick)
        done = await self.node.commit(share, [op])
        return {"position": done.lseq, "seq": done.seq, "hlc": done.hlc}

    async def _picked_op(self, share: str, request: dict[str, Any], pick: dict[str, Any]) -> Op:
        collection = collection_param(request, writing=True)
        key: str = param(request, "key", str)
        origin: str = param(pick, "origin", str)
        hlc: int = param(pick, "hlc", int)
        view = await self.node.call(self.node.replica.get, share, collection, key)
        if view is None:
            raise RequestError(NOT_FOUND, f"no record {collection}/{key}")
        for sibling in view.siblings:
            if device_of(sibling.actor) == origin and sibling.hlc == hlc:
                if sibling.deleted:
                    return Op(entries.DELETE, collection, key, None, sibling.meta)
                return Op(entries.PUT, collection, key, sibling.value, sibling.meta)
        raise RequestError(
            CONFLICT,
            f"{collection}/{key} has no version from {origin} at hlc {hlc} (any more); "
            "look again with get and all=true",
        )

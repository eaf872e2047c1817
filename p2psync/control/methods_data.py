"""What the control socket's data methods mean: reading records, resolving conflicts, the ops of
writes (trio).

It owns `get`, `scan`, `collections`, `conflicts`, `history` and `resolve`, and turns `put`,
`delete` and `transaction` requests into what the connection queues for group commit (ops, and
the versions they expect). Everything goes through the node
(the replica's database thread); parameters and JSON shapes are `api.py`'s. It holds no merge
rule and no access rule (an app's requests reach it only once `access.py` allowed them).
"""

from collections.abc import Awaitable, Callable
from typing import Any

from .. import entry as entries
from ..backup.history import Version, history_page
from ..entry import Op
from ..merge import dot_version
from ..node import Node
from ..vectors import device_of
from .api import commit_json, meta_fields, record_json, type_filter_param
from .errors import BAD_REQUEST, CONFLICT, NOT_FOUND, RequestError
from .values import json_from_value, jsonable
from .writes import (
    WRITE_REQUESTS,
    Write,
    collection_param,
    param,
    share_param,
    write_op,
)

SCAN_DEFAULT_LIMIT = 100
SCAN_MAX_LIMIT = 1000
SCAN_PAGE_VALUE_BYTES = 4 * 1024 * 1024  # a scan page ends early rather than grow past this
CONFLICTS_LIMIT = 1000
HISTORY_DEFAULT_LIMIT = 100
HISTORY_MAX_LIMIT = 1000

Call = Callable[[dict[str, Any]], Awaitable[Any]]
WriteRequest = Callable[[dict[str, Any]], Write]
# whether a client may read a collection of a share, None: anything of it (an app: its grants);
# where a Covers is None instead, the client is an admin and may read everything
Covers = Callable[[str, str | None], bool]


class DataMethods:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.calls: dict[str, Call] = {
            "get": self.get,
            "scan": self.scan,
            "collections": self.collections,
            "conflicts": self.conflicts,
            "history": self.history,
            "resolve": self.resolve,
        }
        # answered when their transaction commits (see connection.py)
        self.writes: dict[str, WriteRequest] = dict(WRITE_REQUESTS)

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
        deleted: bool = param(request, "deleted", bool, False)
        if not 1 <= limit <= SCAN_MAX_LIMIT:
            raise RequestError(BAD_REQUEST, f"'limit' must be between 1 and {SCAN_MAX_LIMIT}")
        wanted = type_filter_param(request)
        views = await self.node.call(
            self.node.replica.scan, share, collection, prefix, after, limit, deleted
        )
        items: list[dict[str, Any]] = []
        size = 0
        last = None  # the last key looked at: a filtered page goes on after it
        for view in views:
            if wanted is None or wanted.matches(view.winner.meta):
                size += len(view.winner.value or b"")
                if items and size > SCAN_PAGE_VALUE_BYTES:
                    break
                items.append(record_json(view, siblings=False))
            last = view.key
        more = len(views) == limit or last != (views[-1].key if views else None)
        return {"items": items, "next": last if more else None}

    async def collections(self, request: dict[str, Any], covers: Covers | None = None) -> Any:
        """The user collections of a share with their live records: one pass over the share's
        records (not for polling). With `covers`, only the collections it lets through."""
        share = share_param(request)
        counted = await self.node.call(self.node.replica.collections, share)
        return {
            "collections": [
                {"collection": collection, "records": records}
                for collection, records in counted
                if covers is None or covers(share, collection)
            ]
        }

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

    async def history(self, request: dict[str, Any]) -> Any:
        """The writes of one record that the log still holds, newest (by hlc) first, each
        marked when it is one of the record's current versions, and which one wins. Reads the
        share's log back a page per database call (no index by record: see history.py)."""
        share, collection = share_param(request), collection_param(request)
        key: str = param(request, "key", str)
        limit: int = param(request, "limit", int, HISTORY_DEFAULT_LIMIT)
        if not 1 <= limit <= HISTORY_MAX_LIMIT:
            raise RequestError(BAD_REQUEST, f"'limit' must be between 1 and {HISTORY_MAX_LIMIT}")
        node = self.node
        view = await node.call(node.replica.get, share, collection, key)
        found: list[Version] = []
        before: int | None = None
        while len(found) <= limit:
            page, before = await node.call(
                history_page, node.replica.store, share, collection, key, before
            )
            found += page
            if before is None:
                break
        if view is None and not found:
            raise RequestError(NOT_FOUND, f"no record {collection}/{key}")
        current = {s.version for s in view.siblings} if view is not None else set()
        winner = view.winner.version if view is not None else None
        found.sort(key=lambda v: (v.hlc, v.position), reverse=True)
        return {
            "versions": [_version_json(v, current, winner) for v in found[:limit]],
            "more": len(found) > limit,
        }

    async def resolve(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        pick = param(request, "pick", dict, None)
        if (pick is None) == ("value" not in request):
            raise RequestError(BAD_REQUEST, "give either 'value' or 'pick': {version}")
        if pick is None:
            op = write_op(request, "put")
        else:
            op = await self._picked_op(share, request, pick)
        # a picked sibling was written before: only a new value meets the schema manifest
        return commit_json(await self.node.commit(share, [op], checked=pick is None))

    async def _picked_op(self, share: str, request: dict[str, Any], pick: dict[str, Any]) -> Op:
        """The op that writes the picked sibling again. `pick` may be a whole sibling as `get`
        shows it: its `version` is what counts ({origin, hlc} is the deprecated way, for
        sibling objects without one)."""
        collection = collection_param(request, writing=True)
        key: str = param(request, "key", str)
        version: str | None = param(pick, "version", str, None)
        if version is None:
            origin: str = param(pick, "origin", str)
            hlc: int = param(pick, "hlc", int)
        view = await self.node.call(self.node.replica.get, share, collection, key)
        if view is None:
            raise RequestError(NOT_FOUND, f"no record {collection}/{key}")
        for sibling in view.siblings:
            if version is not None:
                picked = sibling.version == version
            else:
                picked = device_of(sibling.actor) == origin and sibling.hlc == hlc
            if picked:
                if sibling.deleted:
                    return Op(entries.DELETE, collection, key, None, sibling.meta)
                return Op(entries.PUT, collection, key, sibling.value, sibling.meta)
        which = f"version {version!r}" if version is not None else f"version from {origin}"
        which += "" if version is not None else f" at hlc {hlc}"
        raise RequestError(
            CONFLICT,
            f"{collection}/{key} has no {which} (any more); its versions are "
            f"{', '.join(repr(s.version) for s in view.siblings)}: look again with get",
        )


def _version_json(found: Version, current: set[str], winner: str | None) -> dict[str, Any]:
    version = dot_version(found.actor, found.seq)
    deleted = found.op.kind == entries.DELETE
    return {
        "version": version,
        "origin": device_of(found.actor),
        "hlc": found.hlc,
        "position": found.position,
        "deleted": deleted,
        "value": None if deleted else json_from_value(found.op.value),
        **jsonable(meta_fields(found.op.meta)),
        "current": version in current,
        "winner": version == winner,
    }

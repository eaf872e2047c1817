"""The control socket's schema methods: `schema_get` and `schema_set` (trio).

Each checks its parameters, asks the replica on the database thread and, for `schema_set`,
commits the manifest record through the node, so it is signed, logged and synced like any write.
It owns no rule: the manifest's are `manifest.py`'s, reading it from the share `rules.py`'s.
"""

from collections.abc import Awaitable, Callable
from typing import Any

from ..control.errors import BAD_REQUEST, RequestError
from ..control.writes import param, share_param
from ..node import Node
from .manifest import ManifestError, check_type_name

Call = Callable[[dict[str, Any]], Awaitable[Any]]


def schema_calls(node: Node) -> dict[str, Call]:
    commands = SchemaCommands(node)
    return {"schema_get": commands.get, "schema_set": commands.set}


class SchemaCommands:
    def __init__(self, node: Node) -> None:
        self.node = node

    async def get(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        replica = self.node.replica

        def read() -> dict[str, Any]:
            replica.require_share(share)
            return replica.schema_manifest(share).json()

        return {"share": share, **await self.node.call(read)}

    async def set(self, request: dict[str, Any]) -> Any:
        share = share_param(request)
        name: str = param(request, "type", str)
        current: int = param(request, "current", int)
        oldest: int | None = param(request, "oldest_written", int, None)
        json_schema: dict[str, Any] | None = param(request, "json_schema", dict, None)
        try:
            check_type_name(name)
        except ManifestError as exc:
            raise RequestError(BAD_REQUEST, str(exc)) from None
        ops, updated = await self.node.call(
            self.node.replica.schema_set_ops, share, name, current, oldest, json_schema
        )
        commit = await self.node.commit(share, ops)
        return {"share": share, **updated.json(), "version": commit.version}

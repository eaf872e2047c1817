"""The control socket's share methods: create, add, remove, leave, list and show (trio).

Each method checks its parameters, asks the replica for the ops on the database thread and
commits them through the node, so the change is signed, logged and synced like any write, and
the peers' sessions follow it (see `peers.PeerManager._follow_share_members`). It owns no rule
of its own: who may do what is `members.py` and `rules.py`.
"""

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from ..control.errors import BAD_REQUEST, NOT_FOUND, RequestError
from ..control.writes import param
from ..daemon_status import lag
from ..device_names import find_device
from ..membership import DeviceRecord
from ..node import Node
from .members import ShareNameError, check_share_name

if TYPE_CHECKING:
    from ..peer_state import PeerState


class ShareContext(Protocol):
    """What the share methods need from the daemon."""

    @property
    def node(self) -> Node: ...
    @property
    def device_id(self) -> str: ...
    @property
    def members(self) -> Mapping[str, DeviceRecord]: ...
    def peer_state(self, device_id: str) -> "tuple[PeerState | None, bool]": ...


Call = Callable[[dict[str, Any]], Awaitable[Any]]


def share_calls(context: ShareContext) -> dict[str, Call]:
    commands = ShareCommands(context)
    return {
        "share_create": commands.create,
        "share_add": commands.add,
        "share_remove": commands.remove,
        "share_leave": commands.leave,
        "share_list": commands.list,
        "share_show": commands.show,
    }


def share_name_param(request: dict[str, Any]) -> str:
    share: str = param(request, "share", str)
    try:
        return check_share_name(share)
    except ShareNameError as exc:
        raise RequestError(BAD_REQUEST, str(exc)) from None


class ShareCommands:
    def __init__(self, context: ShareContext) -> None:
        self.context = context

    @property
    def node(self) -> Node:
        return self.context.node

    async def create(self, request: dict[str, Any]) -> Any:
        share = share_name_param(request)
        ops = await self.node.call(self.node.replica.share_create_ops, share)
        await self.node.commit(share, ops)
        return {"share": share, "members": [self._device_json(self.context.device_id)]}

    async def add(self, request: dict[str, Any]) -> Any:
        share, device_id = await self._share_and_device(request)
        already = await self.node.call(self.node.replica.is_share_member, share, device_id)
        if not already:
            ops = await self.node.call(self.node.replica.share_add_ops, share, device_id)
            await self.node.commit(share, ops)
        return {**self._device_json(device_id), "share": share, "already": already}

    async def remove(self, request: dict[str, Any]) -> Any:
        share, device_id = await self._share_and_device(request, revoked_too=True)
        return await self._remove(share, device_id)

    async def leave(self, request: dict[str, Any]) -> Any:
        share = share_name_param(request)
        await self._remove(share, self.context.device_id)
        return {"share": share}

    async def _remove(self, share: str, device_id: str) -> dict[str, Any]:
        ops = await self.node.call(self.node.replica.share_remove_ops, share, device_id)
        await self.node.commit(share, ops)
        return {**self._device_json(device_id), "share": share}

    async def list(self, request: dict[str, Any]) -> Any:
        replica = self.node.replica

        def summaries() -> list[dict[str, object]]:
            return [replica.share_summary(share) for share in replica.shares()]

        found = await self.node.call(summaries)
        household = len([d for d in self.context.members.values() if not d.revoked])
        for summary in found:
            if summary["open"]:
                summary["members"] = household
        return {"shares": found}

    async def show(self, request: dict[str, Any]) -> Any:
        share = param(request, "share", str)
        replica = self.node.replica

        def read() -> tuple[dict[str, object], dict[str, Any], dict[str, int]]:
            replica.require_share(share)
            summary = {**replica.share_summary(share), "bytes": replica.store.share_bytes(share)}
            return summary, dict(replica.share_records(share)), replica.summary_vector(share)

        summary, records, ours = await self.node.call(read)
        if summary["open"]:
            listed = [d for d, r in self.context.members.items() if not r.revoked]
            added_by = {d: r.added_by for d, r in self.context.members.items()}
        else:
            listed = [d for d, r in records.items() if not r.removed]
            added_by = {d: r.added_by for d, r in records.items()}
        members = []
        for device_id in sorted(listed, key=lambda d: (self._name(d), d)):
            you = device_id == self.context.device_id
            row = {**self._device_json(device_id), "you": you, "added_by": added_by.get(device_id)}
            row.update(_sync_json(share, ours, *self.context.peer_state(device_id), you))
            members.append(row)
        removed = [
            {**self._device_json(d), "removed_by": r.removed_by}
            for d, r in sorted(records.items())
            if r.removed
        ]
        return {**summary, "members": members, "removed": removed}

    async def _share_and_device(
        self, request: dict[str, Any], revoked_too: bool = False
    ) -> tuple[str, str]:
        share = share_name_param(request)
        text: str = param(request, "device", str)
        # from the database, not context.members: that follows a moment later, and a share_add
        # right after a trust must find the device
        devices = {d.device_id: d for d in await self.node.call(self.node.replica.devices)}
        try:
            device_id = find_device(text, {d: r.name for d, r in devices.items()})
        except LookupError as exc:
            raise RequestError(NOT_FOUND, str(exc)) from None
        record = devices.get(device_id)
        if record is None or (record.revoked and not revoked_too):
            raise RequestError(NOT_FOUND, f"no device {text!r} in this household")
        return share, device_id

    def _name(self, device_id: str) -> str:
        record = self.context.members.get(device_id)
        return record.name if record is not None and record.name else device_id

    def _device_json(self, device_id: str) -> dict[str, Any]:
        return {"device": device_id, "name": self._name(device_id)}


def _sync_json(
    share: str, ours: dict[str, int], state: "PeerState | None", connected: bool, you: bool
) -> dict[str, Any]:
    """How far a member is from us in this share, as far as its session showed."""
    if you:
        return {"online": True, "in_sync": True, "they_lack": 0, "we_lack": 0}
    if state is None or share not in state.peer_vectors:
        return {"online": connected, "in_sync": None, "they_lack": None, "we_lack": None}
    they_lack, we_lack = lag(state, share, ours)
    return {
        "online": connected,
        "in_sync": share in state.in_sync,
        "they_lack": they_lack,
        "we_lack": we_lack,
    }

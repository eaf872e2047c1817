"""The control socket file (p2psync/control/socket_file.py): mode, group, stale sockets, removal."""

import grp
import os
import socket
import stat
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing

from p2psync.control.server import serve_control
from p2psync.control.socket_file import ControlSocketError
from tests.control_harness import (
    Connection,
    Served,
)


async def test_socket_is_created_with_mode_and_parent_directory(served: Served) -> None:
    found = os.stat(served.path)
    assert stat.S_ISSOCK(found.st_mode)
    assert stat.S_IMODE(found.st_mode) == 0o660
    assert served.path.parent.is_dir()  # created on demand


async def test_stale_socket_is_replaced_but_a_live_one_is_refused(
    served: Served, tmp_path: Path
) -> None:
    with pytest.raises(ControlSocketError, match="another p2psync daemon"):
        await serve_control(served.path, served.household, group=None)
    stale_path = tmp_path / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(stale_path))
    stale.close()
    not_a_socket = tmp_path / "file.sock"
    not_a_socket.write_text("keep me")
    with pytest.raises(ControlSocketError, match="not a socket"):
        await serve_control(not_a_socket, served.household, group=None)
    assert not_a_socket.read_text() == "keep me"
    async with trio.open_nursery() as nursery:
        await nursery.start(partial(serve_control, stale_path, served.household, group=None))
        client = Connection(await trio.open_unix_socket(str(stale_path)))
        assert (await client.result("id"))["name"] == "kitchen"
        nursery.cancel_scope.cancel()
    assert not stale_path.exists()  # removed at shutdown


async def test_socket_goes_to_the_group_or_warns(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    own_group = grp.getgrgid(os.getgid()).gr_name
    missing_group = "p2psync-no-such-group"
    async with trio.open_nursery() as nursery:
        for name, group in (("own.sock", own_group), ("missing.sock", missing_group)):
            await nursery.start(
                partial(serve_control, tmp_path / name, served.household, mode=0o600, group=group)
            )
        assert os.stat(tmp_path / "own.sock").st_gid == os.getgid()
        assert stat.S_IMODE(os.stat(tmp_path / "missing.sock").st_mode) == 0o600
        nursery.cancel_scope.cancel()
    assert f"group '{missing_group}' does not exist" in caplog.text


async def test_a_socket_already_in_the_group_is_not_chowned_and_no_false_warning(
    served: Served, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch
) -> None:
    """As under systemd: the daemon runs with Group=p2psync, so the socket is the group's from
    the start, and the system call filter refuses every chown."""
    tried: list[int] = []

    def refused(path: object, uid: int, gid: int) -> None:
        tried.append(gid)
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr("p2psync.control.socket_file.os.chown", refused)
    own_group = grp.getgrgid(os.getgid()).gr_name
    other = next(g for g in grp.getgrall() if g.gr_gid != os.getgid())
    async with trio.open_nursery() as nursery:
        for name, group in (("own.sock", own_group), ("other.sock", other.gr_name)):
            await nursery.start(
                partial(serve_control, tmp_path / name, served.household, group=group)
            )
        nursery.cancel_scope.cancel()
    assert tried == [other.gr_gid], "no chown for the group the socket already has"
    warnings = [r.getMessage() for r in caplog.records if "cannot give" in r.getMessage()]
    assert warnings == [
        f"cannot give {tmp_path / 'other.sock'} to group {other.gr_name!r} (this user is not a "
        f"member, or the system refuses chown here); it stays with group {own_group!r}"
    ]

"""Who a control client is (p2psync/access/credentials.py), asked of the real kernel and the
real user database; clients of other uids are real processes that changed user."""

import grp
import json
import os
import pwd
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from p2psync.access import credentials
from p2psync.access.credentials import Credentials, identify, parse_uid_map, peer_credentials
from tests.apps import (
    APP_GID,
    APP_UID,
    DROP_AND_CONNECT,
    app_command,
    needs_root,
    needs_unshare,
    python_env,
)

CONNECT_AND_WAIT = DROP_AND_CONNECT + "connection.recv(1)\n"


def group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory other users can reach (pytest's tmp_path is root's, 0700)."""
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        yield Path(top)


def listening(path: Path) -> socket.socket:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o777)
    server.listen(1)
    server.settimeout(20)
    return server


def test_the_kernel_names_the_process_at_the_other_end() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours, theirs:
        found = peer_credentials(ours)
    assert (found.pid, found.uid, found.gid) == (os.getpid(), os.geteuid(), os.getegid())
    assert set(found.groups) <= set(os.getgroups()) | {os.getegid()}
    assert set(os.getgroups()) - {os.getegid()} <= set(found.groups)


@needs_root
def test_a_client_is_known_by_the_credentials_it_connected_with(shared_dir: Path) -> None:
    users = group_id("users")
    if users is None:
        pytest.skip("needs a group named users")
    path = shared_dir / "probe.sock"
    with listening(path) as server:
        client = subprocess.Popen(
            app_command(CONNECT_AND_WAIT, path, APP_UID, APP_GID, [4243, users])
        )
        try:
            connection, _ = server.accept()
            with connection:
                found = peer_credentials(connection)
        finally:
            client.kill()
            client.wait()
    assert (found.pid, found.uid, found.gid) == (client.pid, APP_UID, APP_GID)
    assert set(found.groups) == {4243, users}
    app = identify(found, None)
    assert (app.uid, app.user, app.admin, app.identified) == (APP_UID, None, False, True)
    assert str(app) == f"app uid {APP_UID}"
    # a process holding the control group is an admin, whatever the user database says
    assert identify(found, "users").admin


def test_root_and_the_daemons_own_user_are_admins() -> None:
    own = Credentials(pid=1, uid=os.geteuid(), gid=os.getegid(), groups=())
    assert identify(own, None).admin
    root = identify(Credentials(pid=1, uid=0, gid=0, groups=()), "no-such-group-here")
    assert root.admin and root.user == "root"


def test_root_and_the_daemons_own_user_are_admins_by_rule_without_a_lookup() -> None:
    for uid in (0, os.geteuid()):
        found = Credentials(pid=7, uid=uid, gid=APP_GID, groups=())
        assert credentials.admin_by_rule(found) == identify(found, "no-such-group-here")
    assert (
        credentials.admin_by_rule(Credentials(pid=7, uid=APP_UID, gid=APP_GID, groups=())) is None
    )


def test_a_user_listed_in_the_control_group_is_an_admin_without_holding_it() -> None:
    try:
        daemon_user = pwd.getpwnam("daemon")
    except KeyError:
        pytest.skip("needs the system user daemon")
    primary = grp.getgrgid(daemon_user.pw_gid).gr_name
    other = Credentials(pid=1, uid=daemon_user.pw_uid, gid=APP_GID, groups=())
    if daemon_user.pw_uid != os.geteuid():
        assert not identify(other, None).admin
    listed = identify(other, primary)
    assert listed.admin and listed.user == "daemon"
    assert credentials.user_is_admin(daemon_user.pw_uid, primary)


def test_an_unknown_uid_is_an_app_without_a_name() -> None:
    app = identify(Credentials(pid=1, uid=APP_UID, gid=APP_GID, groups=()), None)
    assert not app.admin and app.user is None


def test_users_are_found_by_name_or_uid() -> None:
    assert credentials.find_user("root") == (0, "root")
    assert credentials.find_user(0) == (0, "root")
    assert credentials.find_user(APP_UID) == (APP_UID, None)  # a uid need not have a user
    with pytest.raises(LookupError, match="no user 'no-such-user-x' on this device"):
        credentials.find_user("no-such-user-x")


def test_the_admins_are_described_for_messages() -> None:
    text = credentials.admins_text("no-such-group-here")
    own_group = grp.getgrgid(os.getegid()).gr_name
    assert text.startswith("root") and text.endswith(f"members of group {own_group}")


def test_a_uid_map_tells_which_users_a_namespace_shows() -> None:
    assert parse_uid_map("         0          0 4294967295\n") == [(0, 2**32 - 1)]
    systemd = parse_uid_map("0 0 1\n998 998 1\n")  # PrivateUsers=yes for user 998
    assert systemd == [(0, 1), (998, 1)]
    assert parse_uid_map("junk\n") == []
    # this process: whatever its namespace, the answer agrees with its own map
    whole = sum(count for _, count in parse_uid_map(Path("/proc/self/uid_map").read_text()))
    assert credentials.uids_hidden() == (whole < 2**32 - 1)
    assert credentials.uid_visible(os.geteuid())


IDENTIFY_IN_NAMESPACE = (
    "import json, os, socket, sys\n"
    "from p2psync.access import credentials\n"
    "server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "server.bind(sys.argv[1])\n"
    "os.chmod(sys.argv[1], 0o777)\n"
    "server.listen(1)\n"
    "print('ready', flush=True)\n"
    "connection, _ = server.accept()\n"
    "peer = credentials.identify(credentials.peer_credentials(connection), None)\n"
    "print(json.dumps({'uid': peer.uid, 'identified': peer.identified, 'admin': peer.admin,\n"
    "                  'hidden': credentials.uids_hidden(),\n"
    "                  'visible': credentials.uid_visible(4242)}), flush=True)\n"
)


NAMESPACE_MAPPING_ONLY_ROOT = ["unshare", "--user", "--map-root-user"]


@needs_unshare
def test_a_user_namespace_that_hides_users_makes_their_clients_unidentified(
    shared_dir: Path,
) -> None:
    path = shared_dir / "namespaced.sock"
    # like systemd's PrivateUsers=yes: a namespace that maps only root
    server = subprocess.Popen(
        [*NAMESPACE_MAPPING_ONLY_ROOT, sys.executable, "-c", IDENTIFY_IN_NAMESPACE, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env=python_env(),
        cwd="/",
    )
    try:
        assert server.stdout is not None
        assert server.stdout.readline() == "ready\n", "the namespaced server did not start"
        client = subprocess.Popen(app_command(CONNECT_AND_WAIT, path, APP_UID, APP_GID, []))
        seen = json.loads(server.stdout.readline())
        client.kill()
        client.wait()
    finally:
        server.kill()
        server.wait()
    assert seen == {
        "uid": 65534,  # the overflow uid: every unmapped user looks like this
        "identified": False,
        "admin": False,
        "hidden": True,
        "visible": False,
    }

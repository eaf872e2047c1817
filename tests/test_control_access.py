"""Apps on the control socket (p2psync/control/access.py): a real daemon, and clients that are
real processes of other uids, held to their grants; root stays an admin with every right."""

import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from p2psync.access.grants import ADMIN_METHODS, Access, method_access
from p2psync.client import ControlError
from tests.apps import APP_GID, APP_UID, AppClient, needs_root, python_env
from tests.daemons import DaemonProcess, running

pytestmark = needs_root


class AppsDaemon(DaemonProcess):
    """A test daemon on 127.0.0.1 whose control socket lets apps in (control.apps = true), in a
    directory other users can reach, running the worktree's code."""

    def __init__(self, directory: Path, name: str, *, apps: bool = True) -> None:
        self.apps = apps
        super().__init__(directory, name)

    def write_config(self) -> None:
        super().write_config()
        text = self.config_path.read_text()
        self.config_path.write_text(
            text.replace("[control]\n", f"[control]\napps = {str(self.apps).lower()}\n", 1)
        )

    def start(self, wait: bool = True, env: dict[str, str] | None = None) -> "AppsDaemon":
        super().start(wait, {**python_env(), **(env or {})})
        return self


@pytest.fixture(scope="module")
def shared_dir() -> Iterator[Path]:
    """Other users must reach the socket: pytest's tmp_path is root's and 0700."""
    with tempfile.TemporaryDirectory(dir="/tmp") as top:
        os.chmod(top, 0o755)
        yield Path(top)


@pytest.fixture(scope="module")
def daemon(shared_dir: Path) -> Iterator[AppsDaemon]:
    started = AppsDaemon(shared_dir, "a")
    with running(started):
        yield started
    assert "Traceback" not in started.log()


def app(daemon: DaemonProcess, uid: int, groups: tuple[int, ...] = ()) -> AppClient:
    return AppClient(daemon.socket_path, uid=uid, gid=APP_GID, groups=groups)


def seed(daemon: DaemonProcess, share: str, collection: str, key: str, value: Any) -> None:
    """Written by root (an admin), in a share it creates first if need be."""
    if share not in {s["share"] for s in daemon.call("share_list")["shares"]}:
        daemon.call("share_create", share=share)
    daemon.call("put", share=share, collection=collection, key=key, value=value)


def forbidden(client: AppClient, method: str, **params: Any) -> str:
    error = client.error(method, **params)
    assert error["code"] == "forbidden", error
    message: str = error["message"]
    return message


# -------------------------------------------------------------------------------------------------


def test_the_socket_is_open_to_every_user_only_with_apps(
    daemon: AppsDaemon, shared_dir: Path
) -> None:
    assert stat.S_IMODE(os.stat(daemon.socket_path).st_mode) == 0o666
    closed = AppsDaemon(shared_dir, "closed", apps=False)
    with running(closed):
        assert stat.S_IMODE(os.stat(closed.socket_path).st_mode) == 0o660
        with app(closed, APP_UID) as outsider, pytest.raises(AssertionError, match="Permission"):
            outsider.call("id")


def test_a_read_only_grant_reads_its_share_and_nothing_else(daemon: AppsDaemon) -> None:
    seed(daemon, "shopping", "list", "milk", {"w": 640})
    seed(daemon, "parents", "notes", "secret", "x")
    done = daemon.call("grant", app=str(APP_UID), share="shopping", read_only=True)
    assert (done["uid"], done["share"], done["collection"], done["read_only"]) == (
        APP_UID,
        "shopping",
        None,
        True,
    )
    assert done["note"] is None  # the socket is open to apps, its directory reachable
    with app(daemon, APP_UID) as client:
        assert client.result("get", share="shopping", collection="list", key="milk")["value"] == {
            "w": 640
        }
        scanned = client.result("scan", share="shopping", collection="list")
        assert [item["key"] for item in scanned["items"]] == ["milk"]
        assert client.result("conflicts", share="shopping")["items"] == []
        versions = client.result("history", share="shopping", collection="list", key="milk")
        assert [v["value"] for v in versions["versions"]] == [{"w": 640}]
        refused = forbidden(client, "put", share="shopping", collection="list", key="k", value=1)
        assert refused == (
            f"app uid {APP_UID} may only read collection 'list' of share 'shopping': its grant is "
            "read-only"
        )
        forbidden(client, "delete", share="shopping", collection="list", key="milk")
        assert forbidden(client, "get", share="parents", collection="notes", key="secret") == (
            f"app uid {APP_UID} has no grant for share 'parents'"
        )
        forbidden(client, "get", collection="notes", key="secret")  # the default share
        forbidden(client, "history", share="parents", collection="notes", key="secret")
        forbidden(client, "get", share="shopping", collection="_devices", key="x")
        for method, params in [
            ("trust", {"cert": "x"}),
            ("revoke", {"device": "x"}),
            ("forget", {"device": "x"}),
            ("grant", {"app": str(APP_UID), "share": "parents"}),
            ("revoke_grant", {"app": str(APP_UID), "share": "shopping"}),
            ("grants", {}),
            ("peers", {}),
            ("nearby", {}),
            ("reload", {}),
            ("join", {"code": "7-guitar-orbit"}),
            ("pair", {}),
            ("backup", {"with_key": True}),
            ("share_create", {"share": "mine"}),
            ("share_add", {"share": "shopping", "device": "x"}),
            ("share_remove", {"share": "shopping", "device": "x"}),
            ("share_leave", {"share": "shopping"}),
            ("share_list", {}),
            ("share_show", {"share": "shopping"}),
        ]:
            assert "only admins of this device may" in forbidden(client, method, **params)
        # the watch of a read-only grant, from the start
        client.send({"id": "w", "method": "watch", "since": 0, "share": "shopping"})
        assert client.receive()["ok"] is True
        event = client.receive()
        assert (event["share"], event["changes"][0]["key"]) == ("shopping", "milk")
    assert daemon.call("get", share="shopping", collection="list", key="milk")["value"] == {
        "w": 640
    }


def test_a_read_write_grant_writes_its_collection_and_no_other(daemon: AppsDaemon) -> None:
    uid = APP_UID + 1
    seed(daemon, "family", "recipes", "soup", "leeks")
    daemon.call("grant", app=uid, share="family", collection="shopping")
    with app(daemon, uid) as client:
        client.result("put", share="family", collection="shopping", key="milk", value=2)
        client.result("delete", share="family", collection="shopping", key="milk")
        client.result(
            "transaction",
            share="family",
            ops=[
                {"op": "put", "collection": "shopping", "key": "eggs", "value": 6},
                {"op": "put", "collection": "shopping", "key": "tea", "value": 1},
            ],
        )
        refused = forbidden(
            client,
            "transaction",
            share="family",
            ops=[
                {"op": "put", "collection": "shopping", "key": "bread", "value": 1},
                {"op": "delete", "collection": "recipes", "key": "soup"},
            ],
        )
        assert refused.startswith(f"ops[1]: app uid {uid} has no grant for collection 'recipes'")
        forbidden(client, "put", share="family", collection="recipes", key="soup", value="none")
        forbidden(client, "get", share="family", collection="recipes", key="soup")
        refusal = forbidden(client, "conflicts", share="family")  # every collection: not its own
        assert "only some collections of share 'family'" in refusal
        assert client.result("conflicts", share="family", collection="shopping")["items"] == []
        resolved = client.result(
            "resolve", share="family", collection="shopping", key="eggs", value=12
        )
        assert resolved["position"] > 0
    # nothing of the refused transaction was written
    with pytest.raises(ControlError) as missing:
        daemon.call("get", share="family", collection="shopping", key="bread")
    assert missing.value.code == "not_found"
    assert daemon.call("get", share="family", collection="recipes", key="soup")["value"] == "leeks"
    assert daemon.call("get", share="family", collection="shopping", key="eggs")["value"] == 12


def test_an_app_reads_the_schema_manifest_of_its_share_and_may_not_set_it(
    daemon: AppsDaemon,
) -> None:
    uid = APP_UID + 7
    seed(daemon, "manifests", "todos", "seed", 1)
    daemon.call(
        "schema_set", share="manifests", type="todo", current=1, json_schema={"type": "object"}
    )
    daemon.call("grant", app=uid, share="manifests", collection="todos")
    with app(daemon, uid) as client:
        (todo,) = client.result("schema_get", share="manifests")["types"]
        assert todo["type"] == "todo" and todo["current"] == 1
        assert "only admins of this device may" in forbidden(
            client, "schema_set", share="manifests", type="x", current=1
        )
        reserved = client.error(
            "put", share="manifests", collection="_schema", key="todo", value={}
        )
        assert reserved["code"] == "bad_request" and "schema_set" in reserved["message"]
        refused = client.error(
            "put", share="manifests", collection="todos", key="k", value=[], type="todo"
        )
        assert refused["code"] == "invalid_value"
        forbidden(client, "schema_get", share="default")
    # newer versions in a collection the app may not read are none of its business
    daemon.call(
        "put",
        share="manifests",
        collection="secret",
        key="k",
        value=1,
        type="note",
        schema_version=7,
    )
    with app(daemon, uid) as reader:
        reader.result(
            "hello", reads={"todo": {"max_schema_version": 1}, "note": {"max_schema_version": 1}}
        )
        reader.result("watch", share="manifests")
        assert reader.receive()["event"] == "caught_up"
        daemon.call("schema_set", share="manifests", type="todo", current=2)
        told = reader.receive()
        assert (told["event"], told["type"], told["schema_version"]) == ("outdated", "todo", 2)


def test_a_watch_shows_only_the_changes_its_grants_cover(daemon: AppsDaemon) -> None:
    uid = APP_UID + 2
    seed(daemon, "home", "plants", "fern", "water")
    daemon.call("grant", app=uid, share="home", collection="plants", read_only=True)
    with app(daemon, uid) as client:
        assert "no grant for share 'elsewhere'" in forbidden(client, "watch", share="elsewhere")
        assert "no grant for collection 'diary'" in forbidden(
            client, "watch", share="home", collection="diary"
        )
        client.send({"id": "w", "method": "watch"})  # every share, from now: filtered
        started = client.receive()
        assert started["ok"] is True
        caught_up = {"event": "caught_up", "position": started["result"]["position"]}
        assert client.receive() == caught_up
        seed(daemon, "home", "diary", "monday", "private")  # not covered
        seed(daemon, "elsewhere", "plants", "cactus", "dry")  # another share
        daemon.call(
            "transaction",
            share="home",
            ops=[
                {"op": "put", "collection": "diary", "key": "tuesday", "value": "private"},
                {"op": "put", "collection": "plants", "key": "ivy", "value": "shade"},
            ],
        )
        seed(daemon, "home", "plants", "rose", "sun")
        first, second = client.receive(), client.receive()
    assert [(c["collection"], c["key"]) for c in first["changes"]] == [("plants", "ivy")]
    assert [(c["collection"], c["key"]) for c in second["changes"]] == [("plants", "rose")]
    assert second["position"] - first["position"] == 1  # positions stay this daemon's own


def test_an_app_without_a_grant_sees_only_who_this_device_is(daemon: AppsDaemon) -> None:
    uid = APP_UID + 3
    with app(daemon, uid) as client:
        own = client.result("id")
        assert own["device"] == daemon.device_id and "BEGIN CERTIFICATE" in own["cert"]
        status = client.result("status")
        assert set(status) == {"device", "name", "version", "access"}
        assert status["access"] == {
            "admin": False,
            "uid": uid,
            "user": None,
            "identified": True,
            "grants": [],
        }
        forbidden(client, "get", collection="notes", key="a")
        forbidden(client, "scan", collection="notes")
        forbidden(client, "put", collection="notes", key="a", value=1)
        assert "no grant for any share" in forbidden(client, "watch")
        # junk is still a bad request, unknown methods still unknown
        assert client.error("frobnicate")["code"] == "unknown_method"
        assert client.error("get", collection=5, key="a")["code"] == "bad_request"


def test_a_revoked_grant_stops_an_open_connection_at_its_next_request(daemon: AppsDaemon) -> None:
    uid = APP_UID + 4
    seed(daemon, "garden", "beds", "north", "carrots")
    daemon.call("grant", app=uid, share="garden")
    with app(daemon, uid) as client:
        assert client.result("status")["access"]["grants"] == [
            {"uid": uid, "user": None, "share": "garden", "collection": None, "read_only": False}
        ]
        client.result("get", share="garden", collection="beds", key="north")
        removed = daemon.call("revoke_grant", app=uid, share="garden")["removed"]
        assert [g["share"] for g in removed] == ["garden"]
        forbidden(client, "get", share="garden", collection="beds", key="north")


def test_an_app_is_told_its_methods_and_sees_only_what_its_grants_cover(
    daemon: AppsDaemon,
) -> None:
    uid = APP_UID + 7
    seed(daemon, "kitchen", "recipes", "soup", "leeks")
    seed(daemon, "kitchen", "stock", "salt", 1)
    daemon.call("grant", app=uid, share="kitchen", collection="recipes", read_only=True)
    with app(daemon, uid) as client:
        hello = client.result("hello", client="test-app/1")
        assert {"hello", "id", "status", "get", "collections", "watch", "put"} <= set(
            hello["methods"]
        )
        assert not set(hello["methods"]) & ADMIN_METHODS
        listed = client.result("collections", share="kitchen")["collections"]
        assert listed == [{"collection": "recipes", "records": 1}]  # not stock
        assert "no grant for share 'default'" in forbidden(client, "collections")
        refusal = forbidden(client, "watch", share="kitchen", events=["change", "peer"])
        assert "may not watch 'peer' events" in refusal
        client.send({"id": "w", "method": "watch", "share": "kitchen", "events": ["conflict"]})
        assert client.receive()["ok"] is True  # conflict events of what it may read: allowed
    assert "get" in daemon.call("hello")["methods"] and "grant" in daemon.call("hello")["methods"]


def test_root_and_holders_of_the_control_group_keep_every_right(daemon: AppsDaemon) -> None:
    seed(daemon, "nobody-granted", "c", "k", 1)  # root: any share, no grant needed
    assert daemon.call("peers") == []
    assert isinstance(daemon.call("grants")["grants"], list)
    # the daemon's group (it names none that exists here) is the control group: a process
    # holding it is an admin though its uid has no grant
    with app(daemon, APP_UID + 5, groups=(os.getegid(),)) as admin:
        admin.result("put", share="nobody-granted", collection="c", key="k", value=2)
        assert admin.result("peers") == []
        assert "peers_known" in admin.result("status")  # the full status, not the app's
    assert daemon.call("get", share="nobody-granted", collection="c", key="k")["value"] == 2


def test_grants_are_managed_by_user_name_or_uid_with_clear_errors(daemon: AppsDaemon) -> None:
    assert daemon.error("grant", app="nobody", share="tools")["code"] == "not_found"
    daemon.call("share_create", share="tools")
    done = daemon.call("grant", app="nobody", share="tools", collection="hammers", read_only=True)
    assert (done["uid"], done["user"]) == (65534, "nobody")
    listed = daemon.call("grants")["grants"]
    assert {"uid": 65534, "user": "nobody", "share": "tools", "collection": "hammers"}.items() <= (
        next(g for g in listed if g["uid"] == 65534).items()
    )
    seed(daemon, "tools", "hammers", "claw", 1)
    with AppClient(daemon.socket_path, uid=65534, gid=65534) as client:
        assert client.result("get", share="tools", collection="hammers", key="claw")["value"] == 1
        assert "app uid 65534 (nobody) may only read" in forbidden(
            client, "put", share="tools", collection="hammers", key="claw", value=2
        )
    for params, code in [
        ({"app": "no-such-user-here", "share": "tools"}, "not_found"),
        ({"share": "tools"}, "bad_request"),
        ({"app": "nobody"}, "bad_request"),
        ({"app": "nobody", "share": ""}, "bad_request"),
        ({"app": "nobody", "share": "tools", "collection": "_devices"}, "bad_request"),
        ({"app": "nobody", "share": "tools", "read_only": "yes"}, "bad_request"),
        ({"app": "root", "share": "tools"}, "bad_request"),
        ({"app": -5, "share": "tools"}, "bad_request"),
    ]:
        with pytest.raises(ControlError) as refused:
            daemon.call("grant", **params)
        assert refused.value.code == code, (params, refused.value)
    with pytest.raises(ControlError) as whole:
        daemon.call("revoke_grant", app="nobody", share="tools", collection="saws")
    assert whole.value.code == "not_found"
    assert "app uid 65534 (nobody) has no grant for collection 'saws'" in whole.value.message
    assert daemon.call("revoke_grant", app="65534", share="tools")["removed"][0]["user"] == "nobody"
    assert all(g["uid"] != 65534 for g in daemon.call("grants")["grants"])


def test_every_method_the_daemon_serves_is_classified(daemon: AppsDaemon) -> None:
    with pytest.raises(ControlError) as unknown:
        daemon.call("frobnicate")
    known = unknown.value.message.partition("known: ")[2].split(", ")
    assert {"grant", "revoke_grant", "grants", "get", "put", "watch"} <= set(known)
    for method in known:
        assert method_access(method) is not Access.ADMIN or method in ADMIN_METHODS, method


def test_grants_survive_a_restart(shared_dir: Path) -> None:
    restarted = AppsDaemon(shared_dir, "restarted")
    uid = APP_UID + 6
    with running(restarted):
        seed(restarted, "albums", "covers", "blue", "#00f")
        restarted.call("grant", app=uid, share="albums", read_only=True)
        assert restarted.stop() == 0
        restarted.start()
        assert [g["share"] for g in restarted.call("grants")["grants"]] == ["albums"]
        with app(restarted, uid) as client:
            got = client.result("get", share="albums", collection="covers", key="blue")
            assert got["value"] == "#00f"
            forbidden(client, "put", share="albums", collection="covers", key="blue", value=0)


def test_the_daemon_says_when_apps_still_cannot_reach_the_socket(tmp_path: Path) -> None:
    hidden = AppsDaemon(tmp_path, "hidden")  # pytest's tmp_path: 0700, root's
    with running(hidden):
        done = hidden.call("grant", app=APP_UID, share="default", read_only=True)
        assert "other users cannot reach" in done["note"] and "o+x" in done["note"]
        assert "other users cannot reach" in hidden.call("grants")["note"]
    assert "control.apps is on, but other users cannot reach" in hidden.log()

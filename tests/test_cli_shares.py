"""`p2psync share` and --share: parsing, help, tables, and the commands against daemons."""

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import trio

from p2psync import cli_shares
from p2psync.cli import build_parser, main
from p2psync.cli_shares import (
    share_added_message,
    share_created_message,
    share_left_message,
    share_lines,
    share_removed_message,
    shares_table,
)
from p2psync.identity import DeviceIdentity
from tests.daemons import DaemonProcess, introduce, running
from tests.test_cli import (
    ATTIC,
    KITCHEN,
    ROOT,
    Answer,
    command_line,
    read_all,
    read_until,
    recording,
    run_cli,
    serve_scripted,
)

GARAGE = "QWERT-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI"  # not a valid id: only a name to show


def sloppy(device_id: str) -> str:
    """A device id typed the way people type it."""
    return device_id.lower().replace("-", " ")


SLOPPY_ATTIC = sloppy(ATTIC)


# parsing and help -----------------------------------------------------------------------------


def test_every_share_subcommand_parses() -> None:
    parser = build_parser()
    for argv, run, share in (
        (["share", "create", "parents"], cli_shares.cmd_share_create, "parents"),
        (["share", "add", "parents", ATTIC], cli_shares.cmd_share_add, "parents"),
        (["share", "remove", "parents", ATTIC], cli_shares.cmd_share_remove, "parents"),
        (["share", "leave", "parents"], cli_shares.cmd_share_leave, "parents"),
        (["share", "show", "parents", "--json"], cli_shares.cmd_share_show, "parents"),
    ):
        args = parser.parse_args(argv)
        assert (args.run, args.share) == (run, share), argv
    assert parser.parse_args(["share", "list"]).run is cli_shares.cmd_share_list
    assert parser.parse_args(["share", "add", "parents", "Anna laptop"]).device == "Anna laptop"


def test_share_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["share"],
        ["share", "create"],
        ["share", "list", "parents"],
        ["share", "add", "parents"],
        ["share", "frobnicate", "parents"],
    ):
        assert main(argv) == 2, argv
        assert "usage: p2psync" in capsys.readouterr().err


def test_share_help_says_what_who_and_how(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert re.search(
        r"\n    share +create shares, add and remove their members\n", capsys.readouterr().out
    )
    assert main(["share", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    for told in (
        "synced only between the devices in them",
        "Any member of a share may add other devices of the household to it and remove members",
        "A removed device keeps the copy it had, gets no more updates of the share and cannot "
        "add itself back",
        "--share NAME on put, get, rm, ls, watch, conflicts and resolve",
        "examples: p2psync share create parents p2psync share add parents TPSDW",
        "exit codes:",
    ):
        assert told in shown
    for subcommand, told, example in (
        ("create", "Names are 1 to 64 characters", "p2psync share create shopping"),
        ("add", "Any member of the share may add any device", "p2psync share add shopping tpsdw"),
        ("remove", "cannot add itself back", "p2psync share remove parents TPSDW"),
        ("leave", "Nobody leaves `default`", "p2psync share leave parents"),
        ("list", "marked `left`: its copy stays here", "p2psync share list --json"),
        ("show", "BEHIND counts the entries it has", "p2psync share show default --json"),
    ):
        assert main(["share", subcommand, "--help"]) == 0
        shown = " ".join(capsys.readouterr().out.split())
        assert told in shown and "examples:" in shown and example in shown, subcommand


# tables and messages --------------------------------------------------------------------------

SHARES = [
    {"share": "default", "members": 3, "records": 120, "bytes": 53122, "member": True},
    {"share": "parents", "members": 2, "records": 4, "bytes": 812, "member": True},
    {"share": "old", "members": 1, "records": 9, "bytes": 2 << 20, "member": False},
]
SHOWN: dict[str, Any] = {
    "share": "parents",
    "records": 1200,
    "bytes": 53122,
    "member": True,
    "members": [
        {
            "device": KITCHEN,
            "name": "kitchen",
            "you": True,
            "added_by": None,
            "online": True,
            "in_sync": None,
            "we_lack": None,
            "they_lack": None,
        },
        {
            "device": ATTIC,
            "name": "attic",
            "you": False,
            "added_by": KITCHEN,
            "online": True,
            "in_sync": False,
            "we_lack": 12,
            "they_lack": 1500,
        },
        {
            "device": GARAGE,
            "name": "garage\x1b[2J",
            "you": False,
            "added_by": "V4TH3AXRC47VFHXCOVCCWBIP3642MQAWHR7",  # an id, as sloppy as they come
            "online": False,
            "in_sync": None,
            "we_lack": None,
            "they_lack": None,
        },
    ],
}


def test_shares_table() -> None:
    lines = shares_table(SHARES)
    assert lines[0].split() == ["SHARE", "MEMBERS", "RECORDS", "SIZE"]
    assert lines[1] == "default        3      120  51.9 KiB"
    assert lines[2] == "parents        2        4     812 B"
    assert lines[3] == "old            1        9   2.0 MiB  left: keeps its copy, gets no updates"
    unknown = shares_table([{"share": "x\x07y"}])[1].split()
    assert unknown == ["x?y", "-", "-", "-"]  # fields the daemon left out, a bell defused


def test_share_show_lists_members_with_state_and_sync() -> None:
    lines = share_lines(SHOWN)
    assert lines[0] == "share parents: 3 members, 1,200 records, 51.9 KiB"
    assert lines[1] == ""
    assert lines[2].split() == ["NAME", "DEVICE", "STATE", "SYNC", "BEHIND", "AHEAD", "ADDED", "BY"]
    assert lines[3].split() == ["kitchen", "V4TH3", "this", "device", "-", "-", "-", "-"]
    attic = ["attic", "TPSDW", "online", "out", "of", "sync", "12", "1,500", "kitchen"]
    assert lines[4].split() == attic
    assert lines[5].split() == ["garage?[2J", "QWERT", "offline", "-", "-", "-", "kitchen"]
    in_sync = {**SHOWN["members"][1], "in_sync": True, "added_by": "someone\x1b"}
    left = share_lines({**SHOWN, "member": False, "members": [in_sync]})
    assert left[1] == "this device left it or was removed: it keeps its copy, gets no updates"
    assert left[4].split()[2:5] == ["online", "in", "sync"]
    assert left[4].endswith("  someone?")  # not an id nor a member: shown as it is, defused
    assert share_lines({"share": "empty"})[0] == "share empty: 0 members, ? records"


def test_share_messages() -> None:
    created = share_created_message(
        {"share": "parents", "members": [{"device": KITCHEN, "name": "kitchen"}]}
    )
    assert created.startswith(f"Created share parents; its members: kitchen ({KITCHEN}).")
    assert "`p2psync share add parents DEVICE`" in created
    done = {"share": "parents", "device": ATTIC, "name": "attic"}
    assert share_added_message({**done, "already": False}).startswith(
        f"Added attic ({ATTIC}) to share parents: it gets the share's records"
    )
    assert share_added_message({**done, "already": True}) == (
        f"attic ({ATTIC}) is already in share parents."
    )
    removed = share_removed_message(done)
    assert removed.startswith(f"Removed attic ({ATTIC}) from share parents: it keeps the copy")
    assert "cannot add itself back" in removed
    left = share_left_message({"share": "parents"})
    assert left.startswith("This device left share parents: it keeps its copy")


# the commands against a scripted daemon -------------------------------------------------------

ANSWERS: dict[str, Any] = {
    "share_create": {"share": "parents", "members": [{"device": KITCHEN, "name": "kitchen"}]},
    "share_add": {"share": "parents", "device": ATTIC, "name": "attic", "already": False},
    "share_remove": {"share": "parents", "device": ATTIC, "name": "attic"},
    "share_leave": {"share": "parents"},
    "share_list": {"shares": SHARES},
    "share_show": SHOWN,
}


async def test_each_subcommand_asks_the_daemon_and_prints_for_people_or_programs(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    requests: list[dict[str, Any]] = []
    answers: dict[str, Answer] = {
        method: recording(requests, result) for method, result in ANSWERS.items()
    }
    await serve_scripted(nursery, path, answers)
    for argv, request, shown in (
        (["create", "parents"], {"share": "parents"}, "Created share parents; its members"),
        (["add", "parents", "attic"], {"share": "parents", "device": "attic"}, "Added attic"),
        (["remove", "parents", ATTIC], {"share": "parents", "device": ATTIC}, "Removed attic"),
        (["leave", "parents"], {"share": "parents"}, "This device left share parents"),
        (["list"], {}, "SHARE    MEMBERS  RECORDS      SIZE\n"),
        (["show", "parents"], {"share": "parents"}, "share parents: 3 members"),
    ):
        method = f"share_{argv[0]}"
        requests.clear()
        assert await trio.to_thread.run_sync(main, ["--socket", str(path), "share", *argv]) == 0
        assert capsys.readouterr().out.startswith(shown), argv
        [sent] = requests
        assert sent["method"] == method
        assert {k: v for k, v in sent.items() if k not in ("id", "method")} == request
        argv = ["--socket", str(path), "share", *argv, "--json"]
        assert await trio.to_thread.run_sync(main, argv) == 0
        assert json.loads(capsys.readouterr().out) == ANSWERS[method]


async def test_a_daemon_without_shares_is_told_apart(
    nursery: trio.Nursery, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "s.sock"
    await serve_scripted(nursery, path, {"status": lambda _: {}})
    assert await trio.to_thread.run_sync(main, ["--socket", str(path), "share", "list"]) == 1
    assert "older than this command" in capsys.readouterr().err


# the commands against real daemons (they need the daemon side of shares) ----------------------


class Cli:
    """The CLI, run in a worker thread against one daemon."""

    def __init__(self, daemon: DaemonProcess, capsys: pytest.CaptureFixture[str]) -> None:
        self.daemon = daemon
        self.capsys = capsys

    async def __call__(self, *argv: str) -> tuple[int, str, str]:
        with trio.fail_after(20):
            argv = ("--socket", str(self.daemon.socket_path), *argv)
            code = await trio.to_thread.run_sync(main, list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    async def ok(self, *argv: str) -> str:
        code, out, err = await self(*argv)
        assert code == 0, err
        return out

    async def refused(self, *argv: str, exit_code: int = 1) -> str:
        """What the CLI says when the daemon refuses: exit 1 (4 for not_found), nothing on
        stdout."""
        code, out, err = await self(*argv)
        assert (code, out) == (exit_code, ""), (argv, code, out, err)
        assert err.startswith("p2psync: ")
        return err


def rows_by_name(lines: list[str]) -> dict[str, list[str]]:
    return {line.split()[0]: line.split()[1:] for line in lines}


async def test_share_create_add_show_remove_leave_on_a_real_daemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = DaemonProcess(tmp_path, "a"), DaemonProcess(tmp_path, "b")
    with running(a, b):
        introduce(a, b)
        a_id, b_id = a.device_id, b.device_id
        cli = Cli(a, capsys)
        created = await cli.ok("share", "create", "parents")
        assert created.startswith(f"Created share parents; its members: a ({a_id}).")
        assert "parents" in await cli.refused("share", "create", "parents")  # it exists
        await cli.refused("share", "create", "Not a name")

        added = await cli.ok("share", "add", "parents", sloppy(b_id))
        assert added.startswith(f"Added b ({b_id}) to share parents")
        again = json.loads(await cli.ok("share", "add", "parents", b_id, "--json"))
        assert {k: again[k] for k in ("share", "device", "name", "already")} == {
            "share": "parents",
            "device": b_id,
            "name": "b",
            "already": True,
        }
        stranger = DeviceIdentity.generate().device_id
        await cli.refused("share", "add", "parents", stranger, exit_code=4)  # not of this household
        code, _, err = await cli("share", "add", "parents", "B0GUS")
        assert code == 4 and "no device named or starting with 'B0GUS'" in err and "b (" in err
        for spelled in ("b", b_id[:5].lower()):  # its name, its short id
            again = json.loads(await cli.ok("share", "add", "parents", spelled, "--json"))
            assert (again["device"], again["already"]) == (b_id, True)

        listed = (await cli.ok("share", "list")).splitlines()
        assert listed[0].split() == ["SHARE", "MEMBERS", "RECORDS", "SIZE"]
        assert rows_by_name(listed[1:])["parents"][:2] == ["2", "0"]
        assert rows_by_name(listed[1:])["default"][0] == "2"
        shares = json.loads(await cli.ok("share", "list", "--json"))["shares"]
        assert {s["share"]: (s["members"], s["member"]) for s in shares} == {
            "default": (2, True),
            "parents": (2, True),
        }
        shown = (await cli.ok("share", "show", "parents")).splitlines()
        assert shown[0].startswith("share parents: 2 members, 0 records")
        members = rows_by_name(shown[3:])
        assert members["a"][:3] == [a_id[:5], "this", "device"]
        assert members["b"][:2] == [b_id[:5], "offline"]  # no address known: never met
        assert members["b"][-1] == "a"  # added by

        removed = await cli.ok("share", "remove", "parents", b_id)
        assert removed.startswith(f"Removed b ({b_id}) from share parents: it keeps the copy")
        shown = (await cli.ok("share", "show", "parents")).splitlines()
        assert list(rows_by_name(shown[3:])) == ["a"]
        assert "revoke" in await cli.refused("share", "remove", "default", b_id)

        await cli.ok("share", "add", "parents", b_id)  # a member may add it back
        left = await cli.ok("share", "leave", "parents")
        assert left.startswith("This device left share parents: it keeps its copy")
        listed = (await cli.ok("share", "list")).splitlines()
        assert " ".join(rows_by_name(listed[1:])["parents"]).endswith(
            "left: keeps its copy, gets no updates"
        )
        assert "revoke" in await cli.refused("share", "leave", "default")


async def test_share_option_reaches_a_real_daemon_and_an_unknown_share_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    daemon = DaemonProcess(tmp_path, "a")
    with running(daemon):
        cli = Cli(daemon, capsys)
        await cli.ok("share", "create", "shopping")
        await cli.ok("put", "list", "milk", '"in default"')
        wrote = await cli.ok("put", "--share", "shopping", "list", "milk", '"2 l"')
        assert wrote.startswith("wrote list/milk in share shopping (position")
        assert await cli.ok("get", "--share", "shopping", "list", "milk") == '"2 l"\n'
        assert await cli.ok("get", "list", "milk") == '"in default"\n'
        listed = (await cli.ok("ls", "list", "--share", "shopping")).splitlines()
        assert listed[1:] == ['milk  "2 l"']
        assert (
            await cli.ok("conflicts", "--share", "shopping") == "no conflicts in share shopping\n"
        )
        assert "no conflict" in await cli.refused(
            "resolve", "list", "milk", '"3 l"', "--share", "shopping"
        )
        await cli.ok("resolve", "list", "milk", '"3 l"', "--share", "shopping", "--force")
        assert await cli.ok("get", "--share", "shopping", "list", "milk") == '"3 l"\n'

        # watch from the start: list/milk of the share, never the earlier one of default
        process = await trio.lowlevel.open_process(
            command_line(
                daemon.socket_path, "watch", "--share", "shopping", "--since", "0", "--json"
            ),
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            shown = await read_until(process.stdout, lambda text: '"key":"milk"' in text)
        finally:
            process.kill()
            await process.wait()
        events = [json.loads(line) for line in shown.splitlines() if line.endswith("}")]
        assert {event["share"] for event in events} == {"shopping"}
        milk = [c["value"] for e in events for c in e["changes"] if c["key"] == "milk"]
        assert milk[0] == "2 l"

        assert "deleted list/milk in share shopping" in await cli.ok(
            "rm", "--share", "shopping", "list", "milk"
        )
        assert "list/milk was deleted" in await cli.refused(
            "get", "--share", "shopping", "list", "milk", exit_code=4
        )
        assert await cli.ok("get", "list", "milk") == '"in default"\n'

        for argv in (
            ["get", "--share", "nosuch", "list", "milk"],
            ["put", "--share", "nosuch", "list", "milk", "1"],
            ["ls", "--share", "nosuch", "list"],
            ["conflicts", "--share", "nosuch"],
            ["share", "show", "nosuch"],
            ["share", "leave", "nosuch"],
        ):
            assert "nosuch" in await cli.refused(*argv, exit_code=4), argv


async def test_pair_with_shares_and_join_name_them_between_real_daemons(tmp_path: Path) -> None:
    inviter, joiner = DaemonProcess(tmp_path, "a"), DaemonProcess(tmp_path, "b")
    with running(inviter, joiner):
        created = await run_cli(inviter, "share", "create", "parents")
        assert created.returncode == 0, created.stderr
        pairing = await trio.lowlevel.open_process(
            command_line(inviter.socket_path, "pair", "--share", "parents"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert pairing.stdout is not None
            shown = await read_until(pairing.stdout, lambda text: "Waiting for" in text)
            assert "It will be put in shares parents as well as default." in shown
            code = re.search(r"p2psync join (\S+)\n", shown)
            assert code
            joined = await run_cli(joiner, "join", code.group(1), "--address", inviter.address)
            assert joined.returncode == 0, joined.stderr
            assert "\nYou were given shares: parents.\n" in joined.stdout.decode()
            with trio.fail_after(20):
                assert await pairing.wait() == 0
        finally:
            if pairing.returncode is None:
                pairing.kill()
                await pairing.wait()
        paired = await read_all(pairing.stdout)
        assert f"Paired with b ({joiner.device_id})" in paired
        assert "It is in shares parents as well as default." in paired
        members = await run_cli(inviter, "share", "show", "parents", "--json")
        assert {m["name"] for m in json.loads(members.stdout)["members"]} == {"a", "b"}

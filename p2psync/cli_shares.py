"""The `p2psync share` command: its subcommands, their help, their calls and what they print.

A share is a set of records synced only between the devices in it; `default` holds every device
of the household. `cli.py` hands this module its subparsers to fill in (`add_share_command`) and
runs the `cmd_share_*` functions like those of `cli_commands.py`, with the same `Command`. The
member and share tables are built here from `cli_format.py`'s pieces; like every command, it never
opens the database or the network itself: everything goes through the control socket.
"""

import argparse
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

from .cli_commands import Command, write_lines
from .cli_format import (
    LEFT_SHARE_NOTE,
    NAME_WIDTH,
    SHARE_WIDTH,
    command_parser,
    count_cell,
    counted,
    fit,
    format_size,
    safe_text,
    table,
)
from .identity import InvalidDeviceId, parse_device_id, short_id

WHO_MAY = (
    "Any member of a share may add other devices of the household to it and remove members "
    "from it. A removed device keeps the copy it had, gets no more updates of the share and "
    "cannot add itself back; any remaining member can add it again."
)
SHARE_HELP = (
    "Shares are sets of records synced only between the devices in them. Every device of the "
    "household is in `default`; any other share holds only the devices added to it, and a device "
    f"outside a share never receives its records. {WHO_MAY} Read and write a share's records "
    "with --share NAME on put, get, rm, ls, watch, conflicts and resolve; `p2psync pair --share "
    "NAME` puts a new device in shares as it joins."
)
SHARE_EXAMPLES = """\
  p2psync share create parents
  p2psync share add parents TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI
  p2psync share list
  p2psync share show parents
  p2psync put --share parents notes gift '"a bike"'
  p2psync share remove parents TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI
  p2psync share leave parents
"""
DEVICE_HELP = (
    "the device's name, its short id as `p2psync peers` shows it, or any unambiguous part of "
    "the start of its id"
)


# commands -------------------------------------------------------------------------------------


def cmd_share_create(c: Command) -> int:
    done = c.client.call("share_create", share=c.args.share)
    return c.done(done, share_created_message(done))


def cmd_share_add(c: Command) -> int:
    done = c.client.call("share_add", share=c.args.share, device=c.args.device)
    return c.done(done, share_added_message(done))


def cmd_share_remove(c: Command) -> int:
    done = c.client.call("share_remove", share=c.args.share, device=c.args.device)
    return c.done(done, share_removed_message(done))


def cmd_share_leave(c: Command) -> int:
    done = c.client.call("share_leave", share=c.args.share)
    return c.done(done, share_left_message(done))


def cmd_share_list(c: Command) -> int:
    found = c.client.call("share_list")
    shares = [share for share in found.get("shares") or [] if isinstance(share, Mapping)]
    return c.say(found, lambda: write_lines(c.out, shares_table(shares)))


def cmd_share_show(c: Command) -> int:
    found = c.client.call("share_show", share=c.args.share)
    return c.say(found, lambda: write_lines(c.out, share_lines(found)))


# parser ---------------------------------------------------------------------------------------


def add_share_command(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
    common: argparse.ArgumentParser,
    epilog: str,
) -> None:
    """The `share` command and its subcommands, among `commands`; `common` holds the options of
    every command (--socket, --json), `epilog` what every command's help ends with."""

    parser = partial(command_parser, common, epilog)

    share = parser(
        commands, "share", "create shares, add and remove their members", SHARE_HELP, SHARE_EXAMPLES
    )
    subcommands = share.add_subparsers(dest="share_command", metavar="SUBCOMMAND", required=True)

    def subcommand(
        name: str,
        run: Callable[[Command], int],
        summary: str,
        details: str,
        examples: str,
        *,
        of_one_share: bool = True,
    ) -> argparse.ArgumentParser:
        sub = parser(subcommands, name, summary, details, examples)
        sub.set_defaults(run=run)
        if of_one_share:
            sub.add_argument("share", metavar="NAME", help="the share's name")
        return sub

    subcommand(
        "create",
        cmd_share_create,
        "create a share with this device as its only member",
        "Any device of the household may create one. Names are 1 to 64 characters of a-z, 0-9, "
        "'.', '_' and '-', starting with a letter or digit. Then add devices with `p2psync "
        f"share add NAME DEVICE`. {WHO_MAY}",
        "  p2psync share create parents\n  p2psync share create shopping\n",
    )
    subcommand(
        "add",
        cmd_share_add,
        "add a device of the household to a share",
        "Any member of the share may add any device of the household (`p2psync peers` lists "
        "them); adding one that is already in changes nothing. The device gets the share's "
        "records when it next syncs with a member. A device that was removed or left can only "
        "be added back this way, by a member.",
        "  p2psync share add parents TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI\n"
        "  p2psync share add shopping tpsdwqvclz3wfq7enppejysjuyekod6pfni\n",
    ).add_argument("device", metavar="DEVICE", help=DEVICE_HELP)
    subcommand(
        "remove",
        cmd_share_remove,
        "remove a member from a share",
        "Any member of the share may remove any other member. The removed device keeps the copy "
        "it had but gets no more updates of the share, and cannot add itself back (any remaining "
        "member can). To take a device out of the whole household, use `p2psync revoke`.",
        "  p2psync share remove parents TPSDW-QVCLZ-3WFQ7-ENPPE-JYSJU-YEKOD-6PFNI\n",
    ).add_argument("device", metavar="DEVICE", help=DEVICE_HELP)
    subcommand(
        "leave",
        cmd_share_leave,
        "take this device out of a share",
        "This device keeps its copy of the share's records but gets no more updates, and cannot "
        "add itself back: another member has to. Nobody leaves `default`, which every device "
        "is in: to take a device out of the household, run `p2psync revoke` on another device.",
        "  p2psync share leave parents\n",
    )
    subcommand(
        "list",
        cmd_share_list,
        "list the shares this device holds",
        "With each share its members, its records and their size on this device. A share this "
        "device left or was removed from stays listed, marked `left`: its copy stays here.",
        "  p2psync share list\n  p2psync share list --json\n",
        of_one_share=False,
    )
    subcommand(
        "show",
        cmd_share_show,
        "show a share's members and their sync state",
        "STATE says whether a member is connected now; SYNC whether it holds the same entries of "
        "the share as this device; BEHIND counts the entries it has that this device lacks, AHEAD "
        "the other way round (as in `p2psync status`); ADDED BY is the member that added it.",
        "  p2psync share show parents\n  p2psync share show default --json\n",
    )


# output ---------------------------------------------------------------------------------------


def shares_table(shares: Sequence[Mapping[str, Any]]) -> list[str]:
    """`p2psync share list`: the shares this device holds, with members, records and size."""
    rows = [
        [
            fit(safe_text(share.get("share") or "?"), SHARE_WIDTH),
            count_cell(share.get("members")),
            count_cell(share.get("records")),
            _size_cell(share.get("bytes")),
            "" if share.get("member", True) else LEFT_SHARE_NOTE,
        ]
        for share in shares
    ]
    return table(["SHARE", "MEMBERS", "RECORDS", "SIZE", ""], rows, right=(1, 2, 3))


def _size_cell(size: Any) -> str:
    return format_size(size) if count_cell(size) != "-" else "-"


def share_lines(shown: Mapping[str, Any]) -> list[str]:
    """`p2psync share show NAME`: the share in a line, then its members and their sync state."""
    members = [member for member in shown.get("members") or [] if isinstance(member, Mapping)]
    facts = [counted(len(members), "member"), counted(shown.get("records"), "record")]
    if count_cell(shown.get("bytes")) != "-":
        facts.append(format_size(shown["bytes"]))
    lines = [f"share {_share(shown)}: {', '.join(facts)}"]
    if shown.get("member") is False:
        lines.append("this device left it or was removed: it keeps its copy, gets no updates")
    names = {member.get("device"): member.get("name") for member in members}
    rows = [
        [
            fit(safe_text(member.get("name") or "?"), NAME_WIDTH),
            short_id(str(member.get("device") or "?")),
            _member_state(member),
            _sync_state(member),
            count_cell(member.get("we_lack")),
            count_cell(member.get("they_lack")),
            _added_by(member.get("added_by"), names),
        ]
        for member in members
    ]
    headers = ["NAME", "DEVICE", "STATE", "SYNC", "BEHIND", "AHEAD", "ADDED BY"]
    return [*lines, "", *table(headers, rows, right=(4, 5))]


def _member_state(member: Mapping[str, Any]) -> str:
    if member.get("you"):
        return "this device"
    return "online" if member.get("online") else "offline"


def _sync_state(member: Mapping[str, Any]) -> str:
    in_sync = member.get("in_sync")
    if member.get("you") or in_sync is None:  # nothing to compare: offline, or not met yet
        return "-"
    return "in sync" if in_sync else "out of sync"


def _added_by(added_by: Any, names: Mapping[Any, Any]) -> str:
    """Who added a member: its name when it is a member, else the short form of its id."""
    if not added_by:
        return "-"
    try:
        device = parse_device_id(str(added_by))
    except InvalidDeviceId:  # not an id (a name, perhaps): shown as it is
        return fit(safe_text(added_by), NAME_WIDTH)
    name = names.get(device)
    return fit(safe_text(name), NAME_WIDTH) if name else short_id(device)


def _share(done: Mapping[str, Any]) -> str:
    return safe_text(done.get("share") or "?")


def _device(done: Mapping[str, Any]) -> str:
    return f"{safe_text(done.get('name') or '?')} ({done.get('device') or '?'})"


def share_created_message(done: Mapping[str, Any]) -> str:
    members = [member for member in done.get("members") or [] if isinstance(member, Mapping)]
    who = ", ".join(_device(member) for member in members) or "this device"
    return (
        f"Created share {_share(done)}; its members: {who}. Add other devices of the household "
        f"with `p2psync share add {_share(done)} DEVICE` (`p2psync peers` shows their ids)."
    )


def share_added_message(done: Mapping[str, Any]) -> str:
    if done.get("already"):
        return f"{_device(done)} is already in share {_share(done)}."
    return (
        f"Added {_device(done)} to share {_share(done)}: it gets the share's records when it "
        "next syncs with a member."
    )


def share_removed_message(done: Mapping[str, Any]) -> str:
    return (
        f"Removed {_device(done)} from share {_share(done)}: it keeps the copy it has, gets no "
        "more updates of the share and cannot add itself back (any member can add it again)."
    )


def share_left_message(done: Mapping[str, Any]) -> str:
    return (
        f"This device left share {_share(done)}: it keeps its copy but gets no more updates "
        "and cannot add itself back (any member can add it again)."
    )

"""The commands about a device's data as a whole: `backup`, `restore`, `export`, `import` and
`history` (their parser, help, calls and output).

`cli.py` hands this module its `command` helper and its subparsers (`add_data_commands`) and runs
the `cmd_*` functions like those of `cli_commands.py`, with the same `Command`. The backup file
is written here, by the CLI's user (the daemon only streams it: backup/stream.py says why);
`restore` needs no daemon (it must be stopped) and runs backup/restore.py. Record lines are
backup/records.py's. It never opens the database itself, except `restore` through that module.
"""

import argparse
import base64
import hashlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from . import cli_format
from .backup import records
from .cli_commands import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    Command,
    UsageError,
    device_names,
    report_error,
    value_cell,
    when,
    write_lines,
)
from .cli_format import DEFAULT_SHARE, fit, safe_text, table
from .client import Client, ControlError
from .config import ConfigError
from .identity import short_id

BACKUP_TIMEOUT_SECONDS = 600.0
SCAN_PAGE = 1000
KEY_WARNING = (
    "it holds the device key: whoever has this file can act as this device in the household. "
    "Keep it as private as the machine itself"
)
DATA_ONLY_NOTE = (
    "data only, without the device key: restoring it needs this device's device.key (a backup "
    "--with-key holds it). It still holds every record: keep it private"
)
BACKUP_DETAILS = (
    "The daemon copies one moment of its database with SQLite's online backup (writes and sync "
    "go on meanwhile) and streams it over the control socket; FILE is written by you, mode 0600, "
    "as a tar archive. Without "
    "--with-key it holds the data only, and a restore needs this device's key still in place; "
    "with it, the key and certificate too, so it can bring the device back on a new machine. "
    "Restore with `p2psync restore FILE` while the daemon is stopped."
)
RESTORE_DETAILS = (
    "Run it with the daemon stopped (systemctl stop p2psync), as the user that owns the state "
    "directory or root. Safe whatever the backup's age: the device starts as a new writer, never "
    "reusing what it wrote after the backup, and gets back from its peers whatever reached them "
    "since (deletes and changes made since win again: a restore is not an undo). Only writes "
    "that never left the device are lost. The database it replaces is kept beside it as "
    "replica.db.before-restore-TIME. A backup without the key restores only where this device's "
    "key is."
)
IMPORT_DETAILS = (
    "Reads the lines `p2psync export` writes (one record per line of JSON) and writes them to "
    "the share in transactions of up to 1000 records. Every line is checked before anything is "
    "written. Each record is a new write here: a record in conflict in the export imports as "
    "its winner; a deleted winner deletes."
)


def add_data_commands(
    command: Callable[..., argparse.ArgumentParser],
    commands: Any,
    add_share_option: Callable[[argparse.ArgumentParser], None],
) -> None:
    backup = command(
        "backup",
        cmd_backup,
        "write a consistent copy of this device's database to FILE, while the daemon runs",
        BACKUP_DETAILS,
        "  p2psync backup /backup/p2psync.tar\n"
        "  p2psync backup --with-key /media/usb/laptop.tar    to bring this device back\n",
    )
    backup.add_argument("file", metavar="FILE", help="the backup file to write (a tar archive)")
    backup.add_argument(
        "--with-key",
        action="store_true",
        help="include the device key and certificate (the file then IS the device)",
    )
    backup.add_argument("--force", action="store_true", help="replace FILE if it exists")
    restore_ = commands.add_parser(
        "restore",
        help="put a backup back into the state directory (the daemon must be stopped)",
        description=f"Put a backup back into the state directory. {RESTORE_DETAILS}",
        epilog="examples:\n  systemctl stop p2psync\n  p2psync restore /backup/p2psync.tar\n"
        "  systemctl start p2psync\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    restore_.add_argument("file", metavar="FILE", help="a file `p2psync backup` wrote")
    restore_.add_argument("--config", metavar="FILE", help="the daemon's configuration file")
    restore_.add_argument(
        "--state-dir", metavar="DIR", help="the state directory (default: the daemon's)"
    )
    restore_.add_argument("--json", action="store_true", help="print what was done as JSON")
    restore_.set_defaults(without_daemon=cmd_restore)
    export = command(
        "export",
        cmd_export,
        "print the records of a share (or one collection) as JSON lines",
        'One record per line: collection, key, value (bytes as {"$base64": ...}), type, '
        'schema_version; a record in conflict also has "conflict": true and its versions in '
        '"siblings". `p2psync import` reads it back.',
        "  p2psync export > records.jsonl\n  p2psync export --collection notes --share family\n",
    )
    export.add_argument("--collection", metavar="C", help="only collection C")
    add_share_option(export)
    import_ = command(
        "import",
        cmd_import,
        "write the records of an export into a share",
        IMPORT_DETAILS,
        "  p2psync import records.jsonl\n  p2psync export | ssh other p2psync import -\n",
    )
    import_.add_argument("file", metavar="FILE", help="the export ('-': stdin)")
    add_share_option(import_)
    history = command(
        "history",
        cmd_history,
        "show the versions of a record that the log still holds, newest first",
        "Who wrote each (device name and short id), when, and the value or (deleted); * marks "
        "the version every device shows, + the other current versions of a conflict. With "
        "history.compaction on, writes every member holds are folded away: only the versions "
        "since then (and the current ones) are left to show.",
        "  p2psync history notes shopping\n",
    )
    history.add_argument("collection", metavar="COLLECTION")
    history.add_argument("key", metavar="KEY")
    history.add_argument(
        "--limit", metavar="N", type=int, default=100, help="at most N versions (default 100)"
    )
    add_share_option(history)


# backup and restore ---------------------------------------------------------------------------


def cmd_backup(c: Command) -> int:
    target = Path(c.args.file)
    if target.exists() and not c.args.force:
        raise UsageError(f"{target} exists: pass --force to replace it")
    if not target.parent.is_dir():
        raise UsageError(f"{target.parent} is not a directory")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise UsageError(f"cannot write in {target.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as file:
            os.fchmod(file.fileno(), 0o600)  # whatever the umask: it holds every record
            started = _receive_backup(c, file)
            file.flush()
            os.fsync(file.fileno())
        if c.args.force:
            os.replace(partial, target)
        else:
            os.link(partial, target)  # never replaces a file that appeared meanwhile
            partial.unlink()
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise UsageError(f"{target} exists: pass --force to replace it") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    size = target.stat().st_size
    done = {**started, "file": str(target), "bytes": size}
    what = f"{KEY_WARNING}" if started["with_key"] else DATA_ONLY_NOTE
    return c.done(
        done,
        f"wrote {target} ({cli_format.format_size(size)}): {safe_text(started['name'])}'s records "
        f"as of {started['created']}; {what}.",
    )


def _receive_backup(c: Command, file: BinaryIO) -> dict[str, Any]:
    """Write the streamed archive to `file`; its first answer says what it holds."""
    # the daemon copies the whole database before it answers: a big one takes a while
    client = Client(c.client.socket_path, timeout=BACKUP_TIMEOUT_SECONDS)
    with client, client.stream("backup", with_key=c.args.with_key) as lines:
        digest = hashlib.sha256()
        for event in lines:
            kind = event.get("event")
            if kind == "backup_data":
                data = base64.b64decode(event["data"])
                digest.update(data)
                file.write(data)
            elif kind == "backup_failed":
                error = event.get("error") or {}
                raise ControlError(str(error.get("code")), f"backup failed: {error.get('message')}")
            elif kind == "backup_done":
                whole = event.get("bytes") == file.tell() == lines.result["bytes"]
                if not whole or event.get("sha256") != digest.hexdigest():
                    raise ControlError("protocol", "the backup arrived damaged: try again")
                started: dict[str, Any] = lines.result
                return started
    raise ControlError("protocol", "the daemon ended the backup before its end")


def cmd_restore(args: argparse.Namespace) -> int:
    # the daemon's start-up modules, as `p2psync daemon` loads them: not for every command
    from .backup.restore import RestoreError, restore
    from .daemon_setup import load_settings

    as_json = bool(args.json)
    try:
        state_dir = load_settings(args).state_dir
    except ConfigError as exc:
        return report_error(as_json, "config", str(exc), EXIT_FAILED)
    try:
        done = restore(Path(args.file), state_dir)
    except RestoreError as exc:
        return report_error(as_json, "restore", str(exc), EXIT_FAILED)
    manifest = done.manifest
    if as_json:
        result = {
            "device": manifest.device,
            "name": manifest.name,
            "created": manifest.created,
            "state_dir": str(state_dir),
            "key_written": done.key_written,
            "kept": None if done.kept is None else str(done.kept),
        }
        sys.stdout.write(cli_format.compact(result) + "\n")
        return EXIT_OK
    lines = [
        f"restored {safe_text(manifest.name)} ({manifest.device}) as of {manifest.created} "
        f"into {state_dir}" + (", with its device key" if done.key_written else ""),
    ]
    if done.kept is not None:
        lines.append(
            f"the database it replaced is kept as {done.kept} (delete it once all is well)"
        )
    lines.append(
        "start the daemon: it gets back from its peers what they hold since the backup, and they "
        "report that this device started from an older copy of its state"
    )
    write_lines(sys.stdout, lines)
    return EXIT_OK


# export and import ----------------------------------------------------------------------------


def cmd_export(c: Command) -> int:
    share = c.args.share
    if c.args.collection is not None:
        collections = [c.args.collection]
    else:
        listed = c.client.call("collections", share=share)["collections"]
        collections = [found["collection"] for found in listed]
    count = 0
    for collection in collections:
        for item in _records(c.client, share, collection):
            siblings: list[dict[str, Any]] = []
            if item["conflict"]:
                record = c.client.call(
                    "get", collection=collection, key=item["key"], all=True, share=share
                )
                siblings = record["siblings"]
            c.out.write(records.export_line(item, siblings) + "\n")
            count += 1
    if not c.quiet:
        sys.stderr.write(f"p2psync: exported {count} records of {len(collections)} collections\n")
    return EXIT_OK


def _records(client: Client, share: str, collection: str) -> Iterator[dict[str, Any]]:
    """Every record of a collection, live or deleted in conflict, by key."""
    after = None
    while True:
        page = client.call(
            "scan", collection=collection, after=after, limit=SCAN_PAGE, share=share, deleted=True
        )
        yield from page["items"]
        after = page["next"]
        if after is None:
            return


def cmd_import(c: Command) -> int:
    try:
        ops = _read_ops(c.args.file)
    except OSError as exc:
        raise UsageError(f"cannot read {c.args.file}: {exc.strerror or exc}") from None
    except (records.ImportLineError, UnicodeDecodeError) as exc:
        raise UsageError(f"{c.args.file}: {exc}; nothing was imported") from None
    written = 0
    for batch in records.batches(ops):
        try:
            c.client.call("transaction", ops=batch, share=c.args.share)
        except ControlError as exc:
            exc.message = f"{exc.message} (after {written} of {len(ops)} records were imported)"
            raise
        written += len(batch)
    where = "" if c.args.share == DEFAULT_SHARE else f" into share {safe_text(c.args.share)}"
    return c.done({"imported": written}, f"imported {written} records{where}")


def _read_ops(name: str) -> list[dict[str, Any]]:
    stream = sys.stdin.buffer if name == "-" else open(name, "rb")  # noqa: SIM115
    with stream:
        found = (records.import_op(raw.decode(), n) for n, raw in enumerate(stream, start=1))
        return [op for op in found if op is not None]


# history --------------------------------------------------------------------------------------


def cmd_history(c: Command) -> int:
    if not 1 <= c.args.limit <= 1000:
        return report_error(c.json, "usage", "--limit must be between 1 and 1000", EXIT_USAGE)
    found = c.client.call(
        "history",
        collection=c.args.collection,
        key=c.args.key,
        limit=c.args.limit,
        share=c.args.share,
    )
    if c.json:
        return c.say(found, "")
    names = device_names(c.client)
    rows = [
        [
            "*" if v["winner"] else "+" if v["current"] else " ",
            fit(safe_text(names.get(v["origin"], v["origin"])), cli_format.NAME_WIDTH),
            short_id(v["origin"]),
            when(v["hlc"]),
            safe_text(v["version"]),
            "(deleted)" if v["deleted"] else value_cell(v["value"]),
        ]
        for v in found["versions"]
    ]
    write_lines(c.out, table([" ", "DEVICE", "ID", "TIME", "VERSION", "VALUE"], rows))
    notes = ["* the version every device shows"]
    if any(v["current"] and not v["winner"] for v in found["versions"]):
        notes.append("+ another current version (a conflict)")
    if found["more"]:
        notes.append(f"older versions not shown: --limit {min(c.args.limit * 10, 1000)}")
    c.out.write("; ".join(notes) + "\n")
    return EXIT_OK

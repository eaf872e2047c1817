"""What the command line looks like, read from its argparse parser, and the man page made from it.

`document(parser)` walks `cli.build_parser()` into plain `CommandDoc` values: every command and
subcommand with its options, arguments and help. The man page (`man_page`) and the shell
completion scripts (`cli_completion.py`) are generated from that walk, so they cannot drift from
the parser: a new command or option shows up in both without anyone editing them. This module
only reads the parser and returns text; it never parses a command line, prints or writes files.
"""

import argparse
from collections.abc import Iterator
from dataclasses import dataclass

from . import config
from .cli_commands import EXIT_FAILED, EXIT_NO_DAEMON, EXIT_NOT_FOUND, EXIT_OK, EXIT_USAGE

# What a value of an option or argument is, by its metavar: what a shell offers for it.
FILE_METAVARS = frozenset({"FILE", "PATH", "CERTFILE"})
DIRECTORY_METAVARS = frozenset({"DIR"})


@dataclass(frozen=True)
class OptionDoc:
    flags: tuple[str, ...]
    metavar: str | None  # None: a switch, which takes no value
    help: str
    choices: tuple[str, ...] = ()

    @property
    def value_kind(self) -> str:
        """One of "" (a switch), "file", "directory", "choice" or "text"."""
        return "" if self.metavar is None else _value_kind(self.metavar, self.choices)


@dataclass(frozen=True)
class ArgumentDoc:
    metavar: str
    help: str
    optional: bool
    choices: tuple[str, ...] = ()

    @property
    def value_kind(self) -> str:
        return _value_kind(self.metavar, self.choices)


@dataclass(frozen=True)
class CommandDoc:
    path: tuple[str, ...]  # () for `p2psync` itself, ("share", "add") for `p2psync share add`
    summary: str  # the line in its parent's list of commands
    description: str
    epilog: str
    options: tuple[OptionDoc, ...]
    arguments: tuple[ArgumentDoc, ...]
    subcommands: tuple["CommandDoc", ...]

    @property
    def name(self) -> str:
        return " ".join(("p2psync", *self.path))

    def walk(self) -> Iterator["CommandDoc"]:
        """This command, then every command under it, depth first, in the parser's order."""
        yield self
        for sub in self.subcommands:
            yield from sub.walk()


def _value_kind(metavar: str, choices: tuple[str, ...]) -> str:
    if choices:
        return "choice"
    if metavar in FILE_METAVARS:
        return "file"
    if metavar in DIRECTORY_METAVARS:
        return "directory"
    return "text"


def document(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = (), summary: str = ""
) -> CommandDoc:
    options: list[OptionDoc] = []
    arguments: list[ArgumentDoc] = []
    subcommands: list[CommandDoc] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        if isinstance(action, argparse._SubParsersAction):
            for listed in action._choices_actions:  # the primary names with their help lines
                name = listed.dest
                subcommands.append(document(action.choices[name], (*path, name), listed.help or ""))
            continue
        choices = tuple(str(choice) for choice in action.choices or ())
        if action.option_strings:
            takes_value = action.nargs != 0
            metavar = _metavar(action) if takes_value else None
            options.append(OptionDoc(tuple(action.option_strings), metavar, _help(action), choices))
        else:
            optional = action.nargs in ("?", "*")
            arguments.append(ArgumentDoc(_metavar(action), _help(action), optional, choices))
    return CommandDoc(
        path=path,
        summary=summary,
        description=" ".join((parser.description or "").split()),
        epilog=parser.epilog or "",
        options=tuple(options),
        arguments=tuple(arguments),
        subcommands=tuple(subcommands),
    )


def _metavar(action: argparse.Action) -> str:
    if isinstance(action.metavar, str):
        return action.metavar
    return action.dest.upper() if action.option_strings else action.dest


def _help(action: argparse.Action) -> str:
    return " ".join((action.help or "").split())


# the man page ---------------------------------------------------------------------------------

ENVIRONMENT = (
    ("P2PSYNC_SOCKET", "the control socket the commands talk to (as --socket)"),
    (config.ENV_CONFIG, "the daemon's configuration file (as --config)"),
    (config.ENV_STATE_DIR, "the daemon's state directory (as --state-dir)"),
    (config.ENV_LOG_LEVEL, "the daemon's log level (as --log-level)"),
    (config.ENV_CONTROL_SOCKET, "the control socket the daemon serves"),
)
FILES = (
    (str(config.SYSTEM_CONFIG_FILE), "configuration of the system service (optional)"),
    ("~/.config/p2psync/config.toml", "configuration of a daemon run by a user (optional)"),
    (str(config.SYSTEM_STATE_DIR), "the system service's keys and database: back it up"),
    ("~/.local/share/p2psync", "a user's daemon's keys and database"),
    (str(config.SYSTEM_CONTROL_SOCKET), "the system service's control socket"),
)
EXIT_STATUS = (
    (EXIT_OK, "success"),
    (EXIT_FAILED, "the daemon refused or failed"),
    (EXIT_USAGE, "usage error"),
    (EXIT_NO_DAEMON, "no daemon is running at the control socket"),
    (EXIT_NOT_FOUND, "not found: no such record (or it was deleted), share, device or grant"),
)
DESCRIPTION = (
    "p2psync keeps records in sync between the devices of a household, with no server: every "
    "device runs the daemon (`p2psync daemon`, usually as the systemd service that `p2psync "
    "install-service` installs), and the other commands talk to it over its control socket. "
    "Devices find each other on the LAN with mDNS and sync over mutually authenticated TLS."
)
OPTIONS_INTRO = (
    "Options of p2psync itself. --socket, --json, -q and -v are also taken by every command that "
    "talks to the daemon, after its name (-q by install-service too); -q leaves out the "
    "lines that only confirm what a command did."
)
SEE_ALSO = "systemctl(1), journalctl(1), systemd.service(5), sysusers.d(5)"


def man_page(root: CommandDoc, version: str) -> str:
    """The roff source of p2psync(1): `man -l -` reads it."""
    everywhere = set(root.options)  # the options of every command: listed once, not per command
    lines = [
        f'.TH P2PSYNC 1 "" "p2psync {version}" "User Commands"',
        ".nh",  # no hyphenation: a command name broken in two cannot be copied
        ".SH NAME",
        "p2psync \\- " + _roff(_first_lower(root.description).rstrip(".")),
        ".SH SYNOPSIS",
        ".B p2psync",
        "[\\fIOPTIONS\\fR] \\fICOMMAND\\fR [\\fIARGUMENTS\\fR]",
        ".SH DESCRIPTION",
        _roff(DESCRIPTION),
        ".SH OPTIONS",
        _roff(OPTIONS_INTRO),
        *_option_items(root.options),
        ".SH COMMANDS",
    ]
    for command in root.walk():
        if command is root:
            continue
        heading = _roff(_synopsis(command))
        lines += [f'.SS "{heading}"', _roff(command.description or command.summary)]
        if command.subcommands:
            names = ", ".join(sub.path[-1] for sub in command.subcommands)
            lines += [".PP", f"Subcommands: {_roff(names)}."]
        for argument in command.arguments:
            lines += [".TP", f"\\fI{_roff(argument.metavar)}\\fR", _roff(argument.help or "-")]
        lines += _option_items(o for o in command.options if o not in everywhere)
        examples = _examples(command.epilog)
        if examples:
            lines += [".PP", "Examples:", ".PP", ".nf", ".RS", *map(_roff, examples), ".RE", ".fi"]
    lines += [".SH EXAMPLES", ".nf", *map(_roff, _examples(root.epilog)), ".fi"]
    lines += [".SH EXIT STATUS", *_items((str(code), text) for code, text in EXIT_STATUS)]
    lines += [".SH ENVIRONMENT", *_items(ENVIRONMENT)]
    lines += [".SH FILES", *_items(FILES)]
    lines += [".SH SEE ALSO", SEE_ALSO]
    return "\n".join(lines) + "\n"


def _synopsis(command: CommandDoc) -> str:
    words = [command.name, "[OPTIONS]"]
    if command.subcommands:
        words.append("SUBCOMMAND")
    for argument in command.arguments:
        words.append(f"[{argument.metavar}]" if argument.optional else argument.metavar)
    return " ".join(words)


def _option_items(options: "Iterator[OptionDoc] | tuple[OptionDoc, ...]") -> list[str]:
    lines = []
    for option in options:
        flags = ", ".join(f"\\fB{_roff(flag)}\\fR" for flag in option.flags)
        value = f" \\fI{_roff(option.metavar)}\\fR" if option.metavar else ""
        lines += [".TP", flags + value, _roff(option.help or "-")]
    return lines


def _items(pairs: "Iterator[tuple[str, str]] | tuple[tuple[str, str], ...]") -> list[str]:
    lines = []
    for term, text in pairs:
        lines += [".TP", f"\\fB{_roff(term)}\\fR", _roff(text)]
    return lines


def _examples(epilog: str) -> list[str]:
    """The indented lines under "examples:" in a command's help epilog."""
    found: list[str] = []
    inside = False
    for line in epilog.splitlines():
        if line.strip() == "examples:":
            inside = True
        elif inside and line.startswith("  "):
            found.append(line.strip())
        elif inside:
            break
    return found


def _first_lower(text: str) -> str:
    return text[:1].lower() + text[1:]


def _roff(text: str) -> str:
    """Text as roff shows it literally: backslashes and dashes escaped (so options can be
    copied), and a line never starting with a control character."""
    escaped = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join(
        f"\\&{line}" if line.startswith((".", "'")) else line for line in escaped.splitlines()
    )

"""The commands that need no daemon: `install-service`, `completion` and `man`, and -q/-v.

Their parser and help (`add_setup_commands`, called by `cli.py` with its subparsers), the -q/-v
options every command takes (`add_verbosity_options`), and what these commands print. Where
files go and what is run is `install_service.py`'s; the completion scripts and the man page are
generated from `cli.build_parser()` by `cli_completion.py` and `cli_docs.py`. Nothing here talks
to the daemon or opens its state.
"""

import argparse
import os
import sys
from pathlib import Path

from . import __version__, install_service
from .cli_commands import EXIT_FAILED, EXIT_OK
from .cli_completion import SHELLS, completion_script
from .cli_docs import CommandDoc, document, man_page

QUIET = -1
VERBOSE = 1
QUIET_HELP = "print only what was asked for (values, lists, status) and errors"
VERBOSE_HELP = "also say which control socket is used"


def add_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """-q and -v: how much a command says besides what was asked for (the last one given wins).
    The default is SUPPRESS so that, given before the command's name, they are not reset by it."""
    parser.add_argument(
        "-q", "--quiet", dest="verbosity", action="store_const", const=QUIET,
        default=argparse.SUPPRESS, help=QUIET_HELP,
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", dest="verbosity", action="store_const", const=VERBOSE,
        default=argparse.SUPPRESS, help=VERBOSE_HELP,
    )  # fmt: skip


def add_daemon_verbosity_options(parser: argparse.ArgumentParser) -> None:
    """The daemon's -q and -v: shorthands for --log-level warning and debug."""
    parser.add_argument(
        "-q", "--quiet", dest="log_level", action="store_const", const="warning",
        help="log warnings and errors only (--log-level warning)",
    )  # fmt: skip
    parser.add_argument(
        "-v", "--verbose", dest="log_level", action="store_const", const="debug",
        help="log everything, debug messages too (--log-level debug)",
    )  # fmt: skip


def daemon_log_level(args: argparse.Namespace) -> str | None:
    """The log level for `p2psync -q daemon` / `p2psync -v daemon` (options before `daemon`),
    unless the daemon's own --log-level, -q or -v said otherwise."""
    if args.log_level:
        return str(args.log_level)
    verbosity = getattr(args, "verbosity", 0)
    return "debug" if verbosity == VERBOSE else "warning" if verbosity == QUIET else None


def is_quiet(args: argparse.Namespace) -> bool:
    return getattr(args, "verbosity", 0) == QUIET


def is_verbose(args: argparse.Namespace) -> bool:
    return getattr(args, "verbosity", 0) == VERBOSE


INSTALL_HELP = """\
Install the system service: its unit in /etc/systemd/system, the sysusers file that creates user
p2psync (and run systemd-sysusers when that user is missing), and /etc/p2psync/config.toml with
every setting at its default unless that file exists. With --user, the per-user service under
~/.config instead. When this p2psync program is not where the unit looks for it, a drop-in names
it. Running it again changes nothing and says so; it never enables or starts the service."""
INSTALL_EXAMPLES = """\
examples:
  sudo p2psync install-service --dry-run        show what it would do
  sudo p2psync install-service --completion --man
  p2psync install-service --user
  p2psync install-service --root /tmp/image     into an image instead of this system
"""


def add_setup_commands(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> None:
    install = commands.add_parser(
        "install-service",
        help="install the systemd service, its user and a config file",
        description=INSTALL_HELP,
        epilog=INSTALL_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument(
        "-q", "--quiet", dest="verbosity", action="store_const", const=QUIET,
        default=argparse.SUPPRESS, help="print only warnings and errors",
    )  # fmt: skip
    install.add_argument(
        "--user", action="store_true", help="install the per-user service (for you alone)"
    )
    install.add_argument(
        "--dry-run", action="store_true", help="say what would be done; change nothing"
    )
    install.add_argument(
        "--root", metavar="DIR", default="/", help="install under DIR instead of / (an image)"
    )
    install.add_argument(
        "--completion", action="store_true", help="also install bash, zsh and fish completion"
    )
    install.add_argument("--man", action="store_true", help="also install the man page")
    install.set_defaults(without_daemon=cmd_install_service)

    completion = commands.add_parser(
        "completion",
        help="print the shell completion script for bash, zsh or fish",
        description="Print the shell completion script for bash, zsh or fish. "
        "`p2psync install-service --completion` installs all three.",
        epilog="examples:\n  source <(p2psync completion bash)\n"
        "  p2psync completion fish > ~/.config/fish/completions/p2psync.fish\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash, zsh or fish")
    completion.set_defaults(without_daemon=cmd_completion)

    man = commands.add_parser(
        "man",
        help="print the manual page (roff)",
        description="Print the manual page of p2psync, in roff. "
        "`p2psync install-service --man` installs it.",
        epilog="examples:\n  p2psync man | man -l -\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    man.set_defaults(without_daemon=cmd_man)


def _documented() -> CommandDoc:
    from . import cli  # cli.py imports this module to build its parser

    return document(cli.build_parser())


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell, _documented()))
    return EXIT_OK


def cmd_man(args: argparse.Namespace) -> int:
    sys.stdout.write(man_page(_documented(), __version__))
    return EXIT_OK


def cmd_install_service(args: argparse.Namespace) -> int:
    home = Path.home()
    places = (
        install_service.Places.user(os.environ, home)
        if args.user
        else install_service.Places.system()
    )
    extras: list[tuple[str, bytes]] = []
    if args.completion or args.man:
        documented = _documented()
        if args.completion:
            extras += [(shell, completion_script(shell, documented).encode()) for shell in SHELLS]
        if args.man:
            extras.append(("man", man_page(documented, __version__).encode()))
    program = install_service.running_program(sys.argv[0], sys.executable)
    items = install_service.plan(
        user=args.user, places=places, home=home, program=program, extras=extras
    )
    unit = install_service.shipped(install_service.unit_name(args.user))
    default_program = install_service.unit_program(unit, home)
    for warning in install_service.warnings_about(program, default_program, args.user):
        print(f"p2psync: warning: {warning}", file=sys.stderr)
    quiet = is_quiet(args)
    root = Path(args.root).absolute()
    installer = install_service.Installer(
        root=root,
        dry_run=args.dry_run,
        say=(lambda line: None) if quiet else print,
        tell_systemd=install_service.systemd_to_tell(root),
        user=args.user,
    )
    try:
        changed = installer.install(items)
    except install_service.InstallError as exc:
        print(f"p2psync: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if changed and not args.dry_run and not quiet:
        for step in install_service.next_steps(args.user, places, args.completion):
            print(step)
    return EXIT_OK

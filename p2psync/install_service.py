"""`p2psync install-service`: the units, the sysusers file and a config example put in place.

It owns where each shipped file goes (the system service's places, or a user's with --user, all
under --root when given), whether installing it changes anything (same bytes: nothing to do; a
config file that exists is never touched), a drop-in naming this installation's program when the
unit's default path is not it, and what is run afterwards: `systemd-sysusers` when the service's
user is missing, `systemctl daemon-reload` when a unit changed on a running systemd. Every step
is printed. The files come from the package (`p2psync/data/`, copies of `systemd/` and
`config.example.toml`); completion scripts and the man page are generated, on request. It never
enables or starts the service, never removes anything but a drop-in it wrote itself, and with
--dry-run it writes and runs nothing.
"""

import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

SERVICE_USER = "p2psync"
DROP_IN_MARKER = b"# Written by `p2psync install-service`"
# where a program under these would be hidden from the system service (ProtectHome=yes)
HIDDEN_FROM_THE_SERVICE = (Path("/home"), Path("/root"), Path("/run/user"))


class InstallError(Exception):
    """Something could not be installed; the message says what to do."""


def shipped(name: str) -> bytes:
    """A file of p2psync/data/, e.g. "systemd/p2psync.service"."""
    return resources.files("p2psync").joinpath("data", *name.split("/")).read_bytes()


@dataclass(frozen=True)
class Item:
    """One file to put in place: `target` is where it goes on the installed system."""

    target: Path
    content: bytes | None  # None: remove it, if it is a drop-in we wrote
    what: str
    mode: int = 0o644
    keep_existing: bool = False  # a config file: whoever wrote it, never replace it
    is_unit: bool = False  # systemd must reread its units when this changes
    creates_user: bool = False  # the sysusers file: systemd-sysusers reads it to make the user


@dataclass(frozen=True)
class Places:
    """Where things go, system-wide or for one user."""

    unit_dir: Path
    config_file: Path
    sysusers_file: Path | None  # a user service has no user of its own to create
    bash: Path
    zsh: Path
    fish: Path
    man: Path

    @staticmethod
    def system() -> "Places":
        share = Path("/usr/local/share")  # searched by bash-completion, zsh, fish and man-db
        return Places(
            unit_dir=Path("/etc/systemd/system"),
            config_file=Path("/etc/p2psync/config.toml"),
            sysusers_file=Path("/etc/sysusers.d/p2psync.conf"),
            bash=share / "bash-completion/completions/p2psync",
            zsh=share / "zsh/site-functions/_p2psync",
            fish=share / "fish/vendor_completions.d/p2psync.fish",
            man=share / "man/man1/p2psync.1",
        )

    @staticmethod
    def user(env: dict[str, str] | os._Environ[str], home: Path) -> "Places":
        config_home = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
        data_home = Path(env.get("XDG_DATA_HOME") or home / ".local/share")
        return Places(
            unit_dir=config_home / "systemd/user",
            config_file=config_home / "p2psync/config.toml",
            sysusers_file=None,
            bash=data_home / "bash-completion/completions/p2psync",
            zsh=data_home / "zsh/site-functions/_p2psync",
            fish=config_home / "fish/completions/p2psync.fish",
            man=data_home / "man/man1/p2psync.1",
        )


def running_program(argv0: str, executable: str) -> Path | None:
    """The `p2psync` program running now: the script itself, or the one beside the Python that
    runs `python -m p2psync`. Not resolved: a link such as /usr/local/bin/p2psync stays one."""
    script = Path(argv0)
    if script.name == "p2psync" and script.is_file():
        return script.absolute()
    beside = Path(executable).parent / "p2psync"
    return beside if beside.is_file() else None


def unit_name(user: bool) -> str:
    return "systemd/user/p2psync.service" if user else "systemd/p2psync.service"


def unit_program(unit: bytes, home: Path) -> Path:
    """The program a unit's ExecStart= runs, %h expanded."""
    found = re.search(rb"^ExecStart=(\S+) daemon$", unit, re.M)
    if not found:
        raise ValueError("the shipped unit has no `ExecStart=PROGRAM daemon` line")
    return Path(found[1].decode().replace("%h", str(home)))


def drop_in(program: Path, unit_default: Path) -> bytes:
    # systemd splits a command line at spaces, except inside double quotes
    command = f'"{program}"' if " " in str(program) else str(program)
    return (
        f"{DROP_IN_MARKER.decode()}:\n"
        f"# the unit runs {unit_default}, this installation's program is {program}.\n"
        "# Run it again after moving p2psync.\n"
        "[Service]\n"
        "ExecStart=\n"
        f"ExecStart={command} daemon\n"
        "ExecReload=\n"
        f"ExecReload={command} reload\n"
    ).encode()


def plan(
    *,
    user: bool,
    places: Places,
    home: Path,
    program: Path | None,
    extras: Sequence[tuple[str, bytes]] = (),
) -> list[Item]:
    """What to install; `extras` are (kind, content) of completion scripts and the man page,
    kind one of "bash", "zsh", "fish", "man"."""
    unit = shipped(unit_name(user))
    unit_path = places.unit_dir / "p2psync.service"
    items = [Item(unit_path, unit, "the user unit" if user else "the system unit", is_unit=True)]
    default_program = unit_program(unit, home)
    if program is not None:
        conf = places.unit_dir / "p2psync.service.d" / "program.conf"
        content = None if program == default_program else drop_in(program, default_program)
        items.append(Item(conf, content, "a drop-in naming this p2psync", is_unit=True))
    if places.sysusers_file is not None:
        items.append(
            Item(
                places.sysusers_file,
                shipped("systemd/p2psync.sysusers.conf"),
                f"the sysusers file that creates user {SERVICE_USER}",
                creates_user=True,
            )
        )
    items.append(
        Item(
            places.config_file,
            shipped("config.example.toml"),
            "a config file with every setting at its default",
            keep_existing=True,
        )
    )
    where = {"bash": places.bash, "zsh": places.zsh, "fish": places.fish, "man": places.man}
    for kind, content in extras:
        what = "the man page" if kind == "man" else f"{kind} completion"
        items.append(Item(where[kind], content, what))
    return items


Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


def run_command(command: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


@dataclass
class Installer:
    """Puts planned items in place under `root`, says each step, runs what follows them."""

    root: Path
    dry_run: bool
    say: Callable[[str], None]
    run: Runner = run_command
    tell_systemd: bool = False  # run `systemctl daemon-reload` when a unit changed
    user: bool = False

    def on_disk(self, target: Path) -> Path:
        return self.root / target.relative_to("/")

    def install(self, items: list[Item]) -> bool:
        """Put every item in place; True when anything changed (or would, with --dry-run)."""
        changed = [item for item in items if self._install(item)]
        units_changed = any(item.is_unit for item in changed)
        ran = [self._create_user(item) for item in items if item.creates_user]
        reloaded = units_changed and self._daemon_reload()
        if not changed and not any(ran):
            self.say("nothing changed: everything was already installed")
        elif units_changed and not reloaded and self.root == Path("/"):
            # (not for an image under --root: its systemd reads the units when it boots)
            self.say(f"then: {self._systemctl()} daemon-reload")
        return bool(changed) or any(ran)

    def _install(self, item: Item) -> bool:
        path = self.on_disk(item.target)
        try:
            current = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):
            current = None  # and writing it says why it cannot be there, if it cannot
        except OSError as exc:
            raise InstallError(f"cannot read {path} ({exc.strerror})") from None
        if item.content is None:
            if current is None or not current.startswith(DROP_IN_MARKER):
                return False  # nothing there, or someone else's: leave it
            self._apply(path.unlink, path)
            removed = "would remove" if self.dry_run else "removed"
            self.say(f"{removed} {path}: the unit's own program path is this p2psync")
            return True
        if current == item.content:
            self.say(f"unchanged {path} ({item.what})")
            return False
        if current is not None and item.keep_existing:
            self.say(f"kept {path}: it exists, and p2psync never replaces a config file")
            return False
        self._apply(lambda: _write(path, item.content or b"", item.mode), path)
        if self.dry_run:
            verb = "would install" if current is None else "would update"
        else:
            verb = "installed" if current is None else "updated"
        self.say(f"{verb} {path} ({item.what})")
        return True

    def _apply(self, action: Callable[[], None], path: Path) -> None:
        if self.dry_run:
            return
        try:
            action()
        except PermissionError:
            advice = "" if self.user else ", or install for yourself alone with --user"
            raise InstallError(
                f"cannot write {path} (permission denied): run as root{advice}"
            ) from None
        except OSError as exc:
            raise InstallError(f"cannot write {path} ({exc.strerror})") from None

    def _create_user(self, item: Item) -> bool:
        """The service's user, made by systemd-sysusers from the file just installed."""
        if self._user_exists():
            self.say(f"user {SERVICE_USER} exists")
            return False
        sysusers = shutil.which("systemd-sysusers")
        if sysusers is None:
            self.say(
                f"create user {SERVICE_USER} (systemd-sysusers is not installed): useradd "
                f"--system --user-group --home-dir /var/lib/p2psync --shell /usr/sbin/nologin "
                f"{SERVICE_USER}"
            )
            return False
        command = [sysusers, f"--root={self.root}", str(self.on_disk(item.target))]
        if self.dry_run:
            self.say(f"would run {' '.join(command)}")
            return True
        done = self.run(command)
        if done.returncode != 0:
            raise InstallError(f"{' '.join(command)} failed: {done.stderr.strip()}")
        self.say(f"ran {' '.join(command)}: created user and group {SERVICE_USER}")
        return True

    def _user_exists(self) -> bool:
        if self.root == Path("/"):
            try:
                pwd.getpwnam(SERVICE_USER)
            except KeyError:
                return False
            return True
        try:
            lines = (self.root / "etc/passwd").read_text().splitlines()
        except FileNotFoundError:
            return False
        return any(line.split(":", 1)[0] == SERVICE_USER for line in lines)

    def _systemctl(self) -> str:
        return "systemctl --user" if self.user else "systemctl"

    def _daemon_reload(self) -> bool:
        """systemd rereads units only when told."""
        if self.dry_run or not self.tell_systemd:
            return False
        command = [*self._systemctl().split(), "daemon-reload"]
        done = self.run(command)
        if done.returncode != 0:
            self.say(f"could not run {' '.join(command)}: {done.stderr.strip()}")
            return False
        self.say(f"ran {' '.join(command)}")
        return True


def systemd_to_tell(root: Path) -> bool:
    """Whether a running systemd reads the units installed under `root`: not those of an image."""
    return root == Path("/") and Path("/run/systemd/system").is_dir()


def _write(path: Path, content: bytes, mode: int) -> None:
    """Whole or not at all: a unit half written by a full disk must not be read by systemd."""
    path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_bytes(content)
    temporary.chmod(mode)
    temporary.replace(path)


def warnings_about(program: Path | None, unit_default: Path, user: bool) -> list[str]:
    """What would keep the installed service from starting the program."""
    if program is None:
        return [f"cannot tell where this p2psync program is; the unit runs {unit_default}"]
    if not user and any(program.is_relative_to(hidden) for hidden in HIDDEN_FROM_THE_SERVICE):
        return [
            f"{program} is hidden from the system service (ProtectHome=yes): install p2psync "
            "elsewhere, e.g. python3 -m venv /opt/p2psync && /opt/p2psync/bin/pip install ."
        ]
    return []


def next_steps(user: bool, places: Places, completion: bool) -> list[str]:
    if not user:
        return [
            "next: systemctl enable --now p2psync; then let people use it: usermod -aG p2psync NAME"
        ]
    steps = ["next: systemctl --user enable --now p2psync"]
    if completion:  # no directory of a user's is on zsh's default $fpath
        steps.append(f"for zsh, in ~/.zshrc before compinit: fpath+=({places.zsh.parent})")
    return steps

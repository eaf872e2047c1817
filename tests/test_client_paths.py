"""Where the control socket is (p2psync/client/paths.py), as the CLI and apps find it."""

from pathlib import Path

from p2psync import cli
from p2psync.client import ENV_SOCKET, default_socket_path

SYSTEM = Path("/run/p2psync/control.sock")


def test_the_environment_names_the_socket_first(tmp_path: Path) -> None:
    assert ENV_SOCKET == "P2PSYNC_SOCKET"
    named = {"P2PSYNC_SOCKET": "/x/y.sock", "XDG_RUNTIME_DIR": str(tmp_path)}
    assert default_socket_path(named, 1000) == Path("/x/y.sock")


def test_a_users_own_daemon_when_its_socket_is_there(tmp_path: Path) -> None:
    user = {"XDG_RUNTIME_DIR": str(tmp_path), "HOME": str(tmp_path / "home")}
    assert default_socket_path(user, 1000) == SYSTEM  # no daemon of ours: the system's
    own = tmp_path / "p2psync" / "control.sock"
    own.parent.mkdir()
    own.touch()
    assert default_socket_path(user, 1000) == own


def test_a_config_file_and_its_override(tmp_path: Path) -> None:
    configured = tmp_path / "elsewhere.sock"
    configured.touch()
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[control]\nsocket = "{configured}"\n')
    env = {"HOME": str(tmp_path), "P2PSYNC_CONFIG": str(config_file)}
    assert default_socket_path(env, 1000) == configured
    overridden = tmp_path / "override.sock"
    overridden.touch()
    assert default_socket_path({**env, "P2PSYNC_CONTROL_SOCKET": str(overridden)}, 1000) == (
        overridden
    )


def test_a_broken_config_means_where_the_defaults_put_the_socket(tmp_path: Path) -> None:
    own = tmp_path / "p2psync" / "control.sock"
    own.parent.mkdir()
    own.touch()
    env = {"HOME": str(tmp_path), "XDG_RUNTIME_DIR": str(tmp_path)}
    assert default_socket_path(env, 1000) == own
    broken = tmp_path / "broken.toml"
    broken.write_text("[control\n")
    # a daemon refuses a broken file on reload and keeps running there: `reload` must reach it
    assert default_socket_path({**env, "P2PSYNC_CONFIG": str(broken)}, 1000) == own
    missing = {**env, "P2PSYNC_CONFIG": str(tmp_path / "missing.toml")}
    assert default_socket_path(missing, 1000) == own
    assert default_socket_path({"P2PSYNC_CONFIG": "/missing.toml"}, 1000) == SYSTEM  # no HOME


def test_the_cli_uses_the_same_function() -> None:
    assert cli.default_socket_path is default_socket_path

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync import config, config_values
from p2psync.config import ConfigError, ConfigLocation

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
ROOT_ENV: dict[str, str] = {"HOME": "/root"}
USER_ENV = {"HOME": "/home/alice", "XDG_RUNTIME_DIR": "/run/user/1000"}
SOURCE = "/etc/p2psync/config.toml"


def parse(text: str, env: dict[str, str] = ROOT_ENV, euid: int = 0) -> config.Config:
    return config.parse_config(text, SOURCE, env=env, euid=euid, hostname="kitchen")


def error_of(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse(text)
    return str(caught.value)


# the example file is the documentation of the defaults, so it must never drift from the code


@pytest.mark.parametrize(("env", "euid"), [(ROOT_ENV, 0), (USER_ENV, 1000)])
def test_the_example_file_parses_to_the_defaults(env, euid):
    defaults = config.default_config(env, euid, "kitchen")
    assert parse(EXAMPLE.read_text(), env, euid) == defaults


def test_the_defaults_shown_in_the_example_are_the_real_defaults():
    pinned_lines = re.compile(r"^#(?=\w+ = )", re.MULTILINE)
    text, pinned = pinned_lines.subn("", EXAMPLE.read_text())
    assert pinned == 20
    assert parse(text) == config.default_config(ROOT_ENV, 0, "kitchen")


def test_the_example_documents_every_key_in_its_section():
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", EXAMPLE.read_text(), re.M | re.S))
    for key in config_values.KEYS:
        section, _, name = key.partition(".")
        assert re.search(rf"^#( e\.g\. )?{name} = ", sections[section], re.M), key


# defaults


def test_root_defaults_follow_the_filesystem_hierarchy():
    defaults = config.default_config(ROOT_ENV, 0, "kitchen")
    assert defaults.device_name == "kitchen"
    assert defaults.state_dir == Path("/var/lib/p2psync")
    assert defaults.control_socket == Path("/run/p2psync/control.sock")
    assert (defaults.control_mode, defaults.control_group) == (0o660, "p2psync")
    assert (defaults.control_apps, defaults.control_socket_mode) == (False, 0o660)
    assert defaults.listen == (("0.0.0.0", 47100), ("::", 47100))
    assert (defaults.peers, defaults.discovery_enabled, defaults.discovery_interfaces) == (
        (),
        True,
        (),
    )
    assert (defaults.handshake_timeout, defaults.idle_timeout, defaults.reconnect_max) == (
        10,
        8,
        60,
    )
    assert defaults.log_level == "info"
    assert defaults.metrics_listen is None


def test_systemd_directories_win_over_everything_else():
    env = {
        **USER_ENV,
        "STATE_DIRECTORY": "/var/lib/p2psync:/var/lib/other",
        "RUNTIME_DIRECTORY": "/run/p2psync",
    }
    defaults = config.default_config(env, 998, "kitchen")
    assert defaults.state_dir == Path("/var/lib/p2psync")
    assert defaults.control_socket == Path("/run/p2psync/control.sock")


def test_a_user_gets_xdg_directories():
    defaults = config.default_config(USER_ENV, 1000, "kitchen")
    assert defaults.state_dir == Path("/home/alice/.local/share/p2psync")
    assert defaults.control_socket == Path("/run/user/1000/p2psync/control.sock")
    moved = config.default_config({**USER_ENV, "XDG_DATA_HOME": "/data"}, 1000, "kitchen")
    assert moved.state_dir == Path("/data/p2psync")
    ignored = config.default_config({**USER_ENV, "XDG_DATA_HOME": "relative"}, 1000, "kitchen")
    assert ignored.state_dir == Path("/home/alice/.local/share/p2psync")


def test_without_a_runtime_directory_the_socket_lives_in_the_state_directory():
    defaults = config.default_config({"HOME": "/home/alice"}, 1000, "kitchen")
    assert defaults.control_socket == Path("/home/alice/.local/share/p2psync/control.sock")
    from_file = parse('[paths]\nstate_dir = "/srv/sync"', {"HOME": "/home/alice"}, 1000)
    assert from_file.control_socket == Path("/srv/sync/control.sock")


def test_a_user_without_home_is_told_what_to_set():
    with pytest.raises(ConfigError, match=r"HOME.*paths\.state_dir"):
        config.default_config({}, 1000, "kitchen")
    assert parse('[paths]\nstate_dir = "/srv/sync"', {}, 1000).state_dir == Path("/srv/sync")


@pytest.mark.parametrize(
    ("hostname", "name"),
    [("kitchen", "kitchen"), ("", "p2psync"), (" \n", "p2psync"), ("é" * 40, "é" * 31)],
)
def test_the_default_name_is_a_usable_host_name(hostname, name):
    assert config.default_config(ROOT_ENV, 0, hostname).device_name == name


# parsing


def test_every_setting_is_read():
    settings = parse(
        """
        [device]
        name = "  Kitchen laptop "
        [paths]
        state_dir = "/srv/p2psync"
        [control]
        socket = "/run/sync.sock"
        mode = "600"
        group = ""
        apps = true
        [network]
        listen = ["127.0.0.1:0", "[::1]:47101"]
        peers = ["nas.lan:47100", "[fe80::1%eth0]:47100", "192.168.1.20:1"]
        [discovery]
        enabled = false
        interfaces = ["eth0", "192.168.1.10"]
        [sync]
        handshake_timeout = 2.5
        idle_timeout = 30
        reconnect_max = 120
        [log]
        level = "DEBUG"
        """
    )
    assert settings.device_name == "Kitchen laptop"
    assert settings.state_dir == Path("/srv/p2psync")
    assert settings.control_socket == Path("/run/sync.sock")
    assert (settings.control_mode, settings.control_group) == (0o600, None)
    assert settings.control_apps is True
    assert settings.listen == (("127.0.0.1", 0), ("::1", 47101))
    assert settings.peers == (("nas.lan", 47100), ("fe80::1%eth0", 47100), ("192.168.1.20", 1))
    assert (settings.discovery_enabled, settings.discovery_interfaces) == (
        False,
        ("eth0", "192.168.1.10"),
    )
    assert (settings.handshake_timeout, settings.idle_timeout, settings.reconnect_max) == (
        2.5,
        30.0,
        120.0,
    )
    assert settings.log_level == "debug"
    assert settings.source == SOURCE


def test_dotted_keys_at_the_top_level_are_the_same_settings():
    assert parse('network.peers = ["10.0.0.2:47100"]').peers == (("10.0.0.2", 47100),)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[network]\nlisen = ["0.0.0.0:47100"]',
            'config.toml: unknown key "network.lisen" (did you mean "network.listen"?)',
        ),
        ("[netwrk]", 'unknown section "netwrk" (did you mean "network"?)'),
        ('listen = ["0.0.0.0:1"]', 'unknown key "listen" (did you mean "network.listen"?)'),
        ('[paths]\nsocket = "/x"', 'unknown key "paths.socket" (did you mean "control.socket"?)'),
        ("[device]\ncolour = 1", 'unknown key "device.colour"'),
        ("network = 3", '"network" must be a table'),
        (
            '[network]\nlisten = ["0.0.0.0:47100", "foo"]',
            '"network.listen"[1] = "foo": expected "HOST:PORT", e.g. "0.0.0.0:47100"',
        ),
        (
            '[network]\nlisten = "0.0.0.0:47100"',
            '"network.listen" = "0.0.0.0:47100": expected a list in square brackets',
        ),
        ("[network]\nlisten = []", '"network.listen" = []: expected at least one entry'),
        (
            '[network]\nlisten = ["fe80::1:80"]',
            'an IPv6 address goes in brackets, e.g. "[fe80::1]:80"',
        ),
        ('[network]\nlisten = ["[::1]47100"]', 'expected "[IPV6]:PORT"'),
        ('[network]\nlisten = ["[nope]:1"]', '"nope" in brackets is not an IPv6 address'),
        ('[network]\nlisten = [":47100"]', 'no host: expected "HOST:PORT"'),
        ('[network]\nlisten = ["*:47100"]', 'use "0.0.0.0" or "[::]" for every address'),
        ('[network]\nlisten = ["0.0.0.0:65536"]', 'port "65536" is not a number from 0 to 65535'),
        (
            '[network]\npeers = ["nas:0"]',
            '"network.peers"[0] = "nas:0": port "0" is not a number from 1 to 65535',
        ),
        ('[network]\npeers = ["nas:+1"]', 'port "+1" is not a number'),
        ('[network]\npeers = ["300.1.1.1:1"]', '"300.1.1.1" is not an IPv4 address'),
        ('[network]\npeers = ["bad_host:1"]', '"bad_host" is neither an IP address nor a host'),
        ("[network]\npeers = [47100]", '"network.peers"[0] = 47100: expected "HOST:PORT"'),
        (
            '[network]\npeers = ["a:1", "b:2", "a:1"]',
            '"network.peers"[2] = "a:1": listed twice (also at [0])',
        ),
        ('[device]\nname = "  "', '"device.name" = "  ": expected a name'),
        ('[device]\nname = "a\\nb"', "cannot contain control characters"),
        (f'[device]\nname = "{"x" * 64}"', "at most 63 bytes"),
        ("[device]\nname = 7", '"device.name" = 7: expected a name, e.g. "Kitchen laptop" in'),
        ('[paths]\nstate_dir = "~/p2psync"', '"paths.state_dir" = "~/p2psync": expected an abs'),
        ('[control]\nsocket = "control.sock"', "expected an absolute path"),
        ("[control]\nmode = 0o660", '"control.mode" = 432: expected an octal mode in quotes'),
        ('[control]\nmode = "0888"', "expected an octal mode"),
        ('[control]\nmode = "0066"', "the owner needs read and write"),
        ('[control]\ngroup = "1000"', "a name, not a number"),
        ('[discovery]\nenabled = "yes"', '"discovery.enabled" = "yes": expected true or false'),
        (
            '[discovery]\ninterfaces = ["a very long name"]',
            '"discovery.interfaces"[0] = "a very long name": expected an interface name',
        ),
        ('[discovery]\ninterfaces = ["eth0:1"]', "expected an interface name"),
        ('[sync]\nidle_timeout = "60"', '"sync.idle_timeout" = "60": expected a number of secon'),
        ("[sync]\nidle_timeout = true", "expected a number of seconds"),
        ("[sync]\nhandshake_timeout = 0", "above 0 and at most 86400"),
        ("[sync]\nreconnect_max = inf", "above 0 and at most 86400"),
        ("[sync]\nreconnect_max = 100000", "above 0 and at most 86400"),
        (
            '[log]\nlevel = "warn"',
            '"log.level" = "warn": expected one of debug, info, warning, '
            'error (did you mean "warning"?)',
        ),
    ],
)
def test_each_mistake_is_named_with_the_file_and_key(text, expected):
    message = error_of(text)
    assert message.startswith(f"{SOURCE}: ")
    assert expected in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[device]\nname = Kitchen",
            "line 2, column 8: not valid TOML: invalid value; strings need double quotes",
        ),
        ("[sync]\n[sync]\n", "line 2, column 6: not valid TOML: cannot declare"),
        ("[log]\nlevel = 'info'\nlevel = 'debug'\n", "each key may appear only once"),
    ],
)
def test_syntax_errors_give_the_line(text, expected):
    message = error_of(text)
    assert message.startswith(f"{SOURCE}, line ")
    assert expected in message


# a TOML writer for the few shapes our settings take, to feed random valid files to the parser


def to_toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(to_toml(element) for element in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # its escapes are valid in TOML strings
    return repr(value)


addresses = st.tuples(st.ip_addresses().map(str), st.integers(min_value=1, max_value=65535))
seconds = st.one_of(
    st.integers(min_value=1, max_value=86400), st.floats(min_value=0.001, max_value=86400)
)
# key -> (strategy for the model value, its TOML form, the Config attribute)
SETTINGS = {
    "device.name": (
        st.text(
            st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
            min_size=1,
            max_size=15,
        ),
        str,
        "device_name",
    ),
    "paths.state_dir": (st.from_regex(r"/[a-z0-9/]{0,20}", fullmatch=True), str, "state_dir"),
    "control.mode": (
        st.sampled_from([0o600, 0o640, 0o660, 0o666]),
        "{:04o}".format,
        "control_mode",
    ),
    "network.listen": (
        st.lists(addresses, min_size=1, max_size=3, unique=True),
        lambda found: [config_values.format_address(*a) for a in found],
        "listen",
    ),
    "network.peers": (
        st.lists(addresses, max_size=3, unique=True),
        lambda found: [config_values.format_address(*a) for a in found],
        "peers",
    ),
    "discovery.enabled": (st.booleans(), bool, "discovery_enabled"),
    "control.apps": (st.booleans(), bool, "control_apps"),
    "sync.idle_timeout": (seconds, lambda number: number, "idle_timeout"),
    "log.level": (st.sampled_from(config_values.LOG_LEVELS), str, "log_level"),
}


@st.composite
def settings_files(draw):
    chosen = draw(st.lists(st.sampled_from(sorted(SETTINGS)), unique=True))
    expected, sections = {}, {}
    for key in chosen:
        strategy, as_toml, attribute = SETTINGS[key]
        value = draw(strategy)
        section, _, name = key.partition(".")
        sections.setdefault(section, []).append(f"{name} = {to_toml(as_toml(value))}")
        expected[attribute] = value
    text = "".join(
        f"[{section}]\n" + "\n".join(lines) + "\n" for section, lines in sections.items()
    )
    return text, expected


@given(settings_files())
def test_random_valid_files_give_exactly_their_settings(generated):
    text, expected = generated
    settings = parse(text)
    defaults = config.default_config(ROOT_ENV, 0, "kitchen")
    for attribute in {attribute for _, _, attribute in SETTINGS.values()}:
        got = getattr(settings, attribute)
        if attribute in expected:
            want = expected[attribute]
            if isinstance(want, list):
                want = tuple(want)
            elif attribute == "state_dir":
                want = Path(want)
            assert got == want, attribute
        else:
            assert got == getattr(defaults, attribute), attribute


def test_apps_open_the_socket_to_every_local_user_whatever_the_mode():
    assert parse('[control]\nmode = "0600"\napps = true').control_socket_mode == 0o666
    assert parse('[control]\nmode = "0640"\napps = false').control_socket_mode == 0o640
    assert 'expected true or false' in error_of('[control]\napps = "yes"')


# overrides


def test_overrides_beat_the_file_and_empty_ones_are_ignored():
    settings = parse('[log]\nlevel = "error"')
    overridden = config.apply_overrides(settings, state_dir="/srv/x", log_level="Debug")
    assert (overridden.state_dir, overridden.log_level) == (Path("/srv/x"), "debug")
    assert config.apply_overrides(settings, state_dir="", log_level="") == settings


def test_a_state_dir_override_takes_a_socket_along_only_when_it_was_inside():
    inside = config.default_config({"HOME": "/home/alice"}, 1000, "kitchen")
    moved = config.apply_overrides(inside, state_dir="/tmp/a")
    assert moved.control_socket == Path("/tmp/a/control.sock")
    root = config.default_config(ROOT_ENV, 0, "kitchen")
    assert config.apply_overrides(root, state_dir="/tmp/a").control_socket == Path(
        "/run/p2psync/control.sock"
    )
    pinned = config.apply_overrides(inside, control_socket="/tmp/c.sock")
    assert config.apply_overrides(pinned, state_dir="/tmp/a").control_socket == Path("/tmp/c.sock")


def test_one_environment_variable_names_the_control_socket_and_the_old_one_still_works():
    assert config.control_socket_from_env({}) == (None, None)
    assert config.control_socket_from_env({"P2PSYNC_SOCKET": "/s"}) == ("/s", None)
    assert config.control_socket_from_env({"P2PSYNC_SOCKET": ""}) == (None, None)
    socket, warning = config.control_socket_from_env({"P2PSYNC_CONTROL_SOCKET": "/old"})
    assert socket == "/old"
    assert warning is not None and "deprecated" in warning and "P2PSYNC_SOCKET=/old" in warning
    both = {"P2PSYNC_SOCKET": "/new", "P2PSYNC_CONTROL_SOCKET": "/old"}
    socket, warning = config.control_socket_from_env(both)
    assert socket == "/new"
    assert warning is not None and "P2PSYNC_CONTROL_SOCKET=/old is ignored" in warning
    same = {"P2PSYNC_SOCKET": "/s", "P2PSYNC_CONTROL_SOCKET": "/s"}
    assert config.control_socket_from_env(same)[1] is not None, "still worth removing"


def test_a_bad_log_level_override_names_where_it_came_from():
    with pytest.raises(ConfigError, match=r'log level "loud" \(from --log-level or P2PSYNC_LOG_'):
        config.apply_overrides(config.default_config(ROOT_ENV, 0, "x"), log_level="loud")


# finding and loading the file


@pytest.mark.parametrize(
    ("env", "euid", "explicit", "expected"),
    [
        ({**USER_ENV, "P2PSYNC_CONFIG": "/a.toml"}, 1000, "/b.toml", ("/b.toml", True)),
        ({**USER_ENV, "P2PSYNC_CONFIG": "/a.toml"}, 1000, None, ("/a.toml", True)),
        (
            {**USER_ENV, "CONFIGURATION_DIRECTORY": "/etc/p2psync"},
            998,
            None,
            ("/etc/p2psync/config.toml", False),
        ),
        (ROOT_ENV, 0, None, ("/etc/p2psync/config.toml", False)),
        (USER_ENV, 1000, None, ("/home/alice/.config/p2psync/config.toml", False)),
        ({**USER_ENV, "XDG_CONFIG_HOME": "/cfg"}, 1000, None, ("/cfg/p2psync/config.toml", False)),
        ({}, 1000, None, (None, False)),
    ],
)
def test_where_the_config_file_is_looked_for(env, euid, explicit, expected):
    found = config.find_config_path(env, euid, explicit=explicit)
    assert (str(found.path) if found.path else None, found.required) == expected


def load(location) -> config.Config:
    return config.load_config_file(location, env=ROOT_ENV, euid=0, hostname="kitchen")


def test_a_missing_default_file_means_the_defaults(tmp_path):
    settings = load(ConfigLocation(tmp_path / "absent.toml", required=False, named_by="default"))
    assert settings == config.default_config(ROOT_ENV, 0, "kitchen")
    assert "absent.toml" in settings.source


def test_a_missing_named_file_is_an_error_that_says_who_named_it(tmp_path):
    location = config.find_config_path({"P2PSYNC_CONFIG": str(tmp_path / "x.toml")}, 0)
    with pytest.raises(ConfigError, match=r"x.toml: no such config file \(named by P2PSYNC_CO"):
        load(location)


def test_a_file_is_read_and_its_errors_name_it(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text('[device]\nname = "Attic"\n')
    assert load(path).device_name == "Attic"
    path.write_text("[device]\nnom = 1\n")
    with pytest.raises(ConfigError, match=rf'^{re.escape(str(path))}: unknown key "device.nom"'):
        load(path)
    path.write_bytes(b'[device]\nname = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8 text"):
        load(path)
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load(tmp_path)


# the web UI


def test_the_web_ui_is_on_by_default_on_its_own_port_and_can_be_turned_off():
    defaults = config.default_config(ROOT_ENV, 0, "kitchen")
    assert (defaults.ui_enabled, defaults.ui_port) == (True, config_values.DEFAULT_UI_PORT)
    assert config_values.DEFAULT_UI_PORT != config_values.DEFAULT_PORT
    off = parse("[ui]\nenabled = false\n")
    assert not off.ui_enabled
    assert parse("[ui]\nport = 0\n").ui_port == 0  # any free port


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('[ui]\nport = "47180"\n', '"ui.port" = "47180": expected a port number without quotes'),
        ("[ui]\nport = 65536\n", "from 0 to 65535"),
        ("[ui]\nport = true\n", "expected a port number"),
        ('[ui]\nenabled = "yes"\n', '"ui.enabled" = "yes": expected true or false'),
        ("[ui]\nbind = \"0.0.0.0\"\n", 'unknown key "ui.bind"'),
    ],
)
def test_bad_web_ui_settings_are_named_with_what_to_write(text, says):
    assert says in error_of(text)


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ('""', None),
        ('"127.0.0.1:9473"', ("127.0.0.1", 9473)),
        ('"127.0.0.2:9473"', ("127.0.0.2", 9473)),
        ('"[::1]:9473"', ("::1", 9473)),
        ('"/run/p2psync/metrics.sock"', Path("/run/p2psync/metrics.sock")),
    ],
)
def test_metrics_listen(text, parsed):
    assert parse(f"[metrics]\nlisten = {text}").metrics_listen == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('"0.0.0.0:9473"', "loopback or a Unix socket only"),
        ('"[::]:9473"', "loopback or a Unix socket only"),
        ('"192.168.1.2:9473"', "loopback or a Unix socket only"),
        ('"localhost:9473"', 'expected "127.0.0.1:9473"'),
        ('"metrics.sock"', 'expected "127.0.0.1:9473"'),
        ("9473", 'expected "127.0.0.1:9473"'),
    ],
)
def test_metrics_listen_refuses_what_is_not_loopback_or_a_path(text, message):
    found = error_of(f"[metrics]\nlisten = {text}")
    assert '"metrics.listen"' in found and message in found


# history (issue 11)


def test_compaction_is_on_by_default_and_its_policy_has_defaults():
    defaults = config.default_config(ROOT_ENV, 0, "kitchen")
    assert defaults.history_compaction
    assert not parse("[history]\ncompaction = false\n").history_compaction
    assert (defaults.keep_for_absent_days, defaults.history_interval) == (30.0, 300.0)
    on = parse("[history]\ncompaction = true\nkeep_for_absent_days = 7\ninterval = 2\n")
    assert on.history_compaction and on.keep_for_absent_days == 7.0 and on.history_interval == 2.0


def test_the_largest_snapshot_taken_has_a_default_and_can_be_set():
    assert config.default_config(ROOT_ENV, 0, "kitchen").max_snapshot_mb == 16384
    assert parse("[history]\nmax_snapshot_mb = 64\n").max_snapshot_mb == 64


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("[history]\nkeep_for_absent_days = 0\n", "above 0 and at most 3650"),
        ('[history]\nkeep_for_absent_days = "30"\n', "expected a number of days without quotes"),
        ("[history]\ncompaction = 1\n", '"history.compaction" = 1: expected true or false'),
        ("[history]\ninterval = -1\n", "expected a number of seconds above 0"),
        ("[history]\nmax_snapshot_mb = 0\n", "expected a whole number of MiB"),
        ("[history]\nmax_snapshot_mb = 1.5\n", "expected a whole number of MiB"),
    ],
)
def test_bad_history_settings_are_named_with_what_to_write(text, says):
    assert says in error_of(text)

"""What each config key accepts (p2psync/config_values.py): addresses, converters, the key table.
How a bad value is reported with its file and key is tests/test_config.py's."""

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync import config_values
from p2psync.config import Config
from p2psync.config_values import KEYS, SECTIONS, Invalid

# addresses


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("0.0.0.0:47100", ("0.0.0.0", 47100)),
        ("[::]:0", ("::", 0)),
        ("nas.lan.:1", ("nas.lan.", 1)),
        ("[fe80::1%wlan0]:47100", ("fe80::1%wlan0", 47100)),
    ],
)
def test_listen_addresses(text, parsed):
    assert config_values.parse_address(text, listening=True) == parsed
    assert config_values.format_address(*parsed) == text


host_names = st.from_regex(r"[a-z][a-z0-9-]{0,20}[a-z0-9]", fullmatch=True)


@given(st.one_of(st.ip_addresses().map(str), host_names), st.integers(min_value=1, max_value=65535))
def test_formatted_addresses_parse_back(host, port):
    assert config_values.parse_address(config_values.format_address(host, port)) == (host, port)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("nas.lan:0", 'port "0" is not a number from 1 to 65535'),
        ("::1:47100", 'an IPv6 address goes in brackets, e.g. "[::1]:47100"'),
        ("*:47100", "no host"),
        ("300.1.1.1:47100", '"300.1.1.1" is not an IPv4 address'),
    ],
)
def test_a_bad_peer_address_says_what_is_wrong(text, says):
    with pytest.raises(ValueError) as caught:
        config_values.parse_address(text)
    assert says in str(caught.value)


# the key table and its converters


def test_each_key_sets_a_config_field_of_its_own():
    fields = {field.name for field in dataclasses.fields(Config)}
    attributes = [attribute for attribute, _ in KEYS.values()]
    assert set(attributes) <= fields
    assert len(set(attributes)) == len(KEYS)
    assert "network" in SECTIONS and "network.listen" not in SECTIONS


def test_a_device_name_is_trimmed_and_checked():
    assert config_values.check_device_name("  Kitchen laptop ") == "Kitchen laptop"
    with pytest.raises(ValueError, match="control characters"):
        config_values.check_device_name("Kitchen\tlaptop")
    too_long = "ä" * (config_values.MAX_DEVICE_NAME_BYTES // 2 + 1)
    with pytest.raises(ValueError, match="bytes of UTF-8"):
        config_values.check_device_name(too_long)


def test_a_log_level_ignores_case_and_suggests_the_closest():
    assert config_values.check_log_level("WARNING") == "warning"
    with pytest.raises(Invalid, match='did you mean "debug"'):
        config_values.check_log_level("debg")


def test_a_list_element_at_fault_is_pointed_at():
    _, convert = KEYS["network.peers"]
    with pytest.raises(Invalid) as caught:
        convert(["192.168.1.20:47100", "nas.lan:47100", "192.168.1.20:47100"])
    assert (caught.value.index, caught.value.element) == (2, "192.168.1.20:47100")
    assert caught.value.reason == "listed twice (also at [0])"


def test_an_interface_is_a_kernel_device_name_or_an_address():
    _, convert = KEYS["discovery.interfaces"]
    assert convert(["eth0", "192.168.1.20"]) == ("eth0", "192.168.1.20")
    with pytest.raises(Invalid) as caught:
        convert(["eth0", "a/b"])
    assert caught.value.index == 1
    assert "an interface name" in caught.value.reason


def test_ip_of_reads_addresses_with_or_without_a_zone_and_refuses_names():
    assert str(config_values.ip_of("192.168.1.20")) == "192.168.1.20"
    assert str(config_values.ip_of("fe80::1%eth0")) == "fe80::1"
    for name in ("laptop.home.arpa", "kitchen", "", "300.1.1.1"):
        assert config_values.ip_of(name) is None, name

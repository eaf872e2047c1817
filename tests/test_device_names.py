"""Which device a person means: names, short ids, prefixes, whole ids in any spelling."""

import pytest

from p2psync.device_names import AmbiguousDevice, DeviceNotFound, find_device
from p2psync.identity import DeviceIdentity

IPAD, KITCHEN, TV = (DeviceIdentity.generate().device_id for _ in range(3))
DEVICES = {IPAD: "Anna's iPad 2.0", KITCHEN: "Küche", TV: "living room.tv"}


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("Anna's iPad 2.0", IPAD),
        ("küche", KITCHEN),  # a name in another case, when no name matches exactly
        ("living room.tv", TV),
        (IPAD, IPAD),
        (IPAD.lower().replace("-", " "), IPAD),  # a whole id, spelled sloppily
        (KITCHEN[:5], KITCHEN),  # the short id `peers` shows
        (TV[:4].lower(), TV),
    ],
)
def test_a_device_is_found_by_what_people_see(typed, meant):
    assert find_device(typed, DEVICES) == meant


def test_an_ambiguous_prefix_or_name_lists_the_candidates():
    twins = {f"{IPAD[:6]}AAAA-1": "a", f"{IPAD[:6]}BBBB-2": "b", TV: "b"}
    with pytest.raises(AmbiguousDevice) as found:
        find_device(IPAD[:5], twins)
    assert sorted(found.value.candidates) == sorted(list(twins)[:2])
    assert "a (" in str(found.value) and "give more of the id" in str(found.value)
    with pytest.raises(AmbiguousDevice, match="could be any of"):
        find_device("b", twins)


STRANGER = DeviceIdentity.generate().device_id


@pytest.mark.parametrize("typed", ["", "nobody", "AB", "Q" * 5, STRANGER])
def test_no_match_says_which_devices_there_are(typed):
    with pytest.raises(DeviceNotFound) as found:
        find_device(typed, DEVICES)
    assert typed == "" or "Küche" in str(found.value)

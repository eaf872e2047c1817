"""The grant rules (p2psync/access/grants.py): who may call what, and on which records."""

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from p2psync.access.grants import (
    ADMIN_METHODS,
    MAX_UID,
    Access,
    Grant,
    GrantError,
    Peer,
    covered,
    data_refusal,
    decode_grants,
    encode_grants,
    is_admin,
    make_grant,
    method_access,
    method_refusal,
    parse_app,
    watch_refusal,
    with_grant,
    without_grants,
)

ALICE = Peer(uid=1001, user="alice", admin=False)
BOB = Peer(uid=1002, user=None, admin=False)
ROOT = Peer(uid=0, user="root", admin=True)
HIDDEN = Peer(uid=65534, user=None, admin=False, identified=False)
ADMINS = "root and members of group p2psync"

GRANTS = (
    Grant(1001, "photos", None, read_only=True),
    Grant(1001, "family", "shopping", read_only=False),
    Grant(1001, "family", "recipes", read_only=True),
)


# methods ----------------------------------------------------------------------------------------


def test_data_methods_read_or_write_and_everything_else_is_for_admins() -> None:
    assert {m for m in ("get", "scan", "conflicts", "watch") if method_access(m) is Access.READ}
    assert [method_access(m) for m in ("put", "delete", "transaction", "resolve")] == [
        Access.WRITE
    ] * 4
    assert method_access("id") is method_access("status") is Access.ANYONE
    assert all(method_access(m) is Access.ADMIN for m in ADMIN_METHODS)
    # a method nobody classified (added later, or by a parallel change) is closed to apps
    assert method_access("share_frobnicate") is Access.ADMIN
    assert method_access("changes") is Access.ADMIN


def test_an_app_may_not_call_admin_methods_and_is_told_who_may() -> None:
    for method in ("trust", "revoke", "forget", "pair", "grant", "grants", "share_create"):
        refusal = method_refusal(ALICE, method, ADMINS)
        assert refusal == (
            f"app uid 1001 (alice) may not use {method!r}: only admins of this device may "
            f"({ADMINS})"
        )
        assert method_refusal(ROOT, method, ADMINS) is None
    assert method_refusal(ALICE, "get", ADMINS) is None  # decided by its grants instead
    assert method_refusal(ALICE, "id", ADMINS) is None


# covering ---------------------------------------------------------------------------------------


def test_a_share_wide_grant_covers_every_collection_a_collection_grant_only_its_own() -> None:
    assert covered(ALICE, GRANTS, "photos", "2024", write=False)
    assert covered(ALICE, GRANTS, "photos", None, write=False)  # the whole share, e.g. conflicts
    assert covered(ALICE, GRANTS, "family", "shopping", write=True)
    assert not covered(ALICE, GRANTS, "family", "diary", write=False)
    assert not covered(ALICE, GRANTS, "family", None, write=False)
    assert not covered(ALICE, GRANTS, "parents", "x", write=False)


def test_read_only_grants_refuse_writes() -> None:
    assert not covered(ALICE, GRANTS, "photos", "2024", write=True)
    assert not covered(ALICE, GRANTS, "family", "recipes", write=True)
    assert data_refusal(ALICE, GRANTS, "family", "recipes", write=True) == (
        "app uid 1001 (alice) may only read collection 'recipes' of share 'family': its grant "
        "is read-only"
    )


def test_refusals_say_what_was_refused_and_why() -> None:
    assert (
        data_refusal(ALICE, GRANTS, "parents", "x", write=False)
        == "app uid 1001 (alice) has no grant for share 'parents'"
    )
    assert data_refusal(ALICE, GRANTS, "family", "diary", write=False) == (
        "app uid 1001 (alice) has no grant for collection 'diary' of share 'family' (only for "
        "'recipes', 'shopping')"
    )
    whole = data_refusal(ALICE, GRANTS, "family", None, write=False)
    assert whole is not None and "only some collections of share 'family'" in whole
    assert data_refusal(BOB, GRANTS, "photos", "x", write=False) == (
        "app uid 1002 has no grant for share 'photos'"
    )


def test_system_collections_stay_with_admins_even_under_a_share_wide_grant() -> None:
    grants = (Grant(1001, "default", None, read_only=False),)
    assert covered(ALICE, grants, "default", "notes", write=True)
    refusal = data_refusal(ALICE, grants, "default", "_devices", write=False)
    assert refusal is not None and "'_devices'" in refusal and "admins only" in refusal
    assert covered(ROOT, grants, "default", "_devices", write=True)
    with pytest.raises(GrantError, match="p2psync's own"):
        make_grant(1001, "default", "_devices", False)


def test_a_grant_of_another_uid_covers_nothing() -> None:
    assert not covered(BOB, GRANTS, "photos", "2024", write=False)


def test_admins_are_never_refused_and_unidentified_apps_always() -> None:
    assert data_refusal(ROOT, (), "parents", "x", write=True) is None
    assert watch_refusal(ROOT, (), None, None) is None
    nobody_grant = (Grant(65534, "photos", None, read_only=False),)
    assert not covered(HIDDEN, nobody_grant, "photos", "x", write=False)
    refusal = data_refusal(HIDDEN, nobody_grant, "photos", "x", write=False)
    assert refusal is not None and "PrivateUsers" in refusal and "uid 65534" in refusal


@given(
    st.lists(
        st.builds(
            Grant,
            st.sampled_from([1001, 1002]),
            st.sampled_from(["a", "b"]),
            st.sampled_from([None, "x", "y"]),
            st.booleans(),
        ),
        max_size=6,
    ),
    st.sampled_from(["a", "b"]),
    st.sampled_from([None, "x", "y", "_devices"]),
    st.booleans(),
)
def test_a_refusal_is_given_exactly_when_no_grant_covers(grants, share, collection, write) -> None:
    refusal = data_refusal(ALICE, grants, share, collection, write=write)
    assert (refusal is None) == covered(ALICE, grants, share, collection, write=write)
    expected = not collection or not collection.startswith("_")
    expected = expected and any(
        g.uid == 1001
        and g.share == share
        and g.collection in (None, collection)
        and not (write and g.read_only)
        for g in grants
    )
    assert (refusal is None) == expected


# watch ------------------------------------------------------------------------------------------


def test_a_watch_must_ask_for_something_the_app_may_read() -> None:
    assert watch_refusal(ALICE, GRANTS, None, None) is None  # every share, filtered per change
    assert watch_refusal(ALICE, GRANTS, "photos", None) is None
    assert watch_refusal(ALICE, GRANTS, "family", None) is None  # two of its collections
    assert watch_refusal(ALICE, GRANTS, None, "shopping") is None
    assert watch_refusal(ALICE, GRANTS, None, "diary") is None  # in photos
    assert watch_refusal(ALICE, GRANTS[1:], None, "diary") == (
        "app uid 1001 (alice) has no grant for collection 'diary' in any share"
    )
    assert watch_refusal(ALICE, GRANTS, "family", "diary") == (
        "app uid 1001 (alice) has no grant for collection 'diary' of share 'family' (only for "
        "'recipes', 'shopping')"
    )
    assert watch_refusal(ALICE, GRANTS, "parents", None) == (
        "app uid 1001 (alice) has no grant for share 'parents'"
    )
    refusal = watch_refusal(BOB, GRANTS, None, None)
    assert refusal is not None and "no grant for any share" in refusal
    system = watch_refusal(ALICE, GRANTS, None, "_devices")
    assert system is not None and "admins only" in system


# the list of grants -----------------------------------------------------------------------------


def test_a_new_grant_replaces_the_one_for_the_same_uid_share_and_collection() -> None:
    upgraded = with_grant(GRANTS, Grant(1001, "photos", None, read_only=False))
    assert len(upgraded) == len(GRANTS)
    assert covered(ALICE, upgraded, "photos", "2024", write=True)
    more = with_grant(upgraded, Grant(1001, "photos", "2024", read_only=True))
    assert len(more) == len(GRANTS) + 1


def test_revoking_without_a_collection_takes_every_grant_of_the_share() -> None:
    kept, removed = without_grants(GRANTS, 1001, "family", None)
    assert {g.collection for g in removed} == {"shopping", "recipes"}
    assert kept == (GRANTS[0],)
    kept, removed = without_grants(GRANTS, 1001, "family", "recipes")
    assert [g.collection for g in removed] == ["recipes"] and len(kept) == 2
    assert without_grants(GRANTS, 1002, "photos", None) == (GRANTS, ())
    # the share-wide grant is not a grant of one collection
    assert without_grants(GRANTS, 1001, "photos", "2024")[1] == ()


def test_grants_survive_their_stored_form() -> None:
    stored = encode_grants(GRANTS)
    assert set(decode_grants(stored)) == set(GRANTS)
    assert json.loads(stored)["version"] == 1  # readable with sqlite3 at a shell


@pytest.mark.parametrize(
    ("stored", "reason"),
    [
        (b"\xff", "not JSON"),
        (b"[]", "not a {version, grants} object"),
        (b'{"version": 2, "grants": []}', "newer"),
        (b'{"version": 1, "grants": [5]}', "stored grant 0 is not an object"),
        (
            b'{"version": 1, "grants": [{"uid": -1, "share": "a", "read_only": true}]}',
            "stored grant 0: a uid",
        ),
    ],
)
def test_stored_grants_that_are_not_valid_are_refused(stored: bytes, reason: str) -> None:
    with pytest.raises(GrantError, match=reason.replace("{", r"\{").replace("}", r"\}")):
        decode_grants(stored)


# parameters -------------------------------------------------------------------------------------


def test_an_app_is_a_uid_or_a_user_name() -> None:
    assert parse_app(1001) == 1001
    assert parse_app(" 1001 ") == 1001
    assert parse_app("alice") == "alice"
    assert parse_app("www-data") == "www-data"
    for bad in (True, None, -1, MAX_UID + 1, "", "a b", "a/b", "x:y", "\n", 1.5, ["alice"]):
        with pytest.raises(GrantError):
            parse_app(bad)


def test_a_grant_is_checked_field_by_field() -> None:
    assert make_grant(1001, "photos", None, True) == Grant(1001, "photos", None, True)
    for uid, share, collection, read_only, reason in [
        (True, "s", None, False, "uid"),
        (1001, "", None, False, "'share'"),
        (1001, 5, None, False, "'share'"),
        (1001, "s", "", False, "'collection'"),
        (1001, "s", 3, False, "'collection'"),
        (1001, "s", None, "yes", "'read_only'"),
    ]:
        with pytest.raises(GrantError, match=reason):
            make_grant(uid, share, collection, read_only)


# admins -----------------------------------------------------------------------------------------


def test_admins_are_root_the_daemons_user_and_the_control_group() -> None:
    def admin(uid: int, process=(), user=(), identified=True) -> bool:
        return is_admin(
            uid,
            identified=identified,
            process_gids=process,
            user_gids=user,
            daemon_uid=999,
            admin_gid=990,
        )

    assert admin(0) and admin(999)
    assert admin(1001, user=(1001, 990))  # listed in the group
    assert admin(1001, process=(1001, 990))  # holds the group, listed or not
    assert not admin(1001, process=(1001,), user=(1001, 100))
    # a user namespace shows unmapped users as one uid: only a held group can make them admins
    assert not admin(0, identified=False)
    assert admin(65534, process=(990,), identified=False)

"""Export and import lines (backup/records.py): what a line holds, every refusal naming its line,
and transactions that stay small."""

import json

import pytest

from p2psync.backup import records


def test_an_exported_line_holds_the_winner_and_in_a_conflict_every_version() -> None:
    item = {
        "collection": "notes",
        "key": "k",
        "value": {"$base64": "AAE="},
        "type": "t",
        "schema_version": 2,
        "version": "v1",
        "origin": "X",
        "hlc": 5,
        "deleted": False,
        "conflict": False,
    }
    assert json.loads(records.export_line(item)) == {
        "collection": "notes",
        "key": "k",
        "value": {"$base64": "AAE="},
        "type": "t",
        "schema_version": 2,
    }
    sibling = {**item, "value": 1, "extra": "left out"}
    conflicted = json.loads(
        records.export_line({**item, "conflict": True, "deleted": True}, [sibling])
    )
    assert conflicted["deleted"] is True and conflicted["conflict"] is True
    assert conflicted["siblings"] == [{name: sibling[name] for name in records.SIBLING_FIELDS}]


def test_a_line_imports_as_a_put_or_a_delete_and_unknown_fields_are_ignored() -> None:
    exported = records.export_line(
        {"collection": "c", "key": "k", "value": None, "type": None, "schema_version": None}
    )
    assert records.import_op(exported, 1) == {
        "op": "put",
        "collection": "c",
        "key": "k",
        "type": None,
        "schema_version": None,
        "value": None,
    }
    deleted = json.dumps({"collection": "c", "key": "k", "deleted": True, "siblings": [], "new": 1})
    assert records.import_op(deleted, 2) == {
        "op": "delete",
        "collection": "c",
        "key": "k",
        "type": None,
        "schema_version": None,
    }
    assert records.import_op("  \n", 3) is None


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[", "line 7 is not JSON"),
        ("3", "line 7 is not an object"),
        ('{"collection": "", "key": "k", "value": 1}', "line 7: 'collection' must be a string"),
        ('{"collection": "c", "key": 4, "value": 1}', "line 7: 'key' must be a string"),
        ('{"collection": "_devices", "key": "k", "value": 1}', "p2psync's own"),
        ('{"collection": "c", "key": "k", "value": 1, "type": 3}', "'type' must be a string"),
        ('{"collection": "c", "key": "k", "value": 1, "schema_version": true}', "whole number"),
        ('{"collection": "c", "key": "k"}', "line 7 has no 'value'"),
    ],
)
def test_a_bad_line_is_refused_by_its_number(line: str, reason: str) -> None:
    with pytest.raises(records.ImportLineError, match=reason):
        records.import_op(line, 7)


def test_batches_stay_under_both_limits_and_a_big_op_goes_alone() -> None:
    ops = [{"op": "put", "collection": "c", "key": str(n), "value": "x" * 10} for n in range(25)]
    counted = list(records.batches(ops, max_ops=10, max_bytes=10_000))
    assert [len(batch) for batch in counted] == [10, 10, 5]
    assert [op for batch in counted for op in batch] == ops
    one_size = len(json.dumps(ops[0]))
    assert [len(b) for b in records.batches(ops[:6], max_ops=100, max_bytes=2 * one_size + 5)] == [
        2,
        2,
        2,
    ]
    big = {"op": "put", "collection": "c", "key": "big", "value": "y" * 500}
    assert list(records.batches([ops[0], big, ops[1]], max_ops=100, max_bytes=200)) == [
        [ops[0]],
        [big],
        [ops[1]],
    ]
    assert list(records.batches([])) == []

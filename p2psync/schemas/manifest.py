"""A share's schema manifest: per record type, the version apps write now, the oldest version still
written, and the JSON Schemas values must match (pure).

The manifest lives in the share itself as ordinary records, one per type in the reserved `_schema`
collection, so it replicates and converges like any record, with no store or wire change. Two
devices that set a type at once leave two siblings; every device reads them the same way
(`merged_type`): the highest `current`, the highest `oldest_written`, every version's schema (for
a version both set, the newer write's). It owns that stored form, the checks of what `schema_set`
asks (precise errors), the check of a local write's value against its type's schema, and which
versions of which types a reader says it understands (`reads`). It never stores anything, never
refuses an entry received from a peer (devices apart may hold different manifests: refusing
would split the household) and never rewrites a record.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack
from jsonschema import exceptions as schema_exceptions
from jsonschema import validators
from referencing.exceptions import Unresolvable

from ..control.values import json_from_value
from ..entry import DELETE, Op
from ..merge import Sibling

SCHEMA = "_schema"  # key: type name; value: encode_type(...)
MAX_VERSION = 2**53 - 1  # versions travel as JSON numbers: stay exact in every client
MAX_TYPE_NAME = 200


class ManifestError(ValueError):
    """A schema_set request (or a `reads` declaration) that is not valid; says what is wrong."""


class InvalidValue(ValueError):
    """A local write the manifest refuses: its value fails the JSON Schema of its type and
    version, or it writes a version older than the oldest still written."""


@dataclass(frozen=True)
class TypeSchema:
    name: str
    current: int
    oldest_written: int
    json_schemas: Mapping[int, Mapping[str, Any]] = field(default_factory=dict)
    # fields of the stored record this version does not know (a newer daemon's): kept, and
    # written back by schema_set, never dropped
    unknown: Mapping[str, Any] = field(default_factory=dict)

    def json(self) -> dict[str, Any]:
        return {
            "type": self.name,
            "current": self.current,
            "oldest_written": self.oldest_written,
            "json_schemas": {str(v): dict(s) for v, s in sorted(self.json_schemas.items())},
        }


def check_type_name(name: Any) -> str:
    if not isinstance(name, str) or not name or len(name) > MAX_TYPE_NAME:
        raise ManifestError(f"a type name must be a string of 1 to {MAX_TYPE_NAME} characters")
    return name


def check_version(what: str, version: Any) -> int:
    if type(version) is not int or not 1 <= version <= MAX_VERSION:
        raise ManifestError(f"{what} must be an integer from 1 to {MAX_VERSION}, not {version!r}")
    return version


def check_json_schema(schema: Any) -> dict[str, Any]:
    """A JSON Schema (draft 2020-12 unless it names another in `$schema`), or a precise error."""
    if not isinstance(schema, dict):
        raise ManifestError("a JSON Schema must be an object")
    try:
        validators.validator_for(schema).check_schema(schema)
    except schema_exceptions.SchemaError as exc:
        raise ManifestError(f"not a valid JSON Schema: at {exc.json_path}: {exc.message}") from None
    return schema


def set_type(
    before: TypeSchema | None,
    name: str,
    current: int,
    oldest_written: int | None = None,
    json_schema: Mapping[str, Any] | None = None,
) -> TypeSchema:
    """What `schema_set` makes of a type: `json_schema` is the schema of `current`; the other
    versions' schemas stay. `oldest_written` stays as it was (1 for a new type) unless given."""
    check_type_name(name)
    check_version("'current'", current)
    if before is not None and current < before.current:
        raise ManifestError(
            f"type {name!r} is at version {before.current} already; versions only go up (apps "
            "may have written it)"
        )
    oldest = oldest_written
    if oldest is None:
        oldest = before.oldest_written if before is not None else 1
    check_version("'oldest_written'", oldest)
    if oldest > current:
        raise ManifestError(
            f"'oldest_written' ({oldest}) cannot be newer than 'current' ({current})"
        )
    schemas = dict(before.json_schemas) if before is not None else {}
    if json_schema is not None:
        schemas[current] = check_json_schema(json_schema)
    return TypeSchema(name, current, oldest, schemas, before.unknown if before is not None else {})


# stored form ------------------------------------------------------------------------------------


_STORED_FIELDS = ("current", "oldest_written", "json_schemas")


def encode_type(schema: TypeSchema) -> bytes:
    stored = {
        **schema.unknown,
        "current": schema.current,
        "oldest_written": schema.oldest_written,
        "json_schemas": {str(v): dict(s) for v, s in schema.json_schemas.items()},
    }
    return msgpack.packb(stored)


def decode_type(name: str, value: bytes | None) -> TypeSchema | None:
    """None for what no valid manifest record holds (a newer daemon's or a broken peer's): a
    record that cannot be read adds nothing, it does not break the manifest."""
    try:
        stored = msgpack.unpackb(value or b"", raw=False)
        current = check_version("current", stored["current"])
        oldest = check_version("oldest_written", stored["oldest_written"])
        schemas = {
            check_version("a schema's version", int(v)): check_json_schema(s)
            for v, s in stored.get("json_schemas", {}).items()
        }
    except Exception:
        return None
    unknown = {k: v for k, v in stored.items() if k not in _STORED_FIELDS}
    return TypeSchema(name, current, min(oldest, current), schemas, unknown)


def merged_type(name: str, siblings: Iterable[Sibling]) -> TypeSchema | None:
    """A type's manifest from its record's siblings, the same on every device: versions only go
    up, and a version's schema is the newest write's that has one."""
    decoded = [
        (sibling, found)
        for sibling in siblings
        if not sibling.deleted and (found := decode_type(name, sibling.value)) is not None
    ]
    if not decoded:
        return None
    current = max(found.current for _, found in decoded)
    oldest = max(found.oldest_written for _, found in decoded)
    schemas: dict[int, Mapping[str, Any]] = {}
    unknown: dict[str, Any] = {}
    # oldest write first, so that the newest write's schema of a version is the one kept
    for _, found in sorted(decoded, key=lambda pair: (pair[0].hlc, pair[0].actor)):
        schemas.update(found.json_schemas)
        unknown.update(found.unknown)
    return TypeSchema(name, current, oldest, schemas, unknown)


# the manifest -----------------------------------------------------------------------------------


def meta_type(meta: bytes | None) -> tuple[str | None, int | None]:
    """The `type` and `schema_version` a write carries (None where absent or malformed)."""
    if meta is None:
        return None, None
    try:
        fields = msgpack.unpackb(meta, raw=False, strict_map_key=False)
    except Exception:
        return None, None
    if not isinstance(fields, dict):
        return None, None
    name, version = fields.get("type"), fields.get("schema_version")
    return (
        name if isinstance(name, str) else None,
        version if type(version) is int else None,
    )


class Manifest:
    """The schema manifest of one share, with each schema's validator made once."""

    def __init__(self, types: Mapping[str, TypeSchema] | None = None) -> None:
        self.types = dict(types or {})
        self._validators: dict[tuple[str, int], Any] = {}

    @classmethod
    def from_records(cls, records: Iterable[tuple[str, list[Sibling]]]) -> "Manifest":
        merged = (merged_type(key, siblings) for key, siblings in records)
        return cls({t.name: t for t in merged if t is not None})

    def json(self) -> dict[str, Any]:
        return {"types": [self.types[name].json() for name in sorted(self.types)]}

    def check_write(self, op: Op) -> None:
        """Raise InvalidValue when the manifest refuses `op` written here; a type it does not
        list, or a version newer than it knows (an app ahead of a device that has not heard of
        it yet), is not refused."""
        if op.kind == DELETE or not self.types:
            return
        name, version = meta_type(op.meta)
        schema = self.types.get(name) if name is not None else None
        if schema is None:
            return
        if version is not None and version < schema.oldest_written:
            raise InvalidValue(
                f"{op.collection}/{op.key}: type {name!r} is no longer written below version "
                f"{schema.oldest_written} (its oldest_written; current is {schema.current}): "
                f"write version {schema.oldest_written} or newer"
            )
        checked = schema.current if version is None else version
        if checked not in schema.json_schemas:
            return
        validator = self._validator(schema, checked)
        value = json_from_value(op.value)  # as apps see it: JSON, bytes as their tag
        try:
            if validator.is_valid(value):  # the common case, without collecting errors
                return
        except Unresolvable as exc:  # a $ref to elsewhere: nothing is ever fetched
            raise InvalidValue(
                f"{op.collection}/{op.key}: the JSON Schema of {name!r} version {checked} "
                f"cannot be applied: {exc}; schemas must be self-contained (fix it with "
                "schema_set)"
            ) from None
        error = schema_exceptions.best_match(validator.iter_errors(value))
        if error is not None:
            raise InvalidValue(
                f"{op.collection}/{op.key}: value does not match the JSON Schema of {name!r} "
                f"version {checked}: at {error.json_path}: {error.message}"
            )

    def _validator(self, schema: TypeSchema, version: int) -> Any:
        found = self._validators.get((schema.name, version))
        if found is None:
            json_schema = schema.json_schemas[version]
            found = validators.validator_for(json_schema)(json_schema)
            self._validators[(schema.name, version)] = found
        return found


# what readers understand ------------------------------------------------------------------------


def parse_reads(reads: Any) -> dict[str, int]:
    """`hello`'s `reads`: {type: {"max_schema_version": n}} -> {type: n}."""
    if not isinstance(reads, dict):
        raise ManifestError("'reads' must be an object: {type: {\"max_schema_version\": n}, ...}")
    understood: dict[str, int] = {}
    for name, declared in reads.items():
        check_type_name(name)
        if not isinstance(declared, dict) or set(declared) != {"max_schema_version"}:
            raise ManifestError(
                f"'reads' of {name!r} must be {{\"max_schema_version\": n}}, not {declared!r}"
            )
        understood[name] = check_version(
            f"'max_schema_version' of {name!r}", declared["max_schema_version"]
        )
    return understood

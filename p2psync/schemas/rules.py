"""The replica's side of schema manifests: each share's manifest read from its `_schema` records and
kept current as entries apply, the check of local writes against it, the op `schema_set` commits,
and the newest version of each type a share holds (I/O via the replica's store).

A mixin of `Replica` beside `ShareRules`. A share without `_schema` records costs a local write
one dict lookup: the manifest is read once and dropped only when a `_schema` record changes. It
checks only what this device writes (`Node` calls `check_values` for the control socket's writes);
it never refuses an entry received from a peer and never rewrites a record.
"""

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .. import entry as entries
from ..entry import Op
from ..merge import Sibling
from ..store import Store
from .manifest import SCHEMA, Manifest, TypeSchema, encode_type, meta_type, set_type

SCAN_PAGE = 500
NO_MANIFEST = Manifest()


class SchemaRules:
    # set by Replica
    store: Store
    _manifests: dict[str, Manifest]

    def holds(self, share: str) -> bool:
        raise NotImplementedError

    def require_share(self, share: str) -> None:
        raise NotImplementedError

    def schema_manifest(self, share: str) -> Manifest:
        """The share's manifest as this device knows it (empty for a share it does not hold)."""
        found = self._manifests.get(share)
        if found is None:
            if not self.holds(share):
                return NO_MANIFEST  # not kept: any name may be asked for
            found = self._manifests[share] = Manifest.from_records(self._pages(share, SCHEMA))
        return found

    def check_values(self, share: str, ops: Iterable[Op]) -> None:
        """Raise manifest.InvalidValue when the share's manifest refuses one of `ops`."""
        manifest = self.schema_manifest(share)
        if manifest.types:
            for op in ops:
                manifest.check_write(op)

    def schema_set_ops(
        self,
        share: str,
        name: str,
        current: int,
        oldest_written: int | None,
        json_schema: Mapping[str, Any] | None,
    ) -> tuple[list[Op], TypeSchema]:
        """The write that sets a type: the merged manifest record with the change, so it also
        replaces the siblings concurrent sets left (ManifestError when the change is invalid)."""
        self.require_share(share)
        before = self.schema_manifest(share).types.get(name)
        updated = set_type(before, name, current, oldest_written, json_schema)
        return [entries.put(SCHEMA, name, encode_type(updated))], updated

    def newest_versions(
        self, share: str, names: Sequence[str], collections: Sequence[str] | None = None
    ) -> dict[str, int]:
        """The newest `schema_version` of each type in `names` among the live records of the
        share (or of `collections`), manifest `current` included: one pass over them (only for
        a reader that declared what it understands)."""
        wanted = set(names)
        types = self.schema_manifest(share).types
        newest = {name: types[name].current for name in wanted if name in types}
        if collections is None:
            collections = [name for name, _ in self.store.collections(share)]
        for read in collections:
            for _, siblings in self._pages(share, read):
                for sibling in siblings:
                    written, version = meta_type(sibling.meta)
                    if written in wanted and version is not None and not sibling.deleted:
                        newest[written] = max(version, newest.get(written, version))
        return newest

    def _pages(self, share: str, collection: str) -> Iterable[tuple[str, list[Sibling]]]:
        after = None
        while page := self.store.scan(share, collection, "", after, SCAN_PAGE):
            yield from page
            after = page[-1][0]

    def _schemas_changed(self, share: str) -> None:
        self._manifests.pop(share, None)

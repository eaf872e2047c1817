"""Schema evolution across devices: each share's replicated schema manifest (`manifest.py`, pure),
the replica's side of it (`rules.py`: the manifest read from the share, kept current as entries
apply, the check of local writes) and the control methods `schema_get`/`schema_set`
(`commands.py`). Records are never rewritten on read, and entries from peers are never refused
for schema reasons.
"""

"""Backups, export and import, and the history of a record (issue 11, "Backup and export").

`archive.py` is the backup file's format (pure), `stream.py` the daemon's `backup` control
stream (trio), `restore.py` putting a backup back into a stopped daemon's state dir (I/O),
`records.py` the export/import JSON lines (pure), `history.py` the versions the log still holds
for one record (I/O via the store).
"""

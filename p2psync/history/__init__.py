"""History that does not grow forever (issue 11): stability reports, the stable frontier,
compaction of the log into a baseline and the purge of stable tombstones."""

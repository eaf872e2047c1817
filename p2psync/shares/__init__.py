"""Shares: which devices hold which part of the household's data (issue 10).

`members.py` holds the pure rules (names, member records, who may write what); `rules.py` is the
replica's side (I/O through its store); `commands.py` the control socket's share methods.
"""

DEFAULT_SHARE = "default"  # every device of the household, always

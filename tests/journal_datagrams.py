"""What journald does with a datagram of the native protocol: its fields, parsed independently of
p2psync.journal's encoder (tests/test_journal.py, tests/test_journal_handler.py)."""


def parse_datagram(datagram: bytes) -> list[tuple[str, str]]:
    """`KEY=value` lines, and `KEY` lines followed by a 64-bit little-endian length, the value
    and a newline."""
    fields = []
    position = 0
    while position < len(datagram):
        end = datagram.index(b"\n", position)
        line = datagram[position:end]
        if b"=" in line:
            name, _, value = line.partition(b"=")
            position = end + 1
        else:
            name = line
            size = int.from_bytes(datagram[end + 1 : end + 9], "little")
            value = datagram[end + 9 : end + 9 + size]
            if datagram[end + 9 + size : end + 10 + size] != b"\n":
                raise ValueError(f"field {name!r}: no newline after its {size} bytes")
            position = end + 10 + size
        fields.append((name.decode(), value.decode("utf-8", "replace")))
    return fields

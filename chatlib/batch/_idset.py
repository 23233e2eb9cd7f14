"""`IdSet`: an exact set of strings in a few dozen bytes per member. Pure.

The runner remembers every `custom_id` it has seen (to refuse repeats) and every one already
in the output (to skip them on resume). A Python `set` of `str` costs about 100 bytes per
id; at a million lines that is the biggest thing in the process. `IdSet` keeps the ids'
UTF-8 bytes in one `bytearray` and an open-addressing table of slots in an `array`: about
`len(id) + 20` bytes per id, and membership is exact (ids are compared byte for byte, not
by a hash alone).

A slot is one 64-bit integer: the id's offset in the arena, its length (up to 4094 bytes;
longer ids are measured from a 4-byte prefix in the arena) and 12 bits of its hash, so a
probe compares bytes only when length and hash bits already match.
"""

from __future__ import annotations

from array import array

__all__ = ["IdSet"]

_EMPTY = -1
_TAG_BITS = 12
_LENGTH_BITS = 12
_LOW_BITS = _TAG_BITS + _LENGTH_BITS
_TAG_MASK = (1 << _TAG_BITS) - 1
_LOW_MASK = (1 << _LOW_BITS) - 1
_LONG = (1 << _LENGTH_BITS) - 1  # the length field of an id this long or longer
_PREFIX = 4  # bytes of the length prefix before each id in the arena


class IdSet:
    """An exact set of strings (`add`, `in`, `len`), compact in memory."""

    __slots__ = ("_arena", "_count", "_mask", "_slots")

    def __init__(self) -> None:
        self._arena = bytearray()
        self._slots = array("q", [_EMPTY]) * 1024
        self._mask = 1023
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        data = key.encode("utf-8", "surrogatepass")
        return self._find(data, hash(data))[1]

    def add(self, key: str) -> bool:
        """Add `key`; `True` when it was not there yet."""
        data = key.encode("utf-8", "surrogatepass")
        code = hash(data)
        index, found = self._find(data, code)
        if found:
            return False
        arena = self._arena
        offset = len(arena)
        size = len(data)
        arena += size.to_bytes(_PREFIX, "little")
        arena += data
        length = size if size < _LONG else _LONG
        self._slots[index] = (offset << _LOW_BITS) | (length << _TAG_BITS) | (code & _TAG_MASK)
        self._count += 1
        if self._count * 2 > self._mask:
            self._grow()
        return True

    def _find(self, data: bytes, code: int) -> tuple[int, bool]:
        """The slot holding `data`, or the empty slot where it would go."""
        slots, arena, mask = self._slots, self._arena, self._mask
        size = len(data)
        length = size if size < _LONG else _LONG
        want = (length << _TAG_BITS) | (code & _TAG_MASK)
        index = code & mask
        while True:
            entry = slots[index]
            if entry == _EMPTY:
                return index, False
            if entry & _LOW_MASK == want:
                start = (entry >> _LOW_BITS) + _PREFIX
                if length == _LONG:
                    stored = int.from_bytes(arena[start - _PREFIX : start], "little")
                    if stored != size:
                        index = (index + 1) & mask
                        continue
                if arena[start : start + size] == data:
                    return index, True
            index = (index + 1) & mask

    def _grow(self) -> None:
        old = self._slots
        self._mask = mask = self._mask * 2 + 1
        self._slots = slots = array("q", [_EMPTY]) * (mask + 1)
        arena = self._arena
        for entry in old:
            if entry == _EMPTY:
                continue
            start = (entry >> _LOW_BITS) + _PREFIX
            size = int.from_bytes(arena[start - _PREFIX : start], "little")
            index = hash(bytes(arena[start : start + size])) & mask
            while slots[index] != _EMPTY:
                index = (index + 1) & mask
            slots[index] = entry

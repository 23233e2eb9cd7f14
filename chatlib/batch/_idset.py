"""`IdSet`: an exact set of strings in a few dozen bytes per member. Pure.

The runner remembers every `custom_id` it has seen (to refuse repeats) and every one already
in the output (to skip them on resume). A Python `set` of `str` costs about 100 bytes per
id; at a million lines that is the biggest thing in the process. `IdSet` keeps the ids'
UTF-8 bytes in one `bytearray` and an open-addressing table of offsets in an `array`: about
`len(id) + 20` bytes per id, and membership is exact (ids are compared byte for byte, not
by a hash alone).
"""

from __future__ import annotations

from array import array

__all__ = ["IdSet"]

_EMPTY = -1
_TAG_BITS = 16
_TAG_MASK = (1 << _TAG_BITS) - 1
_LENGTH_BYTES = 4


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
        offset = len(self._arena)
        self._arena += len(data).to_bytes(_LENGTH_BYTES, "little")
        self._arena += data
        self._slots[index] = (offset << _TAG_BITS) | (code & _TAG_MASK)
        self._count += 1
        if self._count * 2 > self._mask:
            self._grow()
        return True

    def _find(self, data: bytes, code: int) -> tuple[int, bool]:
        """The slot holding `data`, or the empty slot where it would go."""
        slots, arena, mask = self._slots, self._arena, self._mask
        tag = code & _TAG_MASK
        index = code & mask
        size = len(data)
        while True:
            entry = slots[index]
            if entry == _EMPTY:
                return index, False
            if entry & _TAG_MASK == tag:
                start = (entry >> _TAG_BITS) + _LENGTH_BYTES
                stored = int.from_bytes(arena[start - _LENGTH_BYTES : start], "little")
                if stored == size and arena[start : start + size] == data:
                    return index, True
            index = (index + 1) & mask

    def _grow(self) -> None:
        old = self._slots
        self._mask = self._mask * 2 + 1
        self._slots = slots = array("q", [_EMPTY]) * (self._mask + 1)
        arena, mask = self._arena, self._mask
        for entry in old:
            if entry == _EMPTY:
                continue
            start = (entry >> _TAG_BITS) + _LENGTH_BYTES
            size = int.from_bytes(arena[start - _LENGTH_BYTES : start], "little")
            index = hash(bytes(arena[start : start + size])) & mask
            while slots[index] != _EMPTY:
                index = (index + 1) & mask
            slots[index] = entry

"""Flow ids as a column: a per-process prefix and a counter, formatted only when read.

Formatting a UUID string per event was a third of the enrichment's cost, for ids
that most consumers never look at (the ring holds them, a client sees the few it
is sent). So a batch keeps its ids as one uint64 counter per row beside a shared
19-character head, and they become text in bulk: `tolist()` for Flows, and
`as_bytes()` (36 bytes per row, one numpy pass) for the store's Arrow column.
Ids that came from elsewhere (Flows read back, a relay) are kept as given.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import numpy as np

#: The text of one id: 8-4-4-4-12 hex digits.
UUID_LEN = 36
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
#: Bit shifts of the 16 hex digits of the counter, most significant first.
_SHIFTS = np.arange(60, -4, -4, dtype=np.uint64)


class UuidSource:
    """Unique, cheap flow ids: a random 64-bit per-process prefix and a counter.

    Formatted as a UUID so that tools expecting one accept it; two processes
    (or two nodes) collide only if their random prefixes do.
    """

    def __init__(self, prefix: int | None = None) -> None:
        p = secrets.randbits(64) if prefix is None else prefix
        h = f"{p:016x}"
        self.head = f"{h[:8]}-{h[8:12]}-{h[12:16]}-"
        self._next = 1

    def take(self, n: int) -> UuidColumn:
        """`n` fresh ids at once (a batch's worth), not yet formatted."""
        first = self._next
        self._next += n
        return UuidColumn(self.head, np.arange(first, first + n, dtype=np.uint64))


@dataclass(frozen=True, slots=True, eq=False)
class UuidColumn:
    """One id per row: `head` + the row's counter in hex, or the `given` strings."""

    head: str
    counters: np.ndarray  # uint64, one per row (unused when `given` is set)
    given: tuple[str, ...] | None = None

    @classmethod
    def of(cls, uuids: list[str]) -> UuidColumn:
        """Ids that already exist as text (Flows read back, another node's)."""
        return cls("", np.zeros(len(uuids), dtype=np.uint64), tuple(uuids))

    def __len__(self) -> int:
        return len(self.counters)

    def select(self, rows: np.ndarray | slice) -> UuidColumn:
        """The ids at `rows`: indices, a boolean mask or a slice."""
        if self.given is None:
            return UuidColumn(self.head, self.counters[rows])
        if isinstance(rows, slice):
            return UuidColumn("", self.counters[rows], self.given[rows])
        idx = np.flatnonzero(rows) if rows.dtype == np.bool_ else rows
        given = self.given
        return UuidColumn.of([given[i] for i in idx.tolist()])

    def matches(self, uuid: str) -> np.ndarray:
        """Rows whose id is `uuid`, as a mask: one comparison of the counter column, no
        formatting (a lookup by id scans the whole flow ring)."""
        if self.given is not None:
            return np.array([u == uuid for u in self.given], dtype=bool)
        nothing = np.zeros(len(self), dtype=bool)
        if len(uuid) != UUID_LEN or not uuid.startswith(self.head) or uuid[23] != "-":
            return nothing
        try:
            counter = int(uuid[19:23] + uuid[24:], 16)
        except ValueError:
            return nothing
        hit: np.ndarray = self.counters == np.uint64(counter)
        return hit

    def as_bytes(self) -> np.ndarray:
        """The ids as an (n, 36) uint8 array of ASCII, built in one numpy pass."""
        n = len(self)
        if self.given is not None:
            text = "".join(self.given).encode()
            if len(text) != n * UUID_LEN:
                raise ValueError("ids of other lengths than 36 have no fixed-width form: "
                                 "use tolist()")
            return np.frombuffer(text, dtype=np.uint8).reshape(n, UUID_LEN)
        out = np.empty((n, UUID_LEN), dtype=np.uint8)
        out[:, :19] = np.frombuffer(self.head.encode(), dtype=np.uint8)
        digits = _HEX[((self.counters[:, None] >> _SHIFTS) & np.uint64(0xF)).astype(np.intp)]
        out[:, 19:23] = digits[:, :4]
        out[:, 23] = ord("-")
        out[:, 24:] = digits[:, 4:]
        return out

    def tolist(self) -> list[str]:
        if self.given is not None:
            return list(self.given)
        text = self.as_bytes().tobytes().decode("ascii")
        return [text[i:i + UUID_LEN] for i in range(0, len(text), UUID_LEN)]

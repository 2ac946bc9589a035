"""uuid: pick flows by their id, as `-o json` prints it (Hubble's `--uuid`).

A lookup by id scans the whole ring, so the mask never formats the batch's ids:
Spyglass's own ids are compared as counters (`UuidColumn.matches`), and only ids
that came from elsewhere (imports, a relay) are compared as text. The store has a
bloom filter index on the column, which `IN` uses.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import Clause, Side, ValueProblem
from spyglass.collector.filters.sql import Params, Sql
from spyglass.model.flow import Flow

#: Hubble's and Spyglass's ids are 36 characters; ids imported from elsewhere may differ,
#: but nothing longer than this is an id anyone copied from a flow.
MAX_UUID_LEN = 128
_EXAMPLE = "3f6c2a9e-51b4-4d0e-9a7c-0b1e2d3c4f5a"


class UUIDClause(Clause):
    """uuid: exact, case-sensitive ids (Hubble compares them as strings too)."""

    noun = "uuid"

    def __init__(self, values: Sequence[str], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._set = frozenset(self.values)

    @staticmethod
    def parse(raw: Any) -> str:
        if not isinstance(raw, str):
            raise ValueProblem(f"{raw!r} is not a flow UUID", "give the id as text", _EXAMPLE)
        text = raw.strip()
        if not text:
            raise ValueProblem("the flow UUID is empty",
                               "give a flow's uuid, as `observe -o json` prints it", _EXAMPLE)
        if len(text) > MAX_UUID_LEN:
            raise ValueProblem(f"the flow UUID is {len(text)} characters long",
                               f"give a flow's uuid (36 characters; at most {MAX_UUID_LEN} "
                               "are accepted)",
                               _EXAMPLE)
        for ch in text:
            if ch.isspace() or unicodedata.category(ch).startswith("C"):
                raise ValueProblem(f"{text!r} has a blank or control character {ch!r}",
                                   "give one flow uuid per value, without spaces", _EXAMPLE)
        return text

    def predicate(self, flow: Flow) -> bool:
        return flow.uuid in self._set

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        ids = batch.uuid
        if ids.given is not None:
            return np.fromiter((u in self._set for u in ids.given), dtype=bool, count=len(ids))
        out = np.zeros(len(ids), dtype=bool)
        for u in self._set:
            if u.startswith(ids.head):  # another process's ids cannot be in this batch
                out |= ids.matches(u)
        return out

    def sql(self) -> Sql:
        p = Params()
        return f"uuid IN {p.add(sorted(self._set), 'Array(String)')}", p.values

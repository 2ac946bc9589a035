"""interface: the network interface a flow was seen on, by name and/or index.

Hubble's FlowFilter carries `NetworkInterface{index, name}` values: a part that is
set must match, a part left out (0, "") matches anything, so `{"index": 5}` is
every flow seen on ifindex 5 and `{"index": 5, "name": "lxc1"}` needs both. The
hubble CLI's `--interface` sets the name only, and so does Spyglass's. A flow
without an interface (index 0, which its JSON and protobuf leave out) never matches.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters.base import Clause, Side, ValueProblem, table_mask
from spyglass.collector.filters.sql import Params, Sql, all_of, any_of
from spyglass.model.flow import Flow

#: Linux's IFNAMSIZ (16) less the NUL: no interface a flow names is longer.
MAX_IFNAME_LEN = 15
_EXAMPLE = "lxc1a2b3c4d"
_JSON_EXAMPLE = '{"index": 5, "name": "lxc1a2b3c4d"}'


@dataclass(frozen=True, slots=True)
class NetworkInterface:
    """One filter value: 0 and "" mean "any", and at least one part is set."""

    index: int = 0
    name: str = ""

    def __str__(self) -> str:
        if self.index and self.name:
            return f"{self.name} (index {self.index})"
        return self.name or f"index {self.index}"


def _name(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueProblem(f"{raw!r} is not an interface name", "give the name as text",
                           _EXAMPLE)
    text = raw.strip()
    if not text:
        raise ValueProblem("the interface name is empty", "give an interface name", _EXAMPLE)
    if len(text) > MAX_IFNAME_LEN:
        raise ValueProblem(f"{text[:40]!r} is {len(text)} characters long",
                           f"give the name as `ip link` shows it (at most {MAX_IFNAME_LEN} "
                           "characters)", _EXAMPLE)
    bad = next((ch for ch in text if ch in "/:" or ch.isspace()
                or unicodedata.category(ch).startswith("C")), None)
    if bad is not None or text in (".", ".."):
        raise ValueProblem(f"{text!r} is not an interface name",
                           "Linux interface names have no '/', ':', blanks or control "
                           "characters", _EXAMPLE)
    return text


def _index(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int | str):
        raise ValueProblem(f"{raw!r} is not an interface index", "give a number",
                           _JSON_EXAMPLE)
    text = str(raw).strip()
    if not text.isdigit() or int(text) >= 2**32:
        raise ValueProblem(f"{text!r} is not an interface index (0-4294967295)",
                           "give a number", _JSON_EXAMPLE)
    return int(text)


class InterfaceClause(Clause):
    """interface: NetworkInterface values, ORed."""

    noun = "interface"

    def __init__(self, values: Sequence[NetworkInterface], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._wanted = tuple((v.index, v.name) for v in self.values)

    @staticmethod
    def parse(raw: Any) -> NetworkInterface:
        """A name (the flag's and the query parameter's form), or the message's JSON."""
        if isinstance(raw, NetworkInterface):
            index, name = _index(raw.index), (_name(raw.name) if raw.name else "")
        elif isinstance(raw, dict):
            extra = set(raw) - {"index", "name"}
            if extra:
                raise ValueProblem(f"unknown interface keys {sorted(map(str, extra))}",
                                   "use index and name", _JSON_EXAMPLE)
            index = _index(raw.get("index", 0))
            name = raw.get("name", "")
            name = _name(name) if name != "" else ""
        else:
            return NetworkInterface(0, _name(raw))
        if not index and not name:
            raise ValueProblem("the interface has neither a name nor an index",
                               "set name, or a non-zero index, or both", _JSON_EXAMPLE)
        return NetworkInterface(index, name)

    @staticmethod
    def to_json(value: NetworkInterface) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if value.index:
            d["index"] = value.index
        if value.name:
            d["name"] = value.name
        return d

    def predicate(self, flow: Flow) -> bool:
        index, name = flow.interface_index, flow.interface_name
        if not index:
            return False
        return any((not i or i == index) and (not n or n == name) for i, n in self._wanted)

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        idx = batch.interface_index
        names = {n: table_mask(batch.ifname_table, batch.interface_name, n.__eq__)
                 for _, n in self._wanted if n}
        out = np.zeros(len(batch), dtype=bool)
        for i, n in self._wanted:
            hit = np.ones(len(batch), dtype=bool)
            if i:
                hit &= idx == i
            if n:
                hit &= names[n]
            out |= hit
        out &= idx != 0
        return out

    def sql(self) -> Sql:
        p = Params()
        tests = [all_of([f"interface_index = {p.add(i, 'UInt32')}" if i else "",
                         f"interface_name = {p.add(n, 'String')}" if n else ""])
                 for i, n in self._wanted]
        return f"interface_index != 0 AND {any_of(tests)}", p.values

    def verb(self) -> str:
        return "is"

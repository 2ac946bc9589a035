"""The shape every filter dimension shares, and the error users see.

Each dimension (pod, ip, port …) is a `Clause` subclass. Building one parses and
validates its values once and precomputes whatever matching needs (sets,
networks, compiled selectors), so `predicate(flow)` does no parsing on the hot
path. `describe()` gives the human text. The same test exists in two more
forms built from the same parsed values, which is why the per-dimension objects
exist instead of bare lambdas: `sql()`, a parameterised ClickHouse fragment for
history, and `mask(batch)`, a numpy boolean array over an `EnrichedBatch` for
the live ring, where no Flow exists yet. A mask tests each distinct endpoint,
address or service of the batch's tables once and spreads the answer over the
rows by their codes, or compares whole numeric columns.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np

from spyglass.collector.enriched import EnrichedBatch
from spyglass.model.flow import Endpoint, Flow

T = TypeVar("T")

Side = Literal["source", "destination"]


class FilterError(ValueError):
    """A filter that cannot be built. The message names the problem and the fix."""


class ValueProblem(Exception):
    """A bad value, before we know whether it came from a flag or from JSON.

    The caller renders it with the place it came from (`--port` or
    `allowlist field 'source_port'`), so one parser serves both and every
    message still says where to look.
    """

    def __init__(self, problem: str, fix: str, example: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.example = example

    def render_flag(self, flag: str) -> str:
        msg = f"--{flag}: {self.problem}; {self.fix}"
        if self.example is not None:
            msg += f" like --{flag} {self.example}"
        return msg

    def render_field(self, where: str) -> str:
        msg = f"{where}: {self.problem}; {self.fix}"
        if self.example is not None:
            msg += f" like {self.example!r}"
        return msg


class Clause(ABC):
    """One set field of a FlowFilter, compiled: the values of the field are ORed."""

    #: Words for `describe`, e.g. "pod" → "source pod in shop/front*".
    noun: ClassVar[str]

    def __init__(self, values: Sequence[Any], side: Side | None = None) -> None:
        self.values = tuple(values)
        self.side = side

    @staticmethod
    @abstractmethod
    def parse(raw: Any) -> Any:
        """Turn one user value into its canonical form, or raise ValueProblem.

        Canonical forms parse to themselves, so a filter that went through JSON
        and back is equal to the one that was built from flags.
        """

    @staticmethod
    def to_json(value: Any) -> Any:
        """The value as Hubble's FlowFilter JSON spells it."""
        return value

    @abstractmethod
    def predicate(self, flow: Flow) -> bool: ...

    @abstractmethod
    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        """The same test as `predicate` for every row of a batch at once (bool array)."""

    @abstractmethod
    def sql(self) -> tuple[str, dict[str, Any]]:
        """The same test as `predicate`, as a parameterised ClickHouse boolean over the
        flows table: (fragment, parameters). It never yields NULL, so NOT(…) of it
        (denylists) is exact."""

    def column(self, name: str) -> str:
        """A per-side column, e.g. "pod_name" -> "source_pod_name"."""
        return f"{self.side or 'destination'}_{name}"

    def describe(self) -> str:
        subject = f"{self.side} {self.noun}" if self.side else self.noun
        return f"{subject} {self.verb()} {' or '.join(self.shown())}"

    def verb(self) -> str:
        return "is"

    def shown(self) -> list[str]:
        return [str(v) for v in self.values]

    def endpoint_getter(self) -> Callable[[Flow], Endpoint]:
        if self.side == "source":
            return _source
        return _destination


class EndpointClause(Clause):
    """A clause that looks only at one side's endpoint: tested once per distinct endpoint
    of a batch, whatever the number of rows."""

    def __init__(self, values: Sequence[Any], side: Side | None = None) -> None:
        super().__init__(values, side)
        self._endpoint = self.endpoint_getter()

    @abstractmethod
    def matches_endpoint(self, ep: Endpoint) -> bool: ...

    def predicate(self, flow: Flow) -> bool:
        return self.matches_endpoint(self._endpoint(flow))

    def mask(self, batch: EnrichedBatch) -> np.ndarray:
        codes = batch.source if self.side == "source" else batch.destination
        return table_mask(batch.endpoint_table, codes, self.matches_endpoint)


def table_mask(table: Sequence[T], codes: np.ndarray, test: Callable[[T], bool]) -> np.ndarray:
    """`test(table[c])` for every code: each table entry is tested once, then spread."""
    if not len(codes):
        return np.zeros(0, dtype=bool)
    ok = np.fromiter((test(v) for v in table), dtype=bool, count=len(table))
    return ok[codes]  # type: ignore[no-any-return]


def in_set(column: np.ndarray, values: Sequence[int] | frozenset[int]) -> np.ndarray:
    """Rows whose value is one of `values` (a whole-column `in`)."""
    return np.isin(column, np.fromiter((int(v) for v in values), dtype=np.int64))


def _source(flow: Flow) -> Endpoint:
    return flow.source


def _destination(flow: Flow) -> Endpoint:
    return flow.destination


def quoted(value: Any) -> str:
    """Show user text in an error exactly as typed (repr quotes and escapes it)."""
    return repr(value) if isinstance(value, str) else repr(str(value))


def as_text(raw: Any, what: str, example: str) -> str:
    """Accept only strings (JSON may carry anything) and strip surrounding blanks."""
    if isinstance(raw, bool) or not isinstance(raw, str | int):
        raise ValueProblem(f"{raw!r} is not a {what}", f"give a {what}", example)
    return str(raw).strip()

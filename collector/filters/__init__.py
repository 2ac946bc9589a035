"""The filter language: Hubble's FlowFilter semantics for live streams (and, later, history).

Build a `FilterSet` from command-line style flags (`build_from_flags`), from
HTTP query parameters (`build_from_query`) or from FlowFilter JSON, then call
`matches(flow)` per flow. See docs/filters.md for the user-facing rules.
"""

from __future__ import annotations

from spyglass.collector.filters.base import Clause, FilterError
from spyglass.collector.filters.filterset import FilterSet
from spyglass.collector.filters.flags import (
    FILTER_FLAGS,
    FilterFlag,
    build_from_flags,
    build_from_query,
    lookup_flag,
)
from spyglass.collector.filters.flowfilter import FIELDS, FlowFilter
from spyglass.model.labels import LabelSelector, Requirement, SelectorError

__all__ = [
    "FIELDS",
    "FILTER_FLAGS",
    "Clause",
    "FilterError",
    "FilterFlag",
    "FilterSet",
    "FlowFilter",
    "LabelSelector",
    "Requirement",
    "SelectorError",
    "build_from_flags",
    "build_from_query",
    "lookup_flag",
]

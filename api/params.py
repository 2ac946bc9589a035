"""Split a flows request's query into selectors (`last`, `first`) and filters.

Filters are order-sensitive (`not-` and the left/right trackers follow
Hubble's flag order), so the query is kept as an ordered list of pairs and
everything that is not a selector goes to `build_from_query` untouched.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass

from spyglass.api.errors import ApiError
from spyglass.api.source import Cursor
from spyglass.collector.filters import FilterSet, build_from_query
from spyglass.collector.ring import Mask
from spyglass.model.safeload import loads_json
from spyglass.model.timespec import TimeSpecError, parse_range

SELECTORS = ("last", "first", "since", "until", "after")
#: Parameters that are neither filters nor selectors (the WebSocket's token, see auth.py).
IGNORED = ("token",)
DEFAULT_LAST = 20
#: History pages: the default without first/last, and the most one request returns.
DEFAULT_PAGE = 1000
MAX_PAGE = 10000


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """A parsed flows request: how many, from which end, over which time, which flows.

    `since_ns`/`until_ns` make it a history query (served by the store); `after`
    continues a history query from the cursor its previous page returned.
    """

    number: int
    first: bool
    filters: FilterSet
    since_ns: int | None = None
    until_ns: int | None = None
    after: Cursor | None = None
    counted: bool = False  # first or last was given explicitly

    @property
    def history(self) -> bool:
        return self.since_ns is not None or self.until_ns is not None

    @property
    def order(self) -> str:
        return "asc" if self.first else "desc"

    def mask(self) -> Mask | None:
        """The filters' row mask over a ring batch, or None when they keep every flow
        (lost events are never filtered: a gap must never be hidden)."""
        return None if self.filters.empty else self.filters.mask


def encode_cursor(order: str, cursor: Cursor) -> str:
    """An opaque `after=` token; the order is inside so a page cannot switch direction."""
    raw = json.dumps([order, int(cursor[0]), str(cursor[1])], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, order: str) -> Cursor:
    """Inverse of `encode_cursor`, with a 400 that says where good cursors come from."""
    bad = ApiError(400, f"after: {text[:40]!r} is not a cursor from this API; pass the `next` "
                        "value of the previous page unchanged")
    try:
        raw = base64.urlsafe_b64decode(text.strip() + "=" * (-len(text.strip()) % 4))
        value = loads_json(raw, max_depth=2)
    except (ValueError, binascii.Error):
        raise bad from None
    if (not isinstance(value, list) or len(value) != 3 or value[0] not in ("asc", "desc")
            or not isinstance(value[1], int) or isinstance(value[1], bool)
            or not isinstance(value[2], str) or not 0 <= value[1] < 2**63):
        raise bad
    if value[0] != order:
        was = "first" if value[0] == "asc" else "last"
        raise ApiError(400, f"after: this cursor continues a {was}= query; repeat the same "
                            "selector (first or last) with it")
    return value[1], value[2]


def parse_count(name: str, raw: str, maximum: int) -> int:
    """A non-negative count, clamped to what the ring can hold."""
    try:
        value = int(raw.strip())
    except ValueError:
        raise ApiError(400, f"{name}: {raw!r} is not a number; use a whole number like "
                            f"{name}=20") from None
    if value < 0:
        raise ApiError(400, f"{name}: {value} is negative; use 0 or more, like {name}=20")
    return min(value, maximum)


def parse_flow_query(items: Sequence[tuple[str, str]], *, capacity: int,
                     default_last: int = DEFAULT_LAST, now_ns: int | None = None) -> FlowQuery:
    """Split selectors from filters; every other parameter goes, in order, to the filter builder.

    With `since`/`until`, `first`/`last` limit the range's oldest/newest flows
    (Hubble refuses `number` with a time range; allowing it as a limit is more
    useful and never ambiguous). Without either, a range returns its oldest
    flows first, `DEFAULT_PAGE` per page.
    """
    selectors: dict[str, str] = {}
    filter_items: list[tuple[str, str]] = []
    for key, value in items:
        if key in SELECTORS:
            if key in selectors:
                raise ApiError(400, f"{key} is given more than once; give it once, "
                                    f"like {key}={_EXAMPLE[key]}")
            selectors[key] = value
        elif key not in IGNORED:
            filter_items.append((key, value))
    if "last" in selectors and "first" in selectors:
        raise ApiError(400, "last and first cannot be combined; ask for the newest flows "
                            "with last=N or the oldest with first=N")
    try:
        since_ns, until_ns = parse_range(selectors.get("since"), selectors.get("until"),
                                         now_ns=now_ns)
    except TimeSpecError as exc:
        raise ApiError(400, str(exc)) from None
    filters = build_from_query(filter_items)
    history = since_ns is not None or until_ns is not None
    maximum = MAX_PAGE if history else capacity
    counted = "first" in selectors or "last" in selectors
    if "first" in selectors:
        number, first = parse_count("first", selectors["first"], maximum), True
    elif "last" in selectors:
        number, first = parse_count("last", selectors["last"], maximum), False
    elif history:
        number, first = DEFAULT_PAGE, True
    else:
        number, first = default_last, False
    after = None
    if "after" in selectors:
        if not history:
            raise ApiError(400, "after pages through history: give the same since (and until) "
                                "as the first page, e.g. since=1h&after=<next>")
        after = decode_cursor(selectors["after"], "asc" if first else "desc")
    return FlowQuery(number, first, filters, since_ns, until_ns, after, counted)


_EXAMPLE = {"last": "20", "first": "20", "since": "5m", "until": "1m", "after": "<next>"}

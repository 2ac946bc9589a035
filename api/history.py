"""History pages: the store's flows merged with the ring's newest ones.

The writer flushes about once a second (longer when the store is slow), so
the last moments of history are in the ring before they are in the store. A
page therefore takes the store's page and the ring's flows in the same range
and past the same cursor, drops duplicates by uuid, and orders by
(time, uuid), the store's own order, so cursors mean the same on both sides.
"""

from __future__ import annotations

import numpy as np

from spyglass.api.errors import ApiError
from spyglass.api.source import Cursor, HistoryStore, RingReader
from spyglass.collector.enriched import EnrichedBatch
from spyglass.collector.filters import FilterSet
from spyglass.collector.ring import Mask
from spyglass.model.flow import Event, Flow
from spyglass.storage.redact import public_error

#: How far out of time order the ring may be (per-CPU perf rings merge in batches).
RING_DISORDER_NS = 5_000_000_000

NO_STORE = ("history (since/until) needs a flow store, and this agent has none: start "
            "`spyglass up` with --store (default chdb:///var/lib/spyglass/flows); without "
            "one, only the newest flows in memory can be read (drop since/until)")


def store_error(exc: Exception) -> ApiError:
    """A store that refuses or is down: 503, with its own reason."""
    return ApiError(503, f"the flow store did not answer: {public_error(exc)}; check "
                         "`spyglass status` (store up/down, writer lag) and the agent's log")


def _key(flow: Flow) -> Cursor:
    return flow.time_ns, flow.uuid


def history_page(store: HistoryStore, ring: RingReader | None, filters: FilterSet, *,
                 since_ns: int | None, until_ns: int | None, limit: int, order: str,
                 after: Cursor | None) -> tuple[list[Flow], Cursor | None]:
    """One page in `order` ("asc" oldest first, "desc" newest first) and the next cursor.

    `until_ns` is exclusive, `since_ns` inclusive. The next cursor is None only
    when no flow is left past this page, in the store or the ring.
    """
    if limit <= 0:
        return [], None
    try:
        stored, store_next = store.query_flows(filters, since_ns=since_ns, until_ns=until_ns,
                                               limit=limit, order=order, after=after)
    except ApiError:
        raise
    except Exception as exc:  # StoreError or the client library's own errors
        raise store_error(exc) from exc
    stored = list(stored)
    more = store_next is not None or len(stored) >= limit
    extra: list[Flow] = []
    if ring is not None and _ring_may_add(ring, stored, limit, order):
        extra = ring.flows(_in_range(filters, since_ns, until_ns, order, after))
    if extra:
        seen = {f.uuid for f in stored}
        merged = stored + [f for f in extra if f.uuid not in seen]
        merged.sort(key=_key, reverse=order == "desc")
        more = more or len(merged) > limit
        page = merged[:limit]
    else:
        page = stored[:limit]
    next_cursor = _key(page[-1]) if page and more else None
    return page, next_cursor


def _ring_may_add(ring: RingReader, stored: list[Flow], limit: int, order: str) -> bool:
    """Skip the ring scan when a full store page ends before the ring's time span begins."""
    bounds = ring.time_bounds()
    if bounds is None:
        return False
    if len(stored) < limit:
        return True
    oldest, newest = bounds
    edge = stored[-1].time_ns
    if order == "asc":
        return edge >= oldest - RING_DISORDER_NS
    return edge <= newest + RING_DISORDER_NS


def _in_range(filters: FilterSet, since_ns: int | None, until_ns: int | None, order: str,
              after: Cursor | None) -> Mask:
    """The ring rows of a history page, as a mask: in the time range, past the cursor in
    (time, uuid) order, and through the filters."""
    def mask(b: EnrichedBatch) -> np.ndarray:
        t = b.time_ns
        keep = np.ones(len(b), dtype=bool)
        if since_ns is not None:
            keep &= t >= since_ns
        if until_ns is not None:
            keep &= t < until_ns
        if after is not None:
            at, au = after
            past = t > at if order == "asc" else t < at
            tie = np.flatnonzero(keep & (t == at))
            if len(tie):
                uu = b.uuids
                past[tie] = [(uu[i] > au) if order == "asc" else (uu[i] < au)
                             for i in tie.tolist()]
            keep &= past
        if keep.any() and not filters.empty:
            keep &= filters.mask(b)
        return keep

    return mask


def events_in_order(page: list[Flow], order: str) -> list[Event]:
    """Responses list events oldest first, whichever end the page was taken from."""
    return list(reversed(page)) if order == "desc" else list(page)

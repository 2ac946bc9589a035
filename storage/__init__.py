"""spyglass.storage: flow history in ClickHouse (embedded chDB by default).

The public surface: `FlowStore` (open, insert, queries), `StoreWriter` (the
one writer thread the collector feeds), the Arrow conversions and `ddl()`.
"""

from __future__ import annotations

from spyglass.storage.batch import enriched_to_arrow, store_hook
from spyglass.storage.rows import flows_to_arrow, table_to_flows
from spyglass.storage.schema import SCHEMA_VERSION, ddl
from spyglass.storage.store import Cursor, FlowStore, StoreError
from spyglass.storage.writer import StoreWriter, WriterStats

__all__ = [
    "SCHEMA_VERSION",
    "Cursor",
    "FlowStore",
    "StoreError",
    "StoreWriter",
    "WriterStats",
    "ddl",
    "enriched_to_arrow",
    "flows_to_arrow",
    "store_hook",
    "table_to_flows",
]

"""The hot path into the store: an `EnrichedBatch` -> Arrow rows, no per-row objects.

`enriched_to_arrow` builds exactly the rows `flows_to_arrow(batch.to_flows())`
would, without building the flows and without enriching anything again: the
enrichment is the batch's, done once by the collector's enricher. Code columns
become Arrow columns as they are (enum numbers are the stored numbers), and
each per-batch table (addresses, endpoints, interface names, services, policy
lists) is converted once and spread over the rows with Arrow `take`. A test
holds the two outputs equal.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from spyglass.collector.enriched import REPLY_UNKNOWN, REPLY_YES, EnrichedBatch
from spyglass.collector.uuids import UUID_LEN, UuidColumn
from spyglass.model.flow import Endpoint, PolicyRef
from spyglass.storage.rows import ip_bytes
from spyglass.storage.schema import FLOW_SCHEMA

if TYPE_CHECKING:
    from spyglass.storage.writer import StoreWriter


def _int8(codes: np.ndarray) -> pa.Array:
    """A u8 enum code column as the signed byte Enum8 stores: the same byte (133 -> -123,
    as `as_int8`); every enum but the drop reasons is under 128, so that is its number."""
    return pa.array(codes.astype(np.uint8, copy=False).view(np.int8), pa.int8())


def _spread(table: pa.Array, codes: np.ndarray) -> pa.Array:
    """table[codes[i]] for every row; a negative code is a NULL row."""
    missing = codes < 0
    return table.take(pa.array(codes, pa.int64(), mask=missing if missing.any() else None))


def _endpoint_columns(table: list[Endpoint], codes: dict[str, np.ndarray],
                      ) -> dict[str, pa.Array]:
    """Both sides' endpoint columns: each distinct endpoint converted once, spread per side."""
    small = {
        "ID": pa.array([e.ID for e in table], pa.uint32()),
        "identity": pa.array([e.identity for e in table], pa.uint32()),
        "namespace": pa.array([e.namespace for e in table], pa.string()),
        "pod_name": pa.array([e.pod_name for e in table], pa.string()),
        "labels": pa.array([list(e.labels) for e in table], pa.list_(pa.string())),
        "workloads": pa.array([[{"name": w.name, "kind": w.kind} for w in e.workloads]
                               for e in table], FLOW_SCHEMA.field("source_workloads").type),
    }
    return {f"{side}_{k}": _spread(v, side_codes)
            for side, side_codes in codes.items() for k, v in small.items()}


def _policy_table(table: list[tuple[PolicyRef, ...]]) -> pa.Array:
    return pa.array([[{"namespace": p.namespace, "name": p.name, "kind": p.kind} for p in refs]
                     for refs in table], FLOW_SCHEMA.field("ingress_allowed_by").type)


def uuid_array(ids: UuidColumn) -> pa.Array:
    """The id column as an Arrow string array straight from its fixed-width bytes (one
    buffer and an offsets array, no Python string per row); ids of other shapes as text."""
    n = len(ids)
    try:
        data = ids.as_bytes()
    except ValueError:
        return pa.array(ids.tolist(), pa.string())
    offsets = np.arange(0, (n + 1) * UUID_LEN, UUID_LEN, dtype=np.int32)
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data))


def enriched_to_arrow(batch: EnrichedBatch) -> pa.RecordBatch:
    """Rows of the flows table for an enriched batch, uuids included (so the store and the
    live ring name each flow alike)."""
    n = len(batch)
    ips = pa.array([ip_bytes(ip) for ip in batch.ip_table], pa.binary(16))
    services = batch.service_table
    svc_ns = pa.array(["" if s is None else s.namespace for s in services], pa.string())
    svc_name = pa.array([None if s is None else s.name for s in services], pa.string())
    policies = _policy_table(batch.policy_table)
    cols: dict[str, pa.Array] = {
        "time": pa.array(batch.time_ns.astype(np.int64, copy=False), pa.timestamp("ns", tz="UTC")),
        "uuid": uuid_array(batch.uuid),
        "node_name": _spread(pa.array([batch.node_name], pa.string()),
                             np.zeros(n, dtype=np.int64)),
        "verdict": _int8(batch.verdict),
        "drop_reason": _int8(batch.drop_reason),
        "event_type": _int8(batch.event_type),
        "event_subtype": pa.array(batch.event_subtype, pa.uint8()),
        "observation_point": _int8(batch.observation_point),
        "trace_reason": _int8(batch.trace_reason),
        "traffic_direction": _int8(batch.traffic_direction),
        "is_reply": pa.array(batch.is_reply == REPLY_YES, pa.bool_(),
                             mask=batch.is_reply == REPLY_UNKNOWN),
        "ip_version": pa.array(batch.ip_version, pa.uint8()),
        "source_ip": _spread(ips, batch.source_ip),
        "destination_ip": _spread(ips, batch.destination_ip),
        "service_ip": _spread(ips, batch.service_ip),  # NO_IP: NULL
        "protocol": pa.array(batch.protocol, pa.uint8()),
        "source_port": pa.array(batch.source_port, pa.uint16()),
        "destination_port": pa.array(batch.destination_port, pa.uint16()),
        "service_port": pa.array(batch.service_port, pa.uint16()),
        "tcp_flags": pa.array(batch.tcp_flags, pa.uint8()),
        "icmp_type": pa.array(batch.icmp_type, pa.uint8()),
        "icmp_code": pa.array(batch.icmp_code, pa.uint8()),
        **_endpoint_columns(batch.endpoint_table,
                            {"source": batch.source, "destination": batch.destination}),
        "source_service_namespace": _spread(svc_ns, batch.source_service),
        "source_service_name": _spread(svc_name, batch.source_service),
        "destination_service_namespace": _spread(svc_ns, batch.destination_service),
        "destination_service_name": _spread(svc_name, batch.destination_service),
        "interface_index": pa.array(batch.interface_index, pa.uint32()),
        "interface_name": _spread(pa.array(batch.ifname_table, pa.string()),
                                  batch.interface_name),
        "packets": pa.array(batch.packets, pa.uint64()),
        "bytes": pa.array(batch.bytes, pa.uint64()),
        "policy_match_type": _int8(batch.policy_match_type),
        **{k: _spread(policies, codes) for k, codes in batch.policy_columns().items()},
    }
    return pa.RecordBatch.from_arrays([cols[f.name] for f in FLOW_SCHEMA], schema=FLOW_SCHEMA)


def store_hook(writer: StoreWriter) -> Callable[[EnrichedBatch], None]:
    """The collector's `on_batch` hook that feeds the store from the enriched batch itself
    (the ring holds the same batch, so both carry the same uuids)."""
    def hook(batch: EnrichedBatch) -> None:
        if len(batch):
            writer.submit(enriched_to_arrow(batch))
    return hook

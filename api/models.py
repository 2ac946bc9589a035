"""Typed shapes of the API's responses, so `/docs` shows what clients get.

Flow bodies follow Hubble's flow JSON (see `collector.flow.Flow.to_dict`); the
models name the fields people filter and print by and allow the rest, so a
field added to the Flow contract shows up in responses without an API change.
Responses with many flows are serialised directly (validating 65k flows per
request would cost more than building them); the models document them.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class EndpointModel(BaseModel):
    """One side of a flow (Hubble's `flow.Endpoint`)."""

    model_config = ConfigDict(extra="allow")

    ID: int = 0
    identity: int = 0
    namespace: str | None = None
    labels: list[str] | None = None
    pod_name: str | None = None


class FlowModel(BaseModel):
    """A flow in Hubble's JSON shape; unlisted fields are passed through as they are."""

    model_config = ConfigDict(extra="allow")

    time: str = Field(description="RFC3339 with nanoseconds, UTC")
    uuid: str = ""
    verdict: str = Field(description="FORWARDED, DROPPED, AUDIT, …")
    drop_reason_desc: str | None = Field(default=None, description="e.g. POLICY_DENIED")
    IP: dict[str, Any] = Field(default_factory=dict)
    l4: dict[str, Any] = Field(default_factory=dict, description="{TCP|UDP|ICMPv4…: {...}}")
    source: EndpointModel = Field(default_factory=EndpointModel)
    destination: EndpointModel = Field(default_factory=EndpointModel)
    Type: str = "L3_L4"
    node_name: str = ""
    event_type: dict[str, int] = Field(default_factory=dict)
    traffic_direction: str = "TRAFFIC_DIRECTION_UNKNOWN"
    trace_observation_point: str | None = None
    is_reply: bool | None = None
    Summary: str = ""


class LostEventModel(BaseModel):
    """Events that were lost, and where (Hubble's `LostEvent`)."""

    source: str = Field(description="PERF_EVENT_RING_BUFFER, HUBBLE_RING_BUFFER, …")
    num_events_lost: int
    cpu: dict[str, int] | None = None


class GetFlowsResponse(BaseModel):
    """One event: exactly one of `flow` or `lost_events`, as in Hubble's observer API."""

    flow: FlowModel | None = None
    lost_events: LostEventModel | None = None
    node_name: str
    time: str


class FlowsResponse(BaseModel):
    """`GET /api/v1/flows`: events oldest first; `next` continues a history query."""

    flows: list[GetFlowsResponse]
    next: str | None = Field(default=None, description="pass as after=… for the next page (history "
                                                "only); null when there is nothing more")


class StoreStatus(BaseModel):
    """The flow store and its writer, as `spyglass status` shows them."""

    model_config = ConfigDict(extra="forbid")

    kind: str | None = Field(default=None, description="chdb, http or https; null without a store")
    dsn: str | None = Field(default=None, description="the store's address, password removed")
    up: bool | None = Field(default=None, description="whether the last write succeeded")
    queued_rows: int | None = Field(default=None, description="flows waiting to be written")
    lag_s: float | None = Field(default=None, description="age of the oldest unwritten flow")
    written: int | None = None
    lost: int | None = Field(default=None,
                             description="flows dropped past the writer's bound (STORE)")
    retries: int | None = None
    last_error: str | None = None


class PerfLossModel(BaseModel):
    """One CPU's perf ring loss, counted by the datapath and reported by the ring."""

    model_config = ConfigDict(extra="forbid")

    kernel_counted: int = Field(description="perf_submit failures the datapath counted")
    perf_reported: int = Field(description="PERF_RECORD_LOST counts the ring reported")


class CollectorModel(BaseModel):
    """The collector's own counters: what it read, and what it could not make sense of."""

    model_config = ConfigDict(extra="forbid")

    reads: int
    running: bool
    lost_by_cpu: dict[str, PerfLossModel] = Field(description="by CPU number")
    perf_kernel_counted: int
    perf_reported: int
    decode_errors: dict[str, int] = Field(description="events refused by the decoder, by "
                                                      "reason")
    perf_malformed: int = Field(description="perf records that were not whole")
    getter_errors: int = Field(description="enrichment lookups that failed")
    failed_batches: int
    hook_errors: int = Field(description="batches a consumer (store, metrics) failed on")


class RestartModel(BaseModel):
    """What this agent found when it adopted the datapath an earlier agent left."""

    model_config = ConfigDict(extra="forbid")

    generation: int
    restarts: int
    previous_pid: int
    adopted_rings: bool = Field(description="the perf rings came back from the ring keeper")
    waiting_in_rings: int = Field(description="events written while no agent ran, read now")
    lost_in_rings: int = Field(description="events no agent read and no ring kept "
                                           "(AGENT_RESTART)")
    failures_untold: int = Field(description="submits that failed while no agent ran")
    unstored: int = Field(description="flows the earlier agent had not written to the store")
    endpoints_written: int
    endpoints_deleted: int
    programs_replaced: int


class StatusResponse(BaseModel):
    """`GET /api/v1/status`: Hubble's ServerStatusResponse plus the agent's own counters."""

    model_config = ConfigDict(extra="forbid")

    num_flows: int = Field(description="flows in the ring now")
    max_flows: int = Field(description="ring capacity")
    seen_flows: int = Field(description="flows written since start")
    flows_rate: float = Field(description="flows per second, recent")
    uptime_ns: int
    node_name: str
    version: str
    lost_events: dict[str, int] = Field(
        default_factory=dict, description="events lost so far, by LostEventSource name")
    connected_clients: int = Field(default=0, description="live WebSocket streams")
    store: StoreStatus | None = Field(default=None, description="the flow store and its writer")
    pods: int | None = Field(default=None, description="pods of the lab the agent serves")
    monitor_aggregation: str | None = None
    collector: CollectorModel | None = None
    restart: RestartModel | None = Field(default=None, description="set when this agent adopted a "
                                                           "running datapath")


class NodeModel(BaseModel):
    """One node, as `hubble list nodes` shows it."""

    name: str
    state: Literal["NODE_CONNECTED", "NODE_UNAVAILABLE"] = "NODE_CONNECTED"
    version: str
    address: str = ""
    tls: dict[str, Any] = Field(default_factory=dict)
    uptime_ns: int
    num_flows: int
    max_flows: int
    seen_flows: int
    flows_rate: float


class NodesResponse(BaseModel):
    nodes: list[NodeModel]


class NamespaceModel(BaseModel):
    """A namespace seen in stored flows, or with pods live now (or both)."""

    namespace: str
    cluster: str = ""
    stored: bool = Field(description="has flows in the store in the time range")
    live: bool = Field(description="has pods now (the lab's)")


class NamespacesResponse(BaseModel):
    namespaces: list[NamespaceModel]


class ColumnModel(BaseModel):
    name: str
    type: str = Field(description="int, float, bool, datetime (RFC3339), string, list, object")


class TableResponse(BaseModel):
    """An aggregation's DataFrame: typed columns and one object per row."""

    columns: list[ColumnModel]
    records: list[dict[str, Any]]
    since: str | None = Field(default=None, description="the range's start (RFC3339), if any")
    until: str | None = Field(default=None, description="the range's end (RFC3339), if any")


class SqlRequest(BaseModel):
    """`POST /api/v1/query/sql`: one read-only SELECT on the flows tables."""

    sql: str = Field(min_length=1, max_length=20000)
    limit: int = Field(1000, ge=1, le=100000)
    timeout_s: float = Field(10.0, gt=0, le=300)


class ImportResponse(BaseModel):
    """What `POST /api/v1/flows/import` stored."""

    imported: int
    skipped: int = Field(description="lines that were not flows (lost events, node status…)")
    approximated: int = Field(description="flows with names Spyglass does not know, "
                                          "stored as UNKNOWN")
    lines: int
    kept_until: str | None = Field(
        None, description="RFC3339 (UTC): the imported flows are kept until then, however "
                          "old they are (now + retention_days); null when none were imported")


class ErrorResponse(BaseModel):
    """Every error, whatever its cause: what is wrong and how to fix it."""

    ok: Literal[False] = False
    error: str
    status: int

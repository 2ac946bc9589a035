"""Hubble's gRPC API over the agent's ring and store: `observer.Observer` and `peer.Peer`.

The hubble CLI, Hubble UI's backend and Hubble Relay speak this API, so an agent that
serves it can be pointed at as a Cilium node would be (`hubble observe --server
localhost:4244`). It reads the same ring, store and filters as the REST and WebSocket
API, through the same pieces: `FilterSet` built from the request's FlowFilters, the
ring's masks, `history_page` for time ranges, and the live stream's reader and queue
(`api.stream`), so a slow gRPC client is told CLIENT_QUEUE exactly like a WebSocket
one. Each Flow is built field by field (`flow_message`), and tests hold it equal to the
flow's Hubble JSON (`hubble_response`) parsed strictly into `GetFlowsResponse`: the wire
message and `-o json` are one thing. Who may call is api/grpc_security.py's business.

Beyond Hubble OSS, `since`/`until` reach into the store's history (Hubble's ring holds
4,095 flows), and `since` with `follow` hands over to the ring with no gap or repeat.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import os
import threading
from collections.abc import AsyncIterator
from typing import Any, cast

import grpc
from google.protobuf import field_mask_pb2, json_format, wrappers_pb2
from google.protobuf.descriptor import Descriptor
from google.protobuf.message import Message
from starlette.concurrency import run_in_threadpool

from spyglass.api.app import build_status
from spyglass.api.auth import AuthConfig
from spyglass.api.errors import ApiError
from spyglass.api.gate import HISTORY_SLOTS, Gate
from spyglass.api.grpc_security import (
    GrpcTls,
    TokenCheck,
    check_grpc_listen,
    default_server_name,
    needs_token,
)
from spyglass.api.history import NO_STORE, history_page
from spyglass.api.hubble import (
    flow_pb2,
    observer_pb2,
    observer_pb2_grpc,
    peer_pb2,
    peer_pb2_grpc,
    relay_pb2,
)
from spyglass.api.params import FlowQuery
from spyglass.api.source import FlowSource, RateMeter
from spyglass.api.stream import (
    SEND_BATCH,
    ClientQueue,
    StreamHub,
    backlog,
    history_then_ring,
    live_batches,
)
from spyglass.collector.filters import FIELDS, FilterError, FilterSet
from spyglass.collector.filters.flowfilter import FlowFilter
from spyglass.model.enums import Protocol
from spyglass.model.flow import Endpoint, Event, Flow, event_to_response, tcp_flag_names
from spyglass.model.hubble_json import hubble_response

log = logging.getLogger("spyglass.api.grpc")

#: Hubble's server port (the agent's REST API keeps Hubble Relay's 4245).
DEFAULT_PORT = 4244
#: What GetFlows sends when a request names no number and does not follow (as `hubble
#: observe` asks for by default).
DEFAULT_NUMBER = 20
FLOW_DESCRIPTOR = cast(Descriptor, flow_pb2.Flow.DESCRIPTOR)
#: History is read in pages of this many flows.
HISTORY_PAGE = 5000


def to_message(body: dict[str, Any]) -> observer_pb2.GetFlowsResponse:
    """A GetFlowsResponse from the API's JSON, strictly: Spyglass's own fields are dropped
    first, and anything else Hubble's schema lacks raises ParseError."""
    msg = observer_pb2.GetFlowsResponse()
    json_format.ParseDict(hubble_response(body), msg, ignore_unknown_fields=False)
    return msg


def messages(events: list[Event], node: str) -> list[observer_pb2.GetFlowsResponse]:
    """The events as GetFlowsResponses, built field by field (ten times cheaper than
    `to_message`, and held equal to it by tests/test_hubble_grpc.py). Endpoints that a
    batch's flows share are built once."""
    memo: dict[int, flow_pb2.Endpoint] = {}
    out = []
    for ev in events:
        if isinstance(ev, Flow):
            msg = observer_pb2.GetFlowsResponse(flow=flow_message(ev, memo), node_name=node)
            msg.time.CopyFrom(msg.flow.time)
            out.append(msg)
        else:
            out.append(to_message(event_to_response(ev, node)))
    return out


def _enum(value: int) -> Any:
    """A Spyglass enum member as the schema's enum number (the numbers are the same; the
    stubs type enum fields as their own wrapper classes)."""
    return int(value)


def _endpoint(ep: Endpoint, memo: dict[int, flow_pb2.Endpoint]) -> flow_pb2.Endpoint:
    m = memo.get(id(ep))
    if m is None:
        m = memo[id(ep)] = flow_pb2.Endpoint(
            ID=ep.ID, identity=ep.identity, namespace=ep.namespace, labels=list(ep.labels),
            pod_name=ep.pod_name,
            workloads=[flow_pb2.Workload(name=w.name, kind=w.kind) for w in ep.workloads])
    return m


def flow_message(f: Flow, memo: dict[int, flow_pb2.Endpoint] | None = None) -> flow_pb2.Flow:
    """Hubble's Flow for a flow: what `Flow.to_dict` says, less Spyglass's own fields."""
    memo = {} if memo is None else memo
    m = flow_pb2.Flow(uuid=f.uuid, verdict=_enum(f.verdict), Type=flow_pb2.L3_L4,
                      node_name=f.node_name, traffic_direction=_enum(f.traffic_direction),
                      Summary=f.summary)
    m.time.seconds, m.time.nanos = divmod(f.time_ns, 1_000_000_000)
    if f.drop_reason:
        m.drop_reason = int(f.drop_reason)
        m.drop_reason_desc = _enum(f.drop_reason)
    ip = m.IP
    ip.source, ip.destination = f.source_ip, f.destination_ip
    ip.ipVersion = flow_pb2.IPv6 if f.ip_version == 6 else flow_pb2.IPv4
    proto = f.protocol
    m.l4.SetInParent()  # present, if empty, as in the JSON (`"l4": {}`)
    if proto in (Protocol.TCP, Protocol.UDP, Protocol.SCTP):
        l4 = getattr(m.l4, f.protocol_name)
        l4.source_port, l4.destination_port = f.source_port, f.destination_port
        if proto == Protocol.TCP:
            l4.flags.SetInParent()  # `"flags": {}` even when no flag is set
            for name in tcp_flag_names(f.tcp_flags):
                setattr(l4.flags, name, True)
    elif proto in (Protocol.ICMP, Protocol.ICMPV6):
        l4 = getattr(m.l4, f.protocol_name)
        l4.type, l4.code = f.icmp_type, f.icmp_code
    m.source.CopyFrom(_endpoint(f.source, memo))
    m.destination.CopyFrom(_endpoint(f.destination, memo))
    m.event_type.type, m.event_type.sub_type = int(f.event_type), f.event_subtype
    if f.observation_point:
        m.trace_observation_point = _enum(f.observation_point)
    if f.trace_reason:
        m.trace_reason = _enum(f.trace_reason)
    if f.is_reply is not None:
        m.is_reply.value = f.is_reply
    if f.interface_index:
        m.interface.index, m.interface.name = f.interface_index, f.interface_name
    if f.policy_match_type:
        m.policy_match_type = int(f.policy_match_type)
    for key in ("ingress_allowed_by", "egress_allowed_by", "ingress_denied_by",
                "egress_denied_by"):
        refs = getattr(f, key)
        if refs:
            getattr(m, key).extend(flow_pb2.Policy(name=p.name, namespace=p.namespace,
                                                   kind=p.kind) for p in refs)
    if f.source_service is not None:
        m.source_service.name = f.source_service.name
        m.source_service.namespace = f.source_service.namespace
    if f.destination_service is not None:
        m.destination_service.name = f.destination_service.name
        m.destination_service.namespace = f.destination_service.namespace
    return m


def filters_from(request: observer_pb2.GetFlowsRequest) -> FilterSet:
    """The request's whitelist/blacklist as the REST API's FilterSet (Hubble's semantics:
    OR across filters, AND within one, whitelist minus blacklist)."""
    def one(f: Message, where: str) -> FlowFilter:
        unserved = [fd.name for fd, _ in f.ListFields() if fd.name not in FIELDS]
        if unserved:
            raise FilterError(
                f"{where}: Spyglass does not evaluate the FlowFilter "
                f"field{'s' if len(unserved) > 1 else ''} {', '.join(map(repr, unserved))} "
                "(its flows have no L7, DNS, FQDN, cluster, encryption or trace data); remove "
                f"{'them' if len(unserved) > 1 else 'it'}, or use one of {', '.join(FIELDS)}")
        d = json_format.MessageToDict(f, preserving_proto_field_name=True)
        return FlowFilter.from_dict(d, where)

    return FilterSet(allow=tuple(one(f, f"whitelist[{i}]")
                                 for i, f in enumerate(request.whitelist)),
                     deny=tuple(one(f, f"blacklist[{i}]")
                                for i, f in enumerate(request.blacklist)))


def query_from(request: observer_pb2.GetFlowsRequest, capacity: int) -> FlowQuery:
    """The request as a FlowQuery; ValueError/FilterError say what is wrong with it."""
    since = _ns(request, "since")
    until = _ns(request, "until")
    if request.follow and until is not None:
        raise ValueError("until ends a range, and follow never ends: drop one of them")
    if request.follow and request.first:
        raise ValueError("first cannot be combined with follow: use number for a backlog, "
                         "or since to start from a time")
    number = int(request.number)
    if number < 0:
        raise ValueError(f"number must not be negative, got {number}")
    if since is None and until is None and not request.follow:
        number = min(number or DEFAULT_NUMBER, capacity)
    return FlowQuery(number=number, first=bool(request.first), filters=filters_from(request),
                     since_ns=since, until_ns=until, counted=number > 0)


def field_mask_from(request: observer_pb2.GetFlowsRequest) -> field_mask_pb2.FieldMask | None:
    """The request's field mask over Flow (None: whole flows); ValueError names any path
    that is not a Flow field, as Hubble refuses it."""
    if not request.HasField("field_mask") or not request.field_mask.paths:
        return None
    paths = list(request.field_mask.paths)
    bad = [p for p in paths
           if not field_mask_pb2.FieldMask(paths=[p]).IsValidForDescriptor(FLOW_DESCRIPTOR)]
    if bad:
        raise ValueError(f"field_mask: {', '.join(map(repr, bad))} "
                         f"{'is not a Flow field' if len(bad) == 1 else 'are not Flow fields'}"
                         "; give paths of Hubble's Flow, like time, verdict, source.pod_name, "
                         "l4.TCP.destination_port")
    return field_mask_pb2.FieldMask(paths=paths)


def masked(msg: observer_pb2.GetFlowsResponse,
           mask: field_mask_pb2.FieldMask | None) -> observer_pb2.GetFlowsResponse:
    """The response with only the mask's fields of its flow (lost events pass whole)."""
    if mask is not None and msg.HasField("flow"):
        kept = flow_pb2.Flow()
        mask.MergeMessage(msg.flow, kept)
        msg.flow.CopyFrom(kept)
    return msg


def _ns(request: observer_pb2.GetFlowsRequest, name: str) -> int | None:
    if not request.HasField(name):
        return None
    ts = getattr(request, name)
    return int(ts.seconds) * 1_000_000_000 + int(ts.nanos)


class ObserverService(observer_pb2_grpc.ObserverServicer):
    """`observer.Observer` for one agent (one node)."""

    def __init__(self, source: FlowSource, hub: StreamHub, *, address: str,
                 tls_server_name: str = "") -> None:
        self.source = source
        self.hub = hub
        self.address = address
        self.tls_server_name = tls_server_name
        self.gate = Gate(HISTORY_SLOTS, "history requests")
        self.rate = RateMeter()

    async def GetFlows(self, request: observer_pb2.GetFlowsRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        ring = self.source.ring
        try:
            query = query_from(request, ring.capacity)
            mask = field_mask_from(request)
        except (ValueError, FilterError) as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            return
        node = self.source.node_name
        store = self.source.store
        if query.history and store is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, NO_STORE)
            return
        try:
            stream = self._fixed(query) if not request.follow else self._follow(query, node)
            async for msg in stream:
                yield masked(msg, mask)
        except ApiError as exc:
            code = (grpc.StatusCode.RESOURCE_EXHAUSTED if exc.status == 429
                    else grpc.StatusCode.UNAVAILABLE)
            await context.abort(code, exc.message)

    async def _fixed(self, query: FlowQuery) -> AsyncIterator[Any]:
        """No follow: the newest (or oldest) `number` of the ring, or of a time range."""
        ring, node = self.source.ring, self.source.node_name
        if not query.history:
            evs = await run_in_threadpool(
                ring.first if query.first else ring.last, query.number, query.mask())
            for msg in messages(list(evs), node):
                yield msg
            return
        store = self.source.store
        assert store is not None
        order = "asc" if query.first or not query.number else "desc"
        want = query.number or None
        got, after, pages = 0, None, []
        while want is None or got < want:
            limit = HISTORY_PAGE if want is None else min(HISTORY_PAGE, want - got)
            with self.gate.enter():
                page, after = await run_in_threadpool(
                    functools.partial(history_page, store, ring, query.filters,
                                      since_ns=query.since_ns, until_ns=query.until_ns,
                                      limit=limit, order=order, after=after))
            got += len(page)
            if order == "asc":
                for msg in messages(list(page), node):
                    yield msg
            else:
                pages.append(page)
            if after is None or not page:
                break
        for page in reversed(pages):  # the newest N, sent oldest first as Hubble does
            for msg in messages(list(reversed(page)), node):
                yield msg

    async def _follow(self, query: FlowQuery, node: str) -> AsyncIterator[Any]:
        """A backlog (number) or history (since), then live, through a client queue."""
        ring = self.source.ring
        queue = ClientQueue(self.hub)
        if query.since_ns is not None:
            store = self.source.store
            assert store is not None
            handover: asyncio.Future[Any] = asyncio.ensure_future(
                history_then_ring(store, ring, query, _put(queue), self.gate))
            while not handover.done() or len(queue):
                evs = await _drain(queue, handover)
                for msg in messages(evs, node):
                    yield msg
            seq, skip = handover.result()
        else:
            seq, skip = await backlog(ring, query, query.mask(), _put(queue)), None
        async for evs in live_batches(ring, self.hub, queue, seq, skip, query.mask()):
            for msg in messages(evs, node):
                yield msg
        if queue.error is not None:
            raise queue.error

    async def ServerStatus(self, request: observer_pb2.ServerStatusRequest,  # noqa: N802
                           context: grpc.aio.ServicerContext) -> Any:
        st = build_status(self.source, self.hub, self.rate)
        return observer_pb2.ServerStatusResponse(
            num_flows=st.num_flows, max_flows=st.max_flows, seen_flows=st.seen_flows,
            uptime_ns=st.uptime_ns, num_connected_nodes=wrappers_pb2.UInt32Value(value=1),
            num_unavailable_nodes=wrappers_pb2.UInt32Value(value=0), version=st.version,
            flows_rate=st.flows_rate)

    async def GetNodes(self, request: observer_pb2.GetNodesRequest,  # noqa: N802
                       context: grpc.aio.ServicerContext) -> Any:
        st = build_status(self.source, self.hub, self.rate)
        node = observer_pb2.Node(
            name=st.node_name, version=st.version, address=self.address,
            state=relay_pb2.NODE_CONNECTED, uptime_ns=st.uptime_ns,
            num_flows=st.num_flows, max_flows=st.max_flows, seen_flows=st.seen_flows)
        if self.tls_server_name:
            node.tls.enabled = True
            node.tls.server_name = self.tls_server_name
        return observer_pb2.GetNodesResponse(nodes=[node])

    async def GetNamespaces(self, request: observer_pb2.GetNamespacesRequest,  # noqa: N802
                            context: grpc.aio.ServicerContext) -> Any:
        names = await run_in_threadpool(self.source.live_namespaces)
        return observer_pb2.GetNamespacesResponse(
            namespaces=[observer_pb2.Namespace(namespace=n) for n in sorted(set(names))])

    async def GetAgentEvents(self, request: Any,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "Spyglass has no agent events: policy and endpoint changes are in "
                            "`spyglass status` and the agent's log")
        yield  # pragma: no cover - abort raises

    async def GetDebugEvents(self, request: Any,  # noqa: N802
                             context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED,
                            "Spyglass's datapath emits no debug events: use `spyglass "
                            "observe` for its trace, drop and policy-verdict events")
        yield  # pragma: no cover - abort raises


def _put(queue: ClientQueue) -> Any:
    async def put(ev: Event) -> None:
        if queue.room() == 0:  # history is read as fast as it is sent, not faster
            await queue.wait_room(1.0)
        queue.offer(ev)
    return put


async def _drain(queue: ClientQueue, producer: asyncio.Future[Any]) -> list[Event]:
    """What the queue has, waiting for the producer while it is empty and running."""
    while not len(queue) and not producer.done():
        await asyncio.wait([producer], timeout=0.05)
    if not len(queue):
        return []
    return await queue.get_many(SEND_BATCH)


class PeerService(peer_pb2_grpc.PeerServicer):
    """`peer.Peer`: this one node, as Hubble Relay expects to find it, then quiet."""

    def __init__(self, name: str, address: str, tls_server_name: str = "") -> None:
        self.name, self.address, self.tls_server_name = name, address, tls_server_name

    async def Notify(self, request: peer_pb2.NotifyRequest,  # noqa: N802
                     context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        change = peer_pb2.ChangeNotification(
            name=self.name, address=self.address, type=peer_pb2.PEER_ADDED)
        if self.tls_server_name:
            change.tls.server_name = self.tls_server_name
        yield change
        await asyncio.Event().wait()  # until the client goes away (cancelled then)


class HubbleServer:
    """The gRPC server, on its own thread and event loop (the REST API's loop is uvicorn's).

    It listens on a TCP address and on a unix socket made mode 0600 before it accepts
    anyone; the two are separate gRPC servers on one loop, because only the TCP one may
    need a token (api/grpc_security.py has the rules: loopback reads need none until
    --token is set, other addresses need TLS and a token or a client certificate).
    `start` returns once both are bound, or raises what went wrong.
    """

    def __init__(self, source: FlowSource, hub: StreamHub, *, listen: str = "",
                 socket_path: str = "", auth: AuthConfig | None = None,
                 tls: GrpcTls | None = None) -> None:
        if not listen and not socket_path:
            raise ValueError("the Hubble gRPC server needs --grpc-listen or --grpc-socket")
        self.auth = auth or AuthConfig()
        check_grpc_listen(listen, tls, self.auth.token)
        if tls is not None and not tls.server_name:
            tls = dataclasses.replace(tls, server_name=default_server_name(source.node_name))
        self.source, self.hub, self.tls = source, hub, tls
        self._credentials = tls.credentials() if tls is not None else None
        self.listen, self.socket_path = listen, socket_path
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._servers: list[grpc.aio.Server] = []
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stopping: asyncio.Event | None = None
        self._grace = 1.0

    @property
    def address(self) -> str:
        """Where peers reach it (what GetNodes and peer.Notify say)."""
        if self.listen:
            return f"{self.listen.rsplit(':', 1)[0]}:{self.port}"
        return f"unix://{self.socket_path}"

    @property
    def server_name(self) -> str:
        """The name clients check the server's certificate against ('' without TLS)."""
        return self.tls.server_name if self.tls is not None else ""

    def start(self, timeout: float = 10) -> None:
        self._thread = threading.Thread(target=self._run, name="spyglass-hubble-grpc",
                                        daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("the Hubble gRPC server did not start in time")
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:  # noqa: BLE001 - told to start(), which raises it
            self._error = exc
            self._ready.set()
        finally:
            loop.close()

    async def _serve(self) -> None:
        # No SO_REUSEPORT: a second agent on the same port must fail, not share it.
        options = [("grpc.so_reuseport", 0)]
        if self.listen:
            check = needs_token(self.listen, self.tls, self.auth)
            tcp = grpc.aio.server(options=options,
                                  interceptors=[TokenCheck(self.auth)] if check else [])
            self._servers.append(tcp)
            try:
                self.port = (tcp.add_secure_port(self.listen, self._credentials)
                             if self._credentials is not None
                             else tcp.add_insecure_port(self.listen))
            except RuntimeError:
                self.port = 0
            if not self.port:
                raise ValueError(f"cannot listen on {self.listen} for Hubble's gRPC API: is "
                                 "the port taken (another Hubble or Spyglass)? Pick another "
                                 "with --grpc-listen, or turn it off with --grpc-listen ''")
        if self.socket_path:
            unix = grpc.aio.server(options=options)
            self._servers.append(unix)
            os.makedirs(os.path.dirname(self.socket_path) or ".", mode=0o755, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)
            old = os.umask(0o177)  # born 0600: no moment where others may connect
            try:
                unix.add_insecure_port(f"unix:{self.socket_path}")
            finally:
                os.umask(old)
        # Once the port is known (the services tell it); one of each, so both listeners
        # share the history gate and the flow rate.
        observer = ObserverService(self.source, self.hub, address=self.address,
                                   tls_server_name=self.server_name)
        peer = PeerService(self.source.node_name, self.address, self.server_name)
        for server in self._servers:
            observer_pb2_grpc.add_ObserverServicer_to_server(  # type: ignore[no-untyped-call]
                observer, server)
            peer_pb2_grpc.add_PeerServicer_to_server(peer, server)  # type: ignore[no-untyped-call]
        self._stopping = asyncio.Event()
        for server in self._servers:
            await server.start()
        if self.socket_path:
            os.chmod(self.socket_path, 0o600)
        self._ready.set()
        await self._stopping.wait()
        await asyncio.gather(*(server.stop(self._grace) for server in self._servers))

    def stop(self, grace: float = 1.0) -> None:
        """Stop serving (open streams end), remove the socket and join the thread."""
        loop, stopping = self._loop, self._stopping
        self._grace = grace
        if loop is not None and stopping is not None and loop.is_running():
            loop.call_soon_threadsafe(stopping.set)
        if self._thread is not None:
            self._thread.join(grace + 5)
        if self.socket_path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.socket_path)


__all__ = ["DEFAULT_PORT", "HubbleServer", "ObserverService", "PeerService", "filters_from",
           "flow_message", "messages", "query_from", "to_message"]

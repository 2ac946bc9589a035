"""Routes for policy: list, apply, delete, and `explain`.

These are the API's only writes besides import; the token middleware covers every
`/api/` path, so they need the token whenever one is set.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from fastapi import APIRouter, Body, Query
from starlette.concurrency import run_in_threadpool

from spyglass.api.auth import WRITE
from spyglass.api.errors import ApiError
from spyglass.model.flow import Flow
from spyglass.policy.compile import PolicyTooLarge
from spyglass.policy.explain import Explanation, parse_proto
from spyglass.policy.fields import PolicyError, PolicyNotFound


class Changes(Protocol):
    """What a change reports back (`agent.policies.ApplyResult`)."""

    def to_dict(self) -> dict[str, Any]: ...


class PolicyControl(Protocol):
    """The agent's live policy set, as these routes use it (`agent.policies.PolicyManager`)."""

    def list(self) -> list[dict[str, Any]]: ...

    def apply_yaml(self, text: str, source: str = ...) -> Changes: ...

    def delete(self, name: str, namespace: str = ..., kind: str | None = ...) -> Changes: ...

    def explain(self, src: str, dst: str, port: int, proto: int | str,
                fmt: str = ...) -> Explanation: ...


def policy_router(manager: PolicyControl,
                  flow_by_uuid: Callable[[str], Flow | None]) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["policy"])

    @router.get("/policies", summary="Policies in force")
    def list_policies() -> dict[str, Any]:
        return {"policies": manager.list()}

    @router.post("/policies", dependencies=[WRITE],
                   summary="Apply policies (multi-document YAML, all or nothing)")
    async def apply(body: str = Body(..., media_type="application/yaml",
                                     description="NetworkPolicy / CiliumNetworkPolicy YAML"),
                    source: str = Query("<request>", description="file name for messages"),
                    ) -> dict[str, Any]:
        try:
            result = await run_in_threadpool(manager.apply_yaml, body, source)
        except (PolicyError, PolicyTooLarge) as exc:
            raise ApiError(400, str(exc)) from None
        return result.to_dict()

    @router.delete("/policies/{namespace}/{name}", dependencies=[WRITE],
                   summary="Delete a policy")
    async def delete(namespace: str, name: str,
                     kind: str | None = Query(None, description="when a name is ambiguous"),
                     ) -> dict[str, Any]:
        try:
            result = await run_in_threadpool(manager.delete, name, namespace, kind)
        except PolicyNotFound as exc:
            raise ApiError(404, str(exc)) from None
        return {**result.to_dict(), "deleted": f"{namespace}/{name}"}

    @router.get("/explain", summary="Why a flow is allowed or dropped, and what would allow it")
    def explain(
        from_: str | None = Query(None, alias="from", description="NAMESPACE/POD"),
        to: str | None = Query(None, description="NAMESPACE/POD or an IP address"),
        port: int | None = Query(None, ge=0, le=65535),
        protocol: str = Query("tcp", description="tcp, udp, sctp or icmp"),
        flow: str | None = Query(None, description="a flow's uuid, from observe -o json"),
        format: str = Query("kubernetes", pattern="^(kubernetes|cilium)$"),
    ) -> dict[str, Any]:
        if flow:
            found = flow_by_uuid(flow)
            if found is None:
                raise ApiError(404, f"no flow {flow!r} in the ring: it may have been "
                               "overwritten; use --from/--to/--port instead")
            from_, to, port, protocol = _from_flow(found)
        if not from_ or not to or port is None:
            raise ApiError(400, "give from=NAMESPACE/POD, to=NAMESPACE/POD|IP and port=N "
                           "(and protocol=tcp|udp), or flow=<uuid>")
        try:
            parse_proto(protocol)
            ex = manager.explain(from_, to, port, protocol, format)
        except PolicyNotFound as exc:
            raise ApiError(404, str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
        return {**ex.to_dict(), "text": ex.render()}

    return router


def _from_flow(f: Flow) -> tuple[str, str, int, str]:
    """The original direction of a flow: replies are explained as the request they answer."""
    src, dst = f.source, f.destination
    src_ip, dst_ip, port = f.source_ip, f.destination_ip, f.destination_port
    if f.is_reply:
        src, dst = dst, src
        src_ip, dst_ip, port = dst_ip, src_ip, f.source_port
    if not src.pod_name:
        raise ApiError(400, f"the flow's source {src_ip} is not a pod: explain needs a pod "
                       "as the source")
    to = f"{dst.namespace}/{dst.pod_name}" if dst.pod_name else dst_ip
    return f"{src.namespace}/{src.pod_name}", to, port, f.protocol_name.lower()

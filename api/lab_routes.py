"""Routes that change the lab while `up` runs: pods (add, delete, scale) and Services.

They exist because the `up` process owns the datapath: adding a pod means wiring it,
attaching the programs, recompiling policy for a possibly new identity and resyncing the
service backends, all of which only the agent can do. Writes, so the token middleware
guards them like policy apply.
"""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import APIRouter, Body, Query
from starlette.concurrency import run_in_threadpool

from spyglass.api.auth import WRITE
from spyglass.api.errors import ApiError
from spyglass.bpf.datapath import DatapathError
from spyglass.lab.errors import LabError, PodRefError


class LabChanges(Protocol):
    def add_pods(self, yaml_text: str, source: str = ...) -> list[str]: ...
    def delete_pod(self, ref: str) -> str: ...
    def scale(self, workload: str, replicas: int) -> dict[str, list[str]]: ...
    def apply_services(self, yaml_text: str, source: str = ...) -> dict[str, str]: ...
    def delete_service(self, ref: str) -> str: ...
    def list_services(self) -> list[dict[str, Any]]: ...


YAML_BODY = Body(..., media_type="application/yaml", description="Kubernetes-style YAML")



def lab_router(agent: LabChanges) -> APIRouter:
    router = APIRouter(prefix="/api/v1", tags=["lab"])

    async def call(fn: Any, *args: Any) -> Any:
        try:
            return await run_in_threadpool(fn, *args)
        except PodRefError as exc:
            raise ApiError(404, str(exc)) from None
        except (LabError, DatapathError, ValueError) as exc:
            raise ApiError(400, str(exc)) from None

    @router.post("/lab/pods", dependencies=[WRITE],
                   summary="Add pods (Pod documents), wired and attached")
    async def add_pods(body: str = YAML_BODY, source: str = Query("<request>")
                       ) -> dict[str, Any]:
        return {"added": await call(agent.add_pods, body, source)}

    @router.delete("/lab/pods/{ref:path}", dependencies=[WRITE],
                   summary="Delete a pod: NAMESPACE/POD, or a bare POD "
                   "(in default, or the only pod of that name)")
    async def delete_pod(ref: str) -> dict[str, Any]:
        return {"deleted": await call(agent.delete_pod, ref)}

    @router.post("/lab/scale", dependencies=[WRITE],
                   summary="Scale a workload (pods copied from its first pod)")
    async def scale(workload: str = Query(..., description="NAMESPACE/WORKLOAD"),
                    replicas: int = Query(..., ge=0, le=1000)) -> dict[str, Any]:
        return dict(await call(agent.scale, workload, replicas))

    @router.get("/services", summary="Services in the lab, with their ClusterIPs")
    async def list_services() -> dict[str, Any]:
        return {"services": await call(agent.list_services)}

    @router.post("/services", dependencies=[WRITE],
                   summary="Apply Services (all parsed before any applies)")
    async def apply_services(body: str = YAML_BODY, source: str = Query("<request>")
                             ) -> dict[str, Any]:
        return {"applied": await call(agent.apply_services, body, source)}

    @router.delete("/services/{namespace}/{name}", dependencies=[WRITE],
                   summary="Delete a Service")
    async def delete_service(namespace: str, name: str) -> dict[str, Any]:
        return {"deleted": await call(agent.delete_service, f"{namespace}/{name}")}

    return router

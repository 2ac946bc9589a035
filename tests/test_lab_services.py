"""Service objects in lab manifests: parsing, targetPort resolution, entries, placeholders."""

from __future__ import annotations

import pytest

from spyglass.lab.errors import ManifestError
from spyglass.lab.manifest import parse_manifest
from spyglass.lab.services import LabServices, ServicePort, resolve_target_port

PODS = """
apiVersion: v1
kind: Pod
metadata: {name: web-0, namespace: shop, labels: {app: web}}
spec:
  containers:
    - name: c
      command: ["x", "{{svc:api}}"]
      ports: [{name: http, containerPort: 8080}, {name: dns, containerPort: 53, protocol: UDP}]
---
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: shop, labels: {app: web}}
spec:
  containers: [{name: c, command: ["x"], ports: [{name: web, containerPort: 9000}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: api-0, namespace: shop, labels: {app: api}}
spec:
  containers: [{name: c, command: ["x"]}]
"""


def _svc(spec: str, name: str = "web") -> str:
    return f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: shop}}\n" \
           f"spec: {spec}\n"


API = _svc("{selector: {app: api}, ports: [{port: 80, targetPort: 8080}]}", "api")


def _services(*specs: str) -> LabServices:
    return LabServices(parse_manifest(PODS + API + "".join(specs), "t.yaml"), "10.99.0.0/16")


def _pairs(svcs: LabServices, manifest_text: str) -> list[tuple[object, str]]:
    m = parse_manifest(manifest_text, "t.yaml")
    return [(p, f"10.244.0.{i + 2}") for i, p in enumerate(m.pods)]


def test_named_target_port_resolves_per_pod_and_skips_pods_without_it() -> None:
    text = PODS + API + _svc("{selector: {app: web}, ports: [{name: http, port: 80, "
                             "targetPort: http}, {name: dns, port: 53, targetPort: dns, "
                             "protocol: UDP}]}")
    svcs = LabServices(parse_manifest(text, "t.yaml"), "10.99.0.0/16")
    entries = {(e.name, e.port): e for e in svcs.entries(_pairs(svcs, text))}
    assert entries[("web", 80)].backends == (("10.244.0.2", 8080),)  # web-1 has no "http"
    dns = entries[("web", 53)]
    assert dns.backends == (("10.244.0.2", 53),) and dns.proto == 17
    assert entries[("api", 80)].backends == (("10.244.0.4", 8080),)
    ids = {e.service_id for e in entries.values()}
    assert len(ids) == 3 and 0 not in ids


@pytest.mark.parametrize(("target", "protocol", "want"), [
    pytest.param(8080, "TCP", 8080, id="number"),
    pytest.param("http", "TCP", 8080, id="name"),
    pytest.param("dns", "TCP", None, id="name-wrong-protocol"),
    pytest.param("nope", "TCP", None, id="missing-name"),
])
def test_resolve_target_port(target: int | str, protocol: str, want: int | None) -> None:
    pod = parse_manifest(PODS + API, "t.yaml").pod("shop/web-0")
    assert resolve_target_port(ServicePort("p", 80, target, protocol), pod) == want


def test_headless_and_selectorless_services() -> None:
    svcs = _services(_svc("{clusterIP: None, selector: {app: web}, ports: [{port: 80}]}"),
                     _svc("{ports: [{port: 81}]}", "ext"))
    entries = {e.name: e for e in svcs.entries([])}
    assert "web" not in entries and "shop/web" not in svcs.cluster_ips  # headless: no VIP
    assert entries["ext"].backends == ()  # no selector: no backends, drops 158


def test_given_cluster_ip_and_affinity() -> None:
    svcs = _services(_svc("{clusterIP: 10.99.3.4, sessionAffinity: ClientIP, "
                          "sessionAffinityConfig: {clientIP: {timeoutSeconds: 60}}, "
                          "selector: {app: web}, ports: [{port: 80, targetPort: 8080}]}"))
    e = next(x for x in svcs.entries([]) if x.name == "web")
    assert (e.vip, e.affinity, e.affinity_timeout_s) == ("10.99.3.4", True, 60)
    assert svcs.service_by_addr("10.99.3.4", 80).name == "web"
    assert svcs.service_by_id(e.service_id).namespace == "shop"


@pytest.mark.parametrize(("spec", "pattern"), [
    pytest.param("{type: NodePort, ports: [{port: 80}]}", r"spec.type: 'NodePort' is not "
                 "supported", id="nodeport"),
    pytest.param("{ports: []}", r"spec.ports: expected a non-empty list", id="no-ports"),
    pytest.param("{ports: [{port: 0}]}", r"spec.ports\[0\].port: expected a port number",
                 id="port-zero"),
    pytest.param("{ports: [{port: 80, protocol: SCTP}]}", r"the lab translates TCP and UDP",
                 id="sctp"),
    pytest.param("{ports: [{port: 80}, {port: 81}]}", r"spec.ports\[0\].name: required",
                 id="unnamed-multi"),
    pytest.param("{ports: [{port: 80, targetPort: Bad_Name}]}", r"targetPort: 'Bad_Name'",
                 id="bad-target-name"),
    pytest.param("{sessionAffinity: Sticky, ports: [{port: 80}]}", r"use None or ClientIP",
                 id="affinity"),
    pytest.param("{clusterIP: 10.1.2.3, ports: [{port: 80}]}", r"outside the service CIDR",
                 id="ip-outside-cidr"),
])
def test_bad_services_name_the_field(spec: str, pattern: str) -> None:
    with pytest.raises(ManifestError, match=pattern):
        _services(_svc(spec))


@pytest.mark.parametrize(("ref", "pattern"), [
    pytest.param("nope", r"no Service shop/nope in this manifest", id="unknown"),
    pytest.param("web", r"is headless", id="headless"),
])
def test_svc_placeholder_is_checked_at_load(ref: str, pattern: str) -> None:
    text = PODS.replace("{{svc:api}}", "{{svc:" + ref + "}}") + API + _svc(
        "{clusterIP: None, ports: [{port: 80}]}")
    with pytest.raises(ManifestError, match=pattern):
        parse_manifest(text, "t.yaml")

"""Kubernetes-style manifests for the lab: Namespaces, Pods, and policy objects kept raw.

Users already write Kubernetes YAML, so the lab reads the same shapes and the
same names, and a manifest that works here should apply to a cluster. Errors
say where: file, 1-based document number, the object, and the field path, e.g.
`demo.yaml: document 3 (Pod shop/frontend-1): spec.containers[0].command:
expected a list of strings, got 'python3 -m http.server'`.

A Pod whose namespace has no Namespace object gets one created implicitly,
with no labels, as `kubectl create namespace` would have: users writing a
quick lab expect that to work. Because that also hides typos ("shpo"), each
implicit namespace other than `default` adds a line to `Manifest.warnings`.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from spyglass.lab.errors import ManifestError, PodRefError
from spyglass.lab.naming import resolve_ref
from spyglass.lab.placeholders import render
from spyglass.model import k8s_names
from spyglass.model.safeload import describe as _describe
from spyglass.model.safeload import load_yaml_all

#: kind -> accepted apiVersions. Kinds beyond Namespace/Pod are kept raw for later use.
API_VERSIONS: dict[str, tuple[str, ...]] = {
    "Namespace": ("v1",),
    "Pod": ("v1",),
    "Service": ("v1",),
    "NetworkPolicy": ("networking.k8s.io/v1",),
    "CiliumNetworkPolicy": ("cilium.io/v2",),
    "CiliumClusterwideNetworkPolicy": ("cilium.io/v2",),
}
CLUSTER_SCOPED = frozenset({"Namespace", "CiliumClusterwideNetworkPolicy"})
PROTOCOLS = ("TCP", "UDP", "SCTP")


@dataclass(frozen=True)
class Namespace:
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    implicit: bool = False  # created because a pod named it, not declared
    doc: int = 0  # 1-based document number; 0 when implicit


@dataclass(frozen=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str = ""


@dataclass(frozen=True)
class Container:
    name: str
    command: tuple[str, ...] = ()
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    ports: tuple[ContainerPort, ...] = ()

    @property
    def argv(self) -> tuple[str, ...]:
        """What runs: command then args (there is no image entrypoint to fall back on)."""
        return self.command + self.args


@dataclass(frozen=True)
class Pod:
    namespace: str
    name: str
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    containers: tuple[Container, ...] = ()
    doc: int = 0

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class RawObject:
    """A Service or policy document, checked only for identity; its body is kept as parsed."""

    api_version: str
    kind: str
    name: str
    namespace: str  # "" for cluster-scoped kinds
    body: dict[str, Any]
    doc: int


@dataclass(frozen=True)
class Manifest:
    source: str
    namespaces: tuple[Namespace, ...] = ()
    pods: tuple[Pod, ...] = ()
    objects: tuple[RawObject, ...] = ()
    warnings: tuple[str, ...] = ()
    #: The documents as parsed, empty ones left out: what the lab's state file keeps, so
    #: that any process can rebuild this manifest (`parse_documents`).
    documents: tuple[dict[str, Any], ...] = ()

    def namespace(self, name: str) -> Namespace | None:
        return next((n for n in self.namespaces if n.name == name), None)

    def pod(self, ref: str, default_namespace: str = "default") -> Pod:
        """A pod by "ns/pod" or bare name (see naming.resolve_ref); PodRefError if none/many."""
        ns, name = resolve_ref(ref, ((p.namespace, p.name) for p in self.pods),
                               default_namespace=default_namespace)
        return next(p for p in self.pods if p.namespace == ns and p.name == name)

    def objects_of(self, kind: str) -> tuple[RawObject, ...]:
        return tuple(o for o in self.objects if o.kind == kind)


def load_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest file; ManifestError names what is wrong and where."""
    source = os.fspath(path)
    try:
        with open(source, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ManifestError(f"{source}: cannot read the manifest: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ManifestError(f"{source}: not UTF-8 text ({e.reason} at byte {e.start})") from e
    return parse_manifest(text, source=os.path.basename(source) or source)


def parse_manifest(text: str, source: str = "<manifest>") -> Manifest:
    """Parse multi-document YAML into a validated Manifest."""
    try:
        docs = load_yaml_all(text, what=source)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "somewhere"
        what = " ".join(x for x in (e.context, e.problem) if x)
        raise ManifestError(f"{source}: {where}: YAML syntax error: {what}") from e
    except yaml.YAMLError as e:
        raise ManifestError(f"{source}: YAML error: {e}") from e
    return parse_documents(docs, source)


def parse_documents(docs: Sequence[Any], source: str = "<manifest>") -> Manifest:
    """Validate parsed documents (None for an empty one) into a Manifest."""
    namespaces: dict[str, Namespace] = {}
    pods: dict[str, Pod] = {}
    objects: dict[tuple[str, str, str], RawObject] = {}
    for number, data in enumerate(docs, start=1):
        if data is None:
            continue  # an empty document, e.g. a trailing `---`
        d = _Doc(source, number)
        kind, api_version, name, namespace, meta = _header(d, data)
        if kind == "Namespace":
            if name in namespaces:
                d.fail("metadata.name", f"duplicate Namespace {name!r} "
                       f"(first defined in document {namespaces[name].doc})")
            namespaces[name] = Namespace(name, _labels(d, meta, "labels"), doc=number)
        elif kind == "Pod":
            pod = _pod(d, data, name, namespace, meta)
            if pod.ref in pods:
                d.fail("metadata.name", f"duplicate pod {pod.ref} "
                       f"(first defined in document {pods[pod.ref].doc})")
            pods[pod.ref] = pod
        else:
            key = (kind, namespace, name)
            if key in objects:
                d.fail("metadata.name", f"duplicate {kind} {d.ident.split(' ', 1)[1]} "
                       f"(first defined in document {objects[key].doc})")
            objects[key] = RawObject(api_version, kind, name, namespace, data, number)
    warnings: list[str] = []
    located: list[Pod | RawObject] = [*pods.values(), *objects.values()]
    for obj in located:
        if obj.namespace and obj.namespace not in namespaces:
            namespaces[obj.namespace] = Namespace(obj.namespace, implicit=True)
            if obj.namespace != "default":
                warnings.append(
                    f"{source}: document {obj.doc}: namespace {obj.namespace!r} has no "
                    f"Namespace object; created it with no labels (add one to give it labels)"
                )
    services = [o for o in objects.values() if o.kind == "Service"]
    for pod in pods.values():
        _check_placeholders(source, pod, list(pods.values()), services)
    kept = tuple(copy.deepcopy(d) for d in docs if d is not None)
    return Manifest(source, tuple(namespaces.values()), tuple(pods.values()),
                    tuple(objects.values()), tuple(warnings), kept)


class _Doc:
    """Where we are, so every error can say file, document, object and field."""

    def __init__(self, source: str, number: int) -> None:
        self.source = source
        self.number = number
        self.ident = ""

    def fail(self, path: str, message: str) -> None:
        where = f"document {self.number}" + (f" ({self.ident})" if self.ident else "")
        raise ManifestError(f"{self.source}: {where}: {path}: {message}")


def _typed(d: _Doc, value: Any, want: type, path: str, what: str) -> Any:
    ok = isinstance(value, want) and not (want is int and isinstance(value, bool))
    if not ok:
        hint = "; quote it" if want is str and isinstance(value, int | float | bool) else ""
        d.fail(path, f"expected {what}, got {_describe(value)}{hint}")
    return value


def _header(d: _Doc, data: Any) -> tuple[str, str, str, str, dict[str, Any]]:
    if not isinstance(data, dict):
        d.fail("(document)", f"expected a mapping with apiVersion, kind and metadata, "
               f"got {_describe(data)}")
    kind = _typed(d, data.get("kind"), str, "kind", "a kind such as Pod or Namespace")
    if kind not in API_VERSIONS:
        d.fail("kind", f"unknown kind {kind!r}: the lab understands "
               f"{', '.join(API_VERSIONS)}")
    d.ident = kind
    api_version = data.get("apiVersion")
    if api_version not in API_VERSIONS[kind]:
        d.fail("apiVersion", f"expected {' or '.join(map(repr, API_VERSIONS[kind]))} for "
               f"kind {kind}, got {_describe(api_version)}")
    meta = _typed(d, data.get("metadata"), dict, "metadata", "a mapping with a name")
    if "name" not in meta:
        d.fail("metadata.name", "required: every object needs a name")
    name = _typed(d, meta["name"], str, "metadata.name", "a string")
    namespace = ""
    if kind not in CLUSTER_SCOPED:
        namespace = _typed(d, meta.get("namespace", "default"), str, "metadata.namespace",
                           "a string")
        err = k8s_names.dns1123_label(namespace)
        if err:
            d.fail("metadata.namespace", f"{namespace!r} {err}")
    d.ident = f"{kind} {namespace}/{name}" if namespace else f"{kind} {name}"
    check = k8s_names.dns1123_label if kind in ("Namespace", "Service") else \
        k8s_names.dns1123_subdomain
    err = check(name)
    if err:
        d.fail("metadata.name", f"{name!r} {err}")
    return kind, api_version, name, namespace, meta


def _labels(d: _Doc, meta: dict[str, Any], key: str) -> dict[str, str]:
    raw = meta.get(key)
    if raw is None:
        return {}
    _typed(d, raw, dict, f"metadata.{key}", "a mapping of strings to strings")
    out: dict[str, str] = {}
    for k, v in raw.items():
        k = _typed(d, k, str, f"metadata.{key}", "string keys")
        path = f"metadata.{key}.{k}"
        err = k8s_names.label_key(k)
        if err:
            d.fail(path, f"bad key {k!r}: {err}")
        v = _typed(d, v, str, path, "a string")
        if key == "labels":
            err = k8s_names.label_value(v)
            if err:
                d.fail(path, f"bad value {v!r}: {err}")
        out[k] = v
    return out


def _strings(d: _Doc, value: Any, path: str) -> tuple[str, ...]:
    if value is None:
        return ()
    _typed(d, value, list, path, "a list of strings")
    for i, item in enumerate(value):
        _typed(d, item, str, f"{path}[{i}]", "a string")
    return tuple(value)


def _pod(d: _Doc, data: dict[str, Any], name: str, namespace: str,
         meta: dict[str, Any]) -> Pod:
    labels = _labels(d, meta, "labels")
    annotations = _labels(d, meta, "annotations")
    spec = _typed(d, data.get("spec"), dict, "spec", "a mapping with containers")
    raw = spec.get("containers")
    if not isinstance(raw, list) or not raw:
        d.fail("spec.containers", f"expected a non-empty list of containers, got {_describe(raw)}")
    containers: list[Container] = []
    port_names: set[str] = set()
    for i, c in enumerate(raw):
        path = f"spec.containers[{i}]"
        _typed(d, c, dict, path, "a mapping")
        cname = _typed(d, c.get("name", "main"), str, f"{path}.name", "a string")
        err = k8s_names.dns1123_label(cname)
        if err:
            d.fail(f"{path}.name", f"{cname!r} {err}")
        if any(x.name == cname for x in containers):
            d.fail(f"{path}.name", f"duplicate container name {cname!r}")
        command = _strings(d, c.get("command"), f"{path}.command")
        args = _strings(d, c.get("args"), f"{path}.args")
        if args and not command:
            d.fail(f"{path}.args", "args without command: the lab has no image entrypoint, "
                   "so put the program in command")
        env = _env(d, c.get("env"), f"{path}.env")
        ports = tuple(_port(d, p, f"{path}.ports[{j}]", port_names)
                      for j, p in enumerate(_typed(d, c.get("ports", []), list, f"{path}.ports",
                                                   "a list of ports")))
        containers.append(Container(cname, command, args, env, ports))
    return Pod(namespace, name, labels, annotations, tuple(containers), d.number)


def _env(d: _Doc, value: Any, path: str) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    _typed(d, value, list, path, "a list of {name, value}")
    out = []
    for i, e in enumerate(value):
        _typed(d, e, dict, f"{path}[{i}]", "a mapping with name and value")
        if "valueFrom" in e:
            d.fail(f"{path}[{i}].valueFrom", "not supported in the lab; use value")
        n = _typed(d, e.get("name"), str, f"{path}[{i}].name", "a string")
        v = _typed(d, e.get("value", ""), str, f"{path}[{i}].value", "a string")
        out.append((n, v))
    return tuple(out)


def _port(d: _Doc, p: Any, path: str, names: set[str]) -> ContainerPort:
    _typed(d, p, dict, path, "a mapping with containerPort")
    num = _typed(d, p.get("containerPort"), int, f"{path}.containerPort", "a port number")
    if not 1 <= num <= 65535:
        d.fail(f"{path}.containerPort", f"must be between 1 and 65535, got {num}")
    proto = _typed(d, p.get("protocol", "TCP"), str, f"{path}.protocol", "a string")
    if proto not in PROTOCOLS:
        d.fail(f"{path}.protocol", f"expected one of {', '.join(PROTOCOLS)}, got {proto!r}")
    pname = _typed(d, p.get("name", ""), str, f"{path}.name", "a string")
    if pname:
        err = k8s_names.port_name(pname)
        if err:
            d.fail(f"{path}.name", f"{pname!r} {err}")
        if pname in names:
            d.fail(f"{path}.name", f"duplicate port name {pname!r} in this pod")
        names.add(pname)
    return ContainerPort(num, proto, pname)


def service_ref(ref: str, default_namespace: str) -> tuple[str, str]:
    """(namespace, name) of a `{{svc:REF}}`: "ns/name", or a bare name in the pod's namespace."""
    ns, _, name = ref.rpartition("/")
    return (ns or default_namespace), name


def _check_placeholders(source: str, pod: Pod, pods: list[Pod],
                        services: Sequence[RawObject] = ()) -> None:
    """Fail at load time, naming the field, if a placeholder is malformed or names no pod."""
    d = _Doc(source, pod.doc)
    d.ident = f"Pod {pod.ref}"
    keys = [(p.namespace, p.name) for p in pods]
    values = {"python": "python", "pod": pod.name, "namespace": pod.namespace}

    def ip_of(ref: str) -> str:
        resolve_ref(ref, keys, default_namespace=pod.namespace)
        return "0.0.0.0"

    def svc_of(ref: str) -> str:
        ns, name = service_ref(ref, pod.namespace)
        obj = next((o for o in services if (o.namespace, o.name) == (ns, name)), None)
        if obj is None:
            known = ", ".join(f"{o.namespace}/{o.name}" for o in services) or "none"
            raise ValueError(f"{{{{svc:{ref}}}}}: no Service {ns}/{name} in this manifest "
                             f"(Services: {known})")
        spec = obj.body.get("spec")
        if isinstance(spec, dict) and spec.get("clusterIP") == "None":
            raise ValueError(f"{{{{svc:{ref}}}}}: Service {ns}/{name} is headless (clusterIP: "
                             "None) and has no address; use {{ip:pod}} for one of its pods")
        return "0.0.0.0"

    for i, c in enumerate(pod.containers):
        fields = [(f"command[{j}]", s) for j, s in enumerate(c.command)]
        fields += [(f"args[{j}]", s) for j, s in enumerate(c.args)]
        fields += [(f"env[{j}].value", v) for j, (_, v) in enumerate(c.env)]
        for where, text in fields:
            try:
                render(text, values, ip_of, svc_of)
            except (ValueError, PodRefError) as e:
                d.fail(f"spec.containers[{i}].{where}", str(e))

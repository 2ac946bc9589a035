"""What the lab and the agent can be told, each option once, with its default and its flag.

`LabOptions` and `AgentOptions` are the only place an option is defined: the defaults
come from `model.defaults`, and the click options of `spyglass lab up`, `spyglass
agent` and `spyglass up` are derived from the fields (`click_options`), so a default,
a flag name or a help text can never differ between a command and the code behind it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import click

from spyglass.model import defaults
from spyglass.policy.compile import DEFAULT_MAX_ENTRIES

if TYPE_CHECKING:
    from spyglass.api.grpc_security import GrpcTls

F = TypeVar("F", bound=Callable[..., Any])
AGGREGATION_LEVELS = ("none", "disabled", "lowest", "low", "medium", "max", "maximum")


def _opt(default: Any, flag: str, help: str = "", *, hidden: bool = False,  # noqa: A002
         multiple: bool = False, choices: tuple[str, ...] = (), is_flag: bool = False,
         metavar: str | None = None, envvar: str | None = None, kind: Any = None) -> Any:
    """A dataclass field that also describes its click option."""
    meta = {"flag": flag, "help": help, "hidden": hidden, "multiple": multiple,
            "choices": choices, "is_flag": is_flag, "metavar": metavar, "envvar": envvar,
            "kind": kind}
    if multiple:
        return field(default=tuple(default), metadata=meta)
    return field(default=default, metadata=meta)


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) -> (host, port); ValueError says what is expected."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: expected HOST:PORT, e.g. 127.0.0.1:4245")
    return host.strip("[]") or defaults.LISTEN_HOST, int(port)


def parse_days(value: str) -> int:
    text = value.strip().lower().removesuffix("d")
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{value!r}: give whole days, e.g. 7d or 30")
    return int(text)


@dataclass(frozen=True)
class LabOptions:
    """`spyglass lab up` (and the lab half of `spyglass up`)."""

    demo: bool = _opt(False, "--demo", "Use the bundled demo manifest (a small shop app).",
                      is_flag=True)
    manifest: str | None = _opt(None, "--manifest", "A multi-document YAML of Namespace, Pod, "
                                "Service and policy objects.", metavar="FILE")
    pod_cidr: str = _opt(defaults.POD_CIDR, "--pod-cidr", "Pod addresses are allocated here.")
    service_cidr: str = _opt(defaults.SERVICE_CIDR, "--service-cidr",
                             "ClusterIPs are allocated here; other addresses in it are "
                             "dropped.")
    state_dir: str = _opt(defaults.STATE_DIR, "--state-dir", "Where the lab's records live "
                          "(tests run their own).", hidden=True)
    prefix: str = _opt(defaults.LAB_PREFIX, "--prefix", "Name prefix of the lab's netns.",
                       hidden=True)
    link_prefix: str = _opt(defaults.LINK_PREFIX, "--link-prefix",
                            "Name prefix of host veths.", hidden=True)

    def manifest_path(self) -> str:
        from importlib import resources

        if self.demo == bool(self.manifest):
            raise click.UsageError("give exactly one of --demo or --manifest FILE")
        if self.demo:
            return str(resources.files("spyglass.lab").joinpath("manifests/demo.yaml"))
        assert self.manifest is not None
        return self.manifest


@dataclass(frozen=True)
class AgentOptions:
    """`spyglass agent` (and the agent half of `spyglass up`)."""

    listen: str = _opt(f"{defaults.LISTEN_HOST}:{defaults.LISTEN_PORT}", "--listen",
                       "Address of the API.")
    grpc_listen: str = _opt(f"{defaults.LISTEN_HOST}:{defaults.HUBBLE_PORT}", "--grpc-listen",
                            "Address of Hubble's gRPC API (observer, peer); beyond loopback "
                            "it needs --grpc-tls-cert and a token or --grpc-tls-client-ca. "
                            "'' turns it off.")
    grpc_socket: str = _opt(defaults.HUBBLE_SOCKET, "--grpc-socket",
                            "Unix socket of Hubble's gRPC API (mode 0600); '' turns it off.")
    grpc_tls_cert: str | None = _opt(None, "--grpc-tls-cert", "PEM certificate: serve the "
                                     "gRPC API over TLS.",
                                     kind=click.Path(exists=True, dir_okay=False))
    grpc_tls_key: str | None = _opt(None, "--grpc-tls-key", "PEM private key of "
                                    "--grpc-tls-cert.",
                                    kind=click.Path(exists=True, dir_okay=False))
    grpc_tls_client_ca: str | None = _opt(None, "--grpc-tls-client-ca", "PEM CA: require "
                                          "gRPC clients to show a certificate it signed "
                                          "(mTLS, as Hubble Relay does); it stands in for "
                                          "the token.",
                                          kind=click.Path(exists=True, dir_okay=False))
    grpc_tls_server_name: str = _opt("", "--grpc-tls-server-name", "The name in the gRPC "
                                     "certificate that peers check; default "
                                     "<node>.default.hubble-grpc.cilium.io, as Cilium names "
                                     "it.", metavar="NAME")
    aggregation: str = _opt("medium", "--monitor-aggregation",
                            "none reports every packet; the others report a connection when "
                            "it is new, when its TCP flags gain a bit, when it closes, and "
                            "every interval.", choices=AGGREGATION_LEVELS)
    interval_s: float = _opt(5.0, "--monitor-interval",
                             "Seconds between reports of an active connection.", kind=float)
    ring_capacity: int = _opt(defaults.RING_CAPACITY, "--ring-capacity",
                              "Flows kept in memory; must be 2^n-1.", kind=int)
    node_name: str = _opt("", "--node-name", "Defaults to the host name.")
    policy_audit: bool = _opt(False, "--policy-audit", "Report what policy would drop "
                              "(verdict AUDIT) without dropping it.", is_flag=True)
    policy_audit_namespaces: tuple[str, ...] = _opt(
        (), "--policy-audit-namespace", "Audit mode for the pods of one namespace "
        "(repeatable).", multiple=True, metavar="NS")
    policy_max_entries: int = _opt(DEFAULT_MAX_ENTRIES, "--policy-max-entries",
                                   "Refuse a policy change that would make more datapath "
                                   "entries than this.", kind=click.IntRange(min=1))
    store: str = _opt(defaults.STORE, "--store", "Flow history: chdb:///ABS/PATH (embedded "
                      "ClickHouse), http(s)://user:pass@host:8123/db (a ClickHouse server), "
                      "or none.")
    query_store: str | None = _opt(None, "--query-store", "With a ClickHouse server: the "
                                   "read-only user `spyglass store ddl` prints; `query sql` "
                                   "runs as it.", metavar="URL")
    retention: str = _opt("7d", "--retention", "How long history is kept (days, e.g. 7d).")
    token: str | None = _opt(None, "--token", "API bearer token; required to listen on a "
                             "non-loopback address.", envvar="SPYGLASS_TOKEN")
    metrics_public: bool = _opt(False, "--metrics-public", "Serve /metrics without the "
                                "token.", is_flag=True)
    allowed_hosts: tuple[str, ...] = _opt(
        (), "--allowed-host", "Another name or address clients use to reach the API "
        "(repeatable); requests naming any other Host are refused.", multiple=True,
        metavar="NAME")
    tls_cert: str | None = _opt(None, "--tls-cert", "PEM certificate: serve HTTPS.",
                                kind=click.Path(exists=True, dir_okay=False))
    tls_key: str | None = _opt(None, "--tls-key", "PEM private key of --tls-cert.",
                               kind=click.Path(exists=True, dir_okay=False))
    # 2048 pages = 8 MiB per CPU = 65,536 events of 128 bytes: a reader stopped for 100-200
    # ms while the CPUs write 200k events/s loses none (bench/ring_pause.py; 1024 pages lost
    # 5% of a 100 ms stop, since up to a watermark's worth is already waiting), and at the
    # demo's rate the rings hold minutes of an agent's restart (docs/collector.md).
    perf_ring_pages: int = _opt(2048, "--perf-ring-pages", "Pages of each CPU's perf ring "
                                "(a power of two; 2048 = 8 MiB: a 200 ms stop of the reader "
                                "at 200k events/s).", kind=int)
    state_dir: str = _opt(defaults.STATE_DIR, "--state-dir", "Where the lab's and the "
                          "agent's records live (tests run their own).", hidden=True)
    pin_dir: str = _opt(defaults.PIN_DIR, "--pin-dir", "Where the datapath is pinned.",
                        hidden=True)
    link_prefix: str = _opt(defaults.LINK_PREFIX, "--link-prefix",
                            "Name prefix of host veths.", hidden=True)
    writer_max_rows: int = 1_000_000

    @property
    def host(self) -> str:
        return parse_listen(self.listen)[0]

    @property
    def port(self) -> int:
        return parse_listen(self.listen)[1]

    @property
    def retention_days(self) -> int:
        return parse_days(self.retention)

    @property
    def node(self) -> str:
        return self.node_name or os.uname().nodename

    @property
    def grpc_tls(self) -> GrpcTls | None:
        """The gRPC API's TLS, if --grpc-tls-cert is given (grpc is imported only then)."""
        if not self.grpc_tls_cert or not self.grpc_tls_key:
            return None
        from spyglass.api.grpc_security import GrpcTls

        return GrpcTls(cert=self.grpc_tls_cert, key=self.grpc_tls_key,
                       client_ca=self.grpc_tls_client_ca,
                       server_name=self.grpc_tls_server_name)

    @property
    def store_dsn(self) -> str | None:
        return None if self.store.lower() == "none" else self.store

    def check(self) -> None:
        """Refuse contradictions before anything touches the host (click.UsageError)."""
        try:
            parse_listen(self.listen)
            parse_days(self.retention)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
        if bool(self.tls_cert) != bool(self.tls_key):
            raise click.UsageError("--tls-cert and --tls-key go together")
        if bool(self.grpc_tls_cert) != bool(self.grpc_tls_key):
            raise click.UsageError("--grpc-tls-cert and --grpc-tls-key go together")
        if (self.grpc_tls_client_ca or self.grpc_tls_server_name) and not self.grpc_tls_cert:
            raise click.UsageError("--grpc-tls-client-ca and --grpc-tls-server-name need "
                                   "--grpc-tls-cert and --grpc-tls-key")
        if self.perf_ring_pages < 1 or self.perf_ring_pages & (self.perf_ring_pages - 1):
            raise click.UsageError(f"--perf-ring-pages {self.perf_ring_pages} is not a power "
                                   "of two; try 64")


def click_options(*classes: type[Any]) -> Callable[[F], F]:
    """The options of these dataclasses as click options (a field named twice, once)."""
    def decorate(fn: F) -> F:
        seen: set[str] = set()
        params: list[click.Parameter] = []
        for cls in classes:
            for f in dataclasses.fields(cls):
                if "flag" not in f.metadata or f.name in seen:
                    continue
                seen.add(f.name)
                params.append(_option(f))
        memo: list[click.Parameter] = fn.__dict__.setdefault("__click_params__", [])
        memo.extend(reversed(params))
        return fn
    return decorate


def _option(f: dataclasses.Field[Any]) -> click.Option:
    m: Mapping[str, Any] = f.metadata
    kw: dict[str, Any] = {"help": m["help"], "hidden": m["hidden"], "show_default": True}
    if m["is_flag"]:
        kw["is_flag"] = True
    elif m["multiple"]:
        kw["multiple"] = True
    else:
        kw["default"] = f.default
    if m["choices"]:
        kw["type"] = click.Choice(list(m["choices"]))
    elif m["kind"] is not None:
        kw["type"] = m["kind"]
    if m["metavar"]:
        kw["metavar"] = m["metavar"]
    if m["envvar"]:
        kw["envvar"], kw["show_envvar"] = m["envvar"], True
    return click.Option([m["flag"], f.name], **kw)


T = TypeVar("T")


def from_params(cls: type[T], params: Mapping[str, Any]) -> T:
    """Build the options from a command's keyword arguments (unknown keys are ignored)."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in params.items()
              if k in names}
    return cls(**values)

"""Who may read Hubble's gRPC API, over real channels: TLS, mTLS, tokens, and field masks.

The rules are the REST API's: loopback and the socket need nothing until a token is set;
anything else needs TLS and a credential (the token as bearer metadata, or a client
certificate the configured CA signed). Certificates come from a throwaway openssl PKI.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import field_mask_pb2
from support import NODE, FakeSource, flows
from support.certs import Pki, make_pki
from support.grpcserved import WAIT_S

from spyglass.api.auth import AuthConfig, ListenSecurityError
from spyglass.api.grpc_security import GrpcTls, default_server_name, needs_token
from spyglass.api.hubble import observer_pb2, observer_pb2_grpc, peer_pb2, peer_pb2_grpc
from spyglass.api.hubble_grpc import HubbleServer
from spyglass.api.stream import StreamHub

TOKEN = "t" * 32
LOCAL = "l" * 32
SERVER_NAME = default_server_name(NODE)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"), [SERVER_NAME])


@pytest.fixture(scope="module")
def rogue(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA, unrelated to `pki`: its client certificate must be refused."""
    return make_pki(tmp_path_factory.mktemp("rogue"), [SERVER_NAME])


def tls_of(pki: Pki, mutual: bool = False) -> GrpcTls:
    return GrpcTls(cert=str(pki.server_cert), key=str(pki.server_key),
                   client_ca=str(pki.ca) if mutual else None)


def server(tmp_path: Path, listen: str = "127.0.0.1:0", **kw: Any) -> HubbleServer:
    source = FakeSource()
    source.ring.write_many(flows(3))
    s = HubbleServer(source, StreamHub(source.losses), listen=listen,
                     socket_path=str(tmp_path / "hubble.sock"), **kw)
    s.start()
    return s


@pytest.fixture()
def servers(tmp_path: Path) -> Iterator[list[HubbleServer]]:
    made: list[HubbleServer] = []
    yield made
    for s in made:
        s.stop()


def secure(port: int, pki: Pki, client: Pki | None = None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        root_certificates=pki.read("ca"),
        private_key=client.read("client_key") if client else None,
        certificate_chain=client.read("client_cert") if client else None)
    return grpc.secure_channel(f"127.0.0.1:{port}", creds,
                               options=[("grpc.ssl_target_name_override", SERVER_NAME)])


def status(channel: grpc.Channel, token: str | None = None) -> Any:
    stub = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
    md = [("authorization", f"Bearer {token}")] if token else None
    return stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=WAIT_S, metadata=md)


def flows_of(channel: grpc.Channel, token: str | None = None, **req: Any) -> list[Any]:
    stub = observer_pb2_grpc.ObserverStub(channel)  # type: ignore[no-untyped-call]
    md = [("authorization", f"Bearer {token}")] if token else None
    return list(stub.GetFlows(observer_pb2.GetFlowsRequest(**req), timeout=WAIT_S, metadata=md))


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as err:
        call()
    code: grpc.StatusCode = err.value.code()
    return code


# --- what may listen where ------------------------------------------------------------


@pytest.mark.parametrize("listen", ["0.0.0.0:4244", "10.0.0.1:4244", "[::]:4244",
                                    "node-a.example:4244"])
def test_beyond_loopback_needs_tls(listen: str) -> None:
    source = FakeSource()
    with pytest.raises(ListenSecurityError, match="without TLS.*--grpc-tls-cert"):
        HubbleServer(source, StreamHub(source.losses), listen=listen,
                     auth=AuthConfig(token=TOKEN))


def test_beyond_loopback_tls_alone_is_not_enough(pki: Pki) -> None:
    source = FakeSource()
    with pytest.raises(ListenSecurityError, match="TLS alone.*--token.*--grpc-tls-client-ca"):
        HubbleServer(source, StreamHub(source.losses), listen="0.0.0.0:4244", tls=tls_of(pki))


@pytest.mark.parametrize("what", ["cert", "key", "client_ca"])
def test_a_missing_or_wrong_pem_file_is_named(pki: Pki, tmp_path: Path, what: str) -> None:
    source = FakeSource()
    fields = {"cert": str(pki.server_cert), "key": str(pki.server_key),
              "client_ca": str(pki.ca)}
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    flag = {"cert": "--grpc-tls-cert", "key": "--grpc-tls-key",
            "client_ca": "--grpc-tls-client-ca"}[what]
    for bad, why in ((str(tmp_path / "missing.pem"), "cannot read"), (str(junk), "not a PEM")):
        with pytest.raises(ValueError, match=f"{flag} .*{why}"):
            HubbleServer(source, StreamHub(source.losses), listen="127.0.0.1:0",
                         tls=GrpcTls(**{**fields, what: bad}))


def test_needs_token_follows_the_rest_apis_rules(pki: Pki) -> None:
    open_, with_token = AuthConfig(), AuthConfig(token=TOKEN)
    assert not needs_token("127.0.0.1:4244", None, open_)
    assert needs_token("127.0.0.1:4244", None, with_token)
    assert needs_token("0.0.0.0:4244", tls_of(pki), with_token)
    assert not needs_token("0.0.0.0:4244", tls_of(pki, mutual=True), with_token)


# --- tokens ---------------------------------------------------------------------------


def test_loopback_with_a_token_needs_it_and_the_socket_does_not(tmp_path: Path,
                                                                servers: list[HubbleServer]
                                                                ) -> None:
    s = server(tmp_path, auth=AuthConfig(token=TOKEN, local_token=LOCAL))
    servers.append(s)
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        for token in (None, "wrong" * 8, TOKEN[:-1], TOKEN + "x"):
            with pytest.raises(grpc.RpcError) as err:
                status(ch, token)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "authorization: Bearer" in str(err.value.details())
            # the stream is refused the same way, before it reads anything
            assert code_of(lambda t=token: flows_of(ch, t, number=3)) == \
                grpc.StatusCode.UNAUTHENTICATED  # type: ignore[misc]
        assert status(ch, TOKEN).num_flows == 3
        assert status(ch, LOCAL).num_flows == 3
        assert len(flows_of(ch, TOKEN, number=3)) == 3
        # not `Bearer`: refused
        stub = observer_pb2_grpc.ObserverStub(ch)  # type: ignore[no-untyped-call]
        with pytest.raises(grpc.RpcError) as err:
            stub.ServerStatus(observer_pb2.ServerStatusRequest(), timeout=WAIT_S,
                              metadata=[("authorization", f"Basic {TOKEN}")])
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert stat.S_IMODE(os.stat(s.socket_path).st_mode) == 0o600
    with grpc.insecure_channel(f"unix:{s.socket_path}") as ch:
        assert status(ch).num_flows == 3  # the socket's file mode is its credential


def test_tls_with_the_token_beyond_loopback(pki: Pki, tmp_path: Path,
                                            servers: list[HubbleServer]) -> None:
    # 0.0.0.0: the rules for an exposed listener; the test only connects over loopback
    s = server(tmp_path, listen="0.0.0.0:0", tls=tls_of(pki), auth=AuthConfig(token=TOKEN))
    servers.append(s)
    with secure(s.port, pki) as ch:
        assert status(ch, TOKEN).num_flows == 3
        assert code_of(lambda: status(ch)) == grpc.StatusCode.UNAUTHENTICATED
        assert code_of(lambda: status(ch, "x" * 32)) == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:  # plaintext to a TLS port
        assert code_of(lambda: status(ch, TOKEN)) == grpc.StatusCode.UNAVAILABLE
    other = make_pki(tmp_path / "other", [SERVER_NAME])
    with secure(s.port, other) as ch:  # a client that trusts another CA refuses the server
        assert code_of(lambda: status(ch, TOKEN)) == grpc.StatusCode.UNAVAILABLE


def test_mtls_a_signed_client_certificate_is_the_credential(
        pki: Pki, rogue: Pki, tmp_path: Path, servers: list[HubbleServer]) -> None:
    s = server(tmp_path, listen="0.0.0.0:0", tls=tls_of(pki, mutual=True))
    servers.append(s)
    with secure(s.port, pki, client=pki) as ch:  # as Hubble Relay connects: no token
        assert status(ch).num_flows == 3
        assert len(flows_of(ch, number=2)) == 2
    with secure(s.port, pki) as ch:  # no client certificate
        assert code_of(lambda: status(ch)) == grpc.StatusCode.UNAVAILABLE
    with secure(s.port, pki, client=rogue) as ch:  # signed by another CA
        assert code_of(lambda: status(ch)) == grpc.StatusCode.UNAVAILABLE


def test_peer_and_nodes_tell_the_tls_server_name(pki: Pki, tmp_path: Path,
                                                 servers: list[HubbleServer]) -> None:
    s = server(tmp_path, tls=tls_of(pki))
    servers.append(s)
    assert s.server_name == SERVER_NAME == f"{NODE}.default.hubble-grpc.cilium.io"
    with secure(s.port, pki) as ch:
        peer = peer_pb2_grpc.PeerStub(ch)  # type: ignore[no-untyped-call]
        call = peer.Notify(peer_pb2.NotifyRequest(), timeout=WAIT_S)
        first = next(iter(call))
        call.cancel()
        stub = observer_pb2_grpc.ObserverStub(ch)  # type: ignore[no-untyped-call]
        nodes = stub.GetNodes(observer_pb2.GetNodesRequest(), timeout=WAIT_S).nodes
    assert (first.name, first.address, first.tls.server_name) == (
        NODE, f"127.0.0.1:{s.port}", SERVER_NAME)
    assert [(n.name, n.tls.enabled, n.tls.server_name) for n in nodes] == [
        (NODE, True, SERVER_NAME)]
    named = server(tmp_path / "named", tls=GrpcTls(str(pki.server_cert), str(pki.server_key),
                                                   server_name="n1.lab.example"))
    servers.append(named)
    assert named.server_name == "n1.lab.example"


def test_without_tls_peer_names_no_server_name(tmp_path: Path,
                                               servers: list[HubbleServer]) -> None:
    s = server(tmp_path)
    servers.append(s)
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        call = peer_pb2_grpc.PeerStub(ch).Notify(  # type: ignore[no-untyped-call]
            peer_pb2.NotifyRequest(), timeout=WAIT_S)
        first = next(iter(call))
        call.cancel()
    assert not first.HasField("tls")


# --- field masks ----------------------------------------------------------------------


def test_field_mask_keeps_only_the_named_fields(tmp_path: Path,
                                                servers: list[HubbleServer]) -> None:
    s = server(tmp_path)
    servers.append(s)
    paths = ["time", "verdict", "source.pod_name", "l4.TCP.destination_port"]
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        whole = flows_of(ch, number=3)
        got = flows_of(ch, number=3, field_mask=field_mask_pb2.FieldMask(paths=paths))
    assert len(got) == len(whole) == 3
    for w, g in zip(whole, got, strict=True):
        assert g.node_name == w.node_name and g.time == w.time  # the response's own fields
        f = g.flow
        assert sorted(d.name for d, _ in f.ListFields()) == ["l4", "source", "time", "verdict"]
        assert (f.time, f.verdict, f.source.pod_name) == (w.flow.time, w.flow.verdict,
                                                          w.flow.source.pod_name)
        assert [d.name for d, _ in f.source.ListFields()] == ["pod_name"]
        assert f.l4.TCP.destination_port == w.flow.l4.TCP.destination_port
        assert f.l4.TCP.source_port == 0 and not f.uuid and not f.IP.source


@pytest.mark.parametrize("paths", [["nonesuch"], ["source.nonesuch"], ["time", "IP.bogus"],
                                   ["verdict.x"], [""], ["source..pod_name"]])
def test_a_field_mask_naming_no_flow_field_is_refused(tmp_path: Path, paths: list[str],
                                                      servers: list[HubbleServer]) -> None:
    s = server(tmp_path)
    servers.append(s)
    with grpc.insecure_channel(f"127.0.0.1:{s.port}") as ch:
        with pytest.raises(grpc.RpcError) as err:
            flows_of(ch, number=1, field_mask=field_mask_pb2.FieldMask(paths=paths))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = str(err.value.details())
    assert details.startswith("field_mask: ") and "Flow field" in details, details

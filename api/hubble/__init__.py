"""Hubble's gRPC API as Spyglass serves it: our own .proto files and their Python modules.

Spyglass speaks Hubble's wire protocol (Cilium v1.19) so that `hubble observe`, Hubble
Relay and Hubble UI can talk to it. The schema is Spyglass's own description of the
subset it serves, with Cilium's package names, message and field names, field numbers and
enum values; fields it does not list are simply not served (a peer that sends them is read
as proto3 reads any unknown field).

Layout:

- `flow.proto`, `relay.proto`, `observer.proto`, `peer.proto`: the schema (packages
  `flow`, `relay`, `observer`, `peer`, as in Cilium).
- `*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py`: generated from them, committed, never edited
  by hand. Regenerate after changing a .proto file with

      .venv/bin/python scripts/gen_protos.py

  (tests/test_hubble_protos.py fails when the committed modules drift from the schema).
- `json.py`: strict proto3 JSON reading of Hubble's GetFlowsResponse.

Nothing is imported here, so `import spyglass.api.hubble` costs nothing; import the module
you need (`from spyglass.api.hubble import observer_pb2`).
"""

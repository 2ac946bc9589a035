"""`hubble_response`: the API's GetFlowsResponse JSON reduced to Hubble's schema."""

from __future__ import annotations

from support import flow

from spyglass.model.enums import LostEventSource
from spyglass.model.flow import LostEvent, event_to_response
from spyglass.model.hubble_json import HUBBLE_LOST_SOURCES, hubble_response

T0 = 1_764_000_000_000_000_000


def test_a_flow_loses_only_what_spyglass_adds() -> None:
    f = flow(1, service_ip="10.96.0.10", service_port=80, packets=3, bytes=180)
    full = event_to_response(f, "node-a")
    assert {"packets", "bytes", "service_address"} <= set(full["flow"])
    assert full["flow"]["service_address"] == {"ip": "10.96.0.10", "port": 80}
    out = hubble_response(full)
    assert not {"packets", "bytes", "service_address"} & set(out["flow"])
    rest = {k: v for k, v in full["flow"].items()
            if k not in ("packets", "bytes", "service_address")}
    assert out["flow"] == rest
    assert out["node_name"] == "node-a" and out["time"] == full["time"]
    assert "packets" in full["flow"]  # the API's own dict is left as it was
    # an older Spyglass's translated destination is dropped too
    old = {**full, "flow": {**full["flow"], "IP": {**full["flow"]["IP"],
                                                   "destination_xlated": "10.244.0.3"}}}
    assert "destination_xlated" not in hubble_response(old)["flow"]["IP"]


def test_a_hubble_loss_keeps_its_name_and_counts_as_protojson_writes_them() -> None:
    ev = LostEvent(time_ns=T0, source=LostEventSource.PERF_EVENT_RING_BUFFER,
                   num_events_lost=7, cpu=1)
    out = hubble_response(event_to_response(ev, "n"))
    assert out["lost_events"] == {"source": "PERF_EVENT_RING_BUFFER", "num_events_lost": "7",
                                  "cpu": 1}


def test_spyglass_only_loss_sources_go_out_as_numbers() -> None:
    for source in LostEventSource:
        ev = LostEvent(time_ns=T0, source=source, num_events_lost=2)
        got = hubble_response(event_to_response(ev, "n"))["lost_events"]["source"]
        assert got == (source.name if source.name in HUBBLE_LOST_SOURCES else int(source))
    assert {s.name for s in LostEventSource} >= HUBBLE_LOST_SOURCES

"""The flow-level filters from the command line: `spyglass observe --uuid … --ip-version …
--interface … -4/-6`, through click, the API and the ring's batch masks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner
from support import FakeSource, flow

from spyglass.api.app import create_app
from spyglass.api.serve import serve_in_thread
from spyglass.cli.main import main
from spyglass.cli.observe import FILTER_ITEMS, observe_cmd
from spyglass.collector.filters import FilterError, build_from_flags
from spyglass.model.flow import Flow

IFACES = [(3, "lxc0001"), (4, "lxc0002"), (5, "eth0"), (0, "")]


def _flow(i: int) -> Flow:
    index, name = IFACES[i % 4]
    v6 = i % 3 == 0
    return flow(i, ip_version=6 if v6 else 4,
                source_ip="fd00::2" if v6 else "10.244.0.2",
                destination_ip="fd00::3" if v6 else "10.244.0.3",
                interface_index=index, interface_name=name)


FLOWS = [_flow(i) for i in range(24)]


@pytest.fixture(scope="module")
def url() -> Iterator[str]:
    with serve_in_thread(create_app(FakeSource(63, events=FLOWS))) as (_server, base):
        yield base


def observe(url: str, *args: str) -> Any:
    return CliRunner().invoke(main, ["observe", "--server", url, "--last", "100", "-o", "json",
                                     *args])


def picked(output: str) -> list[str]:
    return [json.loads(line)["flow"]["uuid"] for line in output.splitlines()]


def uuids(test: Any) -> list[str]:
    return [f.uuid for f in FLOWS if test(f)]


CASES = [
    pytest.param(["--uuid", "u000003"], uuids(lambda f: f.uuid == "u000003"), id="uuid"),
    pytest.param(["--uuid", "u000003", "--uuid", "u000007", "--uuid", "nope"],
                 ["u000003", "u000007"], id="uuids-or"),
    pytest.param(["--ip-version", "v6"], uuids(lambda f: f.ip_version == 6), id="ip-version"),
    pytest.param(["-6"], uuids(lambda f: f.ip_version == 6), id="short-6"),
    pytest.param(["--ipv4"], uuids(lambda f: f.ip_version == 4), id="ipv4"),
    pytest.param(["-4", "-6"], uuids(lambda f: True), id="both-versions"),
    pytest.param(["--not", "-4"], uuids(lambda f: f.ip_version == 6), id="not-4"),
    pytest.param(["--interface", "lxc0001"], uuids(lambda f: f.interface_name == "lxc0001"),
                 id="interface"),
    pytest.param(["--allowlist", '{"interface":[{"index":5}]}'],
                 uuids(lambda f: f.interface_index == 5), id="interface-index-json"),
    pytest.param(["--uuid", "u000009", "--ip-version", "v6", "--interface", "lxc0002"],
                 ["u000009"], id="all-three"),
    pytest.param(["--uuid", "u000009", "--ip-version", "v4", "--interface", "lxc0002"],
                 [], id="all-three-one-wrong"),
]


@pytest.mark.parametrize(("args", "want"), CASES)
def test_observe_selects(url: str, args: list[str], want: list[str]) -> None:
    result = observe(url, *args)
    assert result.exit_code == 0, result.output
    assert picked(result.stdout) == want


def test_the_cases_are_not_trivial() -> None:
    """Each case leaves some flows out, and all but the last select some."""
    for case in CASES:
        want = case.values[1]
        assert isinstance(want, list)
        assert len(want) < len(FLOWS) or case.id == "both-versions", case.id
        assert want or case.id == "all-three-one-wrong", case.id


@pytest.mark.parametrize(("args", "items"), [
    pytest.param(["-4", "--not", "--interface", "eth0", "--uuid=u1"],
                 [("ipv4", None), ("not", None), ("interface", "eth0"), ("uuid", "u1")],
                 id="short-flag-and-values"),
    pytest.param(["--ip-version", "6", "-6", "--ipv4"],
                 [("ip-version", "6"), ("ipv6", None), ("ipv4", None)], id="versions"),
])
def test_flags_are_collected_in_order(args: list[str],
                                      items: list[tuple[str, str | None]]) -> None:
    ctx = observe_cmd.make_context("observe", list(args))
    assert ctx.meta.get(FILTER_ITEMS, []) == items


@pytest.mark.parametrize(("args", "items"), [
    pytest.param(["--ip-version", "v5"], [("ip-version", "v5")], id="bad-version"),
    pytest.param(["--interface", "eth0:1"], [("interface", "eth0:1")], id="bad-interface"),
    pytest.param(["--uuid", "a b"], [("uuid", "a b")], id="bad-uuid"),
])
def test_bad_values_fail_before_any_request(args: list[str],
                                            items: list[tuple[str, str | None]]) -> None:
    with pytest.raises(FilterError) as err:
        build_from_flags(items)
    result = CliRunner().invoke(main, ["observe", "--server", "http://127.0.0.1:9", *args])
    assert result.exit_code == 2
    assert result.stderr == f"{err.value}\n"


def test_print_raw_filters_is_hubble_json() -> None:
    result = CliRunner().invoke(main, ["observe", "--uuid", "u1", "-6", "--interface", "lxc1",
                                       "--print-raw-filters"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[1:] == [
        "allowlist:",
        '- {"interface": [{"name": "lxc1"}], "ip_version": ["IPv6"], "uuid": ["u1"]}',
        "denylist:"]

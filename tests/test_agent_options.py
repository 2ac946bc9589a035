"""agent/options.py: every option defined once, derived into click, checked before the host."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from spyglass.agent.options import (
    AGGREGATION_LEVELS,
    AgentOptions,
    LabOptions,
    click_options,
    from_params,
)
from spyglass.cli.main import main
from spyglass.model import defaults
from spyglass.policy.compile import DEFAULT_MAX_ENTRIES

# -- helpers -------------------------------------------------------------------------------


def flagged(*classes: type[Any]) -> list[dataclasses.Field[Any]]:
    """The fields that are options, each name once, first class first (as click_options)."""
    seen: set[str] = set()
    out: list[dataclasses.Field[Any]] = []
    for cls in classes:
        for f in dataclasses.fields(cls):
            if "flag" in f.metadata and f.name not in seen:
                seen.add(f.name)
                out.append(f)
    return out


def throwaway(*classes: type[Any]) -> tuple[click.Command, list[dict[str, Any]]]:
    """A command with the classes' options that records the keyword arguments it got."""
    got: list[dict[str, Any]] = []

    @click.command("throwaway")
    @click_options(*classes)
    def cmd(**kw: Any) -> None:
        got.append(kw)

    return cmd, got


def invoke(cmd: click.Command, args: list[str], env: dict[str, str | None] | None = None,
           ) -> Result:
    return CliRunner().invoke(cmd, args, env=env or {"SPYGLASS_TOKEN": None},
                              terminal_width=10_000, catch_exceptions=False)


def option_blocks(help_text: str) -> list[tuple[str, str]]:
    """The options a --help lists, in order: (first column, help text joined)."""
    section = help_text.split("\nOptions:\n", 1)[1]
    blocks: list[tuple[str, str]] = []
    for line in section.splitlines():
        m = re.match(r"^  (-\S.*?)(?:\s{2,}(.*))?$", line)
        if m:
            blocks.append((m.group(1).strip(), m.group(2) or ""))
        elif blocks and line.strip():
            column, text = blocks[-1]
            blocks[-1] = (column, f"{text} {line.strip()}".strip())
    return blocks


def by_flag(help_text: str) -> dict[str, list[str]]:
    """Flag -> the help texts of every line that lists it (a flag listed twice: two)."""
    out: dict[str, list[str]] = {}
    for column, text in option_blocks(help_text):
        flag = column if column.startswith("-h") else column.split()[0]
        out.setdefault(flag, []).append(text)
    return out


#: Every default that `spyglass.model.defaults` holds, by field.
MODEL_DEFAULTS: dict[str, object] = {
    "pod_cidr": defaults.POD_CIDR,
    "service_cidr": defaults.SERVICE_CIDR,
    "state_dir": defaults.STATE_DIR,
    "prefix": defaults.LAB_PREFIX,
    "link_prefix": defaults.LINK_PREFIX,
    "listen": f"{defaults.LISTEN_HOST}:{defaults.LISTEN_PORT}",
    "ring_capacity": defaults.RING_CAPACITY,
    "store": defaults.STORE,
    "pin_dir": defaults.PIN_DIR,
}


# -- click_options: one option per field ----------------------------------------------------


@pytest.mark.parametrize("classes", [(LabOptions,), (AgentOptions,), (LabOptions, AgentOptions)],
                         ids=["lab", "agent", "both"])
def test_one_click_option_per_field_with_its_flag_name_default_and_help(
        classes: tuple[type[Any], ...]) -> None:
    cmd, _ = throwaway(*classes)
    fields = flagged(*classes)
    ctx = click.Context(cmd)
    assert [p.name for p in cmd.params] == [f.name for f in fields]
    for f, p in zip(fields, cmd.params, strict=True):
        assert isinstance(p, click.Option)
        assert p.opts == [f.metadata["flag"]], f.name
        assert p.help == f.metadata["help"], f.name
        assert p.hidden is f.metadata["hidden"], f.name
        assert p.multiple is f.metadata["multiple"], f.name
        assert p.is_flag is f.metadata["is_flag"], f.name
        assert p.envvar == f.metadata["envvar"], f.name
        if f.metadata["choices"]:
            assert isinstance(p.type, click.Choice)
            assert tuple(p.type.choices) == f.metadata["choices"]
        if f.metadata["multiple"]:  # click has no default; the value is () (next test)
            assert f.default == (), f.name
        else:
            assert p.get_default(ctx) == f.default, f.name


def test_no_arguments_give_the_dataclass_defaults() -> None:
    cmd, got = throwaway(LabOptions, AgentOptions)
    assert invoke(cmd, []).exit_code == 0
    (kw,) = got
    assert from_params(LabOptions, kw) == LabOptions()
    assert from_params(AgentOptions, kw) == AgentOptions()
    for name, value in MODEL_DEFAULTS.items():
        assert kw[name] == value, name


def test_options_parse_into_the_dataclass(tmp_path: Path) -> None:
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    cert.write_text("c")
    key.write_text("k")
    cmd, got = throwaway(AgentOptions)
    result = invoke(cmd, [
        "--listen", "[::1]:5000", "--monitor-aggregation", "low", "--monitor-interval", "2.5",
        "--ring-capacity", "1023", "--policy-audit", "--policy-audit-namespace", "shop",
        "--policy-audit-namespace", "web", "--policy-max-entries", "10", "--store", "none",
        "--retention", "30d", "--allowed-host", "spyglass.lan", "--tls-cert", str(cert),
        "--tls-key", str(key), "--perf-ring-pages", "8", "--state-dir", "/x/state",
        "--pin-dir", "/x/pins", "--link-prefix", "veth", "--metrics-public",
    ])
    assert result.exit_code == 0, result.output
    opts = from_params(AgentOptions, got[0])
    assert opts == AgentOptions(
        listen="[::1]:5000", aggregation="low", interval_s=2.5, ring_capacity=1023,
        policy_audit=True, policy_audit_namespaces=("shop", "web"), policy_max_entries=10,
        store="none", retention="30d", allowed_hosts=("spyglass.lan",), tls_cert=str(cert),
        tls_key=str(key), perf_ring_pages=8, state_dir="/x/state", pin_dir="/x/pins",
        link_prefix="veth", metrics_public=True)
    assert isinstance(opts.interval_s, float) and isinstance(opts.ring_capacity, int)
    opts.check()


@pytest.mark.parametrize("args", [
    ["--monitor-aggregation", "bogus"],
    ["--monitor-interval", "soon"],
    ["--ring-capacity", "many"],
    ["--policy-max-entries", "0"],
    ["--tls-cert", "/nonexistent/cert.pem"],
    ["--perf-ring-pages", "1.5"],
], ids=lambda a: a[0] + "=" + a[1])
def test_click_refuses_values_of_the_wrong_type(args: list[str]) -> None:
    cmd, got = throwaway(AgentOptions)
    result = CliRunner().invoke(cmd, args)
    assert result.exit_code == 2
    assert f"Invalid value for '{args[0]}'" in result.output
    assert got == []


def test_every_aggregation_level_is_a_choice() -> None:
    cmd, got = throwaway(AgentOptions)
    for level in AGGREGATION_LEVELS:
        assert invoke(cmd, ["--monitor-aggregation", level]).exit_code == 0
    assert [kw["aggregation"] for kw in got] == list(AGGREGATION_LEVELS)


def test_token_comes_from_its_envvar_and_the_flag_wins() -> None:
    cmd, got = throwaway(AgentOptions)
    assert invoke(cmd, [], env={"SPYGLASS_TOKEN": "from-env"}).exit_code == 0
    assert invoke(cmd, ["--token", "from-flag"], env={"SPYGLASS_TOKEN": "from-env"}).exit_code == 0
    assert invoke(cmd, [], env={"SPYGLASS_TOKEN": None}).exit_code == 0
    assert [kw["token"] for kw in got] == ["from-env", "from-flag", None]
    help_text = invoke(cmd, ["--help"]).output
    assert "[env var: SPYGLASS_TOKEN]" in by_flag(help_text)["--token"][0]


def test_hidden_options_are_accepted_but_not_shown() -> None:
    cmd, got = throwaway(LabOptions, AgentOptions)
    help_text = invoke(cmd, ["--help"]).output
    for flag in ("--state-dir", "--prefix", "--link-prefix", "--pin-dir"):
        assert flag not in help_text
    assert invoke(cmd, ["--state-dir", "/s", "--prefix", "t", "--link-prefix", "v",
                        "--pin-dir", "/p"]).exit_code == 0
    assert {k: got[0][k] for k in ("state_dir", "prefix", "link_prefix", "pin_dir")} == {
        "state_dir": "/s", "prefix": "t", "link_prefix": "v", "pin_dir": "/p"}


def test_a_field_in_both_classes_is_one_option_that_feeds_both() -> None:
    shared = {f.name for f in flagged(LabOptions)} & {f.name for f in flagged(AgentOptions)}
    assert shared == {"state_dir", "link_prefix"}
    cmd, got = throwaway(LabOptions, AgentOptions)
    assert [p.name for p in cmd.params].count("state_dir") == 1
    assert [p.name for p in cmd.params].count("link_prefix") == 1
    assert len(cmd.params) == len({f.name for f in flagged(LabOptions)}
                                  | {f.name for f in flagged(AgentOptions)})
    assert invoke(cmd, ["--state-dir", "/tmp/sg", "--link-prefix", "vx"]).exit_code == 0
    lab, agent = from_params(LabOptions, got[0]), from_params(AgentOptions, got[0])
    assert (lab.state_dir, lab.link_prefix) == ("/tmp/sg", "vx")
    assert (agent.state_dir, agent.link_prefix) == ("/tmp/sg", "vx")


def test_click_options_keeps_other_options_of_the_command() -> None:
    got: list[dict[str, Any]] = []

    @click.command()
    @click.option("--extra", default="e")
    @click_options(LabOptions)
    @click.option("--inner", is_flag=True)
    def cmd(**kw: Any) -> None:
        got.append(kw)

    assert invoke(cmd, ["--extra", "x", "--inner", "--pod-cidr", "10.1.0.0/16"]).exit_code == 0
    assert got[0]["extra"] == "x" and got[0]["inner"] is True
    assert got[0]["pod_cidr"] == "10.1.0.0/16"
    assert [p.name for p in cmd.params] == [
        "extra", *(f.name for f in flagged(LabOptions)), "inner"]
    assert from_params(LabOptions, got[0]) == LabOptions(pod_cidr="10.1.0.0/16")


# -- the real commands ---------------------------------------------------------------------


COMMANDS = {
    "up": (["up"], (LabOptions, AgentOptions)),
    "agent": (["agent"], (AgentOptions,)),
    "lab up": (["lab", "up"], (LabOptions,)),
}


def shown_default(f: dataclasses.Field[Any]) -> str | None:
    """What `--help` says the default is, None when it says nothing."""
    if f.metadata["is_flag"] or f.metadata["multiple"] or f.default is None:
        return None
    return '""' if f.default == "" else str(f.default)


@pytest.mark.parametrize("name", list(COMMANDS))
def test_help_lists_every_field_once_with_its_default(name: str) -> None:
    argv, classes = COMMANDS[name]
    result = CliRunner().invoke(main, [*argv, "--help"], terminal_width=10_000,
                                env={"SPYGLASS_TOKEN": None})
    assert result.exit_code == 0, result.output
    listed = by_flag(result.output)
    visible = [f for f in flagged(*classes) if not f.metadata["hidden"]]
    assert sorted(listed) == sorted([f.metadata["flag"] for f in visible] + ["-h, --help"])
    for f in visible:
        (text,) = listed[f.metadata["flag"]]  # exactly once
        assert text.startswith(f.metadata["help"]), f.name
        default = shown_default(f)
        found = re.findall(r"\[default: ([^;\]]*)", text)
        if default is None:
            assert found == [], f.name
        else:
            assert found == [default], f.name
        if f.name in MODEL_DEFAULTS:
            assert found == [str(MODEL_DEFAULTS[f.name])], f.name


@pytest.mark.parametrize("name", list(COMMANDS))
def test_commands_have_every_field_as_exactly_one_parameter(name: str) -> None:
    argv, classes = COMMANDS[name]
    ctx = click.Context(main)
    cmd: click.Command | None = main.get_command(ctx, argv[0])
    if len(argv) == 2:
        assert isinstance(cmd, click.Group)
        cmd = cmd.get_command(ctx, argv[1])
    assert cmd is not None
    names = [p.name for p in cmd.params if p.name != "help"]
    assert sorted(names) == sorted(f.name for f in flagged(*classes))
    params = {p.name: p for p in cmd.params}
    for name_, value in MODEL_DEFAULTS.items():
        if name_ in params:
            assert params[name_].default == value, name_


def test_the_help_defaults_are_the_model_defaults() -> None:
    """The values themselves, as a reader of `--help` would compare them."""
    result = CliRunner().invoke(main, ["up", "--help"], terminal_width=10_000)
    blocks = {flag: texts[0] for flag, texts in by_flag(result.output).items()}
    assert f"[default: {defaults.POD_CIDR}]" in blocks["--pod-cidr"]
    assert f"[default: {defaults.SERVICE_CIDR}]" in blocks["--service-cidr"]
    assert f"[default: {defaults.LISTEN_HOST}:{defaults.LISTEN_PORT}]" in blocks["--listen"]
    assert f"[default: {defaults.RING_CAPACITY}]" in blocks["--ring-capacity"]
    assert f"[default: {defaults.STORE}]" in blocks["--store"]
    assert f"[default: {DEFAULT_MAX_ENTRIES}; x>=1]" in blocks["--policy-max-entries"]


# -- from_params ---------------------------------------------------------------------------


def test_from_params_ignores_unknown_keys_and_turns_lists_into_tuples() -> None:
    opts = from_params(AgentOptions, {
        "listen": "0.0.0.0:1", "allowed_hosts": ["a", "b"], "policy_audit_namespaces": [],
        "demo": True, "manifest": "m.yaml", "no_such_option": object()})
    assert opts == AgentOptions(listen="0.0.0.0:1", allowed_hosts=("a", "b"))
    assert opts.allowed_hosts == ("a", "b") and isinstance(opts.allowed_hosts, tuple)
    assert opts.policy_audit_namespaces == ()
    assert isinstance(opts.policy_audit_namespaces, tuple)
    lab = from_params(LabOptions, {"demo": True, "listen": "x", "state_dir": "/s"})
    assert lab == LabOptions(demo=True, state_dir="/s")


def test_from_params_of_nothing_is_the_defaults() -> None:
    assert from_params(AgentOptions, {}) == AgentOptions()
    assert from_params(LabOptions, {}) == LabOptions()


def test_from_params_takes_fields_that_are_not_options() -> None:
    assert from_params(AgentOptions, {"writer_max_rows": 5}).writer_max_rows == 5


# -- AgentOptions.check --------------------------------------------------------------------


@pytest.mark.parametrize(("listen", "message"), [
    ("nohost", "'nohost': expected HOST:PORT, e.g. 127.0.0.1:4245"),
    ("h:0", "'h:0': expected HOST:PORT, e.g. 127.0.0.1:4245"),
    ("h:99999", "'h:99999': expected HOST:PORT, e.g. 127.0.0.1:4245"),
    ("h:65536", "'h:65536': expected HOST:PORT, e.g. 127.0.0.1:4245"),
    ("h:", "'h:': expected HOST:PORT, e.g. 127.0.0.1:4245"),
    ("h:-1", "'h:-1': expected HOST:PORT, e.g. 127.0.0.1:4245"),
    ("[::1]", "'[::1]': expected HOST:PORT, e.g. 127.0.0.1:4245"),
])
def test_check_refuses_a_bad_listen(listen: str, message: str) -> None:
    with pytest.raises(click.UsageError) as exc:
        AgentOptions(listen=listen).check()
    assert exc.value.message == message


@pytest.mark.parametrize("retention", ["0", "7w", "0d", "-3d", "d", "", "1.5d"])
def test_check_refuses_a_bad_retention(retention: str) -> None:
    with pytest.raises(click.UsageError) as exc:
        AgentOptions(retention=retention).check()
    assert exc.value.message == f"{retention!r}: give whole days, e.g. 7d or 30"


def test_check_refuses_half_of_tls() -> None:
    for opts in (AgentOptions(tls_cert="c.pem"), AgentOptions(tls_key="k.pem")):
        with pytest.raises(click.UsageError) as exc:
            opts.check()
        assert exc.value.message == "--tls-cert and --tls-key go together"
    AgentOptions(tls_cert="c.pem", tls_key="k.pem").check()


@pytest.mark.parametrize("pages", [0, -64, 3, 48, 100])
def test_check_refuses_perf_ring_pages_not_a_power_of_two(pages: int) -> None:
    with pytest.raises(click.UsageError) as exc:
        AgentOptions(perf_ring_pages=pages).check()
    assert exc.value.message == f"--perf-ring-pages {pages} is not a power of two; try 64"


@pytest.mark.parametrize("pages", [1, 2, 64, 1024])
def test_check_accepts_perf_ring_pages_a_power_of_two(pages: int) -> None:
    AgentOptions(perf_ring_pages=pages).check()


def test_check_accepts_the_defaults() -> None:
    AgentOptions().check()


@pytest.mark.parametrize(("listen", "host", "port"), [
    ("[::1]:4245", "::1", 4245),
    ("127.0.0.1:1", "127.0.0.1", 1),
    ("0.0.0.0:65535", "0.0.0.0", 65535),
    (":8080", defaults.LISTEN_HOST, 8080),
    ("localhost:4245", "localhost", 4245),
])
def test_listen_is_host_and_port(listen: str, host: str, port: int) -> None:
    opts = AgentOptions(listen=listen)
    opts.check()
    assert (opts.host, opts.port) == (host, port)


@pytest.mark.parametrize(("retention", "days"), [("7d", 7), ("30", 30), ("14D", 14),
                                                 (" 3d ", 3)])
def test_retention_days(retention: str, days: int) -> None:
    opts = AgentOptions(retention=retention)
    opts.check()
    assert opts.retention_days == days


@pytest.mark.parametrize(("store", "dsn"), [
    ("none", None), ("NONE", None), ("None", None),
    ("chdb:///var/lib/x", "chdb:///var/lib/x"),
    ("http://u:p@h:8123/db", "http://u:p@h:8123/db"),
])
def test_store_dsn(store: str, dsn: str | None) -> None:
    assert AgentOptions(store=store).store_dsn == dsn


def test_node_defaults_to_the_host_name() -> None:
    import os

    assert AgentOptions().node == os.uname().nodename
    assert AgentOptions(node_name="n1").node == "n1"


# -- LabOptions.manifest_path --------------------------------------------------------------


@pytest.mark.parametrize("opts", [LabOptions(), LabOptions(demo=True, manifest="m.yaml"),
                                  LabOptions(manifest="")], ids=["neither", "both", "empty"])
def test_manifest_path_needs_exactly_one_of_demo_or_manifest(opts: LabOptions) -> None:
    with pytest.raises(click.UsageError) as exc:
        opts.manifest_path()
    assert exc.value.message == "give exactly one of --demo or --manifest FILE"


def test_manifest_path_of_manifest_is_the_file() -> None:
    assert LabOptions(manifest="some/lab.yaml").manifest_path() == "some/lab.yaml"


def test_manifest_path_of_demo_is_the_bundled_demo() -> None:
    path = Path(LabOptions(demo=True).manifest_path())
    assert path.parts[-3:] == ("lab", "manifests", "demo.yaml")
    assert path.is_file()
    assert "kind: Pod" in path.read_text()


def test_check_refuses_half_of_grpc_tls() -> None:
    for opts in (AgentOptions(grpc_tls_cert="c.pem"), AgentOptions(grpc_tls_key="k.pem")):
        with pytest.raises(click.UsageError) as exc:
            opts.check()
        assert exc.value.message == "--grpc-tls-cert and --grpc-tls-key go together"
    for opts in (AgentOptions(grpc_tls_client_ca="ca.pem"),
                 AgentOptions(grpc_tls_server_name="n1.example")):
        with pytest.raises(click.UsageError, match="need --grpc-tls-cert and --grpc-tls-key"):
            opts.check()
    opts = AgentOptions(grpc_tls_cert="c.pem", grpc_tls_key="k.pem",
                        grpc_tls_client_ca="ca.pem", grpc_tls_server_name="n1.example")
    opts.check()
    tls = opts.grpc_tls
    assert tls is not None and (tls.cert, tls.key, tls.client_ca, tls.server_name) == (
        "c.pem", "k.pem", "ca.pem", "n1.example") and tls.mutual
    assert AgentOptions().grpc_tls is None


@pytest.mark.parametrize(("extra", "message"), [
    ({}, "without TLS"),
    ({"grpc_tls_cert": "c.pem", "grpc_tls_key": "k.pem"}, "TLS alone"),
])
def test_an_exposed_grpc_listener_is_refused_before_anything_starts(
        extra: dict[str, str], message: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    from spyglass.agent import run
    from spyglass.api.auth import ListenSecurityError

    monkeypatch.delenv("SPYGLASS_TOKEN", raising=False)
    monkeypatch.setattr(run, "Agent", None)  # reached only if the check let it through
    with pytest.raises(ListenSecurityError, match=message):
        run.run_agent(AgentOptions(grpc_listen="0.0.0.0:4244", **extra), Console())

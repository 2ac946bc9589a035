"""Running the agent in the foreground: `spyglass agent`, `spyglass up`, and `spyglass down`.

Teardown must finish whatever happens to the terminal. `make demo | tee log` and Ctrl-C
kills `tee` too, so every later write to stdout fails with EPIPE; a closing terminal
sends SIGHUP; an impatient user presses Ctrl-C again. So: output goes through
`SafeOutput`, which stops writing at the first failure instead of raising; SIGHUP ends
the run like SIGTERM; and once teardown starts, SIGINT, SIGTERM and SIGHUP only note
that they arrived, and teardown runs to its end.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from typing import Any

from rich.console import Console

from spyglass.agent.agent import Agent
from spyglass.agent.options import AgentOptions, LabOptions
from spyglass.agent.records import read_agent
from spyglass.agent.records import remove as remove_records
from spyglass.api.credentials import remove_local_token, token_path, write_local_token
from spyglass.bpf.datapath import DatapathError
from spyglass.bpf.datapath import cleanup as bpf_cleanup
from spyglass.collector import keeper
from spyglass.lab.errors import LabError
from spyglass.lab.lab import Lab
from spyglass.lab.manifest import load_manifest
from spyglass.lab.procs import starttime
from spyglass.lab.state import teardown_from_state
from spyglass.model.services import DEFAULT_SERVICE_CIDR
from spyglass.policy.compile import PolicyTooLarge
from spyglass.policy.fields import PolicyError
from spyglass.storage import StoreError

_ENDING = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class ListenError(RuntimeError):
    """The API's address cannot be bound: said before anything is created on the host."""


class SafeOutput:
    """A console that never raises: the first failed write (EPIPE, a closed terminal)
    switches it off, and the run goes on without a terminal."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.broken = False

    def __call__(self, text: str) -> None:
        if self.broken:
            return
        try:
            self.console.print(text)
            self.console.file.flush()
        except (OSError, ValueError, SystemExit):
            # rich answers a broken pipe with SystemExit(1) (Console.on_broken_pipe), which
            # would end the process before its teardown: the very failure this class exists
            # for. OSError and ValueError are a closed or vanished terminal.
            self.broken = True
            _silence_stdio()


def _silence_stdio() -> None:
    """Point a dead stdout/stderr at /dev/null, so nothing (not even exit's flush) raises."""
    null = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        with contextlib.suppress(OSError):
            os.dup2(null, fd)
    os.close(null)


@contextlib.contextmanager
def _teardown_signals(say: SafeOutput) -> Iterator[None]:
    """While tearing down, ending signals are noted, never obeyed half way."""
    def noted(signum: int, _frame: object) -> None:
        say(f"[dim]spyglass:[/] {signal.Signals(signum).name} noted; still tearing down")

    previous = {s: signal.signal(s, noted) for s in _ENDING}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _default_signals_in_child() -> None:
    """A forked helper must die on a signal, not unwind into our teardown."""
    for s in _ENDING:
        signal.signal(s, signal.SIG_DFL)


_FORK_HOOK = False


def _guard_forks() -> None:
    global _FORK_HOOK
    if not _FORK_HOOK:
        os.register_at_fork(after_in_child=_default_signals_in_child)
        _FORK_HOOK = True


def check_listen(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ListenError(
                f"cannot listen on {host}:{port} ({exc.strerror}): is another agent "
                "running? Stop it, or choose another address with --listen") from None


def run_agent(opts: AgentOptions, console: Console) -> int:
    """`spyglass agent`: attach to the lab, serve until a signal; the datapath stays."""
    return _run(opts, SafeOutput(console), lab=None)


def run_up(lab_opts: LabOptions, opts: AgentOptions, console: Console) -> int:
    """`spyglass up`: the lab and the agent, and at the end both torn down."""
    say = SafeOutput(console)
    manifest = load_manifest(lab_opts.manifest_path())
    lab = Lab(manifest, pod_cidr=lab_opts.pod_cidr, prefix=lab_opts.prefix,
              link_prefix=lab_opts.link_prefix, state_dir=lab_opts.state_dir,
              service_cidr=lab_opts.service_cidr or DEFAULT_SERVICE_CIDR)
    return _run(opts, say, lab=lab)


def _run(opts: AgentOptions, say: SafeOutput, lab: Lab | None) -> int:
    from spyglass.api.app import create_app
    from spyglass.api.auth import AuthConfig, check_listen_security, token_from_env
    from spyglass.api.grpc_security import check_grpc_listen
    from spyglass.api.guard import HostPolicy
    from spyglass.api.policy_routes import policy_router
    from spyglass.api.serve import make_server
    from spyglass.ui import static_dir

    opts.check()
    token = token_from_env(opts.token)
    check_listen_security(opts.host, token)
    grpc_tls = opts.grpc_tls
    check_grpc_listen(opts.grpc_listen, grpc_tls, token)
    check_listen(opts.host, opts.port)
    _guard_forks()
    owner = os.getpid()
    agent = Agent(opts)
    token_file = ""
    server: Any = None
    hubble: Any = None
    teardown = lab is not None
    previous = {s: signal.signal(s, _raise_interrupt) for s in _ENDING}
    try:
        if lab is not None:
            say(f"[dim]spyglass:[/] creating {len(lab.manifest.pods)} pods")
            for warning in lab.manifest.warnings:
                say(f"[yellow]warning[/]: {warning}")
            lab.up(start_workloads=False)  # wired, not running: the agent sees the first packet
        agent.start(log_line=lambda s: say(f"[dim]spyglass:[/] {s}"))
        if lab is not None:
            lab.start_workloads()
        token_file, local_token = write_local_token(opts.state_dir)
        auth = AuthConfig(token, opts.metrics_public, local_token)
        app = create_app(agent, ui_dir=static_dir(), metrics=agent.metrics, auth=auth,
                         tls=bool(opts.tls_cert), hosts=HostPolicy(opts.host, opts.allowed_hosts),
                         routers=[policy_router(agent.policies, agent.flow_by_uuid)])
        server = make_server(app, opts.host, opts.port, ssl_certfile=opts.tls_cert,
                             ssl_keyfile=opts.tls_key)
        if opts.grpc_listen or opts.grpc_socket:
            from spyglass.api.hubble_grpc import HubbleServer

            hubble = HubbleServer(agent, app.state.streams, listen=opts.grpc_listen,
                                  socket_path=opts.grpc_socket, auth=auth, tls=grpc_tls)
            hubble.start()
        _banner(say, agent, opts, teardown, hubble)
        signal.signal(signal.SIGHUP, lambda s, f: server.handle_exit(s, f))
        server.run()  # its own SIGINT/SIGTERM handlers; returns on either
        return 0
    except KeyboardInterrupt:
        return 130
    except (LabError, DatapathError, PolicyError, PolicyTooLarge, StoreError, ValueError) as exc:
        say(f"[red]error[/]: {exc}")
        return 1
    except OSError as exc:
        say(f"[red]error[/]: {exc.filename or ''}: {exc.strerror or exc}")
        return 1
    finally:
        if os.getpid() != owner:  # never tear down from a forked helper
            os._exit(1)
        with _teardown_signals(say):
            if hubble is not None:
                hubble.stop()
            if token_file:
                remove_local_token(token_file)
            say("[dim]spyglass:[/] tearing down" if teardown else
                "[dim]spyglass:[/] stopping the agent (the datapath keeps running)")
            for err in agent.stop(teardown=teardown):
                say(f"[red]teardown error[/]: {err}")
            if lab is not None:
                try:
                    lab.down()
                except LabError as exc:
                    say(f"[red]teardown error[/]: {exc}")
                remove_records(opts.state_dir)
            elif agent.gap is not None or agent.datapath is None:
                say("[dim]spyglass:[/] `spyglass agent` resumes it; `spyglass down` removes "
                    "everything")
        for s, handler in previous.items():
            signal.signal(s, handler)


def _banner(say: SafeOutput, agent: Agent, opts: AgentOptions, composite: bool,
            hubble: Any = None) -> None:
    scheme = "https" if opts.tls_cert else "http"
    url = f"{scheme}://{opts.host}:{opts.port}"
    pods = len(agent.view.lab.pods) if agent.view is not None else 0
    what = "spyglass is up" if composite else "the agent is running"
    say(f"[bold green]{what}[/] in {agent.timings.marks.get('ready_s', 0):.1f}s: {pods} pods, "
        f"API at {url}")
    if agent.gap is not None:
        g = agent.gap
        say(f"  restart {g.restarts}: {g.waiting_in_rings} events waited in the rings, "
            f"{g.lost_in_rings + g.failures_untold} were lost while no agent ran")
    say(f"  dashboard:    [bold]{url}/[/]")
    if hubble is not None:
        where = " and ".join(w for w in (
            f"{hubble.address}" if hubble.listen else "",
            f"unix://{hubble.socket_path}" if hubble.socket_path else "") if w)
        tls = f", TLS as {hubble.server_name}" if hubble.tls is not None else ""
        say(f"  Hubble gRPC:  [bold]{where}[/]{tls}  (hubble observe --server …)")
    say("  watch flows:  [bold].venv/bin/spyglass observe -f[/]  (another terminal)")
    say("  stop:         Ctrl-C here" + (" (tears everything down)" if composite else
                                         " (the datapath keeps enforcing)"))


def teardown_leftovers(state_dir: str, pin_dir: str, link_prefix: str,
                       grace_s: float = 10.0) -> list[str]:
    """`spyglass down`: stop a running agent and the ring keeper, remove the lab, the
    datapath and every record, by what the records name (never by a name pattern)."""
    removed: list[str] = []
    record = read_agent(state_dir)
    if record is not None and record.alive():
        removed.append(_stop_process(record.pid, "agent", grace_s))
    if keeper.stop(os.path.join(state_dir, keeper.KEEPER_SOCKET)):
        removed.append("stopped the ring keeper")
    elif record is not None and record.keeper_alive():
        removed.append(_stop_process(record.keeper_pid, "ring keeper", grace_s))
    with contextlib.suppress(FileNotFoundError):
        removed += teardown_from_state(state_dir)
    removed += bpf_cleanup(pin_dir, link_prefix)
    token = token_path(state_dir)
    if os.path.exists(token):
        remove_local_token(token)
        removed.append(f"local credential {token}")
    removed += remove_records(state_dir)
    for name in ("keeper.log",):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(state_dir, name))
    with contextlib.suppress(OSError):
        os.rmdir(state_dir)
    return removed


def _stop_process(pid: int, what: str, grace_s: float) -> str:
    """SIGTERM a process we recorded (its start time already checked), SIGKILL if it stays.

    It may end by itself at any moment (an agent finishing its own Ctrl-C): a process
    that is gone when signalled is stopped, not an error.
    """
    start = starttime(pid)
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if starttime(pid) != start:
                return f"stopped the {what} (pid {pid})"
            time.sleep(0.05)
        if starttime(pid) == start:
            os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return f"stopped the {what} (pid {pid})"
    return f"killed the {what} (pid {pid}) after {grace_s:g}s"


"""The agent's records in the state directory: who runs, and the policy changes it made.

`agent.json` names the running agent (PID and start time, so `spyglass down` stops exactly
that process and never one that reused its PID) and the ring keeper. `policies.json` is
the journal of `policy apply` and `policy delete`: the datapath's policy maps outlive the
agent, and a restarted agent must rebuild the same policy set (the lab's manifest policies,
then the journal, in order) or its first load would undo what users applied. The journal
goes with the datapath, at `spyglass down`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from spyglass.lab.procs import starttime

AGENT_FILE = "agent.json"
JOURNAL_FILE = "policies.json"


@dataclass(frozen=True)
class AgentRecord:
    pid: int
    starttime: int
    keeper_pid: int = 0
    keeper_starttime: int = 0

    def alive(self) -> bool:
        return self.pid > 0 and starttime(self.pid) == self.starttime

    def keeper_alive(self) -> bool:
        return self.keeper_pid > 0 and starttime(self.keeper_pid) == self.keeper_starttime


def _write(path: str, data: Any) -> None:
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".agent.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=1)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _read(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # a torn or foreign file is as good as none: it is rewritten


def write_agent(state_dir: str, record: AgentRecord) -> None:
    _write(os.path.join(state_dir, AGENT_FILE), asdict(record))


def read_agent(state_dir: str) -> AgentRecord | None:
    data = _read(os.path.join(state_dir, AGENT_FILE))
    if not isinstance(data, dict):
        return None
    try:
        return AgentRecord(int(data["pid"]), int(data["starttime"]),
                           int(data.get("keeper_pid", 0)), int(data.get("keeper_starttime", 0)))
    except (KeyError, TypeError, ValueError):
        return None


def this_process(keeper_pid: int = 0) -> AgentRecord:
    pid = os.getpid()
    kst = starttime(keeper_pid) if keeper_pid else None
    return AgentRecord(pid, starttime(pid) or 0, keeper_pid, kst or 0)


def remove(state_dir: str, *names: str) -> list[str]:
    done = []
    for name in names or (AGENT_FILE, JOURNAL_FILE):
        path = os.path.join(state_dir, name)
        try:
            os.unlink(path)
            done.append(f"removed {path}")
        except FileNotFoundError:
            pass
    return done


class PolicyJournal:
    """`policy apply` and `policy delete`, in order, for the next agent to replay."""

    def __init__(self, state_dir: str) -> None:
        self.path = os.path.join(state_dir, JOURNAL_FILE)

    def entries(self) -> list[dict[str, Any]]:
        data = _read(self.path)
        return [e for e in data if isinstance(e, dict)] if isinstance(data, list) else []

    def applied(self, text: str, source: str) -> None:
        self._append({"op": "apply", "text": text, "source": source})

    def deleted(self, name: str, namespace: str, kind: str | None) -> None:
        self._append({"op": "delete", "name": name, "namespace": namespace, "kind": kind})

    def _append(self, entry: dict[str, Any]) -> None:
        _write(self.path, [*self.entries(), entry])

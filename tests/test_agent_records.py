"""agent/records.py: who runs (agent.json) and the policy journal (policies.json)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from spyglass.agent.records import (
    AGENT_FILE,
    JOURNAL_FILE,
    AgentRecord,
    PolicyJournal,
    read_agent,
    remove,
    this_process,
    write_agent,
)
from spyglass.lab.procs import starttime


@pytest.fixture
def state_dir(tmp_path: Path) -> str:
    return str(tmp_path / "state")


def my_starttime() -> int:
    st = starttime(os.getpid())
    assert st is not None
    return st


def dead_pid() -> int:
    """The PID of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    assert starttime(proc.pid) is None
    return proc.pid


# -- AgentRecord ---------------------------------------------------------------------------


def test_round_trip(state_dir: str) -> None:
    record = AgentRecord(pid=1234, starttime=5678, keeper_pid=91, keeper_starttime=1011)
    write_agent(state_dir, record)  # creates the directory
    assert read_agent(state_dir) == record
    with open(os.path.join(state_dir, AGENT_FILE), encoding="utf-8") as f:
        assert json.load(f) == {"pid": 1234, "starttime": 5678, "keeper_pid": 91,
                                "keeper_starttime": 1011}


def test_a_rewrite_replaces_the_record(state_dir: str) -> None:
    write_agent(state_dir, AgentRecord(1, 2, 3, 4))
    write_agent(state_dir, AgentRecord(5, 6))
    assert read_agent(state_dir) == AgentRecord(5, 6, 0, 0)


def test_a_record_without_keeper_fields_reads_with_no_keeper(state_dir: str) -> None:
    os.makedirs(state_dir)
    Path(state_dir, AGENT_FILE).write_text('{"pid": 12, "starttime": 34}')
    assert read_agent(state_dir) == AgentRecord(12, 34, 0, 0)


def test_no_record_reads_as_none(state_dir: str) -> None:
    assert read_agent(state_dir) is None  # no directory
    os.makedirs(state_dir)
    assert read_agent(state_dir) is None  # no file


@pytest.mark.parametrize("content", [
    b'{"pid": 12, "starttime"',          # torn
    b"",                                  # empty
    b"\xff\xfe\x00garbage",              # not UTF-8
    b"[12, 34]",                          # JSON, not an object
    b'"agent"',
    b'{"starttime": 34}',                 # no pid
    b'{"pid": 12}',                       # no starttime
    b'{"pid": "twelve", "starttime": 34}',
    b'{"pid": null, "starttime": 34}',
    b'{"pid": 12, "starttime": 34, "keeper_pid": "x"}',
], ids=["torn", "empty", "binary", "list", "string", "no-pid", "no-starttime", "pid-text",
        "pid-null", "keeper-text"])
def test_a_torn_or_foreign_record_reads_as_none(state_dir: str, content: bytes) -> None:
    os.makedirs(state_dir)
    Path(state_dir, AGENT_FILE).write_bytes(content)
    assert read_agent(state_dir) is None


def test_a_directory_in_place_of_the_record_reads_as_none(state_dir: str) -> None:
    os.makedirs(os.path.join(state_dir, AGENT_FILE))
    assert read_agent(state_dir) is None


def test_this_process_is_alive() -> None:
    record = this_process()
    assert record.pid == os.getpid()
    assert record.starttime == my_starttime()
    assert (record.keeper_pid, record.keeper_starttime) == (0, 0)
    assert record.alive() is True
    assert record.keeper_alive() is False


def test_this_process_with_a_keeper_records_the_keeper() -> None:
    parent = os.getppid()
    record = this_process(keeper_pid=parent)
    assert record.keeper_pid == parent
    assert record.keeper_starttime == starttime(parent)
    assert record.keeper_alive() is True


def test_this_process_with_a_dead_keeper_records_no_start_time() -> None:
    record = this_process(keeper_pid=dead_pid())
    assert record.keeper_starttime == 0
    assert record.keeper_alive() is False


def test_a_reused_pid_is_not_alive() -> None:
    """The PID is ours, the start time is not: another process has that PID now."""
    assert AgentRecord(os.getpid(), my_starttime() + 1).alive() is False
    assert AgentRecord(os.getpid(), my_starttime() - 1).alive() is False
    assert AgentRecord(0, 0, os.getpid(), my_starttime() + 1).keeper_alive() is False


def test_pid_zero_or_less_is_not_alive() -> None:
    assert AgentRecord(0, 0).alive() is False
    assert AgentRecord(0, my_starttime()).alive() is False
    assert AgentRecord(-1, 0).alive() is False
    assert AgentRecord(1, 1, keeper_pid=0, keeper_starttime=0).keeper_alive() is False


def test_a_dead_pid_is_not_alive() -> None:
    assert AgentRecord(dead_pid(), 1).alive() is False


def test_a_record_read_back_is_alive_as_written(state_dir: str) -> None:
    write_agent(state_dir, this_process())
    back = read_agent(state_dir)
    assert back is not None and back.alive() is True


# -- remove ---------------------------------------------------------------------------------


def fill(state_dir: str) -> None:
    os.makedirs(state_dir, exist_ok=True)
    for name in (AGENT_FILE, JOURNAL_FILE, "lab.json", "token"):
        Path(state_dir, name).write_text("{}")


def test_remove_removes_only_the_named_records_and_reports_them(state_dir: str) -> None:
    fill(state_dir)
    assert remove(state_dir, AGENT_FILE) == [f"removed {os.path.join(state_dir, AGENT_FILE)}"]
    assert sorted(os.listdir(state_dir)) == sorted([JOURNAL_FILE, "lab.json", "token"])
    assert remove(state_dir, AGENT_FILE) == []  # gone already: nothing to report


def test_remove_without_names_removes_both_records_and_nothing_else(state_dir: str) -> None:
    fill(state_dir)
    assert remove(state_dir) == [f"removed {os.path.join(state_dir, AGENT_FILE)}",
                                 f"removed {os.path.join(state_dir, JOURNAL_FILE)}"]
    assert sorted(os.listdir(state_dir)) == ["lab.json", "token"]
    assert remove(state_dir) == []


def test_remove_in_a_missing_directory_reports_nothing(state_dir: str) -> None:
    assert remove(state_dir) == []
    assert remove(state_dir, AGENT_FILE, JOURNAL_FILE) == []


# -- PolicyJournal --------------------------------------------------------------------------


POLICY = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata: {name: p}\n"


def test_the_journal_starts_empty(state_dir: str) -> None:
    assert PolicyJournal(state_dir).entries() == []


def test_the_journal_keeps_applies_and_deletes_in_order_across_a_reopen(state_dir: str) -> None:
    journal = PolicyJournal(state_dir)
    journal.applied(POLICY, "p.yaml")
    journal.deleted("p", "shop", "CiliumNetworkPolicy")
    journal.applied("second", "-")
    journal.deleted("q", "default", None)
    expected: list[dict[str, Any]] = [
        {"op": "apply", "text": POLICY, "source": "p.yaml"},
        {"op": "delete", "name": "p", "namespace": "shop", "kind": "CiliumNetworkPolicy"},
        {"op": "apply", "text": "second", "source": "-"},
        {"op": "delete", "name": "q", "namespace": "default", "kind": None},
    ]
    assert journal.entries() == expected
    assert PolicyJournal(state_dir).entries() == expected
    assert journal.path == os.path.join(state_dir, JOURNAL_FILE)
    with open(journal.path, encoding="utf-8") as f:
        assert json.load(f) == expected
    reopened = PolicyJournal(state_dir)
    reopened.applied("third", "t.yaml")
    assert PolicyJournal(state_dir).entries() == [
        *expected, {"op": "apply", "text": "third", "source": "t.yaml"}]


@pytest.mark.parametrize("content", ["[{\"op\": \"apply\"", "{}", "\"x\"", "\xff"],
                         ids=["torn", "object", "string", "latin1"])
def test_a_torn_or_foreign_journal_reads_empty_and_is_rewritten(state_dir: str,
                                                                content: str) -> None:
    os.makedirs(state_dir)
    Path(state_dir, JOURNAL_FILE).write_bytes(content.encode("latin-1"))
    journal = PolicyJournal(state_dir)
    assert journal.entries() == []
    journal.applied("t", "s")
    assert PolicyJournal(state_dir).entries() == [{"op": "apply", "text": "t", "source": "s"}]


def test_the_journal_skips_entries_that_are_not_objects(state_dir: str) -> None:
    os.makedirs(state_dir)
    Path(state_dir, JOURNAL_FILE).write_text('[{"op": "apply"}, 3, "x", null, {"op": "delete"}]')
    assert PolicyJournal(state_dir).entries() == [{"op": "apply"}, {"op": "delete"}]


def test_remove_takes_the_journal(state_dir: str) -> None:
    PolicyJournal(state_dir).applied("t", "s")
    assert remove(state_dir, JOURNAL_FILE) == [
        f"removed {os.path.join(state_dir, JOURNAL_FILE)}"]
    assert PolicyJournal(state_dir).entries() == []


# -- atomic writes --------------------------------------------------------------------------


def test_writes_leave_no_temp_files(state_dir: str) -> None:
    journal = PolicyJournal(state_dir)
    for i in range(5):
        write_agent(state_dir, AgentRecord(i + 1, i))
        journal.applied(f"p{i}", "s")
        journal.deleted(f"p{i}", "ns", None)
    assert sorted(os.listdir(state_dir)) == sorted([AGENT_FILE, JOURNAL_FILE])
    assert len(journal.entries()) == 10


def test_a_write_replaces_the_file_whole(state_dir: str,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """At the moment of the rename the old record is still whole in place and the new one
    is whole in a temp file beside it: a reader sees one or the other, never half."""
    write_agent(state_dir, AgentRecord(1, 1))
    seen: list[tuple[AgentRecord | None, Any]] = []
    real_replace = os.replace

    def replace(src: str, dst: str) -> None:
        assert os.path.dirname(src) == os.path.dirname(dst) == state_dir
        with open(src, encoding="utf-8") as f:
            seen.append((read_agent(state_dir), json.load(f)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    write_agent(state_dir, AgentRecord(2, 2, 3, 3))
    assert seen == [(AgentRecord(1, 1), {"pid": 2, "starttime": 2, "keeper_pid": 3,
                                         "keeper_starttime": 3})]
    assert read_agent(state_dir) == AgentRecord(2, 2, 3, 3)


def test_a_failed_write_keeps_the_old_record_and_leaves_no_temp_file(state_dir: str) -> None:
    write_agent(state_dir, AgentRecord(1, 1))
    with pytest.raises(TypeError):
        write_agent(state_dir, AgentRecord(object(), 2))  # type: ignore[arg-type]
    assert read_agent(state_dir) == AgentRecord(1, 1)
    assert os.listdir(state_dir) == [AGENT_FILE]


def test_a_failed_journal_append_keeps_the_journal(state_dir: str) -> None:
    journal = PolicyJournal(state_dir)
    journal.applied("t", "s")
    with pytest.raises(TypeError):
        journal.applied("u", object())  # type: ignore[arg-type]
    assert journal.entries() == [{"op": "apply", "text": "t", "source": "s"}]
    assert os.listdir(state_dir) == [JOURNAL_FILE]

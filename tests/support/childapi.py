"""The API over a real chDB store, in a child process (chDB admits one store per process).

`child_api(tmp_path_factory, token, node=…)` starts it and yields its URL; the CLI run in
the test finds `token` as its local credential through SPYGLASS_TOKEN_FILE, which the
context sets and undoes. The child stops when its stdin closes.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spyglass.api.credentials import TOKEN_FILE_ENV

TESTS = str(Path(__file__).resolve().parents[1])
CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[3])  # the tests' own support package
from support import FakeSource
from spyglass.api.app import create_app
from spyglass.api.auth import AuthConfig
from spyglass.api.serve import serve_in_thread
from spyglass.storage.store import FlowStore

store = FlowStore.open(sys.argv[1])
source = FakeSource(node_name=sys.argv[4], store=store, store_dsn=sys.argv[1],
                    namespaces=json.loads(sys.argv[5]))
app = create_app(source, auth=AuthConfig(local_token=sys.argv[2]))
with serve_in_thread(app) as (_, url):
    print(url, flush=True)
    sys.stdin.read()
store.close()
"""


@contextlib.contextmanager
def child_api(tmp_path_factory: pytest.TempPathFactory, token: str, *, node: str,
              namespaces: tuple[str, ...] = ()) -> Iterator[str]:
    path = tmp_path_factory.mktemp("store") / "flows"
    token_file = tmp_path_factory.mktemp("cred") / "token"
    token_file.write_text(token + "\n")
    env = pytest.MonkeyPatch()
    env.setenv(TOKEN_FILE_ENV, str(token_file))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, f"chdb://{path}", token, TESTS,
                             node, json.dumps(list(namespaces))],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        assert url.startswith("http://"), "the API child did not start"
        yield url
    finally:
        env.undo()
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()

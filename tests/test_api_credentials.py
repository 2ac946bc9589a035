"""The local credential: written 0600, replaced atomically, sent to loopback servers only."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from spyglass.api.credentials import (
    TOKEN_FILE_ENV,
    is_loopback_url,
    read_local_token,
    remove_local_token,
    write_local_token,
)
from spyglass.cli.common import make_client


def test_the_token_file_is_private_and_fresh_each_time(tmp_path: Path) -> None:
    path, first = write_local_token(str(tmp_path / "state"))
    mode = stat.S_IMODE(os.stat(path).st_mode)
    assert mode == 0o600 and len(first) >= 40
    assert read_local_token(path) == first
    _, second = write_local_token(str(tmp_path / "state"))
    assert second != first and read_local_token(path) == second
    assert os.listdir(tmp_path / "state") == ["token"]  # no temporary file left behind
    remove_local_token(path)
    remove_local_token(path)  # twice is fine
    assert read_local_token(path) is None


def test_a_symlink_in_place_of_the_temporary_file_is_not_followed(tmp_path: Path) -> None:
    state = tmp_path / "state"
    state.mkdir()
    target = tmp_path / "elsewhere"
    os.symlink(target, state / f"token.{os.getpid()}.tmp")
    with pytest.raises(FileExistsError):
        write_local_token(str(state))
    assert not target.exists()


@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.1:4245", True), ("https://localhost:4245", True), ("[::1]:4245", True),
    ("127.0.0.2:4245", True), ("http://10.0.0.1:4245", False), ("http://node-a:4245", False),
    ("http://127.0.0.1.evil.example:4245", False), ("http://[fd00::1]:4245", False),
])
def test_loopback_urls(url: str, ok: bool) -> None:
    assert is_loopback_url(url) is ok


def kw(server: str, token: str | None = None) -> dict[str, Any]:
    return {"server": server, "timeout": 1.0, "token": token, "tls_ca": None}


def test_the_cli_sends_the_local_credential_to_loopback_only(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    path, token = write_local_token(str(tmp_path))
    monkeypatch.setenv(TOKEN_FILE_ENV, path)
    with make_client(kw("http://127.0.0.1:4245")) as local:
        assert local.token == token
    with make_client(kw("http://192.0.2.7:4245")) as remote:
        assert remote.token is None
    with make_client(kw("http://127.0.0.1:4245", "explicit-token")) as given:
        assert given.token == "explicit-token"

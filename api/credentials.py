"""The local credential: a random token `spyglass up` leaves where only root can read it.

Changes (policy, pods, services, import) need a credential even on loopback, so that
no web page the user opens can make one. Typing a token for every `spyglass policy
apply` on one's own machine would be a chore, so the agent writes a fresh random
one to `<state dir>/token` (mode 0600, owned by the agent's user, root) at start and
removes it at teardown, and the CLI, running as the same user on the same host,
reads it by itself. It is sent to loopback servers only. This is the same trust
Hubble's unix socket gives by file permissions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
from urllib.parse import urlsplit

TOKEN_FILE_NAME = "token"
TOKEN_FILE_ENV = "SPYGLASS_TOKEN_FILE"
DEFAULT_TOKEN_FILE = f"/run/spyglass/{TOKEN_FILE_NAME}"


def token_path(state_dir: str) -> str:
    return os.path.join(state_dir, TOKEN_FILE_NAME)


def write_local_token(state_dir: str) -> tuple[str, str]:
    """A new random token in `state_dir/token` (0600, replaced atomically): (path, token)."""
    os.makedirs(state_dir, mode=0o755, exist_ok=True)
    token = secrets.token_urlsafe(32)
    path = token_path(state_dir)
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return path, token


def remove_local_token(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def read_local_token(path: str | None = None) -> str | None:
    """The token in `path` (default: $SPYGLASS_TOKEN_FILE or /run/spyglass/token), if readable."""
    path = path or os.environ.get(TOKEN_FILE_ENV) or DEFAULT_TOKEN_FILE
    try:
        with open(path, encoding="ascii") as f:
            token = f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None
    return token or None


def is_loopback_url(url: str) -> bool:
    """Whether an API URL points at this host's loopback (the only place the token goes)."""
    try:
        host = urlsplit(url if "://" in url else f"http://{url}").hostname or ""
    except ValueError:
        return False
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

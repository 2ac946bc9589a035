"""What of a store error a user may see: the reason, never paths or ClickHouse's trailers.

Errors from chDB and ClickHouse carry file paths of the store (`/var/lib/spyglass/…`),
stack traces and version trailers. The API answers anyone who may read flows, and
the path of the agent's files is none of their business; the reason is.
"""

from __future__ import annotations

import re

_PATH = re.compile(r"(?<![\w:])/(?:[\w.@+-]+/)*[\w.@+-]+")
_CODE = re.compile(r"^Code: \d+\. (?:DB::Exception: )+")
#: Where ClickHouse's own detail begins: what follows is for its logs, not for users.
_CUTS = (": In scope ", "Stack trace", "(version ", "Received from ")
_ERROR_NAME = re.compile(r"\s*\([A-Z][A-Z0-9_]+\)\s*$")


def public_error(exc: BaseException | str) -> str:
    """A server error as a user may see it: the reason only, no paths, no trailers."""
    text = str(exc).strip().replace("\n", " ")
    text = _CODE.sub("", text)
    cut = min((i for i in (text.find(c) for c in _CUTS) if i >= 0), default=len(text))
    text = _ERROR_NAME.sub("", text[:cut].rstrip(" .:;,"))
    text = _PATH.sub("<path>", text)
    text = re.sub(r"\s+", " ", text).strip(" .:")
    if len(text) > 400:
        text = text[:400] + "…"
    return text or (type(exc).__name__ if isinstance(exc, BaseException) else "error")


def redact_dsn(dsn: str) -> str:
    """A store address with its password hidden."""
    return re.sub(r"//([^:/@]+):[^@/]*@", r"//\1:***@", dsn)

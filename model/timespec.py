"""Times as people type them: `5m`, `1h30m`, `2d` ago, or an RFC3339 instant.

One parser for the API and the CLI, so `observe --since 1h30m` and
`GET /api/v1/flows?since=1h30m` accept exactly the same text and fail with the
same message. Relative times are Go durations (what `hubble observe --since`
takes) plus `d` for days, since retention is counted in days. Hubble's bare
`1h43` (minutes implied after hours) is accepted too.
"""

from __future__ import annotations

import re
import time

from spyglass.model.flow import parse_time_ns

HINT = "use a duration ago like 5m, 1h30m or 2d, or an RFC3339 time like 2025-11-26T13:00:00Z"

_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60_000_000_000,
    "h": 3_600_000_000_000,
    "d": 86_400_000_000_000,
}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_HUBBLE_HOURS_MINUTES = re.compile(r"^(\d+)h(\d+)$")
#: Far enough to cover any retention, near enough that epoch arithmetic stays sane.
MAX_DURATION_NS = 100 * 365 * 86_400_000_000_000


class TimeSpecError(ValueError):
    """A time the user typed that is neither a duration nor an RFC3339 instant."""


def parse_duration_ns(text: str, *, what: str = "duration") -> int:
    """`1h30m` -> nanoseconds; a bare number is refused (seconds or minutes? say which)."""
    s = text.strip().lower()
    hm = _HUBBLE_HOURS_MINUTES.match(s)
    if hm:
        s = f"{hm.group(1)}h{hm.group(2)}m"
    if not s:
        raise TimeSpecError(f"{what}: empty; {HINT}")
    pos, total = 0, 0.0
    for match in _PART.finditer(s):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNITS_NS[match.group(2)]
        pos = match.end()
    if pos != len(s) or pos == 0:
        if s.replace(".", "", 1).isdigit():
            raise TimeSpecError(f"{what}: {text!r} has no unit; say {text}s or {text}m "
                                f"(units: ns us ms s m h d)")
        raise TimeSpecError(f"{what}: {text!r} is not a duration; {HINT}")
    if total > MAX_DURATION_NS:
        raise TimeSpecError(f"{what}: {text!r} is longer than 100 years; {HINT}")
    return int(total)


def parse_timespec(text: str, *, now_ns: int | None = None, what: str = "time") -> int:
    """Epoch nanoseconds for `text`: a duration means that long before `now_ns`."""
    s = text.strip()
    if not s:
        raise TimeSpecError(f"{what}: empty; {HINT}")
    now = time.time_ns() if now_ns is None else now_ns
    if s[0].isdigit() and ("-" in s[1:] or "T" in s):
        try:
            return parse_time_ns(s)
        except (ValueError, OverflowError):
            raise TimeSpecError(f"{what}: {text!r} is not a valid RFC3339 time; {HINT}"
                                ) from None
    return now - parse_duration_ns(s, what=what)


def parse_range(since: str | None, until: str | None, *, now_ns: int | None = None
                ) -> tuple[int | None, int | None]:
    """Both ends of a range, checked to be in order; None where not given."""
    now = time.time_ns() if now_ns is None else now_ns
    lo = parse_timespec(since, now_ns=now, what="since") if since is not None else None
    hi = parse_timespec(until, now_ns=now, what="until") if until is not None else None
    if lo is not None and hi is not None and lo > hi:
        raise TimeSpecError(f"since ({since}) is after until ({until}); swap them, or give "
                            "since only for everything up to now")
    return lo, hi

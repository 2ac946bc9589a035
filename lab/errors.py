"""The lab's exceptions, in one place so callers (the CLI) can catch one base.

Every message is meant to be shown to a user as is: it names the problem and,
where there is one, the fix.
"""

from __future__ import annotations


class LabError(Exception):
    """Something about the lab cannot be done; the message says why and what to do."""


class ManifestError(LabError, ValueError):
    """A manifest is not valid; the message names the file, document and field."""


class PodRefError(LabError, LookupError):
    """A pod reference ("ns/pod" or "pod") matches no pod, or more than one."""

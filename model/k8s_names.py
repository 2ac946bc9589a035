"""Kubernetes name and label syntax, checked the way the API server checks it.

A manifest that the lab accepts should also be accepted by a real cluster
(and vice versa), so users can move it between the two. Each check returns an
error string (empty when valid) rather than raising, so the manifest parser can
attach the file, document and field path to it.
"""

from __future__ import annotations

import re

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_LABEL_VALUE = _QUALIFIED_NAME
_IANA_SVC_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dns1123_label(value: str) -> str:
    """Namespace names: at most 63 lower-case alphanumerics or '-'."""
    if len(value) > 63:
        return f"must be at most 63 characters, got {len(value)}"
    if not _DNS1123_LABEL.match(value):
        return (
            "must consist of lower case alphanumeric characters or '-', and must start and "
            "end with an alphanumeric character (e.g. 'my-name')"
        )
    return ""


def dns1123_subdomain(value: str) -> str:
    """Pod names: at most 253 characters, dot-separated DNS labels."""
    if len(value) > 253:
        return f"must be at most 253 characters, got {len(value)}"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            "must consist of lower case alphanumeric characters, '-' or '.', and must start "
            "and end with an alphanumeric character (e.g. 'example.com')"
        )
    return ""


def label_key(key: str) -> str:
    """`[prefix/]name`: prefix a DNS subdomain, name a qualified name of <= 63 chars."""
    if key.count("/") > 1:
        return "a label key may contain at most one '/' (e.g. 'example.com/my-key')"
    prefix, _, name = key.rpartition("/")
    if "/" in key:
        if not prefix:
            return "the prefix before '/' must not be empty"
        err = dns1123_subdomain(prefix)
        if err:
            return f"the prefix {prefix!r} {err}"
    if not name:
        return "the name part must not be empty"
    if len(name) > 63:
        return f"the name part must be at most 63 characters, got {len(name)}"
    if not _QUALIFIED_NAME.match(name):
        return (
            "the name part must consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'app', 'my.key_1')"
        )
    return ""


def label_value(value: str) -> str:
    """Empty, or <= 63 alphanumerics with '-', '_', '.' inside."""
    if value == "":
        return ""
    if len(value) > 63:
        return f"must be at most 63 characters, got {len(value)}"
    if not _LABEL_VALUE.match(value):
        return (
            "must be empty or consist of alphanumeric characters, '-', '_' or '.', and "
            "must start and end with an alphanumeric character (e.g. 'web', 'v1.2')"
        )
    return ""


def port_name(value: str) -> str:
    """IANA service names: <= 15 chars, lower-case alphanumerics and '-', one letter."""
    if len(value) > 15:
        return f"must be at most 15 characters, got {len(value)}"
    if not _IANA_SVC_NAME.match(value) or "--" in value:
        return "must be lower case alphanumerics or single '-' (e.g. 'http', 'metrics')"
    if not any(c.isalpha() for c in value):
        return "must contain at least one letter (e.g. 'http')"
    return ""

"""`{{…}}` substitution in container commands."""

from __future__ import annotations

import pytest

from spyglass.lab.placeholders import render

VALUES = {"python": "/venv/bin/python", "pod": "cart-0", "namespace": "shop"}
IPS = {"shop/db-0": "10.244.0.6", "db-0": "10.244.0.6"}


def ip_of(ref: str) -> str:
    return IPS[ref]


@pytest.mark.parametrize(("text", "want"), [
    pytest.param("http://{{ip:shop/db-0}}:5432/", "http://10.244.0.6:5432/", id="ip-full-ref"),
    pytest.param("{{ ip: db-0 }}", "10.244.0.6", id="spaces-allowed"),
    pytest.param("{{python}}", "/venv/bin/python", id="python"),
    pytest.param("{{namespace}}/{{pod}}", "shop/cart-0", id="self"),
    pytest.param("no placeholders", "no placeholders", id="plain"),
    pytest.param("{{ip:db-0}},{{ip:db-0}}", "10.244.0.6,10.244.0.6", id="repeated"),
])
def test_render(text: str, want: str) -> None:
    assert render(text, VALUES, ip_of) == want


@pytest.mark.parametrize(("text", "pattern"), [
    pytest.param("{{ip}}", r"needs a pod", id="ip-without-pod"),
    pytest.param("{{pod:x}}", r"takes no argument", id="arg-on-plain"),
    pytest.param("{{port:x}}", r"unknown placeholder", id="unknown-kind"),
    pytest.param("{{ip:db-0", r"malformed placeholder", id="unterminated"),
    pytest.param("x }} y", r"malformed placeholder", id="stray-close"),
])
def test_render_errors(text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        render(text, VALUES, ip_of)


def test_unknown_pod_propagates_the_resolver_error() -> None:
    with pytest.raises(KeyError):
        render("{{ip:shop/nope}}", VALUES, ip_of)

"""The label selector parser and matcher (reused later for policy selectors)."""

from __future__ import annotations

from typing import Any

import pytest

from spyglass.collector.filters import LabelSelector, Requirement, SelectorError

POD = ("k8s:app=frontend", "k8s:tier=web", "k8s:io.kubernetes.pod.namespace=shop",
       "container:app=legacy")

MATCH = [
    pytest.param("app=frontend", POD, True, id="eq-any-source"),
    pytest.param("app==frontend", POD, True, id="double-eq"),
    pytest.param("app=legacy", POD, True, id="eq-other-source-value"),
    pytest.param("k8s:app=legacy", POD, False, id="eq-pinned-source"),
    pytest.param("container:app=legacy", POD, True, id="eq-pinned-container"),
    pytest.param("any:app=frontend", POD, True, id="any-source-prefix"),
    pytest.param("app=backend", POD, False, id="eq-no"),
    pytest.param("app!=backend", POD, True, id="neq"),
    pytest.param("app!=frontend", POD, False, id="neq-any-source-has-it"),
    pytest.param("k8s:app!=legacy", POD, True, id="neq-pinned"),
    pytest.param("missing!=x", POD, True, id="neq-absent-key-matches"),
    pytest.param("app", POD, True, id="exists"),
    pytest.param("missing", POD, False, id="exists-no"),
    pytest.param("!missing", POD, True, id="not-exists"),
    pytest.param("!tier", POD, False, id="not-exists-no"),
    pytest.param("tier in (web,api)", POD, True, id="in"),
    pytest.param("tier in (db)", POD, False, id="in-no"),
    pytest.param("tier notin (db, cache)", POD, True, id="notin"),
    pytest.param("tier notin (web)", POD, False, id="notin-no"),
    pytest.param("missing notin (x)", POD, True, id="notin-absent"),
    pytest.param("app=frontend,tier=web", POD, True, id="and"),
    pytest.param("app=frontend, tier=db", POD, False, id="and-one-fails"),
    pytest.param("io.kubernetes.pod.namespace=shop", POD, True, id="dotted-key"),
    pytest.param("reserved:world", ("reserved:world",), True, id="valueless-label"),
    pytest.param("world", ("reserved:world",), True, id="valueless-any-source"),
    pytest.param("app=", ("k8s:app=",), True, id="empty-value"),
    pytest.param("", POD, True, id="empty-selector-matches-all"),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCH)
def test_selector_matches(text: str, labels: tuple[str, ...], expected: bool) -> None:
    assert LabelSelector.parse(text).matches(labels) is expected


MAPPING = [
    pytest.param("app=web", {"app": "web"}, True, id="plain-mapping"),
    pytest.param("k8s:app=web", {"app": "web"}, False, id="sourceless-label-pinned-selector"),
    pytest.param("app=web", {"k8s:app": "web"}, True, id="mapping-with-source"),
    pytest.param("!debug", {"app": "web"}, True, id="mapping-not-exists"),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MAPPING)
def test_selector_matches_mapping(text: str, labels: dict[str, str], expected: bool) -> None:
    assert LabelSelector.parse(text).matches(labels) is expected


def test_selector_matches_any_iterable() -> None:
    assert LabelSelector.parse("app=frontend").matches(iter(["k8s:app=frontend"]))
    assert LabelSelector.parse("app=frontend").matches(["k8s:app=frontend"])


PARSED = [
    pytest.param("app=web", (Requirement("app", "=", ("web",)),), id="eq"),
    pytest.param("k8s:app != web", (Requirement("app", "!=", ("web",), "k8s"),), id="neq-src"),
    pytest.param("!  debug", (Requirement("debug", "!"),), id="not"),
    pytest.param("a in (z, y, z)", (Requirement("a", "in", ("y", "z")),), id="in-sorted-dedup"),
    pytest.param("a notin(x)", (Requirement("a", "notin", ("x",)),), id="notin-no-space"),
    pytest.param("x, y", (Requirement("x", "exists"), Requirement("y", "exists")), id="two"),
    pytest.param("app.kubernetes.io/name=web",
                 (Requirement("app.kubernetes.io/name", "=", ("web",)),), id="prefixed-key"),
]


@pytest.mark.parametrize(("text", "expected"), PARSED)
def test_selector_parse(text: str, expected: tuple[Requirement, ...]) -> None:
    sel = LabelSelector.parse(text)
    assert sel.requirements == expected
    assert LabelSelector.parse(str(sel)) == sel  # printing is an inverse


BAD = [
    pytest.param("app in a", "label selector 'app in a': expected '(' after in/notin at "
                 "position 7", id="in-no-paren"),
    pytest.param("app in (a", "label selector 'app in (a': missing ')' at position 9",
                 id="unclosed"),
    pytest.param("app in ()", "label selector 'app in ()': empty value list at position 9",
                 id="empty-set"),
    pytest.param("app=a,", "label selector 'app=a,': nothing after ',' at position 6",
                 id="trailing-comma"),
    pytest.param("app=a b", "label selector 'app=a b': unexpected 'b' at position 6",
                 id="space-in-value"),
    pytest.param("app>5", "label selector 'app>5': unexpected '>' after key 'app' at position 3",
                 id="gt-unsupported"),
    pytest.param("=x", "label selector '=x': expected a label key at position 0", id="no-key"),
    pytest.param("a in (b;c)", "label selector 'a in (b;c)': unexpected ';' in value list at "
                 "position 7", id="bad-separator"),
]


@pytest.mark.parametrize(("text", "problem"), BAD)
def test_selector_errors(text: str, problem: str) -> None:
    with pytest.raises(SelectorError) as e:
        LabelSelector.parse(text)
    assert e.value.problem == problem
    assert "write it like" in str(e.value)


K8S = [
    pytest.param({"app": "web"}, None, ("k8s:app=web",), True, id="match-labels"),
    pytest.param({"app": "web"}, None, ("k8s:app=db",), False, id="match-labels-no"),
    pytest.param(None, [{"key": "tier", "operator": "In", "values": ["a", "b"]}],
                 ("k8s:tier=b",), True, id="expr-in"),
    pytest.param(None, [{"key": "tier", "operator": "NotIn", "values": ["b"]}],
                 ("k8s:tier=b",), False, id="expr-notin"),
    pytest.param(None, [{"key": "tier", "operator": "Exists"}], ("k8s:tier=b",), True,
                 id="expr-exists"),
    pytest.param(None, [{"key": "tier", "operator": "DoesNotExist"}], ("k8s:tier=b",), False,
                 id="expr-does-not-exist"),
    pytest.param({"app": "web"}, [{"key": "tier", "operator": "Exists"}], ("k8s:app=web",),
                 False, id="labels-and-exprs"),
    pytest.param(None, None, ("k8s:app=web",), True, id="empty-matches-all"),
]


@pytest.mark.parametrize(("labels", "exprs", "pod", "expected"), K8S)
def test_from_k8s(labels: dict[str, str] | None, exprs: list[dict[str, Any]] | None,
                  pod: tuple[str, ...], expected: bool) -> None:
    assert LabelSelector.from_k8s(labels, exprs).matches(pod) is expected


K8S_BAD = [
    pytest.param([{"key": "a", "operator": "Like"}],
                 "matchExpressions[0]: unknown operator 'Like'", id="bad-op"),
    pytest.param([{"key": "a", "operator": "In", "values": []}],
                 "matchExpressions[0]: operator In needs values", id="in-empty"),
    pytest.param([{"key": "a", "operator": "Exists", "values": ["x"]}],
                 "matchExpressions[0]: operator Exists takes no values", id="exists-values"),
    pytest.param([{"operator": "Exists"}], "matchExpressions[0] needs 'key' and 'operator'",
                 id="no-key"),
    pytest.param([{"key": "a", "operator": "In", "values": "x"}],
                 "matchExpressions[0]: 'values' must be a list", id="values-string"),
]


@pytest.mark.parametrize(("exprs", "problem"), K8S_BAD)
def test_from_k8s_errors(exprs: list[dict[str, Any]], problem: str) -> None:
    with pytest.raises(SelectorError) as e:
        LabelSelector.from_k8s(None, exprs)
    assert e.value.problem == problem

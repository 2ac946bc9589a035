"""Bounded parsing of users' JSON and YAML: depth, aliases, and the messages."""

from __future__ import annotations

import pytest
import yaml

from spyglass.model.safeload import (
    MAX_DEPTH,
    InputLimitError,
    YamlLimitError,
    check_yaml,
    json_depth,
    load_yaml_all,
    loads_json,
)


@pytest.mark.parametrize(("text", "depth"), [
    ("1", 0), ("[]", 1), ('{"a": [1, {"b": []}]}', 4), ('"[[[["', 0), ('["\\"[[["]', 1),
    ("[" * 500, MAX_DEPTH + 1),
])
def test_json_depth_skips_strings_and_stops_early(text: str, depth: int) -> None:
    assert json_depth(text) == depth


def test_deep_json_is_refused_naming_the_limit() -> None:
    with pytest.raises(InputLimitError, match=f"the body nests deeper than {MAX_DEPTH} levels"):
        loads_json("[" * 10_000 + "]" * 10_000, what="the body")
    assert loads_json("[" * MAX_DEPTH + "]" * MAX_DEPTH) is not None
    assert loads_json(b'{"a": 1}') == {"a": 1}


LAUGHS = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"] + [
    f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(6)])


@pytest.mark.parametrize(("text", "why"), [
    pytest.param("a: " + "[" * 100 + "]" * 100, "nests deeper", id="flow-depth"),
    pytest.param("".join("  " * i + "- \n" for i in range(100)) + "x", "nests deeper",
                 id="block-depth"),
    pytest.param(LAUGHS, "once its aliases are expanded", id="billion-laughs"),
    pytest.param("a: &a [1, *a]", "refers to itself", id="recursive"),
])
def test_bombs_are_refused_before_loading(text: str, why: str) -> None:
    with pytest.raises(YamlLimitError, match=why):
        load_yaml_all(text, what="x.yaml")


def test_yaml_limit_errors_are_yaml_errors_for_the_callers() -> None:
    with pytest.raises(yaml.YAMLError):
        check_yaml(LAUGHS)


def test_aliases_within_the_limit_load_and_syntax_errors_keep_pyyaml_positions() -> None:
    assert load_yaml_all("a: &x [1, 2]\nb: *x\n---\nc: 3") == [{"a": [1, 2], "b": [1, 2]},
                                                               {"c": 3}]
    with pytest.raises(yaml.MarkedYAMLError) as err:
        load_yaml_all("a: [1,\nb")
    assert err.value.problem_mark is not None


def test_the_node_budget_counts_expanded_aliases() -> None:
    text = "a: &a [1, 2, 3]\nb: [*a, *a, *a]"
    load_yaml_all(text, max_nodes=20)
    with pytest.raises(YamlLimitError):
        load_yaml_all(text, max_nodes=15)

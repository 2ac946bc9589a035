"""JSON and YAML from users: parsed with bounded work (depth, size, aliases), and named in errors.

Python's `json` and PyYAML's composer recurse once per nesting level, so 10,000 `[`
raise RecursionError (a 500 with internals, before this module). YAML aliases let a
few hundred bytes stand for millions of nodes: PyYAML shares the objects, but every
consumer that walks them pays the expanded size. Both are checked here before any
parser recurses, in one linear pass, and refused with the limit named.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import yaml

#: Deepest nesting accepted in a JSON or YAML document from a user.
MAX_DEPTH = 64
#: Most nodes a YAML text may stand for once its aliases are expanded.
MAX_YAML_NODES = 200_000

#: libyaml's parser for the pre-scan when present (about 10x faster); loading itself
#: stays with PyYAML's own SafeLoader, whose error positions the messages quote.
_ScanLoader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class InputLimitError(ValueError):
    """A document nests deeper, or expands larger, than the limit; the text names both."""


class YamlLimitError(yaml.YAMLError, InputLimitError):
    """The YAML form, so that callers that report YAML errors report this one too."""


def json_depth(text: str, limit: int = MAX_DEPTH) -> int:
    """Nesting depth of JSON text (strings skipped), stopping early once past `limit`."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    return deepest
        elif c in "]}":
            depth -= 1
    return deepest


def loads_json(text: str | bytes, *, what: str = "the JSON", max_depth: int = MAX_DEPTH) -> Any:
    """`json.loads` that refuses nesting deeper than `max_depth` (InputLimitError)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if json_depth(text, max_depth) > max_depth:
        raise InputLimitError(f"{what} nests deeper than {max_depth} levels; flatten it")
    return json.loads(text)


def load_yaml_all(text: str, *, what: str = "the YAML", max_depth: int = MAX_DEPTH,
                  max_nodes: int = MAX_YAML_NODES) -> list[Any]:
    """Every document of `text`, safely loaded, after checking depth and expanded size.

    Raises YamlLimitError past a limit, and PyYAML's own errors for bad syntax.
    """
    try:
        check_yaml(text, what=what, max_depth=max_depth, max_nodes=max_nodes)
    except YamlLimitError:
        raise
    except yaml.YAMLError:
        pass  # bad syntax: let the loader below report it, with its own positions
    return list(yaml.load_all(text, Loader=yaml.SafeLoader))


def check_yaml(text: str, *, what: str = "the YAML", max_depth: int = MAX_DEPTH,
               max_nodes: int = MAX_YAML_NODES) -> None:
    """One pass over the parser's events: depth, and node count with aliases expanded.

    An anchored node's expanded size is known when it ends, so an alias adds that
    size; an alias to a node still open is a recursive structure, refused too.
    """
    sizes: dict[str, int] = {}
    open_anchors: list[str | None] = []
    counts: list[int] = [0]  # nodes under each open collection, innermost last
    total = 0
    for event in yaml.parse(text, Loader=_ScanLoader):
        if isinstance(event, yaml.AliasEvent):
            anchor = event.anchor or ""
            if anchor in open_anchors:
                raise YamlLimitError(f"{what} refers to itself through the alias *{anchor}; "
                                     "recursive documents are not accepted")
            add = sizes.get(anchor, 1)
        elif isinstance(event, (yaml.ScalarEvent, yaml.SequenceStartEvent,
                                yaml.MappingStartEvent)):
            add = 1
        elif isinstance(event, (yaml.SequenceEndEvent, yaml.MappingEndEvent)):
            inner = counts.pop()
            anchor_done = open_anchors.pop()
            if anchor_done is not None:
                sizes[anchor_done] = inner + 1
            counts[-1] += inner
            continue
        else:
            continue
        total += add
        if total > max_nodes:
            raise YamlLimitError(f"{what} stands for more than {max_nodes} nodes once its "
                                 "aliases are expanded; write it out, or split it")
        if isinstance(event, yaml.ScalarEvent) and event.anchor is not None:
            sizes[event.anchor] = 1
        if isinstance(event, (yaml.SequenceStartEvent, yaml.MappingStartEvent)):
            counts[-1] += 1
            counts.append(0)
            open_anchors.append(event.anchor)
            if len(counts) - 1 > max_depth:
                raise YamlLimitError(f"{what} nests deeper than {max_depth} levels; "
                                     "flatten it")
        else:
            counts[-1] += add


def describe(value: Any) -> str:
    """A YAML value as an error message names it (policy and manifest errors share it)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, int | float):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return repr(value if len(value) <= 60 else value[:57] + "...")
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__

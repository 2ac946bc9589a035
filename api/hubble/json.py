"""Strict proto3 JSON for Hubble's GetFlowsResponse, checked against our schema.

`hubble observe -o json` and Hubble's exporters write one GetFlowsResponse per line in
proto3 JSON. Parsing such a line with the generated message, unknown fields rejected,
proves that what Spyglass writes is something a Hubble client can read: a field Hubble
does not have (Spyglass's own `packets`, say) or a value of the wrong shape (an Int32Value
written as `{"value": 1}` instead of the bare number) fails here instead of in a user's
pipeline.

proto3 JSON accepts both spellings of a field name: the original (`source_port`, which is
what Hubble writes) and the lowerCamelCase json_name (`sourcePort`). Names that are
capitalised in the schema (`IP`, `Type`, `Summary`, `ipVersion`) have only that one
spelling.

Python's json_format is laxer than Go's protojson (Hubble's own) in one way: it reads a
JSON array where a message belongs as an empty message. `_require_objects` closes that gap.
"""

from __future__ import annotations

import json
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor

from spyglass.api.hubble import observer_pb2

_PREFIX = "not a Hubble GetFlowsResponse"
_RESPONSE: Descriptor = observer_pb2.DESCRIPTOR.message_types_by_name["GetFlowsResponse"]


def parse_get_flows_response(text: str) -> observer_pb2.GetFlowsResponse:
    """Parse one proto3 JSON GetFlowsResponse, rejecting anything our schema lacks.

    Raises:
        ValueError: `text` is not one JSON object, names a field the schema does not
            have, repeats a key, or holds a value of the wrong type or an enum name the
            schema lacks; the message names the field and where it is.
    """
    message = observer_pb2.GetFlowsResponse()
    try:
        json_format.Parse(text, message, ignore_unknown_fields=False)
    except json_format.ParseError as err:
        # protobuf appends the list of every valid field name: keep the part that says
        # which field is wrong and where.
        reason = str(err).split("\n", 1)[0].strip()
        raise ValueError(f"{_PREFIX}: {reason}") from err
    _require_objects(json.loads(text), _RESPONSE, "GetFlowsResponse")
    return message


def _require_objects(value: Any, descriptor: Descriptor, path: str) -> None:
    """Raise ValueError unless every message in `value` (already parsed) is a JSON object."""
    if not isinstance(value, dict):
        raise ValueError(f"{_PREFIX}: {path} is a JSON {type(value).__name__}, not an object")
    fields = {**{f.json_name: f for f in descriptor.fields},
              **{f.name: f for f in descriptor.fields}}
    for key, item in value.items():
        field = fields[key]  # json_format has rejected every unknown name
        sub = field.message_type
        if sub is None or item is None or sub.full_name.startswith("google.protobuf."):
            continue  # scalars, nulls and well-known types (their JSON is not an object)
        items = item if field.is_repeated else [item]
        for i, element in enumerate(items):
            where = f"{path}.{key}[{i}]" if field.is_repeated else f"{path}.{key}"
            _require_objects(element, sub, where)

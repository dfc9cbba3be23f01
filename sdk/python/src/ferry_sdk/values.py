"""Conversions between ``google.protobuf.Value``/``Struct`` and plain Python values."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from google.protobuf import struct_pb2


def to_value(v: Any) -> struct_pb2.Value:
    """Python (JSON-like) value -> ``google.protobuf.Value``."""
    out = struct_pb2.Value()
    if v is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(v, bool):
        out.bool_value = v
    elif isinstance(v, (int, float)):
        out.number_value = float(v)
    elif isinstance(v, str):
        out.string_value = v
    elif isinstance(v, Mapping):
        out.struct_value.CopyFrom(to_struct(v))
    elif isinstance(v, (list, tuple)):
        out.list_value.values.extend(to_value(x) for x in v)
    else:
        out.string_value = str(v)
    return out


def to_struct(m: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    for k, v in m.items():
        s.fields[k].CopyFrom(to_value(v))
    return s


def from_value(v: struct_pb2.Value) -> Any:
    """``google.protobuf.Value`` -> Python. Whole numbers come back as ``int`` (a port is 5432, not 5432.0)."""
    kind = v.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "bool_value":
        return v.bool_value
    if kind == "number_value":
        n = v.number_value
        return int(n) if n.is_integer() and abs(n) < 9.0e15 else n
    if kind == "string_value":
        return v.string_value
    if kind == "list_value":
        return [from_value(x) for x in v.list_value.values]
    return from_struct(v.struct_value)


def from_struct(s: struct_pb2.Struct) -> Dict[str, Any]:
    return {k: from_value(v) for k, v in s.fields.items()}


def values_from_proto(m: Mapping[str, struct_pb2.Value]) -> Dict[str, Any]:
    """A ``map<string, google.protobuf.Value>`` -> dict."""
    return {k: from_value(v) for k, v in m.items()}

"""Fill any ROS 2 message with distinct, non-default values, driven by its own field types."""

from __future__ import annotations

import importlib
import inspect
import itertools
from typing import Any

_counter = itertools.count(1)

_SCALARS: dict[str, Any] = {
    "boolean": lambda n: True,
    "octet": lambda n: bytes([n % 256]),
    "char": lambda n: n % 128,
    "float": lambda n: float(n) + 0.5,
    "double": lambda n: float(n) + 0.25,
    "float32": lambda n: float(n) + 0.5,
    "float64": lambda n: float(n) + 0.25,
    "int8": lambda n: -(n % 100),
    "uint8": lambda n: n % 200,
    "int16": lambda n: -n,
    "uint16": lambda n: n,
    "int32": lambda n: -n,
    "uint32": lambda n: n,
    "int64": lambda n: -n,
    "uint64": lambda n: n,
    "string": lambda n: f"value-{n}",
}


def message_classes(module_name: str) -> list[type]:
    """All message classes of a generated ``<pkg>.msg`` module."""
    module = importlib.import_module(module_name)
    return [
        cls
        for _, cls in inspect.getmembers(module, inspect.isclass)
        if hasattr(cls, "get_fields_and_field_types")
    ]


def _message_class(type_name: str) -> type:
    package, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def _value(type_name: str, depth: int) -> Any:
    n = next(_counter)
    if type_name.startswith("sequence<"):
        inner = type_name[len("sequence<") : -1].split(",")[0]
        if inner in ("uint8", "octet"):
            return bytes((n + i) % 256 for i in range(7))
        return [_value(inner, depth + 1) for _ in range(2)]
    if type_name in _SCALARS:
        return _SCALARS[type_name](n)
    if type_name.startswith("string<"):
        return f"v{n}"
    return filled(_message_class(type_name)(), depth + 1)


def filled(msg: Any, depth: int = 0) -> Any:
    """Return ``msg`` with every field set to a distinct non-default value."""
    if depth > 5:
        return msg
    for field, type_name in msg.get_fields_and_field_types().items():
        setattr(msg, field, _value(type_name, depth))
    return msg

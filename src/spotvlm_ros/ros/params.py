"""Declared parameters with descriptions and ranges, read into frozen config dataclasses."""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Any

from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.node import Node
from rclpy.parameter import Parameter


def declare(
    node: Node,
    name: str,
    default: Any,
    description: str,
    *,
    low: float | None = None,
    high: float | None = None,
    read_only: bool = False,
) -> Any:
    """Declare ``name`` with its default, description and (for numbers) range; return its value."""
    descriptor = ParameterDescriptor(description=description, read_only=read_only)
    if low is not None and high is not None:
        if isinstance(default, bool):
            pass
        elif isinstance(default, int):
            descriptor.integer_range = [
                IntegerRange(from_value=int(low), to_value=int(high), step=0)
            ]
        elif isinstance(default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(low), to_value=float(high), step=0.0)
            ]
    value = node.declare_parameter(name, default, descriptor).value
    _DECLARED.setdefault(node, []).append(name)
    return value


_DECLARED: weakref.WeakKeyDictionary[Node, list[str]] = weakref.WeakKeyDictionary()


def declared(node: Node) -> list[str]:
    """The parameters ``node`` declared through :func:`declare`, in order."""
    return list(_DECLARED.get(node, []))


def read_once(
    node: Node,
    names: Iterable[str],
    *,
    refuse: bool,
    applies: str,
    active: Callable[[], bool] = lambda: True,
) -> None:
    """Say what a run-time ``ros2 param set`` of ``names`` does, since ``node`` reads them once.

    ``refuse``: the change is refused with ``applies`` as the reason (a node that reads its
    parameters at start-up only: a silent accept would leave the old value in force).
    Otherwise it is accepted, and while ``active()`` a warning says it ``applies`` later
    (svlm_node reads its parameters at each configure).
    """
    watched = set(names)

    def on_set(params: list[Parameter]) -> SetParametersResult:
        changed = sorted(p.name for p in params if p.name in watched)
        if not changed:
            return SetParametersResult(successful=True)
        what = f"{node.get_name()}: {', '.join(changed)} {applies}"
        if refuse:
            node.get_logger().warning(f"refused to set {what}")
            return SetParametersResult(successful=False, reason=what)
        if active():
            node.get_logger().warning(f"set {what}")
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(on_set)


STARTUP_ONLY = (
    "read at start-up only: set it in the params file (params_file:=) or a launch argument, "
    "then restart the node"
)
"""Why a start-up parameter is refused at run time."""

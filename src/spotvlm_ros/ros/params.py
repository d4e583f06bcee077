"""Declared parameters, described once in spotvlm_ros.parameters, read into frozen config
dataclasses."""

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

from spotvlm_ros.parameters import parameter


def declare(node: Node, kind: str, name: str, *, read_only: bool = False) -> Any:
    """Declare ``kind``'s parameter ``name`` on ``node`` as spotvlm_ros.parameters describes
    it (default, description, range for numbers); return its value."""
    spec = parameter(kind, name)
    descriptor = ParameterDescriptor(description=spec.description, read_only=read_only)
    if spec.low is not None and spec.high is not None:
        if isinstance(spec.default, bool):
            pass
        elif isinstance(spec.default, int):
            descriptor.integer_range = [
                IntegerRange(from_value=int(spec.low), to_value=int(spec.high), step=0)
            ]
        elif isinstance(spec.default, float):
            descriptor.floating_point_range = [
                FloatingPointRange(from_value=float(spec.low), to_value=float(spec.high), step=0.0)
            ]
    value: Any = node.declare_parameter(name, spec.default, descriptor).value
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

    def on_set(params: list[Any]) -> SetParametersResult:
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

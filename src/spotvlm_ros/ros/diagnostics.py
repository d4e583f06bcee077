"""diagnostic_msgs on /diagnostics, the way rqt and Foxglove read them: one status per
concern, named ``<node>: <concern>``, with levels a person can act on and key/value pairs
whose keys carry their units. Under a namespace (one graph per camera) the name starts with
it, ``robot1/cam_front/<node>: <concern>``, so that the graphs' statuses stay apart."""

from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node

from spotvlm_ros.ros import topics

OK, WARN, ERROR = DiagnosticStatus.OK, DiagnosticStatus.WARN, DiagnosticStatus.ERROR


def status(
    name: str, hardware_id: str, level: bytes, message: str, values: dict[str, Any]
) -> DiagnosticStatus:
    """One DiagnosticStatus; floats are written with 3 decimals, None as an empty value."""
    pairs = []
    for key, value in values.items():
        text = "" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)
        pairs.append(KeyValue(key=key, value=text))
    return DiagnosticStatus(
        level=level, name=name, message=message, hardware_id=hardware_id, values=pairs
    )


class DiagnosticsPublisher:
    """Publishes a node's statuses on /diagnostics."""

    def __init__(self, node: Node) -> None:
        self._node = node
        self._publisher = node.create_publisher(DiagnosticArray, topics.DIAGNOSTICS, 10)

    def publish(self, statuses: list[DiagnosticStatus]) -> None:
        """One DiagnosticArray stamped now."""
        prefix = self._node.get_namespace().strip("/")
        if prefix:
            for item in statuses:
                item.name = f"{prefix}/{item.name}"
        array = DiagnosticArray(status=statuses)
        array.header.stamp = self._node.get_clock().now().to_msg()
        self._publisher.publish(array)

"""QoS profiles: sensor data for cameras, reliable for the graph's own results."""

from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

CAMERA = qos_profile_sensor_data
"""Best effort, keep last 5: what camera drivers publish with."""

RESULTS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=10,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)
"""Frames, results, context updates and answers: reliable, so nothing is silently lost."""

ANSWERS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=20,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""Final answers: reliable, and the last 20 (10 s at 2 Hz) kept for a subscriber that asks
for them (transient local): after context_manager is respawned, its first answers go out
before every subscriber has discovered the new publisher, and would otherwise be lost to
them. A volatile subscriber (``ros2 topic echo`` by default) still matches."""

LATCHED = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
"""The latest context update: a late-joining SVLM node still gets it."""

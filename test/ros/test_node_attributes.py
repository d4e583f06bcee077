"""No node of the package assigns an attribute that rclpy's Node or LifecycleNode keeps for
itself: svlm_node's own ``_subscriptions`` list once replaced rclpy's, and cleanup then
destroyed only every other subscription (the orphan kept the executor spinning)."""

from __future__ import annotations

import ast
from pathlib import Path

NODES = Path(__file__).resolve().parents[2] / "src" / "spotvlm_ros" / "nodes"


def assigned_attributes(path: Path) -> set[str]:
    """Every ``self.NAME = ...`` in ``path``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "self"
            and isinstance(node.ctx, ast.Store)
        ):
            names.add(node.attr)
    return names


def test_no_node_shadows_an_rclpy_node_attribute() -> None:
    import rclpy
    from rclpy.context import Context
    from rclpy.lifecycle import LifecycleNode

    context = Context()
    rclpy.init(context=context)
    try:
        probe = LifecycleNode("attribute_probe", context=context)
        reserved = set(vars(probe)) | set(dir(probe))
        probe.destroy_node()
    finally:
        rclpy.shutdown(context=context)
    files = sorted(NODES.glob("*.py"))
    assert len(files) >= 6
    clashes = {f.name: sorted(assigned_attributes(f) & reserved) for f in files}
    assert not any(clashes.values()), clashes

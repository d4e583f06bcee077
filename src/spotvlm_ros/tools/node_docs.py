"""Generate docs/nodes.md from the nodes' source: every declared parameter (default,
description, range) and every topic, so the reference cannot drift from the code.

    python -m spotvlm_ros.tools.node_docs docs/nodes.md     # write
    python -m spotvlm_ros.tools.node_docs --check docs/nodes.md
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

NODES = ("camera_ingest", "svlm_node", "cloud_bridge", "context_manager", "evaluator", "bag_player")
NODE_DIR = Path(__file__).resolve().parents[1] / "nodes"
TOPICS_FILE = Path(__file__).resolve().parents[1] / "ros" / "topics.py"


def _topics() -> dict[str, str]:
    tree = ast.parse(TOPICS_FILE.read_text())
    return {
        t.id: ast.literal_eval(n.value)
        for n in tree.body
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }


def _text(node: ast.AST) -> str:
    try:
        return repr(ast.literal_eval(node))
    except ValueError:
        return ast.unparse(node)


def _describe(path: Path, topics: dict[str, str]) -> tuple[str, list[list[str]], list[list[str]]]:
    source = path.read_text()
    tree = ast.parse(source)
    doc = (ast.get_docstring(tree) or "").split("\n\n")[0].replace("\n", " ")
    params: list[list[str]] = []
    io: list[list[str]] = []
    for call in ast.walk(tree):
        if not isinstance(call, ast.Call):
            continue
        name = (
            call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
        )
        args = call.args
        if name in ("declare", "d", "declare_and_read") and len(args) >= 3:
            offset = 1 if name == "declare" else 0
            key = args[offset]
            if isinstance(key, ast.Constant):
                pname = key.value
            elif isinstance(key, ast.Name) and key.id == "MODEL_PARAMETER":
                pname = "model_path"
            else:
                continue
            default = _text(args[offset + 1])
            desc = _text(args[offset + 2]).strip("'\"") if len(args) > offset + 2 else ""
            rng = [k for k in call.keywords if k.arg in ("low", "high")]
            extra = args[offset + 3 :]
            bounds = rng or extra
            span = " .. ".join(_text(b.value if isinstance(b, ast.keyword) else b) for b in bounds)
            params.append([f"`{pname}`", f"`{default}`", span, desc])
        if name == "DiagnosticsPublisher":  # ros/diagnostics.py: DiagnosticArray on it
            io.append(["publishes", f"`{topics['DIAGNOSTICS']}`", "`DiagnosticArray`"])
        publishers = ("create_publisher", "create_lifecycle_publisher", "detection_publisher")
        if name in (*publishers, "create_subscription", "sub") and len(args) >= 2:
            # detection_publisher(node, topic, qos) makes a vision_msgs Detection2DArray one
            msg = "Detection2DArray" if name == "detection_publisher" else ast.unparse(args[0])
            topic = args[1]
            if isinstance(topic, ast.Attribute) and topic.attr in topics:
                tname = topics[topic.attr]
            elif isinstance(topic, ast.Constant):
                tname = topic.value
            elif path.stem == "camera_ingest":  # the camera, found by its transport
                tname, msg = "input_topic or input_topic/compressed", "Image or CompressedImage"
            else:
                tname = f"(parameter: {ast.unparse(topic)})"
            kind = "publishes" if name in publishers else "subscribes"
            io.append([kind, f"`{tname}`", f"`{msg}`"])
    return doc, params, io


def render() -> str:
    """The whole Markdown page."""
    topics = _topics()
    out = [
        "# Nodes, topics and parameters",
        "",
        "Generated from the source by `python -m spotvlm_ros.tools.node_docs docs/nodes.md`; "
        "a test fails when this page and the code disagree. Topic names without a leading "
        "`/` are relative to the node's namespace. Parameter defaults are also in "
        "`config/<node>.yaml`.",
        "",
    ]
    for node in NODES:
        doc, params, io = _describe(NODE_DIR / f"{node}.py", topics)
        out += [f"## {node}", "", doc, "", "| direction | topic | type |", "|---|---|---|"]
        out += [f"| {' | '.join(row)} |" for row in io]
        out += ["", "| parameter | default | range | description |", "|---|---|---|---|"]
        out += [f"| {' | '.join(row)} |" for row in params]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Write or check the page."""
    parser = argparse.ArgumentParser(description="Generate the node reference page.")
    parser.add_argument("path", type=Path, help="the page to write, e.g. docs/nodes.md")
    parser.add_argument("--check", action="store_true", help="only check it is up to date")
    args = parser.parse_args(argv)
    path: Path = args.path
    text = render()
    if args.check:
        if not path.is_file() or path.read_text() != text:
            print(f"{path} is out of date: run python -m spotvlm_ros.tools.node_docs {path}")
            return 1
        return 0
    path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

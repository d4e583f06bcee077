"""The generated node reference is up to date with the code."""

from __future__ import annotations

from pathlib import Path

from spotvlm_ros.tools.node_docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_docs_nodes_md_matches_the_code() -> None:
    page = (ROOT / "docs" / "nodes.md").read_text()
    assert page == render(), (
        "docs/nodes.md is stale: python -m spotvlm_ros.tools.node_docs docs/nodes.md"
    )
    for node in ("camera_ingest", "svlm_node", "cloud_bridge", "context_manager", "evaluator"):
        assert f"## {node}" in page
    assert "`max_delay_s`" in page
    assert "`spotvlm/answer`" in page

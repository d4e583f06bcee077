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


def _setup_requires() -> list[str]:
    import ast

    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "REQUIRES":
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no REQUIRES")


def test_the_readmes_workspace_install_line_is_setup_pys_ranges_and_the_lock_meets_them() -> None:
    import shlex

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    requires = _setup_requires()
    line = next(
        line
        for line in (ROOT / "README.md").read_text().splitlines()
        if "pip install" in line and "torch" in line
    )
    assert shlex.split(line.split("#")[0])[2:] == requires
    for lock in sorted((ROOT / "locks").glob("*.lock")):
        if lock.name.endswith("-wheelhouse.lock"):
            continue
        pins = {}
        for row in lock.read_text().splitlines():
            if "==" in row and not row.startswith("#"):
                name, version = row.split(";")[0].split("==")
                pins[canonicalize_name(name.strip())] = version.strip().split()[0]
        for text in requires:
            requirement = Requirement(text)
            pinned = pins.get(canonicalize_name(requirement.name))
            assert pinned is not None, f"{requirement.name} is not in {lock.name}"
            assert requirement.specifier.contains(pinned), (
                f"{lock.name} pins {requirement.name} {pinned}"
            )


def test_every_tested_distro_has_its_lock_and_wheelhouse_lock() -> None:
    """scripts/dev's DISTROS each have locks/<distro>.in, .lock and -wheelhouse.lock."""
    import re

    script = (ROOT / "scripts" / "dev").read_text()
    match = re.search(r"^DISTROS=\(([^)]*)\)", script, re.MULTILINE)
    assert match, "scripts/dev has no DISTROS"
    distros = match.group(1).split()
    assert distros[0] == "jazzy", distros  # the LTS is the default
    for distro in distros:
        for suffix in (".in", ".lock", "-wheelhouse.lock"):
            assert (ROOT / "locks" / f"{distro}{suffix}").is_file(), f"{distro}{suffix}"


def test_package_xml_states_the_same_ranges_for_its_rosdep_keys() -> None:
    import xml.etree.ElementTree as ET

    from packaging.requirements import Requirement

    ranges = {Requirement(r).name: Requirement(r).specifier for r in _setup_requires()}
    depends = {e.text: e.attrib for e in ET.parse(ROOT / "package.xml").getroot()}
    numpy = depends["python3-numpy"]
    assert f">={numpy['version_gte']}" in str(ranges["numpy"])
    assert f"<{numpy['version_lt']}" in str(ranges["numpy"])
    assert f">={depends['python3-opencv']['version_gte']}" in str(ranges["opencv-python-headless"])
    # the pip-only ones are listed in its comment, range and all
    text = (ROOT / "package.xml").read_text()
    pip_only = [r for r in _setup_requires() if not r.startswith(("numpy", "opencv"))]
    assert all(r in text for r in pip_only), [r for r in pip_only if r not in text]

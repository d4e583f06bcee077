"""Keep docs/benchmarks.md up to date: each benchmark owns one marked section of it."""

from __future__ import annotations

from pathlib import Path

from spotvlm_ros.core.health import percentile  # noqa: F401 - re-exported for the scripts

HEADER = (
    "# Benchmarks\n\nMeasured figures, each written by the script named in its section "
    "(run it again to refresh that section). Timing thresholds are never unit tests.\n"
)


def update_section(path: Path, name: str, body: str) -> None:
    """Replace (or append) the section ``name`` of the Markdown file at ``path``."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    text = path.read_text(encoding="utf-8") if path.is_file() else HEADER
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")

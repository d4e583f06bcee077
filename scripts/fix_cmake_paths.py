"""Point the ROS 2 wheels' exported CMake targets at this venv's Python and NumPy headers.

The ``ros-*`` message wheels on PyPI export CMake targets that name the wheel builder's
interpreter (``/opt/python/cp311-cp311/...``). CMake rejects those non-existent include
directories when another interface package (spotvlm_msgs) is built against them.
Rewriting the two paths is idempotent; run it after every install into the venv.
"""

from __future__ import annotations

import pathlib
import sys
import sysconfig

import numpy

BUILDER_PYTHON_INCLUDE = "/opt/python/cp311-cp311/include/python3.11"
BUILDER_NUMPY_INCLUDE = "/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include"


def main() -> int:
    """Rewrite the builder paths under ``<prefix>/share``; print how many files changed."""
    prefix = pathlib.Path(sys.prefix)
    python_include = sysconfig.get_paths()["include"]
    if not pathlib.Path(python_include, "Python.h").is_file():
        print(
            f"error: Python headers not found at {python_include} (Python.h); "
            "install them (Debian: apt-get install python3-dev) and run the set-up again",
            file=sys.stderr,
        )
        return 1
    replacements = {
        BUILDER_PYTHON_INCLUDE: python_include,
        BUILDER_NUMPY_INCLUDE: numpy.get_include(),
    }
    changed = 0
    for path in (prefix / "share").rglob("*.cmake"):
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
        new = text
        for old, repl in replacements.items():
            new = new.replace(old, repl)
        if new != text:
            path.write_text(new, encoding="utf-8", errors="surrogateescape")
            changed += 1
    print(f"cmake export fix: {changed} file(s) rewritten under {prefix / 'share'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The exit statuses the nodes and the launch files agree on (no ROS imports: the launch
files read them before any node exists)."""

from __future__ import annotations

EXIT_STARTUP_ERROR = 3
"""Exit status of a node that cannot start (bad parameter, missing model): the launch file
stops the whole graph on it instead of respawning the node into the same error."""

EXIT_NOTHING_SCORED = 4
"""Exit status of the evaluator when it scored no frame (a crash exits 1)."""

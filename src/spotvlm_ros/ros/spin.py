"""The one ``main`` every node shares: init, spin, and shut down in ``finally``."""

from __future__ import annotations

import os
from collections.abc import Callable

import rclpy
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node with ``factory`` and spin it until Ctrl-C or shutdown.

    Every node spins a single-threaded executor: its callbacks are short, and the long
    work (inference, LVLM calls, overlay drawing, bag playback) runs in threads of the
    nodes' own. rclpy's MultiThreadedExecutor costs more than it gives here: in the graph
    benchmark (docs/benchmarks.md) it took results and frames up to 0.5 s late on two
    cores, against a few milliseconds for the single-threaded one. The environment
    variable ``SPOTVLM_EXECUTOR=multi`` selects it anyway (for that comparison).

    A node with a ``close()`` method gets it called before it is destroyed. Returns 1 when
    the node could not start (its error is logged), else 0.
    """
    rclpy.init(args=args)
    node: Node | None = None
    try:
        executor = make_executor(os.environ.get(EXECUTOR_VARIABLE, "single"))
        node = factory()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        rclpy.logging.get_logger("spotvlm").fatal(str(exc))
        return 1
    finally:
        if node is not None:
            close = getattr(node, "close", None)
            if callable(close):
                close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


EXECUTOR_VARIABLE = "SPOTVLM_EXECUTOR"


def make_executor(kind: str) -> Executor:
    """``single`` (the default) or ``multi`` (rclpy's MultiThreadedExecutor, 2 threads)."""
    if kind == "single":
        return SingleThreadedExecutor()
    if kind == "multi":
        return MultiThreadedExecutor(num_threads=2)
    raise StartupError(f"{EXECUTOR_VARIABLE} must be 'single' or 'multi', got {kind!r}")


class StartupError(RuntimeError):
    """A node cannot start (missing model, bad parameter); the message says what to change."""

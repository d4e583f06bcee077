"""The one ``main`` every node shares: init, spin, and shut down in ``finally``."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node


def run_node(factory: Callable[[], Node], args: list[str] | None = None, threads: int = 2) -> int:
    """Create the node with ``factory`` and spin it until Ctrl-C or shutdown.

    A node with a ``close()`` method gets it called before it is destroyed. Returns 1 when
    the node could not start (its error is logged), else 0.
    """
    rclpy.init(args=args)
    node: Node | None = None
    try:
        node = factory()
        executor = MultiThreadedExecutor(num_threads=threads)
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


class StartupError(RuntimeError):
    """A node cannot start (missing model, bad parameter); the message says what to change."""

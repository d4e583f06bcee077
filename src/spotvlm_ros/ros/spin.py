"""The one ``main`` every node shares: init, spin, and shut down in ``finally``."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from types import FrameType

import rclpy
from rclpy.executors import (
    Executor,
    ExternalShutdownException,
    MultiThreadedExecutor,
    SingleThreadedExecutor,
)
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions
from rclpy.task import Future

from spotvlm_ros.exit_codes import EXIT_STARTUP_ERROR
from spotvlm_ros.ros.params import STARTUP_ONLY, declared, read_once

WAKE_S = 0.2
"""The longest the executor waits before Python sees a pending signal [s]."""


def run_node(factory: Callable[[], Node], args: list[str] | None = None) -> int:
    """Create the node with ``factory`` and spin it until Ctrl-C, SIGTERM or shutdown.

    Every node spins a single-threaded executor: its callbacks are short, and the long
    work (inference, LVLM calls, overlay drawing, bag playback) runs in threads of the
    nodes' own. rclpy's MultiThreadedExecutor costs more than it gives here: in the graph
    benchmark (docs/benchmarks.md) it took results and frames up to 0.5 s late on two
    cores, against a few milliseconds for the single-threaded one. The environment
    variable ``SPOTVLM_EXECUTOR=multi`` selects it anyway (for that comparison).

    rclpy's own signal handler would shut the context down at the first SIGINT, before
    the node could log its totals: every node then printed "Failed to publish log message
    to rosout". Here SIGINT and SIGTERM raise KeyboardInterrupt (the executor waits at
    most WAKE_S at a time, so that it is seen); the node's ``close()`` runs with the
    context still valid, and the context goes last.

    Returns EXIT_STARTUP_ERROR when the node could not start (its error is logged), else
    the node's ``exit_code`` attribute (0 when it has none): a node whose run produced
    nothing usable (the evaluator with nothing scored) exits non-zero.
    """
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    # Also SIGINT: a process started in the background by a non-interactive shell inherits
    # SIGINT ignored, and launch stops its nodes with SIGINT (seen: every node then waited
    # for launch's SIGTERM five seconds later).
    previous = signal.signal(signal.SIGTERM, _interrupt)
    previous_int = signal.signal(signal.SIGINT, _interrupt)
    node: Node | None = None
    try:
        executor = make_executor(os.environ.get(EXECUTOR_VARIABLE, "single"))
        node = factory()
        # parameters are read once: a run-time `ros2 param set` is refused with the reason
        # (or, for svlm_node, accepted and said to apply at the next configure)
        guard = getattr(node, "guard_parameters", None)
        if callable(guard):
            guard()
        else:
            read_once(node, declared(node), refuse=True, applies=STARTUP_ONLY)
        executor.add_node(node)
        done = getattr(node, "done", None)  # a node that finishes by itself (the bag player)
        # Short waits, so that Python's own SIGINT/SIGTERM handling gets to run
        while not (isinstance(done, Future) and done.done()):
            executor.spin_once(timeout_sec=WAKE_S)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except StartupError as exc:
        rclpy.logging.get_logger("spotvlm").fatal(str(exc))
        return EXIT_STARTUP_ERROR
    finally:
        # a second Ctrl-C while closing must not leave a traceback behind
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            if node is not None:
                close = getattr(node, "close", None)
                if callable(close):
                    close()
                node.destroy_node()
        finally:
            rclpy.try_shutdown()  # type: ignore[attr-defined, unused-ignore]
            # The handlers stay ignoring: the process is ending, and a Ctrl-C in a terminal
            # reaches every node twice (from the terminal, then forwarded by launch). Put
            # back, the second one killed the interpreter on its way out (exit -2, or a
            # KeyboardInterrupt traceback from torch's exit hooks; seen with three graphs).
            del previous, previous_int
    return int(getattr(node, "exit_code", 0))


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


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

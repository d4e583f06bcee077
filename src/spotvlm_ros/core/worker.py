"""The one concurrency pattern of the nodes: a worker thread fed through a latest slot.

svlm_node runs inference on it and context_manager draws overlays on it. The executor's
thread only offers items, so it never waits for the slow work: parameter requests, context
updates and decisions go on while the model (or the drawing) is busy. At most one item
waits; a newer one supersedes it, and the superseded item is handed to ``on_superseded``
(svlm_node answers it as dropped, context_manager counts a skipped overlay), never queued
without bound and never silently lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from spotvlm_ros.core.engine import FrameSlot

T = TypeVar("T")


class LatestWorker(Generic[T]):
    """Runs ``handle`` on the newest offered item, one at a time, in its own thread.

    ``handle`` must not raise (an exception is passed to ``on_error`` and the worker goes
    on); ``on_superseded`` runs in the thread that offered the newer item.
    """

    def __init__(
        self,
        name: str,
        handle: Callable[[T], None],
        on_superseded: Callable[[T], None],
        on_error: Callable[[T, Exception], None],
    ) -> None:
        self._handle = handle
        self._on_superseded = on_superseded
        self._on_error = on_error
        self._slot: FrameSlot[T] = FrameSlot()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def offer(self, item: T) -> None:
        """Hand ``item`` to the worker; an item still waiting is superseded."""
        with self._ready:
            superseded = self._slot.offer(item)
            self._ready.notify()
        if superseded is not None:
            self._on_superseded(superseded)

    def clear(self) -> T | None:
        """Withdraw the waiting item (returned), e.g. when the node is deactivated."""
        with self._ready:
            return self._slot.take()

    def withdraw(self, match: Callable[[T], bool]) -> T | None:
        """Withdraw the waiting item if ``match`` says so (returned); the item in progress,
        if any, is not touched."""
        with self._ready:
            waiting = self._slot.waiting
            if waiting is None or not match(waiting):
                return None
            return self._slot.take()

    def close(self, timeout: float = 30.0) -> None:
        """Stop after the item in progress (a waiting one is withdrawn, not handled)."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout=timeout)

    @property
    def alive(self) -> bool:
        """Whether the thread still runs."""
        return self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._ready:
                while self._slot.waiting is None and not self._closing:
                    self._ready.wait()
                if self._closing:
                    return
                item = self._slot.take()
            assert item is not None
            try:
                self._handle(item)
            except Exception as exc:  # the worker must survive anything the work throws
                self._on_error(item, exc)

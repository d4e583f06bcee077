"""A hold on the SVLM's decoding, for tests that must observe svlm_node in the middle of a
frame (for example, that it answers parameter requests while the model is busy) without
guessing how long the model takes on the machine at hand.

With ``SPOTVLM_TEST_HOLD_DIR=D`` in svlm_node's environment, decoding pauses after the first
new token of every frame: the node writes ``D/holding-<seq>`` and waits until
``D/release-<seq>`` exists (or the node is closing). It is never set in normal use, and
svlm_node warns at configure when it is.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

HOLD_DIR_VARIABLE = "SPOTVLM_TEST_HOLD_DIR"


class GenerationHold:
    """Pauses decoding at a file gate; ``closing`` is set to let every waiter go."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.closing = threading.Event()

    @classmethod
    def from_environment(cls) -> GenerationHold | None:
        """The hold the environment asks for, or None (the normal case)."""
        folder = os.environ.get(HOLD_DIR_VARIABLE, "")
        return cls(Path(folder)) if folder else None

    def clear(self) -> None:
        """Forget the gate files of an earlier run (a respawned camera counts from 0 again)."""
        for stale in [*self.folder.glob("holding-*"), *self.folder.glob("release-*")]:
            stale.unlink(missing_ok=True)

    def for_frame(self, seq: int) -> Callable[[int], None]:
        """The ``on_token`` callback that holds frame ``seq`` after its first token."""

        def on_token(count: int) -> None:
            if count != 1:
                return
            self.folder.mkdir(parents=True, exist_ok=True)
            (self.folder / f"holding-{seq}").touch()
            release = self.folder / f"release-{seq}"
            while not release.exists() and not self.closing.wait(0.02):
                pass

        return on_token

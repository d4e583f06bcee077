"""The frames context_manager has received and not yet answered, kept in a small file.

A context_manager that is killed takes its pending frames with it. The respawned one reads
its predecessor's ledger and counts as lost (a) the frames that were pending at the kill and
(b) the frames camera_ingest admitted while no context_manager listened (the gap in
``Frame.seq`` before the first frame it receives). Nothing else can know them: the answers
were never published.

A ledger belongs to the process that launched the node (its parent: ``ros2 launch`` or the
runner), so a node respawned by the same launch finds it, and a later launch does not
mistake an old run's frames for its own. A clean shutdown removes it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from spotvlm_ros.core.types import Stamp


@dataclass
class LedgerState:
    """The last frame number received and the frames received but not answered."""

    last_seq: int | None = None
    pending: dict[Stamp, int] = field(default_factory=dict)  # frame stamp -> Frame.seq


@dataclass(frozen=True)
class Losses:
    """What a respawned node learns from its predecessor's ledger."""

    pending: tuple[int, ...]  # Frame.seq of the frames pending at the kill
    last_seq: int | None

    def gap(self, first_seq: int) -> int | None:
        """Frames admitted while no node listened, given the first one received after the
        restart; None when camera_ingest restarted too (its numbering began again)."""
        if self.last_seq is None:
            return 0
        if first_seq <= self.last_seq:
            return None
        return first_seq - self.last_seq - 1


def launcher_identity(pid: int | None = None) -> str:
    """``<parent pid>-<parent start time>``: the launching process, robust to pid reuse."""
    ppid = os.getppid() if pid is None else pid
    return f"{ppid}-{_start_ticks(ppid)}"


def _start_ticks(pid: int) -> str:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    # the command name (field 2) may hold spaces and parentheses: split after its end
    fields = stat[stat.rfind(")") + 2 :].split()
    return fields[19] if len(fields) > 19 else "0"


class FrameLedger:
    """A node's ledger file; ``admit`` and ``answer`` update it, ``flush`` writes it."""

    def __init__(self, directory: Path, node_name: str, domain: str, identity: str) -> None:
        self.directory = directory
        self._stem = f"{re.sub(r'[^A-Za-z0-9_]+', '_', node_name).strip('_')}.{domain}"
        self.path = directory / f"{self._stem}.{identity}.json"
        self.identity = identity
        self.state = LedgerState()
        self._dirty = False

    def previous(self) -> Losses | None:
        """The predecessor's losses when this node was respawned by the same launcher, and
        start this ledger where it left off; None on a first start."""
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return Losses(pending=(), last_seq=None)  # unreadable: count nothing, say so
        last = data.get("last_seq")
        pending = tuple(sorted(int(s) for s in data.get("pending", {}).values()))
        self.state = LedgerState(last_seq=last)
        self._dirty = True
        return Losses(pending=pending, last_seq=last)

    def leftovers(self) -> list[Path]:
        """Ledgers of this node from launchers that no longer run (a crashed launch); they
        say nothing about this run and are removed."""
        gone = []
        for path in self.directory.glob(f"{self._stem}.*.json"):
            identity = path.name[len(self._stem) + 1 : -len(".json")]
            pid = identity.split("-", 1)[0]
            if path == self.path or not pid.isdigit():
                continue
            if launcher_identity(int(pid)) != identity:
                gone.append(path)
        for path in gone:
            path.unlink(missing_ok=True)
        return gone

    def admit(self, stamp: Stamp, seq: int) -> None:
        """A frame received."""
        self.state.pending[stamp] = seq
        if self.state.last_seq is None or seq > self.state.last_seq:
            self.state.last_seq = seq
        self._dirty = True

    def answer(self, stamp: Stamp) -> None:
        """A frame's final answer published."""
        if self.state.pending.pop(stamp, None) is not None:
            self._dirty = True

    def flush(self) -> None:
        """Write the ledger if it changed (atomically: a kill mid-write leaves the old one)."""
        if not self._dirty:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        data = {
            "last_seq": self.state.last_seq,
            "pending": {str(k): v for k, v in self.state.pending.items()},
        }
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.path)
        self._dirty = False

    def remove(self) -> None:
        """A clean shutdown: nothing is pending, nothing to hand over."""
        self.path.unlink(missing_ok=True)

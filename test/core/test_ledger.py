"""The frame ledger a respawned context_manager counts its predecessor's losses from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from spotvlm_ros.core.ledger import FrameLedger, launcher_identity


def ledger(tmp_path: Path, identity: str = "42-7") -> FrameLedger:
    return FrameLedger(tmp_path, "/robot/context_manager", "3", identity)


def test_a_respawned_node_learns_what_was_pending_and_where_numbering_stood(
    tmp_path: Path,
) -> None:
    first = ledger(tmp_path)
    assert first.previous() is None  # a first start
    for seq, stamp in enumerate([100, 200, 300, 400]):
        first.admit(stamp, seq)
    first.answer(100)
    first.answer(300)
    first.flush()
    # killed here: the next process under the same launcher reads it
    second = ledger(tmp_path)
    losses = second.previous()
    assert losses is not None
    assert losses.pending == (1, 3)
    assert losses.gap(4) == 0  # the next frame was the next number: none missed
    assert losses.gap(6) == 2  # seq 4 and 5 came while nobody listened
    assert losses.gap(2) is None  # camera_ingest restarted: its numbers began again
    # the second ledger carries on from the last number, with nothing pending
    second.flush()
    third = ledger(tmp_path).previous()
    assert third is not None and third.pending == () and third.last_seq == 3


def test_an_answer_for_a_frame_not_in_the_ledger_changes_nothing(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    book.admit(5, 0)
    book.flush()
    book.answer(6)
    book.flush()
    assert ledger(tmp_path).previous().pending == (0,)  # type: ignore[union-attr]


def test_a_clean_stop_leaves_nothing_for_the_next_run(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    book.admit(5, 0)
    book.flush()
    book.remove()
    assert ledger(tmp_path).previous() is None


def test_another_launchers_ledger_is_not_this_runs_and_a_dead_launchers_is_removed(
    tmp_path: Path,
) -> None:
    old = ledger(tmp_path, identity="999999999-1")  # no such process
    old.admit(5, 0)
    old.flush()
    mine = ledger(tmp_path, identity=launcher_identity())
    assert mine.previous() is None
    assert mine.leftovers() == [old.path]
    assert not old.path.exists()
    # a ledger of a launcher that still runs (another graph) is left alone
    alive = ledger(tmp_path, identity=launcher_identity(os.getpid()))
    alive.admit(5, 0)
    alive.flush()
    assert mine.leftovers() == []
    assert alive.path.exists()


def test_the_launcher_identity_is_the_parent_with_its_start_time() -> None:
    code = "from spotvlm_ros.core.ledger import launcher_identity; print(launcher_identity())"
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    pid, start = child.stdout.strip().split("-")
    assert int(pid) == os.getpid()
    assert start.isdigit() and start != "0"
    assert launcher_identity(os.getpid()) == child.stdout.strip()


def test_an_unreadable_ledger_counts_nothing(tmp_path: Path) -> None:
    book = ledger(tmp_path)
    book.path.write_text("{not json")
    losses = ledger(tmp_path).previous()
    assert losses is not None and losses.pending == () and losses.gap(3) == 0

"""The per-frame engine (core.engine, core.worker) with a fake clock: times are arguments."""

from __future__ import annotations

import threading

import pytest

from spotvlm_ros.core.compression import ContextCompressor
from spotvlm_ros.core.context import ContextConfig, ReplacementOutcome
from spotvlm_ros.core.engine import (
    ContextState,
    FrameSlot,
    InputRules,
    RecentFrames,
    RequestEnd,
    UploadRule,
    Uploads,
    svlm_inputs,
    svlm_unsure,
    too_late,
)
from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig
from spotvlm_ros.core.types import NS_PER_S, Box, Roi, Source
from spotvlm_ros.core.worker import LatestWorker

S = NS_PER_S
CAR = (Roi("car", Box(0, 0, 10, 10)),)
BUS = (Roi("bus", Box(5, 5, 50, 50)),)


def test_the_newest_frame_wins_the_slot() -> None:
    slot: FrameSlot[int] = FrameSlot()
    assert slot.offer(1) is None
    assert slot.offer(2) == 1  # superseded: the caller answers it as dropped
    assert slot.take() == 2
    assert slot.take() is None


def test_a_frame_not_started_within_the_deadline_is_too_late() -> None:
    assert too_late(10 * S, 11 * S, 1.0) is None  # exactly at the deadline: in time
    why = too_late(10 * S, 11 * S + 1, 1.0)
    assert why is not None and "deadline" in why


def test_rois_come_only_from_lvlm_answers_that_entered_the_history() -> None:
    state = ContextState(ContextConfig(max_entries=2, delta=3.0))
    assert state.on_lvlm(10 * S, "a car", CAR, 12 * S) is ReplacementOutcome.INSERTED
    assert state.rois == (10 * S, CAR)
    # stale (5 s > delta): neither the history nor the ROIs change
    assert state.on_lvlm(11 * S, "a bus", BUS, 16 * S) is ReplacementOutcome.STALE
    assert state.rois == (10 * S, CAR)
    # an answer for an older frame than the accepted one: superseded, ROIs kept
    assert state.on_lvlm(9 * S, "a bus", BUS, 11 * S) is ReplacementOutcome.SUPERSEDED
    assert state.rois == (10 * S, CAR)
    state.on_svlm(12 * S, "q", "a car")
    assert state.on_lvlm(12 * S, "a bus", BUS, 13 * S) is ReplacementOutcome.REPLACED
    assert state.rois == (12 * S, BUS)
    assert [t.source for t in state.history.entries()] == [Source.LVLM]  # it replaced the SVLM turn


def inputs_for(stamp: int, state: ContextState, rules: InputRules) -> object:
    return svlm_inputs(stamp, state.history, state.rois, ContextCompressor(96), rules)


def test_svlm_inputs_use_rois_of_an_earlier_frame_no_older_than_the_limit() -> None:
    state = ContextState(ContextConfig(max_entries=2, delta=10.0))
    state.on_lvlm(10 * S, "a car", CAR, 11 * S)
    rules = InputRules(roi_max_age_s=2.0)
    same = svlm_inputs(10 * S, state.history, state.rois, ContextCompressor(96), rules)
    assert same.rois == () and not same.ggvr  # not the frame's own (nor a newer frame's)
    young = svlm_inputs(12 * S, state.history, state.rois, ContextCompressor(96), rules)
    assert young.rois == CAR and young.roi_stamp == 10 * S and young.ggvr and young.gtvr
    old = svlm_inputs(12 * S + 1, state.history, state.rois, ContextCompressor(96), rules)
    assert old.rois == () and old.roi_stamp is None
    off = InputRules(ggvr=False, gtvr=False)
    none = svlm_inputs(12 * S, state.history, state.rois, ContextCompressor(96), off)
    assert none.rois == () and not none.ggvr and not none.gtvr
    # the cloud turn is shown to a later frame, as text, or as chat turns
    assert "a car" in young.context_text and young.chat == ()
    assert young.cloud_turns == (10 * S,)
    chat = svlm_inputs(
        12 * S, state.history, state.rois, ContextCompressor(96), InputRules(history_form="chat")
    )
    assert chat.context_text == ""
    assert [m["role"] for m in chat.chat] == ["user", "assistant"]
    assert chat.chat[1]["content"] == "a car"
    bare = svlm_inputs(
        12 * S, state.history, state.rois, ContextCompressor(96), InputRules(use_history=False)
    )
    assert bare.entries == () and bare.context_text == "" and bare.rois == CAR


def test_input_rules_refuse_an_unknown_history_form() -> None:
    with pytest.raises(ValueError, match="history_form"):
        InputRules(history_form="prose")


def test_every_request_end_feeds_the_policy_once() -> None:
    uploads = Uploads(UploadPolicy(UploadPolicyConfig(UploadMode.EVERY_FRAME, max_in_flight=1)))
    assert uploads.decide(1 * S, 1 * S).upload
    assert not uploads.decide(2 * S, 2 * S).upload  # one in flight
    assert uploads.skipped == 1
    uploads.on_outcome(1 * S, 3 * S, RequestEnd.TIMED_OUT, 2.0)
    assert uploads.policy.last_latency == 2.0 and uploads.policy.in_flight == 0
    assert uploads.decide(4 * S, 4 * S).upload
    uploads.on_outcome(4 * S, 4 * S, RequestEnd.FAILED, 0.01)  # says nothing of speed
    assert uploads.policy.last_latency == 2.0
    assert uploads.decide(5 * S, 5 * S).upload
    uploads.on_outcome(5 * S, 5 * S, RequestEnd.BUSY, retry_after_s=10.0)
    assert uploads.backoffs == 1
    held = uploads.decide(6 * S, 6 * S)
    assert not held.upload and "Retry-After" in held.reason
    pressure = uploads.policy.pressure
    assert uploads.decide(30 * S, 30 * S).upload
    uploads.on_outcome(30 * S, 31 * S, RequestEnd.ANSWERED, 1.0)
    assert uploads.policy.pressure == pytest.approx(pressure / 2)
    assert uploads.policy.last_latency == 1.0


def test_the_latest_worker_runs_the_newest_item_and_hands_back_the_superseded() -> None:
    started, release = threading.Event(), threading.Event()
    seen = {name: threading.Event() for name in ("c", "boom", "d")}
    handled: list[str] = []
    superseded: list[str] = []
    errors: list[str] = []

    def handle(item: str) -> None:
        if item == "a":
            started.set()
            assert release.wait(60)
        if item == "boom":
            seen[item].set()
            raise RuntimeError("broken model")
        handled.append(item)
        if item in seen:
            seen[item].set()

    worker: LatestWorker[str] = LatestWorker(
        "test", handle, superseded.append, lambda item, exc: errors.append(item)
    )
    worker.offer("a")
    assert started.wait(60)
    worker.offer("b")
    worker.offer("c")  # b was waiting: superseded, handed back at once
    assert superseded == ["b"]
    release.set()
    assert seen["c"].wait(60)
    worker.offer("boom")
    assert seen["boom"].wait(60)
    worker.offer("d")  # the worker survived the error
    assert seen["d"].wait(60)
    worker.close()
    assert not worker.alive
    assert handled == ["a", "c", "d"]
    assert errors == ["boom"]
    assert superseded == ["b"]


def test_a_closed_worker_withdraws_what_waits() -> None:
    release = threading.Event()
    started = threading.Event()

    def handle(item: int) -> None:
        started.set()
        assert release.wait(60)

    worker: LatestWorker[int] = LatestWorker("test", handle, lambda i: None, lambda i, e: None)
    worker.offer(1)
    assert started.wait(60)
    worker.offer(2)
    assert worker.clear() == 2
    assert worker.clear() is None
    release.set()
    worker.close()
    assert not worker.alive


def test_a_waiting_item_is_withdrawn_only_if_it_matches() -> None:
    release, started = threading.Event(), threading.Event()
    handled: list[int] = []

    def handle(item: int) -> None:
        started.set()
        assert release.wait(60)
        handled.append(item)

    worker: LatestWorker[int] = LatestWorker("test", handle, lambda i: None, lambda i, e: None)
    worker.offer(1)
    assert started.wait(60)
    assert worker.withdraw(lambda i: i == 1) is None  # in progress: not touched
    worker.offer(2)
    assert worker.withdraw(lambda i: i == 3) is None
    assert worker.withdraw(lambda i: i == 2) == 2
    release.set()
    worker.close()
    assert handled == [1]


def test_the_adas_rule_offloads_while_the_cloud_is_predicted_in_time() -> None:
    uploads = Uploads(UploadPolicy(), UploadRule.ADAS, deadline_s=1.0)
    uploads.offload.probe_s = 5.0
    assert uploads.decide(0, 0).upload  # no round trip seen: try the cloud
    uploads.on_outcome(0, 3 * S, RequestEnd.ANSWERED, 3.0)  # a 3 s cloud
    assert not uploads.decide(1 * S, 3 * S).upload  # predicted late
    assert uploads.skipped == 1
    assert uploads.decide(5 * S, 5 * S).upload  # the probe, 5 s after the last upload
    uploads.on_outcome(5 * S, 5 * S + S // 5, RequestEnd.ANSWERED, 0.2)
    assert uploads.offload.predicted_s == pytest.approx(0.3 * 0.2 + 0.7 * 3.0)
    uploads.on_outcome(6 * S, 6 * S, RequestEnd.FAILED, None)  # a failure: twice the deadline
    assert uploads.offload.predicted_s == pytest.approx(0.3 * 2.0 + 0.7 * (0.06 + 2.1))
    # ADAS uses only the policy's in-flight count: every request ended, no latency kept
    assert uploads.policy.in_flight == 0 and uploads.policy.last_latency is None
    assert uploads.decide_after_svlm(True).upload is False  # ADAS decides on arrival only


def test_the_adas_rule_keeps_to_max_in_flight() -> None:
    """A frame offloaded beyond max_in_flight would be refused unsent by the client after
    the SVLM had left it to the cloud: ADAS answers it on board instead."""
    uploads = Uploads(UploadPolicy(UploadPolicyConfig(max_in_flight=2)), UploadRule.ADAS, 1.0)
    assert uploads.decide(0, 0).upload and uploads.decide(S // 2, S // 2).upload
    third = uploads.decide(S, S)
    assert not third.upload and third.reason == "ADAS: 2 requests in flight (max_in_flight)"
    assert uploads.skipped == 1
    uploads.on_outcome(0, S + S // 10, RequestEnd.ANSWERED, 0.3)  # one ends: room again
    assert uploads.policy.in_flight == 1
    assert uploads.decide(S + S // 5, S + S // 5).upload


def test_the_laecips_rule_uploads_only_what_the_svlm_asks_for() -> None:
    uploads = Uploads(UploadPolicy(), UploadRule.LAECIPS)
    assert not uploads.decide(0, 0).upload  # never when the frame arrives
    assert uploads.skipped == 0
    assert uploads.decide_after_svlm(True).upload
    assert not uploads.decide_after_svlm(False).upload
    assert uploads.skipped == 1
    uploads.on_outcome(0, S, RequestEnd.BUSY, 1.0, retry_after_s=5.0)
    assert uploads.backoffs == 0 and uploads.policy.pressure == 1.0  # the policy is not used
    assert svlm_unsure(0.2, 0.5) and not svlm_unsure(0.7, 0.5)
    assert not svlm_unsure(0.0, 0.0)  # threshold 0: never asks
    assert not Uploads().decide_after_svlm(True).upload  # the policy decided on arrival


def test_recent_frames_keep_the_last_within_their_age_and_give_each_once() -> None:
    held: RecentFrames[str] = RecentFrames(max_count=2, max_age_s=1.0)
    held.hold(0, "a", 0)
    held.hold(S // 2, "b", S // 2)
    held.hold(S, "c", S)  # three: the oldest goes
    assert len(held) == 2 and held.take(0) == (True, None)
    assert held.take(S // 2) == (True, "b")
    assert held.take(S // 2) == (False, None)  # asked again (a redelivered result)
    held.hold(2 * S, "old", 4 * S)  # already older than 1 s when it arrives: let go, with "c"
    assert len(held) == 0 and held.take(2 * S) == (True, None)

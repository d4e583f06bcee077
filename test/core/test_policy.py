"""The upload policy: bounded in-flight requests, latency-adaptive spacing, stride."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig
from spotvlm_ros.core.types import stamp_from_seconds

S = stamp_from_seconds


def run(policy: UploadPolicy, frames: list[float], latency: float) -> list[float]:
    """Drive the policy with frames at the given times and a constant cloud latency."""
    uploaded: list[float] = []
    finishing: list[tuple[float, float]] = []
    for t in frames:
        for done_at, sent in sorted(finishing):
            if done_at <= t:
                policy.on_finished(S(sent), latency)
                finishing.remove((done_at, sent))
        if policy.decide(S(t), S(t)).upload:
            policy.on_sent(S(t), S(t))
            uploaded.append(t)
            finishing.append((t + latency, t))
    return uploaded


def frames(hz: float, seconds: float) -> list[float]:
    return [i / hz for i in range(int(seconds * hz))]


def test_every_frame_mode_is_still_bounded_by_max_in_flight() -> None:
    policy = UploadPolicy(UploadPolicyConfig(mode=UploadMode.EVERY_FRAME, max_in_flight=2))
    uploaded = run(policy, frames(2.0, 10.0), latency=3.0)
    # 2 in flight, each taking 3 s: at most 2 uploads per 3 s window
    assert len(uploaded) <= 2 * (10 // 3 + 1)
    assert policy.in_flight <= 2


def test_every_frame_mode_uploads_everything_when_the_cloud_is_fast() -> None:
    policy = UploadPolicy(UploadPolicyConfig(mode=UploadMode.EVERY_FRAME, max_in_flight=2))
    assert run(policy, frames(2.0, 5.0), latency=0.3) == frames(2.0, 5.0)


def test_latency_adaptive_spreads_uploads_over_the_latency() -> None:
    policy = UploadPolicy(UploadPolicyConfig(mode=UploadMode.LATENCY_ADAPTIVE, max_in_flight=2))
    uploaded = run(policy, frames(2.0, 30.0), latency=4.0)
    gaps = [b - a for a, b in itertools.pairwise(uploaded[1:])]  # after the first latency is known
    assert gaps and all(g >= 2.0 for g in gaps)  # latency / N = 2 s
    assert max(gaps[2:]) <= 2.5  # and no slower than it needs to be at 2 Hz


def test_fixed_stride() -> None:
    policy = UploadPolicy(UploadPolicyConfig(mode=UploadMode.FIXED_STRIDE, stride=3))
    assert run(policy, frames(1.0, 9.0), latency=0.1) == [0.0, 3.0, 6.0]


def test_a_slowing_cloud_raises_the_expected_latency() -> None:
    policy = UploadPolicy()
    policy.on_sent(S(0.0), S(0.0))
    policy.on_finished(S(0.0), 1.0)
    policy.on_sent(S(1.0), S(1.0))
    assert policy.expected_latency(S(6.0)) == pytest.approx(5.0)


def test_the_same_frame_is_never_uploaded_twice_at_once() -> None:
    policy = UploadPolicy(UploadPolicyConfig(mode=UploadMode.EVERY_FRAME))
    policy.on_sent(S(1.0), S(1.0))
    assert not policy.decide(S(1.0), S(1.1)).upload


@pytest.mark.parametrize(("n", "stride"), [(0, 1), (1, 0)])
def test_bad_configuration_is_refused(n: int, stride: int) -> None:
    with pytest.raises(ValueError, match="must be >= 1"):
        UploadPolicyConfig(max_in_flight=n, stride=stride)


@settings(max_examples=200, deadline=None)
@given(
    mode=st.sampled_from(list(UploadMode)),
    n=st.integers(1, 4),
    hz=st.sampled_from([1.0, 2.0, 5.0]),
    latency=st.floats(0.05, 9.0),
)
def test_in_flight_never_exceeds_n(mode: UploadMode, n: int, hz: float, latency: float) -> None:
    policy = UploadPolicy(UploadPolicyConfig(mode=mode, max_in_flight=n))
    seen_max = 0
    uploaded: list[float] = []
    for t in frames(hz, 20.0):
        for sent in [u for u in uploaded if u + latency <= t]:
            policy.on_finished(S(sent), latency)
            uploaded.remove(sent)
        if policy.decide(S(t), S(t)).upload:
            policy.on_sent(S(t), S(t))
            uploaded.append(t)
        seen_max = max(seen_max, policy.in_flight)
    assert seen_max <= n


def test_429s_slow_the_uploads_down_and_answers_bring_them_back() -> None:
    """Back-pressure from a saturated server: the upload rate falls while it answers 429
    with Retry-After, and recovers as answers come back."""
    from spotvlm_ros.core.policy import UploadMode, UploadPolicy, UploadPolicyConfig

    s = 1_000_000_000
    policy = UploadPolicy(UploadPolicyConfig(mode=UploadMode.LATENCY_ADAPTIVE, max_in_flight=2))
    policy.last_latency = 1.0

    def uploads(start: int, seconds: int, outcome: str) -> int:
        sent = 0
        for i in range(seconds * 2):  # frames at 2 Hz
            now = start + i * s // 2
            if policy.decide(now, now).upload:
                policy.on_sent(now, now)
                sent += 1
                policy.on_finished(now, None if outcome == "429" else 1.0)
                if outcome == "429":
                    policy.back_off(now, 1.0)
                else:
                    policy.relieved()
        return sent

    calm = uploads(0, 10, "ok")
    saturated = uploads(20 * s, 10, "429")
    assert policy.pressure > 1.0
    recovering = uploads(40 * s, 10, "ok")
    recovered = uploads(50 * s, 10, "ok")
    assert saturated < calm / 2, (calm, saturated)
    assert saturated < recovering <= recovered == calm, (saturated, recovering, recovered, calm)
    assert policy.pressure_at(60 * s) == 1.0
    policy.back_off(41 * s, 5.0)
    assert not policy.decide(42 * s, 42 * s).upload
    assert "Retry-After" in policy.decide(45 * s, 45 * s).reason  # 5 s, and up to 7.5 s
    assert "Retry-After" not in policy.decide(49 * s, 49 * s).reason  # the hold is over

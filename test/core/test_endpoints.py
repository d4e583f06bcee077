"""Choosing among LVLM replicas: health-aware, failing over, honouring Retry-After."""

from __future__ import annotations

import email.utils
import time

import pytest

from spotvlm_ros.core.endpoints import EndpointPool, Health, parse_retry_after
from spotvlm_ros.core.types import NS_PER_S as NS

A, B, C = "http://a/v1", "http://b/v1", "http://c/v1"


def test_requests_go_to_the_least_loaded_replica_taking_turns_among_equals() -> None:
    pool = EndpointPool((A, B, C))
    chosen = []
    for _ in range(6):
        e = pool.choose(0)
        assert e is not None
        chosen.append(e.url)
        pool.started(e)
        pool.succeeded(e)  # done at once: all stay at 0 in flight
    assert sorted(chosen) == sorted([A, B, C] * 2)  # each twice: turns, not always A
    busy = pool.choose(0)
    pool.started(busy)  # type: ignore[arg-type]
    assert all(pool.choose(0).url != busy.url for _ in range(4))  # type: ignore[union-attr]


def test_a_dead_replica_is_skipped_with_a_doubling_back_off_then_tried_again() -> None:
    pool = EndpointPool((A, B), min_backoff_s=2.0, max_backoff_s=5.0)
    a = pool.endpoints[0]
    pool.started(a)
    assert pool.failed(a, 0, "refused") == 2.0
    assert a.health is Health.DOWN
    assert {pool.choose(1 * NS).url for _ in range(4)} == {B}  # type: ignore[union-attr]
    assert pool.choose(2 * NS + 1, exclude=frozenset({B})) is a  # back-off over: tried again
    pool.started(a)
    assert pool.failed(a, 3 * NS, "refused") == 4.0  # twice in a row: doubled
    pool.started(a)
    assert pool.failed(a, 8 * NS, "refused") == 5.0  # capped
    pool.started(a)
    pool.succeeded(a)
    assert a.health is Health.HEALTHY and a.failures == 0


def test_a_busy_replica_waits_its_retry_after_and_none_usable_says_until_when() -> None:
    pool = EndpointPool((A,))
    a = pool.endpoints[0]
    pool.started(a)
    pool.busy(a, 0, 1.5, "429")
    assert pool.choose(NS) is None
    assert pool.next_usable_in(NS) == pytest.approx(0.5)
    assert pool.choose(2 * NS) is a
    assert "busy" in pool.summary(NS)[A] and "0.5 s" in pool.summary(NS)[A]


def test_a_listed_twice_or_empty_endpoint_list_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        EndpointPool((A, A))
    with pytest.raises(ValueError, match="no LVLM endpoint"):
        EndpointPool(())


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert parse_retry_after("3", 1.0) == 3.0
    assert parse_retry_after(None, 1.0) == 1.0
    assert parse_retry_after("soon", 1.0) == 1.0
    later = email.utils.formatdate(time.time() + 20, usegmt=True)
    assert 18.0 < parse_retry_after(later, 1.0) <= 20.0


def test_a_lone_endpoint_is_asked_even_when_down_but_not_while_busy() -> None:
    """With nothing to fail over to, skipping a dead server only delays noticing its return
    (seen: a graph with one server answered fewer frames after the server came back)."""
    pool = EndpointPool((A,))
    a = pool.endpoints[0]
    pool.started(a)
    pool.failed(a, 0, "refused")
    assert pool.choose(NS) is a  # down, asked anyway
    pool.started(a)
    pool.busy(a, NS, 5.0, "429")
    assert pool.choose(2 * NS) is None  # the server asked for the wait: honoured

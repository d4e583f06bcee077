"""The fleet simulation: its figures follow from queueing it can be checked against."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from spotvlm_ros.cloud.faults import read_trace
from spotvlm_ros.core.policy import UploadMode
from spotvlm_ros.tools.fleet_sim import FleetConfig, main, simulate

LIGHT = FleetConfig(
    cameras=2,
    rate_hz=2.0,
    deadline_s=1.0,
    replicas=1,
    slots=4,
    service=(0.3,),
    net_delay_s=0.01,
    net_jitter_s=0.0,
    duration_s=120.0,
    mode=UploadMode.EVERY_FRAME,
)


def test_a_light_load_is_answered_on_time_without_queueing() -> None:
    result = simulate(LIGHT)
    s = result.summary()
    assert result.frames == pytest.approx(2 * 2.0 * 110, abs=4)  # 2 cameras, 110 s scored
    assert s["upload_share"] == pytest.approx(1.0, abs=0.01)  # 0.32 s < the frame period
    assert s["on_time_share"] == pytest.approx(s["upload_share"], abs=0.01)
    assert s["latency_mean_s"] == pytest.approx(0.32, abs=0.005)  # service + 2 x network
    assert s["queue_delay_mean_s"] == 0.0
    # utilisation = offered work / capacity: 4 requests/s x 0.3 s over 4 slots
    assert s["utilisation"] == pytest.approx(4 * 0.3 / 4, rel=0.03)
    assert s["context_age_p50_s"] <= 0.5 + 0.32


def test_an_overloaded_replica_that_refuses_sends_429s_and_the_uploads_back_off() -> None:
    overloaded = replace(LIGHT, cameras=8, slots=1, queue=0, mode=UploadMode.EVERY_FRAME)
    result = simulate(overloaded)
    s = result.summary()
    assert result.refused > 0 and s["queue_delay_mean_s"] == 0.0
    assert s["upload_share"] < 0.5  # back-pressure: far fewer uploads than frames
    # what the simulation found: cameras at one rate lock into phase, and the one whose
    # frame comes first after the replica frees up wins every time; a replica that queues
    # (vLLM's FIFO) serves them in turn instead
    assert s["starved_share"] > 0.5
    fifo = simulate(replace(overloaded, queue=-1)).summary()
    assert fifo["starved_share"] == 0.0 and fifo["utilisation"] > 0.95


def test_no_queue_grows_without_bound_the_in_flight_limit_holds_it() -> None:
    saturated = replace(LIGHT, cameras=20, slots=1, service=(2.0,), queue=-1)
    result = simulate(saturated)
    assert result.summary()["utilisation"] > 0.95
    assert result.max_waiting <= 20 * saturated.max_in_flight  # every bridge's N at most


def test_lost_requests_time_out_and_are_counted() -> None:
    lossy = replace(LIGHT, loss=0.2, timeout_s=3.0)
    result = simulate(lossy)
    assert result.lost > 0
    assert result.lost == pytest.approx(0.2 * result.uploads, rel=0.35)


def test_a_trace_file_is_read_and_a_bad_one_refused(tmp_path: Path) -> None:
    good = tmp_path / "trace.txt"
    good.write_text("# measured\n0.5\n\n0.7  # slow one\n")
    assert read_trace(good) == (0.5, 0.7)
    bad = tmp_path / "bad.txt"
    bad.write_text("0.5\nfast\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2"):
        read_trace(bad)
    with pytest.raises(SystemExit, match=r"--service-trace: .*bad\.txt:2"):
        main(["--service-trace", str(bad)])


def test_the_command_prints_the_sweep_and_writes_the_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "t.txt"
    trace.write_text("1.0\n1.2\n")
    figure = tmp_path / "fleet.png"
    code = main(
        [
            "--service-trace",
            str(trace),
            "--cameras-per-replica",
            "1,8",
            "--duration",
            "60",
            "--plot",
            str(figure),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and figure.stat().st_size > 10_000
    assert "| 8 | latency_adaptive |" in out and "latency_adaptive: context age p95" in out

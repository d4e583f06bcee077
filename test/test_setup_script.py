"""scripts/dev setup ends bad environments with a message that says what is wrong."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of the tracked files (no venv, no build)."""
    files = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    if not files:
        pytest.skip("not a git checkout")
    for name in files:
        target = tmp_path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, target)
    return tmp_path


def run_setup(checkout: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "scripts/dev", "setup", *args],
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=300,
        # the default distro unless a test names one (env.sh exports the one it sourced)
        env={**{k: v for k, v in os.environ.items() if k != "SPOTVLM_ROS_DISTRO"}, **env},
    )


def test_no_route_to_the_package_index_is_said_plainly(checkout: Path) -> None:
    result = run_setup(
        checkout,
        PIP_CONFIG_FILE=os.devnull,  # no local wheel folders, no mirrors
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    assert result.returncode != 0
    assert "pip could not download the pinned packages" in result.stderr
    assert "it resumes where it stopped" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_second_setup_at_the_same_time_is_refused(checkout: Path) -> None:
    (checkout / "log").mkdir()
    with open(checkout / "log" / ".setup.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = run_setup(checkout)
    assert result.returncode != 0
    assert "another set-up is running in this checkout" in result.stderr


def test_a_broken_venv_from_a_half_finished_setup_is_detected(checkout: Path) -> None:
    venv = checkout / ".venv-jazzy" / "bin"  # jazzy: the default distro
    venv.mkdir(parents=True)
    (venv / "python").write_text("#!/bin/sh\nexit 1\n")  # what an interrupted venv leaves
    (venv / "python").chmod(0o755)
    result = run_setup(
        checkout,
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    assert "is broken (a half-finished earlier set-up?); recreating it" in result.stdout


def test_a_wheelhouse_file_that_differs_from_its_pin_is_refused_before_anything_installs(
    checkout: Path, tmp_path: Path
) -> None:
    house = tmp_path / "wheelhouse"
    house.mkdir()
    names = [
        line.split()[0]
        for line in (checkout / "locks" / "jazzy-wheelhouse.lock").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    for name in names:
        (house / name).write_bytes(b"not the pinned wheel")
    result = run_setup(checkout, SPOTVLM_WHEELHOUSE=str(house))
    assert result.returncode != 0
    assert f"{names[0]} does not match its sha256 in locks/jazzy-wheelhouse.lock" in result.stderr
    assert not (checkout / ".venv-jazzy").exists()  # refused before the venv was made


def test_a_missing_wheelhouse_is_said_and_the_rest_installs(checkout: Path, tmp_path: Path) -> None:
    result = run_setup(
        checkout,
        SPOTVLM_WHEELHOUSE=str(tmp_path / "nowhere"),
        PIP_CONFIG_FILE=os.devnull,
        PIP_INDEX_URL="http://127.0.0.1:9/simple",
        PIP_RETRIES="0",
        PIP_TIMEOUT="2",
    )
    assert "WARNING: no ROS 2 jazzy wheelhouse at" in result.stdout
    assert "no 'ros2' command" in result.stdout
    # it went on to install the rest (here it then fails on the dead index, as it should)
    assert "installing the pinned Python packages" in result.stdout


def test_an_unknown_distro_is_refused_naming_the_known_ones(checkout: Path) -> None:
    result = run_setup(checkout, "--distro", "rolling")
    assert result.returncode != 0
    assert "unknown ROS 2 distro 'rolling': this set-up knows jazzy kilted" in result.stderr
    assert not list(checkout.glob(".venv*"))


def test_each_distro_takes_its_own_lock_and_wheelhouse(checkout: Path, tmp_path: Path) -> None:
    """--distro kilted (or SPOTVLM_ROS_DISTRO) reads Kilted's wheelhouse lock and lock."""
    dead = {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "2",
        "SPOTVLM_WHEELHOUSE": str(tmp_path / "nowhere"),
    }
    by_flag = run_setup(checkout, "--distro", "kilted", **dead)
    by_env = run_setup(checkout, SPOTVLM_ROS_DISTRO="kilted", **dead)
    for result in (by_flag, by_env):
        assert "no ROS 2 kilted wheelhouse" in result.stdout, result.stdout
        assert "pinned Python packages of ROS 2 kilted (locks/kilted.lock" in result.stdout
    assert (checkout / ".venv-kilted").is_dir() and not (checkout / ".venv-jazzy").exists()

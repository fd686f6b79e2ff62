"""Spawning agents in their own sessions and stopping whole process trees."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil

from gadugi import procs


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_file(path: Path, lines: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= lines:
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError(f"{path} never got {lines} lines")


def test_spawn_uses_a_new_session_and_streams_output(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    child = procs.spawn(
        ["bash", "-c", "echo out; echo err >&2; sleep 0.2; echo late"],
        tmp_path,
        dict(os.environ),
        log,
        log,
    )
    assert os.getsid(child.pid) == child.pid != os.getsid(0)
    deadline = time.monotonic() + 5
    while "out" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.popen.poll() is None  # still running, and its first lines are already there
    child.popen.wait()
    assert log.read_text() == "out\nerr\nlate\n"
    assert procs.same_process(child.pid, child.start_time) is False


def test_same_process_checks_the_start_time(tmp_path: Path) -> None:
    child = procs.spawn(["sleep", "5"], tmp_path, dict(os.environ), tmp_path / "l", tmp_path / "l")
    try:
        assert procs.same_process(child.pid, child.start_time)
        assert not procs.same_process(child.pid, child.start_time - 100)
        assert not procs.same_process(child.pid, None)
    finally:
        procs.terminate([child], 1)


def test_terminate_reaches_grandchildren_and_escapees(tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = (
        f"sleep 100 & echo $! >> {pids}; setsid sleep 101 & echo $! >> {pids}; "
        "trap '' TERM; sleep 102"
    )
    child = procs.spawn(
        ["bash", "-c", script], tmp_path, dict(os.environ), tmp_path / "l", tmp_path / "l"
    )
    recorded = _wait_file(pids, 2)
    started = time.monotonic()
    procs.terminate([child], grace_s=0.5)
    assert time.monotonic() - started < 5
    assert child.popen.returncode == -signal.SIGKILL  # it ignored TERM, so KILL followed
    assert all(_gone(pid) for pid in [*recorded, child.pid])
    assert procs.stopped(child)


def test_a_polite_process_stops_on_sigterm(tmp_path: Path) -> None:
    child = procs.spawn(
        ["sleep", "100"], tmp_path, dict(os.environ), tmp_path / "l", tmp_path / "l"
    )
    procs.terminate([child], grace_s=5)
    assert child.popen.returncode == -signal.SIGTERM


def test_sample_counts_the_whole_tree(tmp_path: Path) -> None:
    child = procs.spawn(
        ["bash", "-c", "sleep 5 & sleep 5 & wait"],
        tmp_path,
        dict(os.environ),
        tmp_path / "l",
        tmp_path / "l",
    )
    try:
        deadline = time.monotonic() + 5
        while len(psutil.Process(child.pid).children()) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        reading = procs.sample(child.pid)
        assert reading is not None
        cpu_s, memory_mb = reading
        single = psutil.Process(child.pid).memory_info().rss / 2**20
        assert memory_mb > single and cpu_s >= 0
    finally:
        procs.terminate([child], 1)
    assert procs.sample(child.pid) is None

"""Spawning agents in their own sessions and stopping whole process trees."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import psutil
import pytest

from gadugi import procs


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _spawn(tmp_path: Path, argv: list[str], log: Path | None = None) -> procs.Child:
    out = log or tmp_path / "l"
    return procs.spawn(argv, tmp_path, dict(os.environ), out, out, tmp_path / "result.json")


def _wait_file(path: Path, lines: int) -> list[int]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().split()) >= lines:
            return [int(x) for x in path.read_text().split()]
        time.sleep(0.02)
    raise AssertionError(f"{path} never got {lines} lines")


def test_spawn_uses_a_new_session_and_streams_output(tmp_path: Path) -> None:
    log = tmp_path / "out.log"
    child = _spawn(tmp_path, ["bash", "-c", "echo out; echo err >&2; sleep 0.2; echo late"], log)
    assert os.getsid(child.pid) == child.pid != os.getsid(0)
    assert child.popen is not None
    deadline = time.monotonic() + 5
    while "out" not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert child.popen.poll() is None  # still running, and its first lines are already there
    child.popen.wait()
    assert log.read_text() == "out\nerr\nlate\n"
    assert procs.same_process(child.pid, child.start_time) is False


def test_same_process_checks_the_start_time(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["sleep", "5"], tmp_path / "l")
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
        f"trap '' TERM; echo $$ >> {pids}; sleep 102"
    )
    child = _spawn(tmp_path, ["bash", "-c", script], tmp_path / "l")
    recorded = _wait_file(pids, 3)
    started = time.monotonic()
    procs.terminate([child], grace_s=0.5)
    took = time.monotonic() - started
    # The agent ignored SIGTERM, so stopping took the grace period and then SIGKILL.
    assert 0.5 <= took < 5
    assert all(_gone(pid) for pid in [*recorded, child.pid])
    assert procs.stopped(child)


def test_a_polite_process_stops_on_sigterm(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["sleep", "100"], tmp_path / "l")
    procs.terminate([child], grace_s=5)
    assert child.returncode == -signal.SIGTERM


def test_sample_counts_the_whole_tree(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["bash", "-c", "sleep 5 & sleep 5 & wait"], tmp_path / "l")
    try:
        deadline = time.monotonic() + 5
        tree = psutil.Process(child.pid)
        while len(tree.children(recursive=True)) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        readings = procs.sample_trees([child.pid, 999_999_999])
        assert set(readings) == {child.pid}  # a pid that is not there gives no reading
        cpu_s, memory_mb = readings[child.pid]
        single = psutil.Process(child.pid).memory_info().rss / 2**20
        assert memory_mb > 2 * single and cpu_s >= 0
    finally:
        procs.terminate([child], 1)
    assert procs.sample_trees([child.pid]) == {}


def test_the_supervisor_records_exit_status_and_end_time(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["bash", "-c", "exit 7"])
    child.wait()
    assert child.poll() == 7
    recorded = procs.read_result(tmp_path / "result.json")
    assert recorded is not None and recorded[0] == 7
    assert abs(recorded[1] - time.time()) < 10
    assert child.ended_at == recorded[1]


def test_a_missing_program_is_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-agent"):
        _spawn(tmp_path, ["no-such-agent-binary", "x"])


def test_an_adopted_process_is_watched_through_its_result_file(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    child = _spawn(tmp_path, ["bash", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; exit 4"])
    adopted = procs.Child(child.pid, child.start_time, child.result_file)  # as resume does
    assert adopted.poll() is None
    # The same pid with another start time is another process: this attempt is lost.
    impostor = procs.Child(child.pid, child.start_time + 5, tmp_path / "other.json")
    assert impostor.poll() == procs.LOST
    gate.touch()
    adopted.wait(10)
    assert adopted.poll() == 4
    assert child.poll() == 4


def test_an_adopted_process_that_vanishes_without_a_result_is_lost(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["sleep", "100"])
    adopted = procs.Child(child.pid, child.start_time, child.result_file)
    procs.terminate([child], 1)  # the whole group, supervisor included: no result is written
    assert adopted.poll() == procs.LOST

"""Spawning agents in their own sessions and stopping whole process trees."""

from __future__ import annotations

import errno
import os
import resource
import signal
import subprocess
import time
from collections.abc import Callable
from contextlib import suppress
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
    procs.terminate([child], grace_s=0.5)
    # The agent ignored SIGTERM, so only SIGKILL, after the grace period, could stop it.
    assert child.killed and child.exit is not None and child.exit.signal == signal.SIGKILL
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
        supervisor, agent = psutil.Process(child.pid), tree.children()[0]
        two = (supervisor.memory_info().rss + agent.memory_info().rss) / 2**20
        assert memory_mb > two and cpu_s >= 0
    finally:
        procs.terminate([child], 1)
    assert procs.sample_trees([child.pid]) == {}


def test_the_supervisor_records_exit_status_and_end_time(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["bash", "-c", "exit 7"])
    child.wait()
    assert child.returncode == 7
    recorded = procs.read_result(tmp_path / "result.json")
    assert recorded is not None and recorded.code == 7 and recorded.signal is None
    assert abs(recorded.ended_at - time.time()) < 10
    assert child.ended_at == recorded.ended_at


def test_a_missing_program_is_refused_before_starting(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no-such-agent"):
        _spawn(tmp_path, ["no-such-agent-binary", "x"])


def test_an_adopted_process_is_watched_through_its_result_file(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    child = _spawn(tmp_path, ["bash", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; exit 4"])
    adopted = procs.Child(child.pid, child.start_time, child.result_file)  # as resume does
    assert adopted.check() is None
    # The same pid with another start time is another process: this attempt is lost.
    impostor = procs.Child(child.pid, child.start_time + 5, tmp_path / "other.json")
    lost = impostor.check()
    assert lost is not None and lost.lost and lost.returncode is None
    gate.touch()
    adopted.wait(10)
    assert adopted.returncode == 4
    child.wait()  # the supervisor exits a moment after it has recorded the result
    assert child.check() is not None and child.returncode == 4


def test_an_adopted_process_that_vanishes_without_a_result_is_lost(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["sleep", "100"])
    adopted = procs.Child(child.pid, child.start_time, child.result_file)
    os.killpg(child.pid, signal.SIGKILL)  # the supervisor too: no result can be written
    child.wait()
    assert adopted.check() is not None
    # No sentinel where a code belongs: a lost attempt has none, and says it was lost.
    assert adopted.returncode is None
    assert adopted.exit is not None and adopted.exit.lost
    assert adopted.exit.describe().startswith("lost")


def _wait_until(predicate: Callable[[], bool], what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_a_death_by_signal_is_told_from_an_exit_with_code_128_plus_n(tmp_path: Path) -> None:
    killed = _spawn(tmp_path, ["bash", "-c", "kill -KILL $$"])
    killed.wait()
    # A shell supervisor saw 137 in both cases; waitpid's status tells them apart.
    assert killed.returncode == -signal.SIGKILL
    recorded = procs.read_result(killed.result_file)
    assert recorded is not None and (recorded.code, recorded.signal) == (None, 9)
    assert recorded.describe() == "killed by SIGKILL"
    (tmp_path / "b").mkdir()
    exited = procs.spawn(
        ["bash", "-c", "exit 137"], tmp_path, dict(os.environ), tmp_path / "l", tmp_path / "l",
        tmp_path / "b" / "result.json",
    )  # fmt: skip
    exited.wait()
    assert exited.returncode == 137
    assert exited.exit is not None and exited.exit.describe() == "exited with code 137"


def test_an_adopted_agent_killed_by_a_signal_is_recorded_as_such(tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    child = _spawn(tmp_path, ["bash", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done; kill $$"])
    adopted = procs.Child(child.pid, child.start_time, child.result_file)  # as resume does
    gate.touch()
    adopted.wait(10)
    assert adopted.exit is not None and adopted.exit.signal == signal.SIGTERM
    assert adopted.exit.code is None and adopted.returncode == -signal.SIGTERM


def test_a_polite_stop_is_recorded_by_the_supervisor(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    child = _spawn(tmp_path, ["bash", "-c", f"touch {marker}; sleep 100"])
    _wait_until(marker.exists, "the agent started")
    procs.terminate([child], grace_s=30)
    recorded = procs.read_result(child.result_file)
    assert recorded is not None and recorded.signal == signal.SIGTERM
    assert not child.killed


def test_stopping_never_waits_and_kills_at_the_deadline(tmp_path: Path) -> None:
    marker = tmp_path / "up"
    script = f"trap '' TERM; touch {marker}; while :; do sleep 0.05; done"
    child = _spawn(tmp_path, ["bash", "-c", script])
    _wait_until(marker.exists, "the agent started")
    now = time.time()
    procs.begin_stop(child, now, grace_s=3600)
    # The agent ignores SIGTERM: a stop that waited for it would never return here.
    for _ in range(5):
        assert procs.finish_stop(child, now + 1) is False
    assert procs.same_process(child.pid, child.start_time) and not child.killed
    procs.begin_stop(child, now + 2, grace_s=0)  # a second request keeps the first deadline
    assert child.kill_at == now + 3600
    _wait_until(lambda: procs.finish_stop(child, now + 3600), "stopped after SIGKILL")
    assert child.killed and child.exit is not None and child.exit.signal == signal.SIGKILL


def test_the_end_time_is_when_the_agent_ended_not_when_it_was_noticed(tmp_path: Path) -> None:
    child = _spawn(tmp_path, ["true"])
    _wait_until(child.result_file.exists, "a result")
    time.sleep(0.3)
    noticed = time.time()
    ended = child.check()
    assert ended is not None and ended.code == 0 and ended.ended_at < noticed


def test_an_agent_that_cannot_be_executed_exits_127_and_says_why(tmp_path: Path) -> None:
    script = tmp_path / "agent"
    script.write_text("#!/no/such/interpreter\n")
    script.chmod(0o755)
    child = _spawn(tmp_path, [str(script)])
    child.wait()
    assert child.exit is not None and child.exit.code == 127
    assert child.exit.start_errno is not None and not child.exit.out_of_resources
    assert "cannot run" in (tmp_path / "l").read_text()


def test_resource_limits_bind_the_agent_not_its_supervisor(tmp_path: Path) -> None:
    child = procs.spawn(
        ["bash", "-c", "ulimit -n"], tmp_path, dict(os.environ), tmp_path / "l", tmp_path / "l",
        tmp_path / "result.json", {resource.RLIMIT_NOFILE: 42},
    )  # fmt: skip
    child.wait()
    assert child.returncode == 0
    assert (tmp_path / "l").read_text().strip() == "42"


# -- strays ---------------------------------------------------------------------------


def test_a_daemon_with_a_cleared_environment_is_found_and_stopped(tmp_path: Path) -> None:
    daemon = tmp_path / "daemon"
    script = f"env -i setsid sh -c 'echo $$ > {daemon}; exec sleep 1000' & exit 0"
    env = {**os.environ, "GADUGI_ORCHESTRATION_ID": "orch-t", "GADUGI_TASK_ID": "leaky"}
    with procs.subreaper() as reaping:
        assert reaping
        child = procs.spawn(
            ["bash", "-c", script], tmp_path, env, tmp_path / "l", tmp_path / "l",
            tmp_path / "result.json",
        )  # fmt: skip
        _wait_until(lambda: daemon.exists() and daemon.read_text().strip() != "", "the daemon")
        child.wait()
        pid = int(daemon.read_text())
        assert "GADUGI_ORCHESTRATION_ID" not in psutil.Process(pid).environ()
        _wait_until(lambda: pid in {p.pid for p in procs.orphans()}, "reparented to us")
        assert pid in procs.sweep("orch-t", grace_s=5)
    # Gone and reaped: not even a zombie is left behind.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() != os.getpid()


def test_the_sweep_spares_the_embedding_programs_children_and_kept_trees(
    tmp_path: Path,
) -> None:
    before = subprocess.Popen(["sleep", "100"], start_new_session=True)
    try:
        with procs.subreaper():
            ours_in_session = subprocess.Popen(["sleep", "100"])
            kept = _spawn(tmp_path, ["sleep", "100"])
            assert procs.sweep("orch-none", grace_s=1, keep=[kept.pid]) == []
            for proc in (before, ours_in_session):
                assert proc.poll() is None
            assert kept.check() is None
            procs.terminate([kept], 1)
            ours_in_session.kill()
            ours_in_session.wait()
    finally:
        before.kill()
        before.wait()


def test_orphaned_zombies_are_reaped_and_our_childrens_codes_are_not_stolen(
    tmp_path: Path,
) -> None:
    orphan = tmp_path / "orphan"
    with procs.subreaper():
        mine = _spawn(tmp_path, ["bash", "-c", f"sh -c 'sleep 0.2' & echo $! > {orphan}; exit 3"])
        _wait_until(lambda: orphan.exists() and orphan.read_text().strip() != "", "the orphan")
        pid = int(orphan.read_text())

        def zombies() -> bool:
            with suppress(psutil.Error):
                return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE and (
                    psutil.Process(mine.pid).status() == psutil.STATUS_ZOMBIE
                )
            return False

        _wait_until(zombies, "both exited, neither reaped")
        assert procs.reap_orphans() == [pid]
        assert not psutil.pid_exists(pid)
        assert mine.check() is not None and mine.returncode == 3  # its status was left for us


def test_a_nul_byte_in_an_argument_is_an_os_error_before_anything_starts(tmp_path: Path) -> None:
    # What the runner's start paths catch, so the task fails with a message; Popen's own
    # ValueError would have ended the orchestrator.
    with pytest.raises(OSError, match="NUL byte") as caught:
        _spawn(tmp_path, ["echo", "a\0b"])
    assert caught.value.errno == errno.EINVAL
    assert not (tmp_path / "l").exists()

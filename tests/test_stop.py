"""Stops that stop the work: a task's tree is frozen before it is ended, so nothing in it
runs another command once a stop has begun (real processes, real signals)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import time
from pathlib import Path

import psutil

from conftest import Repo, run_cli, start_cli, wait_until
from gadugi import procs

# A process that, given SIGTERM, would still do one more thing: write a file.
TRAPPER = (
    'sh -c \'trap "echo late > {after}; exit 0" TERM; echo $$ >> {pids}; '
    "while :; do sleep 0.05; done'"
)

# The shared test machine's load often passes the default ceiling; these tests are not about it.
NO_LOAD_CEILING = "max_load_per_cpu = 0\n"


def _spawn(tmp_path: Path, script: str) -> procs.Child:
    log = tmp_path / "log"
    return procs.spawn(
        ["bash", "-c", script], tmp_path, dict(os.environ), log, log, tmp_path / "result.json"
    )


def _pids(path: Path, count: int) -> list[int]:
    wait_until(lambda: path.exists() and len(path.read_text().split()) >= count, timeout=60)
    return [int(p) for p in path.read_text().split()]


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_polite_stop_never_lets_a_tool_that_traps_sigterm_run_on(tmp_path: Path) -> None:
    after, pids = tmp_path / "after", tmp_path / "pids"
    trapper = TRAPPER.format(after=after, pids=pids)
    # The trapping tool in the foreground, and one that left the group with setsid.
    child = _spawn(tmp_path, f"setsid {trapper} & {trapper}")
    tools = _pids(pids, 2)

    procs.terminate([child], grace_s=30)

    # Once every process of the tree is gone, nothing can ever write the file.
    assert procs.stopped(child) and all(_gone(pid) for pid in tools)
    assert not after.exists()
    # The agent (bash) itself ended on SIGTERM, recorded by its supervisor; only the
    # frozen tools were killed, at once and not at the end of the grace period.
    recorded = procs.read_result(child.result_file)
    assert recorded is not None and recorded.signal == signal.SIGTERM
    assert not child.killed


def test_a_polite_agent_still_ends_its_own_way(tmp_path: Path) -> None:
    said, ready = tmp_path / "said", tmp_path / "ready"
    script = f"trap 'echo bye > {said}; exit 3' TERM; sleep 100 & echo $! > {ready}; wait"
    child = _spawn(tmp_path, script)
    sleeper = _pids(ready, 1)[0]
    now = time.time()

    procs.begin_stop(child, now, grace_s=3600)
    # Frozen, never asked to stop (a signal takes effect when the process next runs).
    wait_until(lambda: psutil.Process(sleeper).status() == psutil.STATUS_STOPPED, timeout=10)
    wait_until(lambda: procs.finish_stop(child, now), timeout=10)  # well before the deadline

    assert said.read_text() == "bye\n" and child.returncode == 3
    assert _gone(sleeper) and not child.killed


def test_an_agent_that_works_on_after_sigterm_is_killed_frozen(tmp_path: Path) -> None:
    after, pids = tmp_path / "after", tmp_path / "pids"
    # The agent itself would answer SIGTERM with more work, and so would its tool.
    script = f"trap 'echo agent > {after}' TERM; echo $$ >> {pids}; " + TRAPPER.format(
        after=after, pids=pids
    )
    child = _spawn(tmp_path, script)
    tree = _pids(pids, 2)
    now = time.time()

    procs.begin_stop(child, now, grace_s=3600, gracefully=False)
    wait_until(lambda: procs.finish_stop(child, now), timeout=10)

    assert child.killed and child.exit is not None and child.exit.signal == signal.SIGKILL
    assert all(_gone(pid) for pid in tree) and not after.exists()


def test_cancel_freezes_the_task_and_reports_no_commit_after_it(repo: Repo) -> None:
    after, pids = repo.root.parent / "after", repo.root.parent / "pids"
    repo.shell_prompt("long.md", TRAPPER.format(after=after, pids=pids))
    (repo.root / "gadugi.toml").write_text(NO_LOAD_CEILING)
    repo.commit()
    run = start_cli(["run", "--agent", "shell", "--json", "long"], repo.root)
    try:
        _pids(pids, 1)
        cancel = run_cli(["cancel", "long"], repo.root)
        assert cancel.returncode == 0, cancel.stderr
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 1, err
    task = json.loads(out)["tasks"][0]
    assert task["status"] == "cancelled" and task["commits"] == 0
    assert task["commits_after_cancel"] == 0
    assert not after.exists()


def test_a_commit_made_after_the_cancel_is_reported(repo: Repo) -> None:
    # A polite agent whose own SIGTERM handler commits: allowed (it is not frozen), but
    # the result says so.
    ready = repo.root.parent / "ready"
    script = (
        "trap 'git commit -q --allow-empty -m late; exit 1' TERM\n"
        f"sleep 100 & echo $! > {ready}\nwait\n"
    )
    repo.shell_prompt("late.md", script)
    (repo.root / "gadugi.toml").write_text(NO_LOAD_CEILING)
    repo.commit()
    run = start_cli(["run", "--agent", "shell", "--json", "late"], repo.root)
    try:
        _pids(ready, 1)
        assert run_cli(["cancel", "late"], repo.root).returncode == 0
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    task = json.loads(out)["tasks"][0]
    assert task["status"] == "cancelled", err
    assert task["commits"] == 1 and task["commits_after_cancel"] == 1


def test_a_daemon_the_task_left_reparented_to_us_is_frozen_with_it(tmp_path: Path) -> None:
    after, daemons, tools = tmp_path / "after", tmp_path / "daemons", tmp_path / "tools"
    daemon_script = TRAPPER.format(after=after, pids=daemons)
    tool_script = TRAPPER.format(after=after, pids=tools)
    # The daemon's parent exits at once: it is reparented to the subreaper, out of the tree.
    script = f"bash -c {shlex.quote(f'setsid {daemon_script} & exit 0')}; {tool_script}"
    env = {**os.environ, "GADUGI_ORCHESTRATION_ID": "orch-d", "GADUGI_TASK_ID": "leaves"}
    with procs.subreaper() as reaping:
        assert reaping
        log = tmp_path / "log"
        child = procs.spawn(["bash", "-c", script], tmp_path, env, log, log, tmp_path / "r.json")
        daemon, tool = _pids(daemons, 1)[0], _pids(tools, 1)[0]
        wait_until(lambda: daemon in {p.pid for p in procs.orphans()}, timeout=10)

        # The agent here is the tool itself (bash runs its last command with exec): its
        # trap waits on its frozen child, so only the deadline's SIGKILL ends it.
        procs.terminate([child], grace_s=1)

        assert all(_gone(pid) for pid in (daemon, tool)) and not after.exists()
        procs.reap_orphans()

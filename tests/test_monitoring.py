"""The monitoring files: views of live and recent work, never a reason for a run to fail."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, run_cli
from gadugi.monitoring import Monitor
from gadugi.registry import Registry

DAY_S = 24 * 3600


class CountingRegistry(Registry):
    """The real registry, counting the rows its queries return."""

    rows_read = 0

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        rows = super()._query(sql, args)
        self.rows_read += len(rows)
        return rows


def _orchestration(
    reg: Registry,
    orch_id: str,
    started_at: float,
    finished_ago_s: float | None = None,
    tasks: int = 2,
) -> None:
    """One orchestration; running (as a dead orchestrator leaves it) unless finished."""
    reg.create_orchestration(
        orch_id,
        Path("/p"),
        "abc",
        {"big": "x" * 2000},
        1,
        2.0,
        False,
        [
            {"task_id": f"t{n}", "name": f"T{n}", "prompt_file": f"prompts/t{n}.md"}
            for n in range(tasks)
        ],
    )
    if finished_ago_s is not None:
        reg.conn.execute(
            "UPDATE tasks SET status = 'completed' WHERE orchestration_id = ?", (orch_id,)
        )
        reg.finish_orchestration(orch_id, "finished", {"summary": "y" * 2000})
        reg.conn.execute(
            "UPDATE orchestrations SET finished_at = ? WHERE id = ?",
            (time.time() - finished_ago_s, orch_id),
        )
    reg.conn.execute("UPDATE orchestrations SET started_at = ? WHERE id = ?", (started_at, orch_id))


def _history(reg: Registry, count: int, first: int = 0) -> None:
    """Past orchestrations: stale running ones, recent ones and old ones."""
    base = time.time() - 10 * DAY_S
    for n in range(first, first + count):
        ago = (None, 3600.0, 3 * DAY_S)[n % 3]
        _orchestration(reg, f"orch-past-{n:04d}", base + n, ago)


def _read(directory: Path, name: str) -> Any:
    return json.loads((directory / name).read_text())


def test_the_live_files_show_this_run_running_ones_and_recent_ones_only(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    now = time.time()
    _orchestration(reg, "orch-old", now - 4 * DAY_S, finished_ago_s=3 * DAY_S)
    _orchestration(reg, "orch-recent", now - 7200, finished_ago_s=3600)
    _orchestration(reg, "orch-live", now - 60)
    _orchestration(reg, "orch-own", now, tasks=3)
    directory = tmp_path / "monitoring"
    Monitor(reg, "orch-own", directory, 30.0).write("running")

    processes = _read(directory, "process_registry.json")["processes"]
    assert {p["orchestration_id"] for p in processes} == {"orch-own", "orch-live", "orch-recent"}
    assert [p["task_id"] for p in processes if p["orchestration_id"] == "orch-own"] == [
        "t0",
        "t1",
        "t2",
    ]
    beats = _read(directory, "heartbeats.json")["active_processes"]
    assert {b["orchestration_id"] for b in beats} == {"orch-own", "orch-live"}  # queued ones
    assert _read(directory, "registry_stats.json")["total_processes"] == 7
    assert _read(directory, "orch-own_status.json")["total_tasks"] == 3


def test_a_monitoring_write_reads_the_same_rows_however_long_the_history(tmp_path: Path) -> None:
    reg = CountingRegistry(tmp_path / "state.db")
    _history(reg, 30)
    _orchestration(reg, "orch-own", time.time(), tasks=3)
    monitor = Monitor(reg, "orch-own", tmp_path / "monitoring", 30.0)
    reg.rows_read = 0
    monitor.write("running")
    with_30 = reg.rows_read

    _history(reg, 300, first=30)
    reg.rows_read = 0
    monitor.write("running")
    assert reg.rows_read == with_30
    shown = _read(tmp_path / "monitoring", "process_registry.json")["processes"]
    assert len({p["orchestration_id"] for p in shown}) < 30


def test_a_monitoring_folder_that_cannot_be_written_is_reported_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = Registry(tmp_path / "state.db")
    _orchestration(reg, "orch-own", time.time())
    blocked = tmp_path / "monitoring"
    blocked.write_text("a file in the way\n")
    monitor = Monitor(reg, "orch-own", blocked, 30.0)

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]

    with caplog.at_level(logging.INFO, logger="gadugi.monitoring"):
        monitor.write("running")
        monitor.maybe_write(time.time() + 60)
        monitor.write("finished")
        monitor.write_final({"orchestration_id": "orch-own"})
        assert len(warnings()) == 1
        assert str(blocked) in warnings()[0] and "File exists" in warnings()[0]
        assert blocked.read_text() == "a file in the way\n"

        blocked.unlink()  # the way cleared: the next write puts every file in place
        monitor.write("finished")
        monitor.write_final({"orchestration_id": "orch-own"})
        assert {p.name for p in blocked.iterdir()} == {
            "process_registry.json",
            "heartbeats.json",
            "registry_stats.json",
            "orch-own_status.json",
            "orch-own_final.json",
        }
        assert len(warnings()) == 1

        shutil.rmtree(blocked)  # and blocked again: that is news, so said again
        blocked.write_text("in the way again\n")
        monitor.write("finished")
        assert len(warnings()) == 2


@contextmanager
def _immutable(path: Path) -> Iterator[None]:
    path.mkdir(parents=True)
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        pytest.skip(f"chattr +i is not available here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)
    assert list(path.iterdir()) == []


# A file there from the start is refused before the run (exit 2, tests/test_hostile.py);
# a folder that cannot be written is found only when the first snapshot is written.
BLOCKERS: dict[str, Callable[[Path], AbstractContextManager[None]]] = {
    "an immutable folder": _immutable,
}


@pytest.mark.parametrize("blocker", list(BLOCKERS))
def test_a_run_whose_monitoring_folder_cannot_be_written_still_runs_and_records(
    repo: Repo, blocker: str
) -> None:
    repo.shell_prompt("a.md", "echo a")
    repo.shell_prompt("b.md", "echo b")
    repo.commit()
    monitoring = repo.root / ".gadugi/monitoring"
    with BLOCKERS[blocker](monitoring):
        proc = run_cli(["run", "--agent", "shell", "--json", "a", "b"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    result = json.loads(proc.stdout)
    assert [t["status"] for t in result["tasks"]] == ["completed", "completed"]
    reported = [line for line in proc.stderr.splitlines() if "monitoring files" in line]
    assert len(reported) == 1 and str(monitoring) in reported[0], proc.stderr
    reg = Registry(repo.root / ".gadugi/state.db", readonly=True)
    orch = reg.orchestration(result["orchestration_id"])
    assert orch["state"] == "finished" and orch["result"]["successful_tasks"] == 2

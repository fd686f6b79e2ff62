"""JSON snapshots under ``.gadugi/monitoring/`` for editors and scripts.

They are views of the registry, never a second source of truth. Each file is written
to a temporary name and moved into place, so a reader sees the old file or the new
one, never half of one. Writes are throttled: a burst of state changes (hundreds of
tasks finishing at once) costs one rewrite per ``min_gap_s``.

They show live and recent work only (this orchestration and a bounded number of others
that are running or finished in the last day), so a write costs the same however long
the history; the whole history is ``gadugi export``'s. Being views, a folder that cannot
be written is logged once and the run goes on: the registry still records everything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .files import write_json_atomic
from .landing import task_landing
from .registry import Registry
from .tasks import TaskStatus, iso

COST_FACTOR = 10.0
# Besides its own orchestration, what the live files show: others running or finished
# within RECENT_S, at most RECENT_ORCHESTRATIONS of them, the newest first.
RECENT_S = 24 * 3600.0
RECENT_ORCHESTRATIONS = 8

log = logging.getLogger(__name__)


class Monitor:
    def __init__(
        self,
        registry: Registry,
        orchestration_id: str,
        directory: Path,
        interval_s: float,
        *,
        flush: Callable[[], None] = lambda: None,
        min_gap_s: float = 0.5,
    ) -> None:
        self.registry = registry
        self.orchestration_id = orchestration_id
        self.directory = directory
        self.interval_s = interval_s
        self.min_gap_s = min_gap_s
        self.flush = flush
        self.dirty = True
        self.last_write = 0.0
        self.last_cost_s = 0.0
        self.failing = False  # the last write failed and was reported

    def mark_dirty(self) -> None:
        self.dirty = True

    def maybe_write(self, now: float) -> None:
        # The gap between rewrites grows with their cost, so that with thousands of
        # tasks the snapshots never take more than about a tenth of the loop's time.
        gap = max(self.min_gap_s, COST_FACTOR * self.last_cost_s)
        due = now - self.last_write >= self.interval_s
        if due or (self.dirty and now - self.last_write >= gap):
            self.write("running", now)

    def write(self, state: str, now: float | None = None) -> None:
        started = time.perf_counter()
        self._write(state, time.time() if now is None else now)
        self.last_cost_s = time.perf_counter() - started

    def write_final(self, result: Mapping[str, Any]) -> None:
        """The orchestration's result, ``<orchestration>_final.json``."""
        self._put({f"{self.orchestration_id}_final.json": result})

    def _write(self, state: str, now: float) -> None:
        self.flush()
        since = now - RECENT_S
        rows = self.registry.live_tasks(self.orchestration_id, since, RECENT_ORCHESTRATIONS)
        stamp = iso(now)
        own = [r for r in rows if r["orchestration_id"] == self.orchestration_id]
        note = self.registry.orchestration(self.orchestration_id)["note"]
        self._put(
            {
                "process_registry.json": {
                    "timestamp": stamp,
                    "processes": [_process(r) for r in rows],
                },
                "heartbeats.json": {
                    "timestamp": stamp,
                    "active_processes": [
                        _heartbeat(r, now)
                        for r in rows
                        if r["status"] in (TaskStatus.QUEUED, TaskStatus.RUNNING)
                    ],
                },
                "registry_stats.json": _stats(rows, stamp),
                f"{self.orchestration_id}_status.json": status_document(
                    self.orchestration_id,
                    own,
                    state,
                    now,
                    note,
                    self.registry.attempts(self.orchestration_id),
                ),
            }
        )
        # A failed write waits for the next one like any other, rather than being tried
        # again at every step of the loop.
        self.dirty, self.last_write = False, now

    def _put(self, files: Mapping[str, Any]) -> None:
        """Write each file; a folder that cannot be written is reported, once, not raised."""
        try:
            for name, data in files.items():
                write_json_atomic(self.directory / name, data)
        except OSError as exc:
            if not self.failing:
                log.warning(
                    "monitoring files not written to %s: %s; the run goes on "
                    "(the registry records everything; gadugi status shows it)",
                    self.directory,
                    exc,
                )
            self.failing = True
            return
        if self.failing:
            log.info("monitoring files written to %s again", self.directory)
        self.failing = False


def _resources(row: dict[str, Any]) -> dict[str, Any] | None:
    if row["cpu_percent"] is None and row["memory_mb"] is None:
        return None
    return {"cpu_percent": row["cpu_percent"], "memory_mb": row["memory_mb"]}


def _process(row: dict[str, Any]) -> dict[str, Any]:
    command = row["command"]
    return {
        "task_id": row["task_id"],
        "task_name": row["name"],
        "orchestration_id": row["orchestration_id"],
        "status": row["status"],
        "pid": row["pid"],
        "command": " ".join(command) if isinstance(command, list) else command,
        "working_directory": row["worktree"],
        "prompt_file": row["prompt_file"],
        "branch": row["branch"],
        "created_at": iso(row["created_at"]),
        "started_at": iso(row["started_at"]),
        "completed_at": iso(row["completed_at"]),
        "last_heartbeat": iso(row["last_heartbeat"]),
        "exit_code": row["exit_code"],
        "error_message": row["error_message"],
        "attempt": row["attempts"],
        "resource_usage": _resources(row),
    }


def _heartbeat(row: dict[str, Any], now: float) -> dict[str, Any]:
    beat = row["last_heartbeat"]
    return {
        "task_id": row["task_id"],
        "orchestration_id": row["orchestration_id"],
        "status": row["status"],
        "pid": row["pid"],
        "last_heartbeat": iso(beat),
        "seconds_since_heartbeat": round(now - beat, 3) if beat else None,
        "resource_usage": _resources(row),
    }


def runtime_seconds(
    row: dict[str, Any], now: float, attempts: Sequence[dict[str, Any]] | None = None
) -> float | None:
    """How long the task's agent has run: with its ``attempts``, the sum of their run times
    (a running one up to ``now``), so waits between attempts do not count."""
    if row["started_at"] is None:
        return None
    if attempts:
        ran = sum(float(a["ended_at"] or now) - float(a["started_at"]) for a in attempts)
        return round(ran, 3)
    end: float = row["completed_at"] if row["completed_at"] is not None else now
    return round(end - float(row["started_at"]), 3)


def _stats(rows: list[dict[str, Any]], stamp: str | None) -> dict[str, Any]:
    counts = {s.value: 0 for s in TaskStatus}
    for row in rows:
        counts[row["status"]] = counts.get(row["status"], 0) + 1
    done = [
        r["completed_at"] - r["started_at"]
        for r in rows
        if r["completed_at"] is not None and r["started_at"] is not None
    ]
    return {
        "timestamp": stamp,
        "total_processes": len(rows),
        **{f"{s}_count": n for s, n in counts.items()},
        "average_execution_time": round(sum(done) / len(done), 3) if done else 0.0,
        "total_cpu_usage": round(
            sum(r["cpu_percent"] or 0.0 for r in rows if r["status"] == "running"), 2
        ),
        "total_memory_usage": round(
            sum(r["memory_mb"] or 0.0 for r in rows if r["status"] == "running"), 2
        ),
    }


VERDICT_COLUMNS = (
    "phase",
    "verdict",
    "summary",
    "verification",
    "changed_files",
    "insertions",
    "deletions",
)
STATUS_COLUMNS = (
    "task_id",
    "name",
    "status",
    "started_at",
    "completed_at",
    "attempts",
    "branch",
    "pid",
    "last_line",
    "error_message",
    "agent",
    *VERDICT_COLUMNS,
    "landing_status",
    "landing_commit",
    "landing_attempts",
    "landing_note",
    "waiting_reason",
)


def status_document(
    orchestration_id: str,
    rows: list[dict[str, Any]],
    state: str,
    now: float,
    note: str | None = None,
    attempts: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    by_task: dict[str, list[dict[str, Any]]] = {}
    for attempt in attempts:
        by_task.setdefault(attempt["task_id"], []).append(attempt)
    breakdown: dict[str, int] = {}
    for row in rows:
        breakdown[row["status"]] = breakdown.get(row["status"], 0) + 1
    return {
        "orchestration_id": orchestration_id,
        "timestamp": iso(now),
        "state": state,
        "waiting_reason": note,
        "total_tasks": len(rows),
        "status_breakdown": breakdown,
        "tasks": [
            {
                "task_id": r["task_id"],
                "task_name": r["name"],
                "status": r["status"],
                "runtime_seconds": runtime_seconds(r, now, by_task.get(r["task_id"])),
                "attempt": r["attempts"],
                "branch": r["branch"],
                "pid": r["pid"],
                "last_line": r["last_line"],
                "error_message": r["error_message"],
                "agent": r["agent"],
                # The running attempt's phase (setup, agent, verify), and how a task ended.
                **{key: r.get(key) for key in VERDICT_COLUMNS},
                "landing": task_landing(r),
                # Recorded by the loop when it changes; only a queued task waits.
                "waiting_reason": (
                    r.get("waiting_reason") if r["status"] == TaskStatus.QUEUED else None
                ),
            }
            for r in rows
        ],
    }

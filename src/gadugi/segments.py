"""Honest figures for a result: run time is time an agent ran, wall time is time gadugi drove.

An orchestration is driven in one or more segments: the ``run`` that created it, then any
``resume`` (after its orchestrator died) or ``retry``. Each segment has its own wall time and
speedup; the orchestration's figures are their sums, so the idle time between a run and a
later retry never counts as work. A task's run time is the sum of its attempts' run times,
so the time it sat queued, parked or finished between attempts does not count either.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from .tasks import iso

KINDS = ("run", "resume", "retry")


def task_run_seconds(attempts: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Each task's run time: the sum of its ended attempts' run times."""
    seconds: dict[str, float] = {}
    for a in attempts:
        if a["ended_at"] is not None:
            took = max(0.0, float(a["ended_at"]) - float(a["started_at"]))
            seconds[a["task_id"]] = seconds.get(a["task_id"], 0.0) + took
    return seconds


def segment(
    kind: str,
    started_at: float,
    finished_at: float,
    attempts: Iterable[Mapping[str, Any]],
    tasks: Sequence[str],
) -> dict[str, Any]:
    """One segment's figures: its wall time, and the attempts' run time within it over that."""
    wall = max(finished_at - started_at, 1e-9)
    busy = 0.0
    for a in attempts:
        end = a["ended_at"] if a["ended_at"] is not None else finished_at
        busy += max(0.0, min(float(end), finished_at) - max(float(a["started_at"]), started_at))
    return {
        "kind": kind,
        "started_at": iso(started_at),
        "finished_at": iso(finished_at),
        "execution_time_seconds": round(wall, 3),
        "parallel_speedup": round(busy / wall, 3),
        "tasks": list(tasks),
    }


def earlier_segments(
    orch: Mapping[str, Any],
    attempts: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
) -> list[dict[str, Any]]:
    """The segments recorded before the one about to be driven.

    Those of the last result, plus the one that was cut short if its orchestrator died
    (it ends at its last recorded activity, not when someone noticed). A result from a
    gadugi that kept no segments counts as one ``run``.
    """
    result = _decoded(orch.get("result"))
    found = result.get("segments")
    if isinstance(found, list):
        done = [s for s in found if isinstance(s, dict)]
    elif result.get("started_at") and result.get("finished_at"):
        done = [
            {
                "kind": "run",
                "started_at": result["started_at"],
                "finished_at": result["finished_at"],
                "execution_time_seconds": result.get("execution_time_seconds"),
                "parallel_speedup": result.get("parallel_speedup"),
                "tasks": [t.get("task_id") for t in result.get("tasks", [])],
            }
        ]
    else:
        done = []
    if orch.get("state") != "running":
        return done  # the last drive finished and recorded its segment
    started = orch.get("segment_started_at") or orch["started_at"]
    kind = orch.get("segment_kind") or ("resume" if done else "run")
    last = _last_activity(started, attempts, rows)
    cut = [r["task_id"] for r in rows if _active_after(r, started)]
    return [*done, segment(kind, started, last, attempts, cut or [r["task_id"] for r in rows])]


def totals(segments: Sequence[Mapping[str, Any]], busy: float) -> tuple[float, float]:
    """The orchestration's wall time (the segments' sum) and its speedup."""
    wall = max(sum(float(s.get("execution_time_seconds") or 0.0) for s in segments), 1e-9)
    return round(wall, 3), round(busy / wall, 3)


def _decoded(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    if isinstance(value, str):
        try:
            data = json.loads(value)
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}
    return {}


def _last_activity(
    started: float, attempts: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]
) -> float:
    stamps = [started]
    for a in attempts:
        stamps += [a["started_at"], a["ended_at"] or a["started_at"]]
    for r in rows:
        stamps += [r.get("last_heartbeat") or started, r.get("completed_at") or started]
    return float(max(stamps))


def _active_after(row: Mapping[str, Any], started: float) -> bool:
    """Whether a task did something in the segment that began at ``started``."""
    stamps = (row.get("last_heartbeat"), row.get("completed_at"), row.get("started_at"))
    return any(s is not None and s >= started for s in stamps)

"""Trends across runs, from the registry: durations, success, cost and re-runs by task
type, by agent and by day; and the measured durations ``plan`` learns its estimates from.

A task's duration is the time its attempts ran (waits between them excluded), which is
what an estimate predicts. Its type is the plan's (``planning.intent.classify``), read from
its prompt file while that exists; a task whose prompt is gone counts as ``unknown``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .errors import GadugiError
from .holds import amount
from .lifecycle import parse_status
from .planning.intent import classify
from .planning.prompts import read_prompt
from .registry import Registry
from .tasks import TaskStatus, iso

# No attempt runs ten years: a longer span is a damaged row, and summing a few such spans
# would overflow (statistics.fmean raises).
MAX_SPAN_S = 10 * 365 * 24 * 3600.0


def finished_tasks(registry: Registry) -> list[dict[str, Any]]:
    """Every finished task of every orchestration, with its type, agent, run time and cost."""
    out = []
    types: dict[str, str] = {}
    for orch in registry.orchestrations():
        config = orch["config"] if isinstance(orch.get("config"), dict) else {}
        root = Path(orch["project_root"])
        ran: dict[str, float] = {}
        for a in registry.attempts(orch["id"]):
            if a["ended_at"] is not None:
                ran[a["task_id"]] = ran.get(a["task_id"], 0.0) + _span(a)
        for task in registry.tasks(orch["id"]):
            if not parse_status(task["task_id"], task["status"]).finished:
                continue
            if task["task_id"] not in ran:
                continue  # never started (a failed dependency): nothing was measured
            agent = task["agent"] if isinstance(task["agent"], dict) else {}
            prompt = task["prompt_file"]
            if prompt not in types:
                types[prompt] = _type_of(root / prompt, root)
            out.append(
                {
                    "orchestration_id": orch["id"],
                    "task_id": task["task_id"],
                    "prompt_file": _relative(root / prompt, root),
                    "type": types[prompt],
                    "agent": str(config.get("agent") or "unknown"),
                    "status": task["status"],
                    "duration_seconds": ran[task["task_id"]],
                    "reruns": max(0, task["attempts"] - 1),
                    "cost_usd": amount(agent.get("cost_usd")),
                    "day": (iso(orch["started_at"]) or "unknown")[:10],
                }
            )
    return out


def _span(attempt: dict[str, Any]) -> float:
    """How long an attempt ran; 0 when its times say less (the wall clock stepped back
    while it ran) or nothing sensible (a damaged row: longer than any run, or no number)."""
    seconds = float(attempt["ended_at"]) - float(attempt["started_at"])
    return seconds if 0 < seconds <= MAX_SPAN_S else 0.0


def _type_of(path: Path, root: Path) -> str:
    try:
        return classify(read_prompt(path, root))
    except (GadugiError, OSError, ValueError):
        return "unknown"


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def trends(registry: Registry) -> dict[str, Any]:
    """``gadugi stats --json``: the finished tasks grouped three ways."""
    rows = finished_tasks(registry)
    return {
        "tasks": len(rows),
        "by_type": _groups(rows, "type"),
        "by_agent": _groups(rows, "agent"),
        "by_day": _groups(rows, "day"),
    }


def _groups(rows: Iterable[dict[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row[key], []).append(row)
    return {name: summarize(grouped[name]) for name in sorted(grouped)}


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    done = [r for r in rows if r["status"] == TaskStatus.COMPLETED]
    took = [r["duration_seconds"] for r in done]
    return {
        "tasks": len(rows),
        "completed": len(done),
        "success_rate": round(len(done) / len(rows), 4) if rows else 0.0,
        "median_duration_seconds": round(statistics.median(took), 3) if took else None,
        "mean_duration_seconds": round(statistics.fmean(took), 3) if took else None,
        "reruns": sum(r["reruns"] for r in rows),
        "cost_usd": round(sum(r["cost_usd"] or 0.0 for r in rows), 6),
    }


def history(registry: Registry) -> dict[str, dict[str, float]]:
    """What ``plan`` learns from: the median measured minutes of completed tasks, by
    prompt file (relative to the project) and by type, for ``planning.analyze``."""
    by_prompt: dict[str, list[float]] = {}
    by_type: dict[str, list[float]] = {}
    for row in finished_tasks(registry):
        if row["status"] != TaskStatus.COMPLETED:
            continue
        minutes = row["duration_seconds"] / 60.0
        by_prompt.setdefault(row["prompt_file"], []).append(minutes)
        by_type.setdefault(row["type"], []).append(minutes)
    return {
        "prompt": {k: statistics.median(v) for k, v in by_prompt.items()},
        "type": {k: statistics.median(v) for k, v in by_type.items()},
    }

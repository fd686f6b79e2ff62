"""Time one monitoring write (``Monitor.write``) against the length of the history.

A registry is filled with past orchestrations (finished ones, one every ten minutes back
from now, each with its stored configuration, its result and four tasks), then a running
orchestration of its own; each size is timed over many writes of the four live files.
The live files show this orchestration and a bounded number of recent others, so a
write should cost the same at 10 and at 1,000 past orchestrations. Wall and CPU time are
both given: on a shared machine the CPU time is the steadier of the two.

Needs: gadugi importable by the Python running this script (nothing else: no git, no
processes). Default:  .venv/bin/python bench/monitor_write.py
Smoke run (a few seconds):  .venv/bin/python bench/monitor_write.py --repeat 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import benchkit as bk
from gadugi.config import OrchestrationConfig
from gadugi.monitoring import Monitor
from gadugi.registry import Registry

RUN_GAP_S = 600.0


def _tasks(count: int) -> list[dict[str, Any]]:
    return [
        {"task_id": f"task-{n}", "name": f"Task {n}", "prompt_file": f"prompts/task-{n}.md"}
        for n in range(count)
    ]


def _result(orch_id: str, count: int) -> dict[str, Any]:
    """Shaped like a real result, so the stored rows are as large as real ones."""
    return {
        "orchestration_id": orch_id,
        "total_tasks": count,
        "successful_tasks": count,
        "error_summary": [],
        "tasks": [
            {
                "task_id": f"task-{n}",
                "status": "completed",
                "branch": f"gadugi/task-{n}-{orch_id}",
                "worktree": None,
                "log_file": f"/project/.gadugi/logs/{orch_id}/task-{n}.log",
                "commits": 1,
                "error_message": None,
                "agent": {"turns": 12, "cost_usd": 0.0421, "summary": "did the work " * 20},
            }
            for n in range(count)
        ],
    }


def fill(registry: Registry, past: int, tasks: int, now: float) -> None:
    config = asdict(OrchestrationConfig())
    for n in range(past):
        orch_id = f"orch-past-{n:05d}"
        registry.create_orchestration(
            orch_id, Path("/project"), "0" * 40, config, 1, 1.0, False, _tasks(tasks)
        )
        registry.update_tasks(orch_id, {f"task-{t}": {"status": "completed"} for t in range(tasks)})
        registry.finish_orchestration(orch_id, "finished", _result(orch_id, tasks))
        finished = now - (past - n) * RUN_GAP_S
        registry.conn.execute(
            "UPDATE orchestrations SET started_at = ?, finished_at = ? WHERE id = ?",
            (finished - 60, finished, orch_id),
        )
    registry.create_orchestration(
        "orch-live", Path("/project"), "0" * 40, config, 1, 1.0, False, _tasks(tasks)
    )


def measure(work: Path, past: int, tasks: int, repeat: int) -> dict[str, Any]:
    folder = work / f"history-{past}"
    registry = Registry(folder / "state.db")
    fill(registry, past, tasks, time.time())
    monitor = Monitor(registry, "orch-live", folder / "monitoring", 30.0)
    monitor.write("running")  # warm: the page cache and the folder
    times, cpu = [], []
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        monitor.write("running")
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    shown = json.loads((folder / "monitoring" / "process_registry.json").read_text())
    registry.close()
    times.sort()
    return {
        "past_orchestrations": past,
        "median_ms": round(1000 * statistics.median(times), 3),
        "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 3),
        "cpu_median_ms": round(1000 * statistics.median(cpu), 3),
        "tasks_shown": len(shown["processes"]),
        "orchestrations_shown": len({p["orchestration_id"] for p in shown["processes"]}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--history", type=bk.int_list, default=[10, 1000], help="past orchestrations (10,1000)"
    )
    parser.add_argument("--tasks", type=int, default=4, help="tasks per orchestration (4)")
    parser.add_argument("--repeat", type=int, default=200, help="writes timed per size (200)")
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    rows = []
    with bk.workdir(args.workdir, args.keep, "gadugi-bench-monitor-") as work:
        for past in args.history:
            bk.log(f"{past} past orchestrations: {args.repeat} writes")
            rows.append(measure(work, past, args.tasks, args.repeat))
    print(
        bk.markdown_table(
            [
                "past orchestrations",
                "median ms",
                "p95 ms",
                "CPU median ms",
                "tasks shown",
                "orchestrations shown",
            ],
            [
                [
                    r["past_orchestrations"],
                    r["median_ms"],
                    r["p95_ms"],
                    r["cpu_median_ms"],
                    r["tasks_shown"],
                    r["orchestrations_shown"],
                ]
                for r in rows
            ],
        )
    )
    bk.emit(
        "monitor_write", {"tasks": args.tasks, "repeat": args.repeat, "rows": rows}, args.json_out
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 2: gadugi's fixed cost per task, split by phase, beside raw git's cost.

200 trivial tasks (the shell agent runs ``true``), so nearly all the time is gadugi's
own: worktree add and remove, other git calls, spawning, the registry, the monitoring
files, the loop. Measured in one run, each step in a fresh repository:

1. raw git: ``git worktree add -b`` + ``git worktree remove`` per task, one after
   another, called the way gadugi calls git: the floor for any worktree-per-task tool;
2. ``gadugi run`` (the command line) end to end;
3. the same through the Python API in this process, without a profiler;
4. the same under cProfile, split by phase (time in each phase's functions, counted
   from the orchestrator's own callers; see ``benchkit.PHASES``). Most of the time is
   spent waiting for git and child processes, which cProfile does not slow down; the
   gap between steps 3 and 4 shows what the profiler (and the machine's noise) added.

Needs: gadugi in the venv running this script, git, bash. Optional: ``--pyinstrument``
also writes a pyinstrument HTML profile (``.venv/bin/pip install pyinstrument``).
Default (the issue's sizes, ~1 min):  .venv/bin/python bench/per_task_overhead.py
Smoke run (< 15 s):  .venv/bin/python bench/per_task_overhead.py --tasks 20
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from pathlib import Path
from typing import Any

import benchkit as bk


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="trivial tasks (default 200)")
    parser.add_argument("--parallel", type=int, default=8, help="max_parallel (default 8)")
    parser.add_argument("--profile-out", type=Path, help="save the cProfile stats here")
    parser.add_argument(
        "--pyinstrument", type=Path, metavar="HTML", help="also profile with pyinstrument"
    )
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    exe = bk.require_gadugi()
    if args.pyinstrument:
        bk.require_modules("pyinstrument", hint=".venv/bin/pip install pyinstrument")
    n, p = args.tasks, args.parallel
    timeout = 30 + 2.0 * n

    with bk.workdir(args.workdir, args.keep, "gadugi-bench-task-") as work:
        bk.log(f"raw git: {n} x (worktree add + remove)")
        bk.make_repo(work / "raw", n, "true")
        raw = bk.raw_git_worktree_cost(work / "raw", n)

        bk.log(f"gadugi run (command line): {n} trivial tasks at P={p}")
        names = bk.make_repo(work / "cli", n, "true")
        cli_run = bk.run_gadugi_cli(exe, work / "cli", names, p, timeout_s=timeout)

        bk.log("Python API, no profiler")
        names = bk.make_repo(work / "api", n, "true")
        plain = bk.orchestrate_in_process(work / "api", names, p, profile=False)

        bk.log("Python API under cProfile")
        names = bk.make_repo(work / "prof", n, "true")
        prof = bk.orchestrate_in_process(work / "prof", names, p, profile=True)
        if args.profile_out and prof.stats is not None:
            prof.stats.dump_stats(str(args.profile_out))
            bk.log(f"cProfile stats in {args.profile_out} (python -m pstats FILE)")

        if args.pyinstrument:
            names = bk.make_repo(work / "pyi", n, "true")
            pyinstrument: Any = importlib.import_module("pyinstrument")
            profiler = pyinstrument.Profiler(interval=0.001)
            profiler.start()
            bk.orchestrate_in_process(work / "pyi", names, p, profile=False)
            profiler.stop()
            args.pyinstrument.write_text(profiler.output_html(), encoding="utf-8")
            bk.log(f"pyinstrument profile in {args.pyinstrument}")

    phases = prof.phases_s
    busy = sum(v for k, v in phases.items() if not k.startswith("idle"))
    rows = [
        [name, secs, 1000 * secs / n, f"{100 * secs / prof.wall_s:.1f}%"]
        for name, secs in sorted(phases.items(), key=lambda kv: -kv[1])
    ]
    print(f"## {n} trivial tasks at max_parallel {p}\n")
    print(
        bk.markdown_table(
            ["", "wall s", "ms per task"],
            [
                ["raw git: worktree add + remove, sequential", raw["total_ms_mean"] * n / 1000,
                 raw["total_ms_mean"]],
                ["gadugi run (command line, end to end)", cli_run.wall_s,
                 1000 * cli_run.wall_s / n],
                ["OrchestratorCoordinator.orchestrate (in process)", plain.wall_s,
                 1000 * plain.wall_s / n],
                ["the same under cProfile", prof.wall_s, 1000 * prof.wall_s / n],
                ["... of which the orchestrator was busy (not sleeping)", busy, 1000 * busy / n],
            ],
        )
    )  # fmt: skip
    print(
        f"\nraw git alone: add {raw['add_ms_mean']:.1f} ms, remove {raw['remove_ms_mean']:.1f} ms"
        f" per task (medians {raw['add_ms_median']:.1f} / {raw['remove_ms_median']:.1f}); "
        f"gadugi started {prof.git_calls / n:.2f} git processes per task (raw: 2)\n"
    )
    print("## phase split (the cProfile run)\n")
    print(bk.markdown_table(["phase", "s", "ms per task", "share of wall"], rows))
    print("\n## gadugi functions by cumulative time (the cProfile run)\n")
    print(
        bk.markdown_table(
            ["function", "cumulative s", "own s", "calls"],
            [list(r) for r in prof.top[:20]],
        )
    )
    figures: dict[str, Any] = {
        "tasks": n,
        "max_parallel": p,
        "raw_git": raw,
        "cli_wall_s": cli_run.wall_s,
        "cli_ms_per_task": 1000 * cli_run.wall_s / n,
        "api_wall_s": plain.wall_s,
        "api_ms_per_task": 1000 * plain.wall_s / n,
        "busy_ms_per_task": 1000 * busy / n,
        "git_processes_per_task": prof.git_calls / n,
        "profiled_wall_s": prof.wall_s,
        "phases_ms_per_task": {k: 1000 * v / n for k, v in phases.items()},
        "top_functions": prof.top,
        "finished_at": time.time(),
    }
    bk.emit("per_task_overhead", figures, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark 5: what a task's worktree costs as the repository grows.

For each repository size (default 250 and 20,000 generated files of ~200 bytes, in
folders of 100), in one fresh repository per size:

1. raw git: ``git worktree add -b`` + ``git worktree remove`` per task, one command at
   a time, P worktrees added then removed (the pattern of P slots);
2. gadugi: T trivial tasks (``true``) through the Python API under cProfile, split by
   phase as in ``per_task_overhead.py``: its worktree add and remove per task, its
   other per-task costs, and its one-off planning cost (which lists tracked files);
3. the disk a worktree takes (its checked-out files; git's own per-worktree files
   are a few KB more).

A worktree add writes every tracked file, so on a slow disk the 20,000-file figures
are mostly file creation; ``--workdir /dev/shm`` measures the same on tmpfs.

Needs: gadugi in the venv running this script, git, bash.
Default (the issue's sizes; ~1 min on tmpfs, several on a slow disk):
    .venv/bin/python bench/repo_size.py
Smoke run (< 20 s):  .venv/bin/python bench/repo_size.py --files 250,2000 --tasks 4
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import benchkit as bk


def disk_usage(path: Path) -> int:
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(dirpath) / f).lstat().st_blocks * 512
            except OSError:
                continue
    return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--files", type=bk.int_list, default=[250, 20000], help="sizes (default 250,20000)"
    )
    parser.add_argument("--tasks", type=int, default=6, help="tasks per size (default 6)")
    parser.add_argument("--parallel", type=int, default=4, help="max_parallel (default 4)")
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    bk.require_gadugi()
    t, p = args.tasks, args.parallel
    rows: list[dict[str, Any]] = []
    with bk.workdir(args.workdir, args.keep, "gadugi-bench-size-") as work:
        for files in args.files:
            repo = work / f"repo-{files}"
            t0 = time.perf_counter()
            names = bk.make_repo(repo, t, "true", extra_files=files)
            os.sync()  # so writing the repository back does not land in the timings
            made = time.perf_counter() - t0
            bk.log(f"{files} files: repository made in {made:.1f}s; raw git x{t}")
            raw = bk.raw_git_worktree_cost(repo, t, batch=p)
            probe = repo / ".worktrees-raw" / "probe"
            bk.git(["worktree", "add", "--quiet", "--detach", str(probe), "HEAD"], repo)
            disk = disk_usage(probe) - disk_usage(probe / ".git")
            bk.git(["worktree", "remove", str(probe)], repo)

            os.sync()
            bk.log(f"{files} files: gadugi, {t} tasks at P={p} (cProfile)")
            prof = bk.orchestrate_in_process(repo, names, p, profile=True)
            ph = prof.phases_s
            planning = ph["planning (read prompts, plan)"]
            per_task = (prof.wall_s - planning) / t
            rows.append(
                {
                    "files": files,
                    "raw_add_ms": raw["add_ms_mean"],
                    "raw_remove_ms": raw["remove_ms_mean"],
                    "gadugi_add_ms": 1000 * ph["worktree add (git)"] / t,
                    "gadugi_remove_ms": 1000 * ph["worktree remove (git)"] / t,
                    "gadugi_other_git_ms": 1000 * ph["other git calls"] / t,
                    "gadugi_ms_per_task": 1000 * per_task,
                    "planning_s": planning,
                    "worktree_disk_mb": disk / 2**20,
                }
            )
    print(f"## per-task worktree cost by repository size ({t} tasks, max_parallel {p})\n")
    print(
        bk.markdown_table(
            [
                "files",
                "raw git add ms",
                "raw git remove ms",
                "gadugi add ms",
                "gadugi remove ms",
                "gadugi other git ms",
                "gadugi wall per task ms",
                "planning s (once)",
                "worktree on disk MB",
            ],
            [
                [
                    r["files"],
                    r["raw_add_ms"],
                    r["raw_remove_ms"],
                    r["gadugi_add_ms"],
                    r["gadugi_remove_ms"],
                    r["gadugi_other_git_ms"],
                    r["gadugi_ms_per_task"],
                    r["planning_s"],
                    r["worktree_disk_mb"],
                ]
                for r in rows
            ],
        )
    )
    bk.emit("repo_size", {"tasks": t, "max_parallel": p, "rows": rows}, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

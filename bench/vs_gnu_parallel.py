"""Benchmark 3: ``gadugi run`` against GNU parallel doing the same work by hand.

The same N trivial tasks (the shell agent runs ``true``), each in a fresh worktree on a
new branch that is removed afterwards, at the same parallelism. The GNU parallel side
runs ``bench/gnu_parallel_task.sh`` per task (worktree add, the prompt's ``sh`` block
with ``bash -e``, worktree remove; git's worktree commands serialized with flock as
gadugi's are). The two are timed alternately, each round in fresh repositories (who
goes first alternates too); the reported ratio is the median of the rounds' ratios,
beside the ratio of the best times. Both times are whole processes, start to exit.

Target (issue): gadugi <= 1.2x GNU parallel's time.

Needs: gadugi in the venv running this script, git, bash, GNU parallel and flock
(Debian: ``apt-get install -y parallel``; flock is in util-linux).
Default (the issue's sizes, 5 rounds, ~2 min):  .venv/bin/python bench/vs_gnu_parallel.py
Smoke run (< 20 s):  .venv/bin/python bench/vs_gnu_parallel.py --tasks 20 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchkit as bk

TARGET_RATIO = 1.2
TASK_SCRIPT = bk.HERE / "gnu_parallel_task.sh"


def run_gnu_parallel(repo: Path, names: list[str], p: int, tag: str, timeout_s: float) -> float:
    exclude = repo / ".git" / "info" / "exclude"
    exclude.write_text(exclude.read_text() + "/.worktrees/\n/.logs/\n")
    prompts = [str(repo / "prompts" / n) for n in names]
    argv = [
        "parallel",
        "--will-cite",
        "-j",
        str(p),
        "--halt",
        "now,fail=1",
        str(TASK_SCRIPT),
        str(repo),
        "{}",
        tag,
        ":::",
        *prompts,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"GNU parallel exited {proc.returncode}: {proc.stderr[-2000:]}")
    left = bk.git(["worktree", "list", "--porcelain"], repo).count("worktree ")
    if left != 1:
        raise RuntimeError(f"GNU parallel run left {left - 1} worktrees behind")
    return wall


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200, help="trivial tasks (default 200)")
    parser.add_argument("--parallel", type=int, default=8, help="jobs at once (default 8)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    exe = bk.require_gadugi()
    bk.require_tools(
        "parallel", "flock", hint="Debian/Ubuntu: apt-get install -y parallel util-linux"
    )
    n, p = args.tasks, args.parallel
    timeout = 30 + 2.0 * n
    gadugi_s: list[float] = []
    parallel_s: list[float] = []
    with bk.workdir(args.workdir, args.keep, "gadugi-bench-par-") as work:
        for r in range(args.rounds):
            # Alternate which goes first, so drift on the machine hits both alike.
            order = ("gadugi", "parallel") if r % 2 == 0 else ("parallel", "gadugi")
            for who in order:
                repo = work / f"{who}-{r}"
                names = bk.make_repo(repo, n, "true")
                if who == "gadugi":
                    wall = bk.run_gadugi_cli(exe, repo, names, p, timeout_s=timeout).wall_s
                    gadugi_s.append(wall)
                else:
                    wall = run_gnu_parallel(repo, names, p, f"r{r}", timeout)
                    parallel_s.append(wall)
                bk.log(f"round {r + 1}: {who}: {wall:.2f}s")
    g, q = statistics.median(gadugi_s), statistics.median(parallel_s)
    # Each round's pair ran back to back, under the same conditions on the machine.
    paired = [a / b for a, b in zip(gadugi_s, parallel_s, strict=True)]
    ratio = statistics.median(paired)
    best_ratio = min(gadugi_s) / min(parallel_s)
    print(f"## {n} trivial tasks, max_parallel / -j {p}, {args.rounds} alternating rounds\n")
    print(
        bk.markdown_table(
            ["", "runs s", "median s", "ms per task"],
            [
                ["gadugi run", ", ".join(f"{x:.2f}" for x in gadugi_s), g, 1000 * g / n],
                ["GNU parallel + git worktree", ", ".join(f"{x:.2f}" for x in parallel_s), q,
                 1000 * q / n],
            ],
        )
    )  # fmt: skip
    ok = ratio <= TARGET_RATIO
    print(
        f"\nratio gadugi / GNU parallel, median of the rounds' ratios: {ratio:.2f}x "
        f"(each round: {', '.join(f'{x:.2f}' for x in paired)}; best time against best "
        f"time: {best_ratio:.2f}x)\ntarget <= {TARGET_RATIO}x: {bk.verdict(ok)}"
    )
    figures: dict[str, Any] = {
        "tasks": n,
        "max_parallel": p,
        "gadugi_s": gadugi_s,
        "gnu_parallel_s": parallel_s,
        "gadugi_median_s": g,
        "gnu_parallel_median_s": q,
        "ratio": ratio,
        "round_ratios": paired,
        "best_ratio": best_ratio,
        "target": {"ratio": TARGET_RATIO, "met": ok},
    }
    bk.emit("vs_gnu_parallel", figures, args.json_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

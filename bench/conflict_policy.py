"""Benchmark: the makespan of each ``conflict_policy`` on a batch with conflicting pairs.

Ten shell-agent tasks at ``--max-parallel`` 4 and 8 on a real repository: three pairs that
rewrite the same line of the same file (declared with ``touches``), one pair related
only through an import (a test's docstring and the module it imports: never a
conflict), a chain of two (a dependency), and two free tasks. Each task sleeps its
duration, then makes a real edit and commits it. The later task of a pair appends to
the line (``sed 's/$/ .../'``), so when it starts from the earlier one's branch the two
compose; from the base they clash.

For each policy: the makespan (gadugi's ``execution_time_seconds``) against its lower
bound (the longest chain the policy must respect: dependencies, plus the conflicting
pairs under stack and serialize; or the total work over the slots, whichever is
larger), and what the schedule leaves for landing: every completed branch merged into
the base in request order with ``git merge-tree --write-tree`` (no working tree is
touched), counting the merges that conflict. Scheduling only; landing itself is
measured by ``gadugi land``'s own benchmark.

The repository's ``gadugi.toml`` lifts the load ceiling (``max_load_per_cpu``), so a
busy machine delays nothing but the agents themselves.

Needs: gadugi in the venv running this script, git 2.38+, bash.
Default (~2 minutes):  .venv/bin/python bench/conflict_policy.py
Smoke run (~30 s):  .venv/bin/python bench/conflict_policy.py --scale 0.25
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Any

import benchkit as bk

POLICIES = ("serialize", "stack", "optimistic")
# name: (seconds, touches, depends_on, edit)
TASKS: dict[str, tuple[float, str | None, str | None, str]] = {
    "a1": (6, "conf/a.txt", None, "sed -i 's/^.*$/a = 1/' conf/a.txt"),
    "a2": (6, "conf/a.txt", None, "sed -i 's/$/  # a2/' conf/a.txt"),
    "b1": (6, "conf/b.txt", None, "sed -i 's/^.*$/b = 1/' conf/b.txt"),
    "b2": (4, "conf/b.txt", None, "sed -i 's/$/  # b2/' conf/b.txt"),
    "c1": (4, "conf/c.txt", None, "sed -i 's/^.*$/c = 1/' conf/c.txt"),
    "c2": (6, "conf/c.txt", None, "sed -i 's/$/  # c2/' conf/c.txt"),
    "doc": (4, None, None, "echo '# documented' >> tests/test_core.py"),
    "core": (4, None, None, "echo 'X = 2' >> src/core.py"),
    "x1": (2, "lib/x1.txt", None, "echo x1 > lib/x1.txt"),
    "x2": (2, "lib/x2.txt", "x1", "echo x2 > lib/x2.txt"),
}
MENTIONS = {"doc": "Improve the docstring of tests/test_core.py.", "core": "Change src/core.py."}


def make_batch(path: Path, scale: float) -> list[str]:
    names = bk.make_repo(path, 0, "true")
    for rel, text in {
        "conf/a.txt": "a = 0\n",
        "conf/b.txt": "b = 0\n",
        "conf/c.txt": "c = 0\n",
        "src/core.py": "X = 1\n",
        "tests/test_core.py": '"""Tests."""\nimport core\n',
        "lib/README": "lib\n",
    }.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text, encoding="utf-8")
    (path / "gadugi.toml").write_text("max_load_per_cpu = 1000\n", encoding="utf-8")
    bk.git(["add", "-A", "--", ":!prompts"], path)
    bk.git(["commit", "--quiet", "-m", "files the batch edits"], path)
    for name, (seconds, touches, depends, edit) in TASKS.items():
        script = f"sleep {seconds * scale:g}\n{edit}\ngit add -A\ngit commit -qm '{name}'"
        names.append(
            bk.write_shell_prompt(
                path, name, script, touches=touches, depends_on=depends, text=MENTIONS.get(name, "")
            )
        )
    return names


def lower_bound(policy: str, scale: float, parallel: int) -> float:
    """The longest chain the policy must respect, or the work over the slots."""
    seconds = {n: t[0] * scale for n, t in TASKS.items()}
    chains = [seconds["x1"] + seconds["x2"], *seconds.values()]
    if policy != "optimistic":
        chains += [seconds[f"{p}1"] + seconds[f"{p}2"] for p in "abc"]
    return max(*chains, sum(seconds.values()) / parallel)


def landing_conflicts(repo: Path, result: dict[str, Any]) -> int:
    """Merge every completed branch into the base in request order, without a working
    tree; the number of merges that conflict (each is skipped)."""
    head = bk.git(["rev-parse", "main"], repo).strip()
    conflicts = 0
    for task in result["tasks"]:
        if task["status"] != "completed":
            continue
        merged = subprocess.run(
            ["git", "merge-tree", "--write-tree", head, task["branch"]],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        if merged.returncode != 0:
            conflicts += 1
            continue
        tree = merged.stdout.split("\n", 1)[0]
        head = bk.git(
            ["commit-tree", tree, "-p", head, "-p", task["branch"], "-m", task["task_id"]], repo
        ).strip()
    return conflicts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration")
    parser.add_argument("--repeat", type=int, default=1, help="runs per policy (best shown)")
    parser.add_argument("--parallel", type=bk.int_list, default=[4, 8], help="P values: 4,8")
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    exe = bk.require_gadugi()
    rows: list[dict[str, Any]] = []
    with bk.workdir(args.workdir, args.keep, "gadugi-bench-conflicts-") as work:
        for parallel, policy in [(p, policy) for p in args.parallel for policy in POLICIES]:
            best: dict[str, Any] | None = None
            for rep in range(args.repeat):
                repo = work / f"{policy}-p{parallel}-{rep}"
                names = make_batch(repo, args.scale)
                bk.log(f"{policy}: {len(names)} tasks at P={parallel}")
                run = bk.run_gadugi_cli(
                    exe,
                    repo,
                    names,
                    parallel,
                    timeout_s=600,
                    extra=["--conflict-policy", policy],
                )
                bound = lower_bound(policy, args.scale, parallel)
                makespan = run.result["execution_time_seconds"]
                row = {
                    "max_parallel": parallel,
                    "policy": policy,
                    "makespan_s": makespan,
                    "wall_s": run.wall_s,
                    "lower_bound_s": bound,
                    "over_bound": makespan / bound - 1,
                    "completed": run.result["successful_tasks"],
                    "landing_conflicts": landing_conflicts(repo, run.result),
                    "plan_accuracy": run.result.get("plan_accuracy"),
                }
                if best is None or row["makespan_s"] < best["makespan_s"]:
                    best = row
            assert best is not None
            rows.append(best)
    print(
        bk.markdown_table(
            [
                "P",
                "policy",
                "makespan s",
                "lower bound s",
                "over the bound",
                "wall s",
                "completed",
                "merges that conflict at landing",
                "plan precision / recall",
            ],
            [
                [
                    r["max_parallel"],
                    r["policy"],
                    r["makespan_s"],
                    r["lower_bound_s"],
                    f"{100 * r['over_bound']:.0f}%",
                    r["wall_s"],
                    f"{r['completed']}/{len(TASKS)}",
                    r["landing_conflicts"],
                    _accuracy(r["plan_accuracy"]),
                ]
                for r in rows
            ],
        )
    )
    bk.emit("conflict_policy", {"rows": rows, "scale": args.scale}, args.json_out)
    return 0


def _accuracy(found: dict[str, Any] | None) -> str:
    if not found:
        return "-"
    return f"{found['precision']} / {found['recall']}"


if __name__ == "__main__":
    sys.exit(main())

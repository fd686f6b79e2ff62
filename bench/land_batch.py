"""Benchmark: a realistic batch run and landed with ``gadugi run --all --land --into main``.

Twelve shell-agent tasks on a repository of ~300 files with a small ``python3 -m
unittest`` suite, durations 3 to 20 s: three real conflicts (pairs rewriting the same
line of the same module, declared with ``touches``), two predicted conflicts that are
false (the declared ``touches`` overlap, the edits go to different files), one task
that breaks the tests, and a chain of three (``depends_on``). Each task sleeps its
duration, then edits and commits. The later task of a real pair appends to the line
the earlier one rewrites, so from the earlier one's branch the two compose; from the
base they clash. A script re-run on a conflicted merge (landing's re-run on the
integration head) takes the integration head's side of the conflicted files, then
applies its edit again, as an agent asked to resolve would.

For each policy: ``gadugi run --all --land --into main --verify TESTS --json`` at
``--max-parallel 12``, and its makespan (``execution_time_seconds``) against the
critical-path lower bound (the longest dependency chain: no schedule can beat it),
and against the policy's own bound (that chain or a sequenced pair, whichever is
longer); tasks landed with no person; agent re-runs (attempts beyond 1); verification
runs (under ``.gadugi/logs/<orch>/``: each task attempt's own check,
``<task>.<n>.verify.exit.json``, and each landing candidate's, ``land.<n>.verify.log``);
and the tasks that need a person.

Beside it, the baseline a user would script: GNU parallel (``xargs -P`` when it is
missing) running the same scripts in fresh worktrees (``git worktree add``; the chain
is one job, each step branched from the one before, since a script cannot start a step
from a branch that does not exist yet), then a sequential ``git merge`` loop into main
with the tests after each merge: a conflicting merge is aborted, a red one reset, and
either needs a person.

Needs: gadugi in the venv running this script, git 2.38+, bash, python3; GNU parallel
optional.
Default (~3 minutes):  .venv/bin/python bench/land_batch.py
Smoke run (~1 minute):  .venv/bin/python bench/land_batch.py --scale 0.25
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchkit as bk

POLICIES = ("stack", "serialize", "optimistic")
# The interpreter itself: the python3 on this machine's PATH is a pyenv shim, a bash
# script that costs 0.2 s a call, which would be most of every verification here.
TESTS = f"{shlex.quote(sys.executable)} -m unittest discover -q -s tests -t ."
# name: (seconds, touches, depends_on, edit)
TASKS: dict[str, tuple[float, str | None, str | None, str]] = {
    # three real conflicts: the same line of the same module
    "a1": (20, "app/alpha.py", None, "sed -i 's/^VALUE = .*$/VALUE = 1/' app/alpha.py"),
    "a2": (8, "app/alpha.py", None, "sed -i '/^VALUE/s/$/  # a2/' app/alpha.py"),
    "b1": (10, "app/beta.py", None, "sed -i 's/^VALUE = .*$/VALUE = 1/' app/beta.py"),
    "b2": (6, "app/beta.py", None, "sed -i '/^VALUE/s/$/  # b2/' app/beta.py"),
    "g1": (5, "app/gamma.py", None, "sed -i 's/^VALUE = .*$/VALUE = 1/' app/gamma.py"),
    "g2": (12, "app/gamma.py", None, "sed -i '/^VALUE/s/$/  # g2/' app/gamma.py"),
    # two predicted conflicts that are false: overlapping touches, different files
    "d1": (9, "docs", None, "echo 'More guidance.' >> docs/guide.md"),
    "d2": (7, "docs", None, "echo 'Another answer.' >> docs/faq.md"),
    "brk": (4, "lib", None, "sed -i 's/return a + b/return a - b/' lib/util.py"),
    # a chain of three; c1 and brk are the second false pair (both declare lib/)
    "c1": (6, "lib", None, "printf 'def one():\\n    return 1\\n' > lib/chain.py"),
    "c2": (5, "lib/chain.py", "c1", "printf 'def two():\\n    return 2\\n' >> lib/chain.py"),
    "c3": (3, "lib/chain.py", "c2", "printf 'def three():\\n    return 3\\n' >> lib/chain.py"),
}
PAIRS = [("a1", "a2"), ("b1", "b2"), ("g1", "g2"), ("d1", "d2"), ("c1", "brk")]
CHAIN = ("c1", "c2", "c3")
BREAKS = "brk"
# A re-run on a conflicted merge takes the integration head's side, then edits again.
RESOLVE = (
    "if git rev-parse -q --verify MERGE_HEAD >/dev/null; then\n"
    "  git diff --name-only --diff-filter=U | xargs -r git checkout --theirs --\n"
    "fi"
)
FILES = {
    "app/__init__.py": "",
    "app/alpha.py": "VALUE = 0\n",
    "app/beta.py": "VALUE = 0\n",
    "app/gamma.py": "VALUE = 0\n",
    "lib/__init__.py": "",
    "lib/util.py": "def add(a, b):\n    return a + b\n",
    "docs/guide.md": "# Guide\n",
    "docs/faq.md": "# FAQ\n",
    "tests/__init__.py": "",
    "tests/test_app.py": (
        "import unittest\n\nfrom app import alpha, beta, gamma\n\n\n"
        "class App(unittest.TestCase):\n"
        "    def test_values(self):\n"
        "        for mod in (alpha, beta, gamma):\n"
        "            self.assertIn(mod.VALUE, (0, 1))\n"
    ),
    "tests/test_lib.py": (
        "import importlib.util\nimport unittest\n\nfrom lib import util\n\n\n"
        "class Lib(unittest.TestCase):\n"
        "    def test_add(self):\n"
        "        self.assertEqual(util.add(2, 2), 4)\n\n"
        "    def test_chain(self):\n"
        "        if importlib.util.find_spec('lib.chain') is None:\n"
        "            self.skipTest('no chain yet')\n"
        "        from lib import chain\n\n"
        "        self.assertEqual(chain.one(), 1)\n"
    ),
}


def script(name: str, scale: float, follow_up: float = 1.0) -> str:
    """The task's script: it works for its duration; asked to follow up (a conflict or a
    red verification, ``GADUGI_FOLLOW_UP``), it works ``follow_up`` of that duration."""
    seconds, _, _, edit = TASKS[name]
    work = seconds * scale
    return (
        f'if [ -n "${{GADUGI_FOLLOW_UP:-}}" ]; then sleep {work * follow_up:g}; '
        f"else sleep {work:g}; fi\n{RESOLVE}\n{edit}\n"
        f"git add -A\ngit commit -q --allow-empty -m '{name}'\n"
    )


def make_batch(path: Path, scale: float, follow_up: float = 1.0) -> None:
    bk.make_repo(path, 0, "true", extra_files=300)
    for rel, text in FILES.items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text, encoding="utf-8")
    (path / ".gitignore").write_text("*.pyc\n__pycache__/\n", encoding="utf-8")
    bk.git(["add", "-A", "--", ":!prompts"], path)
    bk.git(["commit", "--quiet", "-m", "the modules, docs and tests the batch edits"], path)
    for name, (_, touches, depends, _) in TASKS.items():
        bk.write_shell_prompt(
            path,
            name,
            script(name, scale, follow_up),
            touches=touches,
            depends_on=f"{depends}.md" if depends else None,
        )


def critical_path(scale: float) -> float:
    """The longest dependency chain (or single task): no schedule can finish sooner."""
    seconds = {n: t[0] * scale for n, t in TASKS.items()}
    return max(*seconds.values(), sum(seconds[n] for n in CHAIN))


def policy_bound(policy: str, scale: float) -> float:
    """The critical path, or a predicted pair run one after the other (stack, serialize)."""
    seconds = {n: t[0] * scale for n, t in TASKS.items()}
    bound = critical_path(scale)
    if policy != "optimistic":
        bound = max(bound, *(seconds[a] + seconds[b] for a, b in PAIRS))
        bound = max(bound, seconds["brk"] + sum(seconds[n] for n in CHAIN))
    return bound


def run_policy(exe: Path, repo: Path, policy: str, timeout_s: float) -> dict[str, Any]:
    extra = ["--all", "--land", "--into", "main", "--verify", TESTS, "--conflict-policy", policy]
    done = bk.run_gadugi_cli(
        exe,
        repo,
        [],
        len(TASKS),
        timeout_s=timeout_s,
        extra=extra,
        env={"GADUGI_MAX_LOAD_PER_CPU": "0"},
        all_must_complete=False,  # brk fails its verification, as it should
    )
    result = done.result
    orch = result.get("orchestration_id") or result.get("id")
    logs = repo / ".gadugi" / "logs" / str(orch)
    # One ``<task>.<n>.verify.exit.json`` per task attempt verified in its worktree, one
    # ``land.<n>.verify.log`` per landing candidate verified.
    task_verifies = len(list(logs.glob("*.*.verify.exit.json")))
    land_verifies = len(list(logs.glob("land.*.verify.log")))
    landed, person, reruns = [], [], 0
    for task in result["tasks"]:
        name = task["task_id"]
        reruns += max(0, int(task.get("attempts") or 1) - 1)
        landing = task.get("landing") or {}
        if landing.get("status") == "landed":
            landed.append(name)
        else:
            person.append(f"{name} ({task['status']}/{landing.get('status') or '-'})")
    main_ok = subprocess.run(
        ["bash", "-c", TESTS],
        cwd=repo,
        capture_output=True,
        check=False,
    )
    return {
        "policy": policy,
        "exit_code": done.exit_code,
        "makespan_s": result["execution_time_seconds"],
        "wall_s": done.wall_s,
        "landed": landed,
        "needs_person": person,
        "agent_reruns": reruns,
        "verify_runs": task_verifies + land_verifies,
        "land_verify_runs": land_verifies,
        "main_green": main_ok.returncode == 0,
        "orchestration": orch,
        "tasks": [
            {k: t.get(k) for k in ("task_id", "status", "attempts", "landing", "error")}
            for t in result["tasks"]
        ],
    }


def baseline(repo: Path, scale: float) -> dict[str, Any]:
    """GNU parallel (or xargs -P) in fresh worktrees, then a sequential merge loop."""
    jobs_dir = repo / ".baseline"
    jobs_dir.mkdir()
    wts = repo / ".worktrees-baseline"
    chained = set(CHAIN[1:])
    jobs = []
    for name in TASKS:
        if name in chained:
            continue
        steps = CHAIN if name == CHAIN[0] else (name,)
        lines = ["set -e", f"cd {repo}"]
        base = "main"
        for step in steps:
            lines += [
                # git takes locks of its own to add a worktree and its branch: jobs that
                # add theirs at the same moment fail, so they take turns, as a careful
                # script would.
                f"flock {jobs_dir / 'git.lock'} git worktree add -q -b base/{step} {wts / step} "
                f"{base}",
                f"(cd {wts / step} && bash -e {jobs_dir / step}.sh)",
            ]
            base = f"base/{step}"
            (jobs_dir / f"{step}.sh").write_text(script(step, scale), encoding="utf-8")
        job = jobs_dir / f"job-{name}.sh"
        job.write_text("\n".join(lines) + "\n", encoding="utf-8")
        jobs.append(str(job))
    runner = "parallel" if shutil.which("parallel") else "xargs -P"
    t0 = time.perf_counter()
    if runner == "parallel":
        cmd = ["parallel", "--will-cite", "-j", str(len(jobs)), "bash", "{}", ":::", *jobs]
        subprocess.run(cmd, cwd=repo, capture_output=True, check=False)
    else:
        subprocess.run(
            ["xargs", "-P", str(len(jobs)), "-n", "1", "bash"],
            input="\n".join(jobs).encode(),
            cwd=repo,
            capture_output=True,
            check=False,
        )
    run_s = time.perf_counter() - t0
    merged, conflicts, red, lost, verify_runs = [], [], [], [], 0
    t1 = time.perf_counter()
    for name in TASKS:
        branch = f"base/{name}"
        made = subprocess.run(
            ["git", "log", "--format=%s", f"main..{branch}"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0 or name not in made.stdout.split():
            lost.append(name)  # its job failed: nothing of it to merge
            continue
        merge = subprocess.run(
            ["git", "merge", "-q", "--no-edit", branch],
            cwd=repo,
            capture_output=True,
            check=False,
            env={**os.environ, **bk.GIT_ENV},
        )
        if merge.returncode != 0:
            bk.git(["merge", "--abort"], repo)
            conflicts.append(name)
            continue
        verify_runs += 1
        tests = subprocess.run(["bash", "-c", TESTS], cwd=repo, capture_output=True, check=False)
        if tests.returncode != 0:
            bk.git(["reset", "-q", "--hard", "HEAD~1"], repo)
            red.append(name)
            continue
        merged.append(name)
    merge_s = time.perf_counter() - t1
    return {
        "runner": runner,
        "run_s": run_s,
        "merge_s": merge_s,
        "makespan_s": run_s + merge_s,
        "merged": merged,
        "conflicts": conflicts,
        "red": red,
        "lost": lost,
        "verify_runs": verify_runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration")
    parser.add_argument("--policies", default=",".join(POLICIES), help="comma-separated")
    parser.add_argument(
        "--follow-up",
        type=float,
        default=0.1,
        help="a follow-up's share of the task's duration (default 0.1: the agent continues "
        "its session and fixes only what it is told; 1: it redoes the whole task)",
    )
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    exe = bk.require_gadugi()
    bk.require_tools("python3")
    cp = critical_path(args.scale)
    rows: list[dict[str, Any]] = []
    with bk.workdir(args.workdir, args.keep, "gadugi-bench-land-") as work:
        for policy in args.policies.split(","):
            repo = work / policy
            make_batch(repo, args.scale, args.follow_up)
            bk.log(f"{policy}: {len(TASKS)} tasks, --land --into main")
            row = run_policy(exe, repo, policy, timeout_s=900)
            row["policy_bound_s"] = policy_bound(policy, args.scale)
            rows.append(row)
        repo = work / "baseline"
        make_batch(repo, args.scale)
        bk.log("baseline: parallel + a sequential merge loop")
        base = baseline(repo, args.scale)
    correct = len(TASKS) - 1  # every task but the one that breaks the tests
    table = [
        [
            r["policy"],
            r["makespan_s"],
            f"{cp:g}",
            f"{100 * (r['makespan_s'] / cp - 1):.0f}%",
            f"{r['policy_bound_s']:g}",
            f"{len(r['landed'])}/{correct}",
            r["agent_reruns"],
            f"{r['verify_runs']} ({r['land_verify_runs']} landing)",
            ", ".join(r["needs_person"]) or "none",
        ]
        for r in rows
    ]
    table.append(
        [
            f"baseline ({base['runner']} + merge loop)",
            base["makespan_s"],
            f"{cp:g}",
            f"{100 * (base['makespan_s'] / cp - 1):.0f}%",
            "-",
            f"{len(base['merged'])}/{correct}",
            0,
            base["verify_runs"],
            ", ".join(
                [f"{n} (conflict)" for n in base["conflicts"]]
                + base["red"]
                + [f"{n} (job failed)" for n in base["lost"]]
            )
            or "none",
        ]
    )
    print(
        bk.markdown_table(
            [
                "run",
                "makespan s",
                "critical path s",
                "over it",
                "policy's bound s",
                "landed, no person",
                "agent re-runs",
                "verification runs",
                "needs a person",
            ],
            table,
        )
    )
    for r in rows:
        ok = len(r["landed"]) == correct and r["makespan_s"] <= 1.15 * cp
        bk.log(f"{r['policy']}: target {bk.verdict(ok)}; main green: {r['main_green']}")
    bk.emit(
        "land_batch",
        {
            "rows": rows,
            "baseline": base,
            "scale": args.scale,
            "follow_up": args.follow_up,
            "critical_path_s": cp,
        },
        args.json_out,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

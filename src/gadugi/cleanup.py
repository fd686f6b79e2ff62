"""``gadugi cleanup``: remove what finished orchestrations left, keep what holds work.

Without ``--force`` nothing that holds an agent's work is removed: a worktree with
uncommitted or untracked changes stays, and so does a branch with commits that no
other ref reaches. An orchestration's registry rows, logs and snapshots go only once
its worktrees and branches are all gone, so nothing is forgotten while work remains.
First every decision is made (``plan_cleanup``); then, unless it is a dry run, carried
out (``apply``).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .procs import agents_of
from .recovery import orchestrator_alive
from .registry import Registry
from .worktrees import Worktrees, run_git


@dataclass(frozen=True)
class Action:
    kind: str  # "remove-worktree", "delete-branch", "forget-orchestration", "prune"
    target: str
    orchestration_id: str = ""
    force: bool = False


@dataclass
class CleanupPlan:
    actions: list[Action] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # what stays, and why
    notes: list[str] = field(default_factory=list)  # things to know, nothing to do


def plan_cleanup(
    root: Path, registry: Registry, older_than_hours: float, force: bool, now: float | None = None
) -> CleanupPlan:
    now = time.time() if now is None else now
    plan = CleanupPlan()
    worktrees = Worktrees(root)
    # Records of worktrees deleted behind git's back go first: they hold their branches.
    found = run_git(["worktree", "prune", "--dry-run", "--verbose"], root)
    orphans = (found.stdout + found.stderr).strip()  # git reports these on stderr
    if orphans:
        plan.notes.extend(f"orphaned worktree record: {line}" for line in orphans.splitlines())
        plan.actions.append(Action("prune", "git worktree prune"))
    orchestrations = registry.orchestrations()
    finished = {o["id"] for o in orchestrations if o["state"] != "running"}
    for pid, orch_id, task_id in agents_of(finished):
        plan.notes.append(
            f"stale process {pid} (task {task_id} of finished {orch_id}) is still running"
        )
    for orch in orchestrations:
        if orch["state"] == "running":
            if not orchestrator_alive(orch):
                plan.notes.append(
                    f"{orch['id']}: its orchestrator (pid {orch['pid']}) is gone; "
                    f"finish it with gadugi resume {orch['id']}"
                )
            continue
        if (orch["finished_at"] or 0) > now - older_than_hours * 3600:
            continue
        _plan_orchestration(plan, orch, registry.tasks(orch["id"]), worktrees, root, force)
    return plan


def _plan_orchestration(
    plan: CleanupPlan,
    orch: dict[str, Any],
    rows: list[dict[str, Any]],
    worktrees: Worktrees,
    root: Path,
    force: bool,
) -> None:
    orch_id, holding = orch["id"], False
    for row in rows:
        path = Path(row["worktree"]) if row["worktree"] and not row["worktree_removed"] else None
        kept_worktree = False
        if path is not None and path.exists():
            if worktrees.is_clean(path) or force:
                plan.actions.append(Action("remove-worktree", str(path), orch_id, force))
            else:
                plan.kept.append(f"{path}: uncommitted changes (use --force to remove)")
                kept_worktree = holding = True
        branch = row["branch"]
        if branch and worktrees.branch_exists(branch):
            unique = _commits_only_on(root, branch)
            if kept_worktree:
                plan.kept.append(f"{branch}: its worktree is kept")
                holding = True
            elif unique and not force:
                plan.kept.append(
                    f"{branch}: {unique} commit(s) that exist on no other branch "
                    f"(merge it, or use --force to delete)"
                )
                holding = True
            else:
                plan.actions.append(Action("delete-branch", branch, orch_id, force))
    if holding:
        plan.kept.append(f"{orch_id}: registry rows and logs kept while its work remains")
    else:
        plan.actions.append(Action("forget-orchestration", orch_id, orch_id))


def _commits_only_on(root: Path, branch: str) -> int:
    """How many of the branch's commits no other ref reaches."""
    ref = f"refs/heads/{branch}"
    res = run_git(["rev-list", "--count", ref, "--not", f"--exclude={ref}", "--all"], root)
    return int(res.stdout.strip() or 0) if res.returncode == 0 else 1


def apply(root: Path, registry: Registry, plan: CleanupPlan, state_dir: Path) -> list[str]:
    """Carry out the plan; returns one line per thing done or failed."""
    done: list[str] = []
    worktrees = Worktrees(root)
    for action in plan.actions:
        if action.kind == "remove-worktree":
            args = ["worktree", "remove", *(["--force"] if action.force else []), action.target]
            with worktrees.locked() as fd:
                res = run_git(args, root, fd)
            done.append(_said(res.returncode, f"removed worktree {action.target}", res.stderr))
        elif action.kind == "delete-branch":
            flag = "-D" if action.force else "-d"
            res = run_git(["branch", flag, "--", action.target], root)
            if res.returncode != 0 and not action.force:  # merged into HEAD is not required
                res = run_git(["branch", "-D", "--", action.target], root)
            done.append(_said(res.returncode, f"deleted branch {action.target}", res.stderr))
        elif action.kind == "forget-orchestration":
            registry.forget(action.target)
            for folder in ("logs", "prompts"):
                shutil.rmtree(state_dir / folder / action.target, ignore_errors=True)
            for suffix in ("_status.json", "_final.json"):
                (state_dir / "monitoring" / f"{action.target}{suffix}").unlink(missing_ok=True)
            done.append(f"forgot {action.target} (registry rows, logs, snapshots)")
        elif action.kind == "prune":
            res = run_git(["worktree", "prune"], root)
            done.append(_said(res.returncode, "pruned orphaned worktree records", res.stderr))
    return done


def _said(code: int, what: str, stderr: str) -> str:
    return what if code == 0 else f"could not do it: {what}: {stderr.strip()}"

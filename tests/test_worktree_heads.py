"""Commits an agent made off its task branch end up on that branch or stay reachable."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import Repo, git
from gadugi.worktrees import HeadOutcome, Worktrees, resolve_commit


@pytest.fixture
def task(repo: Repo) -> tuple[Worktrees, Path, str]:
    wt = Worktrees(repo.root)
    path = repo.root / ".worktrees/t-ab12"
    wt.create("t", path, "gadugi/t-ab12", resolve_commit(repo.root, "HEAD"))
    return wt, path, resolve_commit(repo.root, "HEAD")


def commit(path: Path, name: str) -> str:
    (path / name).write_text(f"{name}\n")
    git(path, "add", name)
    git(path, "commit", "-q", "-m", name)
    return git(path, "rev-parse", "HEAD").strip()


def test_head_on_the_branch_needs_nothing(task: tuple[Worktrees, Path, str]) -> None:
    wt, path, base = task
    commit(path, "a.txt")
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.outcome is HeadOutcome.ON_BRANCH and check.note is None
    assert wt.commits_ahead("gadugi/t-ab12", base) == 1


def test_detached_commits_fast_forward_the_branch(
    repo: Repo, task: tuple[Worktrees, Path, str]
) -> None:
    wt, path, base = task
    commit(path, "a.txt")
    git(path, "checkout", "-q", "--detach")
    tip = commit(path, "b.txt")
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.outcome is HeadOutcome.FAST_FORWARDED
    assert check.note is not None and "detached" in check.note and tip[:7] in check.note
    assert git(repo.root, "rev-parse", "gadugi/t-ab12").strip() == tip
    assert wt.commits_ahead("gadugi/t-ab12", base) == 2
    # The worktree is back on its branch, as it was made, and nothing in it changed.
    assert git(path, "symbolic-ref", "HEAD").strip() == "refs/heads/gadugi/t-ab12"
    assert wt.is_clean(path)
    wt.remove("t", path)
    assert git(repo.root, "rev-parse", "gadugi/t-ab12").strip() == tip


def test_commits_on_another_branch_fast_forward_the_task_branch(
    repo: Repo, task: tuple[Worktrees, Path, str]
) -> None:
    wt, path, base = task
    git(path, "checkout", "-q", "-b", "agent-own")
    tip = commit(path, "a.txt")
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.outcome is HeadOutcome.FAST_FORWARDED
    assert check.note is not None and "agent-own" in check.note
    assert git(repo.root, "rev-parse", "gadugi/t-ab12").strip() == tip
    assert git(repo.root, "rev-parse", "agent-own").strip() == tip  # the agent's branch stays
    assert wt.commits_ahead("gadugi/t-ab12", base) == 1


def test_diverged_head_is_kept_under_a_ref_with_its_worktree(
    repo: Repo, task: tuple[Worktrees, Path, str]
) -> None:
    wt, path, base = task
    on_branch = commit(path, "a.txt")
    git(path, "checkout", "-q", "--detach", base)
    tip = commit(path, "b.txt")
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.outcome is HeadOutcome.KEPT
    assert check.ref == "refs/gadugi/kept/t-ab12"
    assert check.note is not None and check.ref in check.note and tip[:7] in check.note
    assert git(repo.root, "rev-parse", check.ref).strip() == tip
    assert git(repo.root, "rev-parse", "gadugi/t-ab12").strip() == on_branch  # untouched
    assert git(path, "rev-parse", "HEAD").strip() == tip  # the worktree as the agent left it
    assert wt.commits_ahead("gadugi/t-ab12", base) == 1


def test_a_second_kept_head_does_not_replace_the_first(
    repo: Repo, task: tuple[Worktrees, Path, str]
) -> None:
    wt, path, base = task
    commit(path, "a.txt")
    git(path, "checkout", "-q", "--detach", base)
    first = commit(path, "b.txt")
    assert wt.secure_head("t", path, "gadugi/t-ab12").ref == "refs/gadugi/kept/t-ab12"
    git(path, "checkout", "-q", "--detach", base)
    second = commit(path, "c.txt")
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.ref == f"refs/gadugi/kept/t-ab12.{second[:12]}"
    assert git(repo.root, "rev-parse", "refs/gadugi/kept/t-ab12").strip() == first
    assert git(repo.root, "rev-parse", check.ref).strip() == second
    # Asking again about the same HEAD names the ref that already holds it.
    assert wt.secure_head("t", path, "gadugi/t-ab12").ref == check.ref


def test_head_behind_the_branch_loses_nothing(task: tuple[Worktrees, Path, str]) -> None:
    wt, path, base = task
    commit(path, "a.txt")
    git(path, "checkout", "-q", "--detach", base)
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.outcome is HeadOutcome.ON_BRANCH
    assert wt.commits_ahead("gadugi/t-ab12", base) == 1


def test_deleted_task_branch_is_made_again_at_head(
    repo: Repo, task: tuple[Worktrees, Path, str]
) -> None:
    wt, path, base = task
    git(path, "checkout", "-q", "--detach")
    tip = commit(path, "a.txt")
    git(repo.root, "branch", "-D", "gadugi/t-ab12")
    check = wt.secure_head("t", path, "gadugi/t-ab12")
    assert check.outcome is HeadOutcome.FAST_FORWARDED
    assert git(repo.root, "rev-parse", "gadugi/t-ab12").strip() == tip
    assert wt.commits_ahead("gadugi/t-ab12", base) == 1


def test_missing_worktree_is_nothing_to_secure(task: tuple[Worktrees, Path, str]) -> None:
    wt, path, _ = task
    wt.remove("t", path)
    assert wt.secure_head("t", path, "gadugi/t-ab12").outcome is HeadOutcome.ON_BRANCH

"""A worktree whose ``.git`` an agent or a verification removed is not a git repository any
more: git run there would find the main checkout above it. gadugi's own git commands in a
worktree must fail instead, and the main checkout stay as the user left it."""

from __future__ import annotations

import json

from conftest import Repo, git, run_cli


def _main_checkout(repo: Repo) -> tuple[str, str, str]:
    """What must not change: the branch checked out, its commit, and the status."""
    return (
        git(repo.root, "symbolic-ref", "HEAD"),
        git(repo.root, "rev-parse", "HEAD"),
        git(repo.root, "status", "--porcelain", "--untracked-files=all"),
    )


def test_an_agent_that_removes_its_worktree_s_git_never_commits_on_the_main_checkout(
    repo: Repo,
) -> None:
    repo.shell_prompt("t.md", "echo work > work.txt\nrm -f .git", front="retries: 0")
    repo.commit()
    (repo.root / "mine.txt").write_text("the user's, not committed\n")
    before = _main_checkout(repo)

    proc = run_cli(["run", "--agent", "shell", "--json", "t"], repo.root)

    assert "Traceback" not in proc.stderr
    assert _main_checkout(repo) == before
    task = json.loads(proc.stdout)["tasks"][0]
    assert task["status"] == "failed", task
    assert "autocommit" in task["error_message"]
    assert (repo.root / ".worktrees" / task["worktree"].rsplit("/", 1)[-1] / "work.txt").exists()


def test_a_landing_verification_that_removes_the_integration_worktree_s_git_leaves_main_be(
    repo: Repo,
) -> None:
    repo.shell_prompt("a.md", "echo a > a.txt")
    repo.shell_prompt("b.md", "echo b > b.txt")
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "a", "b"], repo.root).returncode == 0
    (repo.root / "mine.txt").write_text("the user's, not committed\n")
    before = _main_checkout(repo)

    proc = run_cli(["land", "--verify", "rm -f .git"], repo.root)

    assert "Traceback" not in proc.stderr
    assert _main_checkout(repo) == before
    assert (repo.root / "mine.txt").read_text() == "the user's, not committed\n"
    assert not (repo.root / "a.txt").exists() and not (repo.root / "b.txt").exists()

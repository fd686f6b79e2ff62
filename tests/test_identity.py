"""Every commit gadugi makes carries the user's git identity, as git itself resolves it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Repo, git
from gadugi.errors import IdentityError
from gadugi.worktrees import Worktrees, user_identity


def no_identity(repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No identity anywhere git looks: an empty HOME, an empty global config, none local."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "empty.gitconfig").write_text("")
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "empty.gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in (
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "EMAIL",
    ):
        monkeypatch.delenv(var, raising=False)
    git(repo.root, "config", "--unset", "user.name")
    git(repo.root, "config", "--unset", "user.email")


def test_identity_is_the_one_git_resolves_in_the_project(repo: Repo) -> None:
    git(repo.root, "config", "user.name", "Ada Lovelace")
    git(repo.root, "config", "user.email", "ada@example.invalid")
    assert user_identity(repo.root) == {
        "GIT_AUTHOR_NAME": "Ada Lovelace",
        "GIT_AUTHOR_EMAIL": "ada@example.invalid",
        "GIT_COMMITTER_NAME": "Ada Lovelace",
        "GIT_COMMITTER_EMAIL": "ada@example.invalid",
    }


def test_no_identity_is_an_error_naming_the_fix(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    no_identity(repo, tmp_path, monkeypatch)
    with pytest.raises(IdentityError, match=r"git config user\.email"):
        user_identity(repo.root)


def test_a_merge_of_dependencies_is_the_users(repo: Repo) -> None:
    git(repo.root, "config", "user.name", "Ada Lovelace")
    git(repo.root, "config", "user.email", "ada@example.invalid")
    for name in ("one", "two"):
        git(repo.root, "checkout", "-q", "-b", name, "main")
        (repo.root / f"{name}.txt").write_text(f"{name}\n")
        repo.commit(name)
    git(repo.root, "checkout", "-q", "main")
    wt = Worktrees(repo.root)
    path = repo.root / ".worktrees/m"
    wt.create("m", path, "gadugi/m", "one")
    wt.merge("m", path, ["two"])
    who = git(path, "log", "-1", "--format=%an <%ae>|%cn <%ce>").strip()
    assert who == "Ada Lovelace <ada@example.invalid>|Ada Lovelace <ada@example.invalid>"


def test_a_task_whose_work_cannot_be_committed_for_want_of_an_identity_fails_clearly(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo.prompt("draft.md", "# Draft\n")
    repo.commit()
    no_identity(repo, tmp_path, monkeypatch)
    agent = "bash -c 'echo draft > notes.txt'"
    proc = subprocess.run(
        [sys.executable, "-m", "gadugi", "run", "--agent-cmd", agent, "--json", "draft"],
        cwd=repo.root,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1, proc.stderr
    task = json.loads(proc.stdout)["tasks"][0]
    assert task["status"] == "failed"
    assert "git has no identity to commit with" in task["error_message"]
    assert "git config user.email" in task["error_message"]
    # Nothing is lost: the work stays in its worktree, and no commit was made up.
    assert (Path(task["worktree"]) / "notes.txt").read_text() == "draft\n"
    assert git(repo.root, "rev-list", "--count", f"main..{task['branch']}").strip() == "0"

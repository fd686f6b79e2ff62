"""Worktree operations on real repositories, including concurrent creation."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from conftest import Repo, git
from gadugi.errors import RepositoryError, WorktreeError
from gadugi.worktrees import Worktrees, exclude_paths, resolve_commit


def test_concurrent_creates_and_removes_all_succeed(repo: Repo) -> None:
    wt = Worktrees(repo.root)
    base = resolve_commit(repo.root, "HEAD")
    errors: list[BaseException] = []

    def cycle(n: int) -> None:
        try:
            path = repo.root / ".worktrees" / f"t{n}"
            wt.create(f"t{n}", path, f"gadugi/t{n}", base)
            assert (path / "README.md").exists()
            wt.remove(f"t{n}", path)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=cycle, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(repo.branches()) == 12
    assert repo.worktrees() == [str(repo.root)]


def test_existing_branch_is_never_overwritten(repo: Repo) -> None:
    git(repo.root, "branch", "gadugi/taken")
    wt = Worktrees(repo.root)
    with pytest.raises(WorktreeError, match="already exists"):
        wt.create("x", repo.root / ".worktrees/x", "gadugi/taken", "HEAD")
    assert wt.branch_exists("gadugi/taken")


def test_dirty_worktree_is_not_clean_and_git_refuses_removal(repo: Repo) -> None:
    wt = Worktrees(repo.root)
    path = repo.root / ".worktrees/d"
    wt.create("d", path, "gadugi/d", "HEAD")
    assert wt.is_clean(path)
    (path / "new.txt").write_text("x")
    assert not wt.is_clean(path)
    with pytest.raises(WorktreeError):
        wt.remove("d", path)
    assert (path / "new.txt").exists()


def test_merge_conflict_names_branches_and_files(repo: Repo) -> None:
    for name in ("one", "two"):
        git(repo.root, "checkout", "-q", "-b", name, "main")
        (repo.root / "shared.txt").write_text(f"{name}\n")
        repo.commit(name)
    git(repo.root, "checkout", "-q", "main")
    wt = Worktrees(repo.root)
    path = repo.root / ".worktrees/m"
    wt.create("m", path, "gadugi/m", "one")
    with pytest.raises(WorktreeError) as err:
        wt.merge("m", path, ["two"])
    assert "two" in str(err.value) and "shared.txt" in str(err.value)
    assert wt.is_clean(path)  # the failed merge was aborted


def test_exclude_is_written_once(repo: Repo) -> None:
    exclude_paths(repo.root, ["/.worktrees/", "/.gadugi/"])
    exclude_paths(repo.root, ["/.worktrees/", "/.gadugi/"])
    text = (repo.root / ".git/info/exclude").read_text()
    assert text.count("/.worktrees/") == 1 and text.count("/.gadugi/") == 1
    assert not (repo.root / ".gitignore").exists()


@pytest.mark.parametrize("ref", ["nope", "-x", "HEAD~99"])
def test_unknown_base_refs(repo: Repo, ref: str) -> None:
    with pytest.raises(RepositoryError):
        resolve_commit(repo.root, ref)


def test_empty_repository_has_no_base(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    with pytest.raises(RepositoryError, match="no commits"):
        resolve_commit(tmp_path, "HEAD")

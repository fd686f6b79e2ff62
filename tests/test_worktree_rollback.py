"""A failed worktree create leaves nothing behind; a recorded name is adopted or made again.

Every failure here is a real one: a user's failing hook, a git killed during its checkout
(as a kill -9 of the process group would), a folder where the worktree should go.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import Repo, git
from gadugi.errors import WorktreeError
from gadugi.worktrees import NameTaken, Worktrees, resolve_commit

# A smudge filter that kills, mid-checkout, the `git worktree add` whose checkout runs it
# (its grandparent) and that checkout (its parent): what a kill -9 of the whole process
# group does to git. It refuses to kill anything that is not git.
KILLER = """#!/bin/sh
parent=$PPID
grandparent=$(awk '{print $4}' /proc/$parent/stat)
[ "$(cat /proc/$grandparent/comm)" = git ] && [ "$(cat /proc/$parent/comm)" = git ] || exit 1
kill -9 "$grandparent" "$parent"
exit 1
"""


def failing_hook(repo: Repo, code: int = 1) -> Path:
    hook = repo.root / ".git/hooks/post-checkout"
    hook.write_text(f"#!/bin/sh\necho 'git-lfs: command not found' >&2\nexit {code}\n")
    hook.chmod(0o755)
    return hook


def git_killing_checkout(repo: Repo, tmp_path: Path) -> None:
    """Make every checkout of ``k.bin`` (after ``a.txt``, before ``z.txt``) kill git."""
    script = tmp_path / "killer.sh"
    script.write_text(KILLER)
    script.chmod(0o755)
    (repo.root / ".gitattributes").write_text("k.bin filter=killer\n")
    for name in ("a.txt", "k.bin", "z.txt"):
        (repo.root / name).write_text(f"{name}\n")
    repo.commit("files, one of them filtered")
    git(repo.root, "config", "filter.killer.smudge", str(script))
    git(repo.root, "config", "filter.killer.clean", "cat")


def nothing_left(repo: Repo, path: Path) -> None:
    assert repo.branches() == []
    assert repo.worktrees() == [str(repo.root)]
    assert not path.exists()
    admin = repo.root / ".git/worktrees"
    assert not admin.exists() or list(admin.iterdir()) == []


def test_failing_post_checkout_hook_is_undone_and_named(repo: Repo) -> None:
    hook = failing_hook(repo, code=3)
    wt = Worktrees(repo.root)
    path = repo.root / ".worktrees/t"
    with pytest.raises(WorktreeError) as err:
        wt.create("t", path, "gadugi/t", "HEAD")
    message = str(err.value)
    assert "post-checkout hook" in message and str(hook) in message
    assert "git-lfs: command not found" in message and "exit 3" in message
    assert not isinstance(err.value, NameTaken)  # a failure, not a name to try again with
    nothing_left(repo, path)
    hook.unlink()
    wt.create("t", path, "gadugi/t", "HEAD")  # the same name is free again
    assert (path / "README.md").exists()


def test_hook_from_core_hooks_path_is_the_one_named(repo: Repo, tmp_path: Path) -> None:
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "post-checkout").write_text("#!/bin/sh\nexit 1\n")
    (hooks / "post-checkout").chmod(0o755)
    git(repo.root, "config", "core.hooksPath", str(hooks))
    with pytest.raises(WorktreeError, match=str(hooks / "post-checkout")):
        Worktrees(repo.root).create("t", repo.root / ".worktrees/t", "gadugi/t", "HEAD")
    nothing_left(repo, repo.root / ".worktrees/t")


def test_git_killed_mid_checkout_is_undone(repo: Repo, tmp_path: Path) -> None:
    git_killing_checkout(repo, tmp_path)
    path = repo.root / ".worktrees/k"
    with pytest.raises(WorktreeError, match="exit -9"):
        Worktrees(repo.root).create("k", path, "gadugi/k", "HEAD")
    nothing_left(repo, path)


def test_git_killed_mid_checkout_is_not_blamed_on_the_hook(repo: Repo, tmp_path: Path) -> None:
    failing_hook(repo)
    git_killing_checkout(repo, tmp_path)
    with pytest.raises(WorktreeError) as err:
        Worktrees(repo.root).create("k", repo.root / ".worktrees/k", "gadugi/k", "HEAD")
    assert "hook" not in str(err.value)
    nothing_left(repo, repo.root / ".worktrees/k")


def test_ctrl_c_during_the_create_is_undone(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    # The hook interrupts this very process while git waits for it, as a Ctrl-C would.
    monkeypatch.setenv("GADUGI_TEST_PID", str(os.getpid()))
    hook = repo.root / ".git/hooks/post-checkout"
    hook.write_text(
        "#!/bin/sh\nkill -INT $GADUGI_TEST_PID\n"
        "for i in $(seq 100); do kill -0 $PPID 2>/dev/null || exit 0; sleep 0.05; done\n"
    )
    hook.chmod(0o755)
    path = repo.root / ".worktrees/c"
    with pytest.raises(KeyboardInterrupt):
        Worktrees(repo.root).create("c", path, "gadugi/c", "HEAD")
    nothing_left(repo, path)


def test_branch_made_before_a_failing_mkdir_is_deleted(repo: Repo) -> None:
    (repo.root / "afile").write_text("not a folder\n")
    path = repo.root / "afile/t"
    with pytest.raises(WorktreeError, match="could not create"):
        Worktrees(repo.root).create("t", path, "gadugi/t", "HEAD")
    assert repo.branches() == []
    assert repo.worktrees() == [str(repo.root)]


def test_clashes_are_decided_before_git_runs(repo: Repo) -> None:
    failing_hook(repo)  # were git run, its hook would fail: the clash must come first
    git(repo.root, "branch", "gadugi/taken")
    before = git(repo.root, "rev-parse", "gadugi/taken")
    wt = Worktrees(repo.root)
    with pytest.raises(NameTaken, match="branch gadugi/taken already exists"):
        wt.create("x", repo.root / ".worktrees/x", "gadugi/taken", "HEAD")
    assert git(repo.root, "rev-parse", "gadugi/taken") == before
    assert not (repo.root / ".worktrees/x").exists()
    (repo.root / ".worktrees/y").mkdir(parents=True)
    with pytest.raises(NameTaken, match="already exists"):
        wt.create("y", repo.root / ".worktrees/y", "gadugi/y", "HEAD")
    assert repo.branches() == ["gadugi/taken"]


def test_registered_but_missing_worktree_is_a_clash(repo: Repo) -> None:
    wt = Worktrees(repo.root)
    path = repo.root / ".worktrees/gone"
    wt.create("gone", path, "gadugi/gone", "HEAD")
    shutil.rmtree(path)  # deleted behind git's back
    with pytest.raises(NameTaken, match="registered"):
        wt.create("again", path, "gadugi/again", "HEAD")
    assert repo.branches() == ["gadugi/gone"]


def test_unknown_base_creates_nothing(repo: Repo) -> None:
    path = repo.root / ".worktrees/t"
    with pytest.raises(WorktreeError, match="nosuchref"):
        Worktrees(repo.root).create("t", path, "gadugi/t", "nosuchref")
    nothing_left(repo, path)


# -- reclaiming a name the registry recorded before git ran -------------------------------


def test_reclaim_with_nothing_made_creates(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    assert Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD") is False
    assert (path / "README.md").exists()
    assert repo.branches() == ["gadugi/r"]


def test_reclaim_adopts_a_finished_worktree(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    git(repo.root, "worktree", "add", "-q", "-b", "gadugi/r", str(path), "HEAD")
    # An ignored file leaves the worktree clean, and only survives if it is not remade.
    (repo.root / ".git/info/exclude").write_text("/marker\n")
    (path / "marker").write_text("still here\n")
    assert Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD") is True
    assert (path / "marker").exists()
    assert repo.branches() == ["gadugi/r"]


def test_reclaim_makes_again_a_branch_without_worktree(repo: Repo) -> None:
    git(repo.root, "branch", "gadugi/r")  # git died after making the branch, before the rest
    path = repo.root / ".worktrees/r"
    assert Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD") is False
    assert (path / "README.md").exists()
    assert repo.worktrees() == [str(repo.root), str(path)]


def test_reclaim_removes_and_remakes_a_half_made_worktree(repo: Repo, tmp_path: Path) -> None:
    git_killing_checkout(repo, tmp_path)
    path = repo.root / ".worktrees/h"
    killed = subprocess.run(
        ["git", "worktree", "add", "-q", "-b", "gadugi/h", str(path), "HEAD"],
        cwd=repo.root,
        capture_output=True,
        check=False,
    )
    assert killed.returncode == -9 and (path / "a.txt").exists() and not (path / "z.txt").exists()
    git(repo.root, "config", "--unset", "filter.killer.smudge")
    assert Worktrees(repo.root).reclaim("h", path, "gadugi/h", "HEAD") is False
    assert (path / "z.txt").exists()
    assert Worktrees(repo.root).is_clean(path)
    assert repo.worktrees() == [str(repo.root), str(path)]
    assert repo.branches() == ["gadugi/h"]
    assert [p.name for p in (repo.root / ".git/worktrees").iterdir()] == ["h"]


def test_reclaim_remakes_a_worktree_whose_hook_did_not_finish(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    git(repo.root, "worktree", "add", "-q", "-b", "gadugi/r", str(path), "HEAD")
    (path / "README.md").write_text("half written by a hook\n")
    assert Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD") is False
    assert (path / "README.md").read_text() == "# project\n"


def test_reclaim_removes_the_empty_folder_git_left(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    path.mkdir(parents=True)  # git was killed right after making the folder
    assert Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD") is False
    assert (path / "README.md").exists()


def test_reclaim_leaves_a_worktree_on_a_moved_branch_as_it_is(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    git(repo.root, "worktree", "add", "-q", "-b", "gadugi/r", str(path), "HEAD")
    git(path, "commit", "-q", "--allow-empty", "-m", "more than the base")
    (path / "draft.txt").write_text("not committed\n")
    with pytest.raises(NameTaken, match="moved on"):
        Worktrees(repo.root).reclaim("r", path, "gadugi/r", "main")
    assert (path / "draft.txt").exists()


def test_reclaim_leaves_a_foreign_folder_alone(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    path.mkdir(parents=True)
    (path / "notes.txt").write_text("mine\n")
    with pytest.raises(NameTaken):
        Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD")
    assert (path / "notes.txt").read_text() == "mine\n"
    assert repo.branches() == []


def test_reclaim_never_deletes_a_branch_with_commits(repo: Repo) -> None:
    git(repo.root, "checkout", "-q", "-b", "gadugi/r")
    repo.commit("someone's work")
    git(repo.root, "checkout", "-q", "main")
    tip = git(repo.root, "rev-parse", "gadugi/r")
    with pytest.raises(NameTaken):
        Worktrees(repo.root).reclaim("r", repo.root / ".worktrees/r", "gadugi/r", "main")
    assert git(repo.root, "rev-parse", "gadugi/r") == tip


def test_reclaim_on_another_branch_is_not_adopted(repo: Repo) -> None:
    path = repo.root / ".worktrees/r"
    git(repo.root, "worktree", "add", "-q", "-b", "other", str(path), "HEAD")
    with pytest.raises(NameTaken):
        Worktrees(repo.root).reclaim("r", path, "gadugi/r", "HEAD")
    assert repo.worktrees() == [str(repo.root), str(path)]
    assert resolve_commit(path, "HEAD") == resolve_commit(repo.root, "HEAD")

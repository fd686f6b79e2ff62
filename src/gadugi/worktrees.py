"""Git worktrees and branches for tasks, behind a small seam for running git.

git's own worktree bookkeeping is not safe when two ``git worktree add``/``remove``
run at once in one repository (seen here: intermittent "failed to read
.git/worktrees/.../commondir"), so every worktree change holds a lock: a thread lock
inside this process and an flock on a file in the common git dir across processes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import subprocess
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import procs
from .errors import RepositoryError, SpawnError, WorktreeError

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
_IDENTITY = ("-c", "user.name=gadugi", "-c", "user.email=gadugi@localhost")


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


def run_git(args: Sequence[str], cwd: Path, lock_fd: int | None = None) -> GitResult:
    """Run git without a shell or a terminal, in a session of its own.

    Its own session, so that a Ctrl-C at the terminal reaches gadugi only: git killed
    half-way through ``worktree add`` leaves a half-made worktree. ``lock_fd`` (from
    ``Worktrees.locked``) is handed down to git: an flock lasts while any process holds
    its file open, so if gadugi dies mid-command the lock stays held until git itself has
    finished, and a resumed run cannot race the orphaned git. A git that cannot be
    started, or cannot start its own processes, for want of processes or memory raises
    SpawnError: that is no verdict of git's, and trying again later may succeed.
    """
    env = {**os.environ, **_GIT_ENV}
    proc = procs.start(
        ["git", *args],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        pass_fds=() if lock_fd is None else (lock_fd,),
    )
    try:
        stdout, stderr = proc.communicate()
    except BaseException:
        # Interrupted here: let git finish its step rather than stop it half-way.
        proc.communicate()
        raise
    finally:
        if proc.returncode is not None:
            procs.forget(proc.pid)
    if proc.returncode != 0:
        _raise_if_out_of_resources(stderr)
    return GitResult(proc.returncode, stdout, stderr)


# git says it could not fork or start a thread only in words (run-command.c's "cannot
# fork() for ...", "unable to create thread: ..."), with strerror's text under LC_ALL=C.
_OUT_OF = {os.strerror(errno.EAGAIN): errno.EAGAIN, os.strerror(errno.ENOMEM): errno.ENOMEM}


def _raise_if_out_of_resources(stderr: str) -> None:
    for line in stderr.splitlines():
        if "fork" in line or "thread" in line:
            for text, number in _OUT_OF.items():
                if text in line:
                    raise SpawnError("git", number, line.strip())


def repository_root(path: Path) -> Path:
    """The top level of the git work tree containing ``path``."""
    if not path.is_dir():
        raise RepositoryError(f"{path}: no such directory")
    res = run_git(["rev-parse", "--show-toplevel"], path)
    if res.returncode != 0:
        raise RepositoryError(f"{path} is not inside a git repository (run 'git init' first)")
    return Path(res.stdout.strip()).resolve()


def resolve_commit(root: Path, ref: str) -> str:
    """The commit ``ref`` names; a repository with no commits or an unknown ref is an error."""
    if ref.startswith("-"):
        raise RepositoryError(f"base ref {ref!r} cannot start with '-'")
    res = run_git(
        ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{ref}^{{commit}}"], root
    )
    if res.returncode != 0:
        if ref == "HEAD":
            raise RepositoryError(
                f"{root} has no commits yet; commit first (worktrees branch from a commit)"
            )
        raise RepositoryError(f"base ref {ref!r} does not name a commit in {root}")
    return res.stdout.strip()


def tracked_files(root: Path) -> list[str]:
    res = run_git(["ls-files", "-z"], root)
    if res.returncode != 0:
        raise RepositoryError(f"git ls-files failed in {root}: {res.stderr.strip()}")
    return [f for f in res.stdout.split("\0") if f]


def exclude_paths(root: Path, entries: Sequence[str]) -> None:
    """Add entries to ``.git/info/exclude`` once; the user's .gitignore is never edited."""
    res = run_git(["rev-parse", "--git-path", "info/exclude"], root)
    path = (root / res.stdout.strip()) if res.returncode == 0 else root / ".git/info/exclude"
    path.parent.mkdir(parents=True, exist_ok=True)
    current = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    missing = [e for e in entries if e not in current]
    if missing:
        with path.open("a", encoding="utf-8") as fh:
            if current and current[-1] != "":
                fh.write("\n")
            fh.write("# added by gadugi\n" + "".join(f"{e}\n" for e in missing))


class Worktrees:
    """Creates, inspects and removes task worktrees of one repository."""

    _thread_lock = threading.Lock()

    def __init__(self, root: Path) -> None:
        self.root = root
        res = run_git(["rev-parse", "--git-common-dir"], root)
        common = Path(res.stdout.strip()) if res.returncode == 0 else Path(".git")
        self._lock_path = (root / common).resolve() / "gadugi-worktree.lock"

    @contextmanager
    def locked(self) -> Iterator[int]:
        """Hold the worktree lock; yields its file descriptor for ``run_git``."""
        with self._thread_lock, self._lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield fh.fileno()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def branch_exists(self, branch: str) -> bool:
        res = run_git(["show-ref", "--verify", "--quiet", f"refs/heads/{branch}"], self.root)
        return res.returncode == 0

    def create(self, task_id: str, path: Path, branch: str, base: str) -> None:
        """A new branch ``branch`` at ``base`` checked out at ``path``; never overwrites."""
        with self.locked() as fd:
            res = run_git(
                ["worktree", "add", "--quiet", "-b", branch, str(path), base], self.root, fd
            )
        if res.returncode != 0:
            raise WorktreeError(task_id, "worktree add", res.stderr, res.returncode)

    def merge(self, task_id: str, path: Path, branches: Sequence[str]) -> None:
        """Merge further dependency branches into a new worktree; a conflict names files."""
        res = run_git([*_IDENTITY, "merge", "--no-edit", "--quiet", *branches], path)
        if res.returncode == 0:
            return
        files = run_git(["diff", "--name-only", "--diff-filter=U"], path).stdout.split()
        run_git(["merge", "--abort"], path)
        names = ", ".join(branches)
        detail = f"conflicting files: {', '.join(files)}" if files else res.stderr.strip()
        raise WorktreeError(task_id, f"merge of {names}", detail, res.returncode)

    def is_clean(self, path: Path) -> bool:
        """True when nothing in the worktree is modified or untracked (ignored files aside)."""
        res = run_git(["status", "--porcelain", "--untracked-files=all"], path)
        return res.returncode == 0 and not res.stdout.strip()

    def commits_ahead(self, branch: str, base: str) -> int:
        res = run_git(["rev-list", "--count", f"{base}..refs/heads/{branch}"], self.root)
        return int(res.stdout.strip()) if res.returncode == 0 else 0

    def remove(self, task_id: str, path: Path) -> None:
        """Remove a clean worktree (git refuses a dirty one); the branch stays."""
        with self.locked() as fd:
            res = run_git(["worktree", "remove", str(path)], self.root, fd)
        if res.returncode != 0:
            raise WorktreeError(task_id, "worktree remove", res.stderr, res.returncode)

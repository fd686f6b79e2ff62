"""Git worktrees and branches for tasks, behind a small seam for running git.

git's own worktree bookkeeping is not safe when two ``git worktree add``/``remove``
run at once in one repository (seen here: intermittent "failed to read
.git/worktrees/.../commondir"), so every worktree change holds a lock: a thread lock
inside this process and an flock on a file in the common git dir across processes.

A create never reads a name clash out of git's words: whether a name is free is decided
before git runs, and whatever a failed ``git worktree add`` made (the branch first, then
the folder, the checkout, the post-checkout hook) is undone. The caller records the
intended path and branch before creating them, so that after a crash ``reclaim`` adopts
a finished worktree, or removes a half-made one and makes it again under the same name.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from . import procs
from .errors import GadugiError, IdentityError, RepositoryError, SpawnError, WorktreeError

log = logging.getLogger(__name__)

# Where a HEAD that cannot go onto its task branch is kept reachable.
KEPT_REFS = "refs/gadugi/kept"

_GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}
# git var's ident line: "Name <email> <epoch seconds> <+hhmm>" (git-var(1)).
_IDENT = re.compile(r"^(?P<name>.*) <(?P<email>[^<>]*)> \d+ [+-]\d{4}$")


@dataclass(frozen=True)
class GitResult:
    returncode: int
    stdout: str
    stderr: str


def run_git(
    args: Sequence[str],
    cwd: Path,
    lock_fd: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
) -> GitResult:
    """Run git without a shell or a terminal, in a session of its own.

    Its own session, so that a Ctrl-C at the terminal reaches gadugi only: git killed
    half-way through ``worktree add`` leaves a half-made worktree. ``lock_fd`` (from
    ``Worktrees.locked``) is handed down to git: an flock lasts while any process holds
    its file open, so if gadugi dies mid-command the lock stays held until git itself has
    finished, and a resumed run cannot race the orphaned git. A git that cannot be
    started, or cannot start its own processes, for want of processes or memory raises
    SpawnError: that is no verdict of git's, and trying again later may succeed.
    ``env`` adds variables (the user's identity, for a commit). Past ``timeout_s`` (for
    git that talks to a remote) git and what it started (its session) are killed, and
    the result is a failure saying so.
    """
    began = time.monotonic()
    proc = procs.start(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **_GIT_ENV, **(env or {})},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        pass_fds=() if lock_fd is None else (lock_fd,),
    )
    try:
        stdout, stderr = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        procs.forget(proc.pid)
        return GitResult(124, stdout, f"{stderr}git {args[0]} timed out after {timeout_s:g} s")
    except BaseException:
        # Interrupted here: let git finish its step rather than stop it half-way.
        proc.communicate()
        raise
    finally:
        if proc.returncode is not None:
            procs.forget(proc.pid)
    log.debug(
        "git %s (in %s): exit %d in %.3fs",
        " ".join(args),
        cwd,
        proc.returncode,
        time.monotonic() - began,
    )
    if proc.returncode != 0:
        _raise_if_out_of_resources(stderr)
    return GitResult(proc.returncode, stdout, stderr)


def git_in(worktree: Path, args: Sequence[str], env: Mapping[str, str] | None = None) -> GitResult:
    """git run in a worktree gadugi made (a task's, the integration one), and only there.

    git looks for a repository from its folder upwards: in a worktree whose ``.git`` an
    agent or a verification removed, it would find the main checkout (the worktrees live
    inside it) and commit, check out or clean there. With the worktree's parent as a
    ceiling it stops at the worktree, and says it is not a repository.
    """
    ceiling = {"GIT_CEILING_DIRECTORIES": os.path.realpath(worktree.parent)}
    return run_git(args, worktree, env={**(env or {}), **ceiling})


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


def user_identity(root: Path) -> dict[str, str]:
    """The user's identity as git itself resolves it in ``root`` (its configuration, the
    environment), as the environment of a commit gadugi makes: GIT_AUTHOR_NAME/EMAIL and
    GIT_COMMITTER_NAME/EMAIL. None to be found is an IdentityError, never a made-up one."""
    identity: dict[str, str] = {}
    for role in ("AUTHOR", "COMMITTER"):
        res = run_git(["var", f"GIT_{role}_IDENT"], root)
        found = _IDENT.match(res.stdout.strip()) if res.returncode == 0 else None
        if found is None:
            said = [ln for ln in res.stderr.splitlines() if ln.startswith("fatal:")]
            raise IdentityError(str(root), said[-1] if said else f"no {role.lower()} identity")
        identity[f"GIT_{role}_NAME"] = found["name"]
        identity[f"GIT_{role}_EMAIL"] = found["email"]
    return identity


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


def tracked_among(root: Path, paths: Sequence[str]) -> list[str]:
    """Which of ``paths`` (literal, relative to ``root``) git tracks files in, or is a
    tracked file. A gitlink is no file (a worktree of gadugi's added by `git add -A`
    before it was excluded)."""
    found = []
    for rel in paths:
        args = ["--literal-pathspecs", "-c", "core.quotepath=on", "ls-files", "-s", "--", rel]
        res = run_git(args, root)
        if res.returncode != 0:
            raise RepositoryError(f"git ls-files failed in {root}: {res.stderr.strip()}")
        if any(not line.startswith("160000 ") for line in res.stdout.splitlines()):
            found.append(rel)
    return found


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


class WorktreeState(StrEnum):
    """A task worktree's life as the registry records it (recovery reads it)."""

    INTENDED = "intended"  # path and branch recorded; git may have made none, part or all
    READY = "ready"  # made in full (and merged); only now may an agent run in it
    REMOVED = "removed"


class HeadOutcome(StrEnum):
    """What became of a worktree's HEAD when its agent left it off the task branch."""

    ON_BRANCH = "on-branch"  # every commit HEAD holds is on the task branch already
    FAST_FORWARDED = "fast-forwarded"  # the task branch was moved up to HEAD
    KEPT = "kept"  # HEAD went elsewhere: kept under a ref, and its worktree must stay


@dataclass(frozen=True)
class HeadCheck:
    outcome: HeadOutcome
    note: str | None = None  # what the task's report should say; None when nothing happened
    ref: str | None = None  # the ref holding a kept HEAD


class NameTaken(WorktreeError):
    """A new worktree's branch or path is in use already; git was not asked to make it."""

    def __init__(self, task_id: str, reason: str) -> None:
        GadugiError.__init__(self, f"{task_id}: {reason}")
        self.task_id, self.action, self.stderr, self.returncode = task_id, "worktree add", "", 0


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
        return self._oid(self.root, f"refs/heads/{branch}") is not None

    def create(self, task_id: str, path: Path, branch: str, base: str) -> None:
        """A new branch ``branch`` at ``base`` checked out at ``path``; never overwrites.

        Raises ``NameTaken`` when the branch or the path exists (git is not run), and
        ``WorktreeError`` with git's message when git fails; then nothing it made is left.
        """
        with self.locked() as fd:
            self._create(task_id, path, branch, self._commit(task_id, base, fd), fd)

    def check_out(self, task_id: str, path: Path, branch: str) -> None:
        """Check out an existing task branch at a free ``path`` (a retry of a task whose
        worktree was removed); a failed checkout leaves no worktree and the branch as it was."""
        with self.locked() as fd:
            if os.path.lexists(path) or _real(path) in self._checkouts(fd):
                raise NameTaken(task_id, f"{path} exists already")
            res = run_git(["worktree", "add", "--quiet", str(path), branch], self.root, fd)
            if res.returncode != 0:
                if _real(path) in self._checkouts(fd):
                    run_git(["worktree", "remove", "--force", "--force", str(path)], self.root, fd)
                shutil.rmtree(path, ignore_errors=True)
                raise WorktreeError(task_id, "worktree add", res.stderr, res.returncode)

    def reclaim(self, task_id: str, path: Path, branch: str, base: str) -> bool:
        """Finish a create that a crash interrupted; True when the worktree there is adopted.

        Only for a name the registry recorded as intended: no agent has run there, so a
        worktree on that branch that is not complete and clean is removed and made again.
        What may be someone else's (a folder git did not make, a worktree on another
        branch, a branch with commits beyond ``base``) is left alone: ``NameTaken``.
        """
        with self.locked() as fd:
            oid = self._commit(task_id, base, fd)
            listed = self._checkouts(fd)
            on_branch = listed.get(_real(path)) == f"refs/heads/{branch}"
            if on_branch and _complete(path) and self.is_clean(path):
                return True
            self._discard(task_id, path, branch, oid, listed, fd)
            self._create(task_id, path, branch, oid, fd)
            return False

    def is_free(self, path: Path, branch: str) -> bool:
        """Whether a worktree could be made at ``path`` on a new ``branch`` (a first look;
        ``create`` looks again). Under the lock all the same: ``git worktree list`` fails
        while another process's ``worktree add`` is half done."""
        with self.locked() as fd:
            return self._clash(path, branch, fd) is None

    def _clash(self, path: Path, branch: str, fd: int | None = None) -> str | None:
        if self.branch_exists(branch):
            return f"branch {branch} already exists"
        if os.path.lexists(path):
            return f"{path} already exists"
        if _real(path) in self._checkouts(fd):
            return (
                f"{path} is registered as a worktree though it is gone "
                "('git worktree prune' forgets it)"
            )
        return None

    def _create(self, task_id: str, path: Path, branch: str, oid: str, fd: int) -> None:
        clash = self._clash(path, branch, fd)
        if clash is not None:
            raise NameTaken(task_id, clash)
        try:
            res = run_git(
                ["worktree", "add", "--quiet", "-b", branch, str(path), oid], self.root, fd
            )
        except BaseException:
            self._undo(task_id, path, branch, oid, fd)
            raise
        if res.returncode != 0:
            error = self._add_failure(task_id, path, branch, res, fd)
            self._undo(task_id, path, branch, oid, fd)
            raise error

    def _add_failure(
        self, task_id: str, path: Path, branch: str, res: GitResult, fd: int
    ) -> WorktreeError:
        hook = self._hook("post-checkout")
        finished = self._checkouts(fd).get(_real(path)) == f"refs/heads/{branch}"
        if hook is not None and finished and _complete(path):
            # git runs nothing after a finished checkout but this hook, and says that it
            # failed only through its exit code (the hook's own).
            cause = f"its post-checkout hook {hook} failed"
            return WorktreeError(task_id, "worktree add", res.stderr, res.returncode, cause)
        return WorktreeError(task_id, "worktree add", res.stderr, res.returncode)

    def _undo(self, task_id: str, path: Path, branch: str, oid: str, fd: int) -> None:
        """Remove what a failed add made: the path and the branch were free before it."""
        left: list[str] = []
        if _real(path) in self._checkouts(fd):
            run_git(["worktree", "remove", "--force", "--force", str(path)], self.root, fd)
        if os.path.lexists(path):
            shutil.rmtree(path, ignore_errors=True)
        if _real(path) in self._checkouts(fd):
            run_git(["worktree", "prune"], self.root, fd)
        if os.path.lexists(path) or _real(path) in self._checkouts(fd):
            left.append(f"worktree {path}")
        if self.branch_exists(branch) and not self._delete_branch(branch, oid, fd):
            left.append(f"branch {branch}")
        if left:
            log.warning("%s: could not undo the failed create; left: %s", task_id, ", ".join(left))

    def _discard(
        self,
        task_id: str,
        path: Path,
        branch: str,
        oid: str,
        listed: dict[Path, str | None],
        fd: int,
    ) -> None:
        """Remove what an interrupted create of this name left, or refuse what is not its."""
        ref = f"refs/heads/{branch}"
        on = listed.get(_real(path), ref)
        # Before git points a new worktree's HEAD at its branch, HEAD is a placeholder.
        if on != ref and not (on is None and not _complete(path)):
            raise NameTaken(task_id, f"{path} is a worktree on {on or 'a detached HEAD'}")
        if _real(path) not in listed and os.path.lexists(path) and not _made_by_git(path):
            raise NameTaken(task_id, f"{path} exists and is not a worktree git made")
        tip = self._oid(self.root, ref)
        if tip is not None and tip != oid:
            raise NameTaken(task_id, f"branch {branch} has moved on from {oid[:12]}")
        self._undo(task_id, path, branch, oid, fd)

    def _delete_branch(self, branch: str, oid: str, fd: int) -> bool:
        # A compare-and-delete: a branch that moved since it was made holds someone's work.
        res = run_git(["update-ref", "-d", f"refs/heads/{branch}", oid], self.root, fd)
        return res.returncode == 0

    def _commit(self, task_id: str, base: str, fd: int) -> str:
        res = run_git(
            ["rev-parse", "--verify", "--end-of-options", f"{base}^{{commit}}"], self.root, fd
        )
        if res.returncode != 0:
            raise WorktreeError(task_id, f"rev-parse of base {base}", res.stderr, res.returncode)
        return res.stdout.strip()

    def _checkouts(self, fd: int | None = None) -> dict[Path, str | None]:
        """Every worktree git knows, by real path, with the branch it has checked out."""
        res = run_git(["worktree", "list", "--porcelain"], self.root, fd)
        if res.returncode != 0:
            raise WorktreeError("", "worktree list", res.stderr, res.returncode)
        found: dict[Path, str | None] = {}
        current: Path | None = None
        for line in res.stdout.splitlines():
            key, _, value = line.partition(" ")
            if key == "worktree":
                current = Path(value)
                found[current] = None
            elif key == "branch" and current is not None:
                found[current] = value
        return found

    def _hook(self, name: str) -> Path | None:
        """The hook git would run (``core.hooksPath`` included), if there is one."""
        res = run_git(["rev-parse", "--git-path", f"hooks/{name}"], self.root)
        path = self.root / res.stdout.strip()
        return path if res.returncode == 0 and path.is_file() and os.access(path, os.X_OK) else None

    def _oid(self, cwd: Path, ref: str) -> str | None:
        res = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", ref], cwd)
        return res.stdout.strip() if res.returncode == 0 else None

    def _is_ancestor(self, older: str, newer: str) -> bool:
        res = run_git(["merge-base", "--is-ancestor", older, newer], self.root)
        return res.returncode == 0

    def merge(self, task_id: str, path: Path, branches: Sequence[str]) -> None:
        """Merge further dependency branches into a new worktree; a conflict names files.

        The merge commit is the user's, like every commit gadugi makes."""
        who = user_identity(self.root)
        res = git_in(path, ["merge", "--no-edit", "--quiet", *branches], env=who)
        if res.returncode == 0:
            return
        files = git_in(path, ["diff", "--name-only", "--diff-filter=U"]).stdout.split()
        git_in(path, ["merge", "--abort"])
        names = ", ".join(branches)
        detail = f"conflicting files: {', '.join(files)}" if files else res.stderr.strip()
        raise WorktreeError(task_id, f"merge of {names}", detail, res.returncode)

    def absorb(self, task_id: str, path: Path, commit: str) -> list[str]:
        """Merge ``commit`` into the worktree's branch as the user, before a follow-up
        attempt. A conflict is left in the worktree for the agent to resolve (its files
        are returned); the agent's commit, or the autocommit, concludes the merge."""
        res = git_in(path, ["merge", "--no-edit", "--quiet", commit], env=user_identity(self.root))
        if res.returncode == 0:
            return []
        files = git_in(path, ["diff", "--name-only", "--diff-filter=U"]).stdout.split()
        if not files:
            raise WorktreeError(task_id, f"merge of {commit}", res.stderr, res.returncode)
        return files

    def commit_all(self, task_id: str, path: Path, message: str) -> str | None:
        """Commit everything left uncommitted in the worktree (``git add -A``) as the user;
        the new commit, or None when there was nothing to commit. The generated prompt
        lives outside the worktree, so only the agent's work is in it."""
        if self.is_clean(path):
            return None
        # `add -A` would take conflict markers for a resolution: a merge the agent left
        # unresolved (a landing re-run's) is its failure, never gadugi's commit.
        unmerged = git_in(path, ["diff", "--name-only", "--diff-filter=U"]).stdout.split()
        if unmerged:
            raise WorktreeError(
                task_id, "autocommit", f"conflicts left unresolved in {', '.join(unmerged)}", 1
            )
        who = user_identity(self.root)
        for args in (["add", "-A"], ["commit", "--quiet", "-m", message]):
            res = git_in(path, args, env=who)
            if res.returncode != 0:
                said = res.stderr.strip() or res.stdout.strip()
                raise WorktreeError(task_id, args[0], said, res.returncode, "autocommit")
        return self.head(path)

    def changed_since(self, path: Path, base: str) -> bool:
        """Whether the worktree holds any change since ``base``: a commit on its HEAD, or
        anything modified or untracked."""
        res = git_in(path, ["rev-list", "--count", f"{base}..HEAD"])
        if res.returncode == 0 and int(res.stdout.strip() or 0) > 0:
            return True
        return not self.is_clean(path)

    def diffstat(self, base: str, branch: str) -> tuple[int, int, int] | None:
        """Files changed, insertions and deletions of ``branch`` since ``base``."""
        from .views import diffstat  # the views build on this module, not it on them

        stat = diffstat(self.root, base, branch)
        if stat is None:
            return None
        files = stat.files
        return (
            len(files),
            sum(f["insertions"] or 0 for f in files),
            sum(f["deletions"] or 0 for f in files),
        )

    def head(self, path: Path) -> str:
        """The commit checked out in the worktree at ``path``."""
        res = git_in(path, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"])
        if res.returncode != 0 or not res.stdout.strip():
            raise RepositoryError(f"{path} has no commit checked out: {res.stderr.strip()}")
        return res.stdout.strip()

    def is_clean(self, path: Path) -> bool:
        """True when nothing in the worktree is modified or untracked (ignored files aside)."""
        res = git_in(path, ["status", "--porcelain", "--untracked-files=all"])
        return res.returncode == 0 and not res.stdout.strip()

    def untracked(self, path: Path) -> list[str] | None:
        """The untracked files in the worktree that git would count (ignored ones aside),
        relative to it and as git quotes them; None when git cannot say."""
        # quotepath on: every name comes back as ASCII, an unusual one in double quotes.
        args = ["-c", "core.quotepath=on", "ls-files", "--others", "--exclude-standard"]
        res = git_in(path, args)
        return sorted(res.stdout.splitlines()) if res.returncode == 0 else None

    def discard_untracked(self, path: Path, files: Iterable[str]) -> list[str]:
        """Remove these files, as ``untracked`` named them, but never a folder (a nested
        repository); the ones that stay (a name git had to quote, a folder), for the log."""
        stayed = []
        for rel in files:
            target = path / rel
            if rel.startswith('"') or (target.is_dir() and not target.is_symlink()):
                stayed.append(rel)
                continue
            try:
                target.unlink(missing_ok=True)
            except OSError:
                stayed.append(rel)
        return stayed

    def tree_of(self, path: Path, *, untracked: bool = False) -> str | None:
        """The tree of the worktree's HEAD when no tracked file differs from it (and, with
        ``untracked``, no untracked file is beside it; ignored files aside): what a command
        run there sees. None when something differs or git cannot say."""
        res = git_in(
            path, ["status", "--porcelain", f"--untracked-files={'all' if untracked else 'no'}"]
        )
        if res.returncode != 0 or res.stdout.strip():
            return None
        tree = git_in(path, ["rev-parse", "--verify", "--quiet", "HEAD^{tree}"])
        return tree.stdout.strip() or None if tree.returncode == 0 else None

    def branch_head(self, branch: str) -> str | None:
        """The commit ``branch`` points at, or None when there is no such branch."""
        res = run_git(["rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}"], self.root)
        return res.stdout.strip() or None if res.returncode == 0 else None

    def commits_ahead(self, branch: str, base: str) -> int:
        res = run_git(["rev-list", "--count", f"{base}..refs/heads/{branch}"], self.root)
        return int(res.stdout.strip()) if res.returncode == 0 else 0

    def secure_head(self, task_id: str, path: Path, branch: str) -> HeadCheck:
        """Put the commits an agent left on its worktree's HEAD onto ``branch``, or keep them.

        Called once the agent is gone. A HEAD ahead of the branch (detached, or on a branch
        of the agent's own) fast-forwards it with a compare-and-swap, never a force; any
        other HEAD is kept under ``refs/gadugi/kept/<task-dir>`` and its worktree must stay.
        """
        head = self._oid(path, "HEAD") if (path / ".git").exists() else None
        ref = f"refs/heads/{branch}"
        at = git_in(path, ["symbolic-ref", "--quiet", "HEAD"]) if head else None
        where = at.stdout.strip() if at is not None and at.returncode == 0 else None
        if head is None or where == ref:
            return HeadCheck(HeadOutcome.ON_BRANCH)
        tip = self._oid(self.root, ref)
        if tip is not None and self._is_ancestor(head, tip):
            return HeadCheck(HeadOutcome.ON_BRANCH)
        left = f"on {where.removeprefix('refs/heads/')}" if where else "detached"
        if tip is None or self._is_ancestor(tip, head):
            reason = f"gadugi: {task_id} left HEAD {left}"
            res = run_git(["update-ref", "-m", reason, ref, head, tip or ""], self.root)
            if res.returncode == 0:
                self._attach(task_id, path, ref)
                moved = "made again" if tip is None else "fast-forwarded"
                note = f"the agent left HEAD {left} at {head[:12]}; {branch} {moved} to it"
                log.info("%s: %s", task_id, note)
                return HeadCheck(HeadOutcome.FAST_FORWARDED, note)
        kept, why = self._keep(path.name, head)
        where_kept = f"kept as {kept}" if kept else f"only in the worktree ({why})"
        note = (
            f"worktree kept: the agent left HEAD {left} at {head[:12]}, "
            f"not on {branch}; its commits are {where_kept}"
        )
        return HeadCheck(HeadOutcome.KEPT, note, kept)

    def _attach(self, task_id: str, path: Path, ref: str) -> None:
        # HEAD and the branch now name the same commit, so the files stay as they are.
        res = git_in(path, ["symbolic-ref", "HEAD", ref])
        if res.returncode != 0:
            log.info("%s: HEAD stays detached: %s", task_id, res.stderr.strip())

    def _keep(self, task_dir: str, head: str) -> tuple[str | None, str]:
        """A ref holding ``head``; an earlier kept HEAD of the same task is never replaced."""
        why = ""
        for ref in (f"{KEPT_REFS}/{task_dir}", f"{KEPT_REFS}/{task_dir}.{head[:12]}"):
            held = self._oid(self.root, ref)
            if held == head:
                return ref, ""
            if held is None:
                # An empty old value: update-ref only creates, it never moves an existing ref.
                res = run_git(["update-ref", ref, head, ""], self.root)
                if res.returncode == 0:
                    return ref, ""
                why = res.stderr.strip()
        return None, why or "its refs are taken"

    def remove(self, task_id: str, path: Path) -> None:
        """Remove a clean worktree (git refuses a dirty one); the branch stays."""
        with self.locked() as fd:
            res = run_git(["worktree", "remove", str(path)], self.root, fd)
        if res.returncode != 0:
            raise WorktreeError(task_id, "worktree remove", res.stderr, res.returncode)


def _real(path: Path) -> Path:
    """``path`` as git records a worktree: absolute, with symbolic links resolved."""
    return Path(os.path.realpath(path))


def _complete(path: Path) -> bool:
    """Whether git finished making the worktree at ``path`` (its checkout included).

    git locks a new worktree's admin folder (``locked``) until its checkout is done; the
    worktree's ``.git`` file names that folder (both are in gitrepository-layout(5)).
    """
    try:
        gitfile = (path / ".git").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    if not gitfile.startswith("gitdir: "):
        return False
    admin = path / gitfile.removeprefix("gitdir: ").strip()
    return admin.is_dir() and not (admin / "locked").exists()


def _made_by_git(path: Path) -> bool:
    """A folder as git leaves it when killed before it registered the worktree there."""
    try:
        return {p.name for p in path.iterdir()} <= {".git"}
    except OSError:
        return False

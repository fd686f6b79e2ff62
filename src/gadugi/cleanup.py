"""``gadugi cleanup``: remove what finished orchestrations left, keep what holds work.

Without ``--force`` no commit becomes unreachable: a worktree or branch goes only when
every commit it holds stays reachable from what cleanup keeps, that is every ref under
``refs/`` (branches, tags, remote-tracking refs, ``refs/gadugi/``, the stash) but the
branches it deletes, and the HEAD of every worktree (the main checkout's too) but the
worktrees it removes. Each removal is checked against what remains after the removals
already decided, so two branches that hold the same commits cannot both go. Worktrees
with uncommitted or untracked changes stay too. An orchestration's registry rows, logs
and snapshots go only once all its worktrees and branches are gone, and only when
every one of those removals succeeded. Running orchestrations are never touched.

First every decision is made (``plan_cleanup``), then carried out (``apply``), or, in a
dry run, only described, in the same words. ``serialized`` keeps two cleanups of one
repository from planning and removing the same things at once.
"""

from __future__ import annotations

import enum
import fcntl
import os
import shutil
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import envsetup, lease
from .config import load_config
from .errors import GadugiError, NotFoundError, RepositoryError, WorktreeError
from .landing import LAND_REFS, integration_branch, landing_worktree_name
from .lease import lock_path
from .procs import agents_of
from .recovery import orchestrator_alive
from .registry import Registry
from .worktrees import Worktrees, git_in, run_git

_LAST = 1 << 62  # sorts the integration branch after every task branch


class ActionKind(enum.StrEnum):
    REMOVE_WORKTREE = "remove-worktree"
    PRUNE = "prune"  # the record of a worktree whose folder was deleted behind git's back
    DELETE_BRANCH = "delete-branch"
    DELETE_REF = "delete-ref"  # a landing candidate kept under refs/gadugi/land/<orch>/
    FORGET = "forget-orchestration"
    REMOVE_CACHE = "remove-cached-environment"


# What each kind of action does, to do (a dry run) and done (a real one).
_VERBS = {
    ActionKind.REMOVE_WORKTREE: ("remove worktree", "removed worktree"),
    ActionKind.PRUNE: ("prune orphaned worktree record", "pruned orphaned worktree record"),
    ActionKind.DELETE_BRANCH: ("delete branch", "deleted branch"),
    ActionKind.DELETE_REF: ("delete ref", "deleted ref"),
    ActionKind.FORGET: ("forget", "forgot"),
    ActionKind.REMOVE_CACHE: ("remove cached environment", "removed cached environment"),
}


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    target: str
    orchestration_id: str = ""
    force: bool = False
    tip: str = ""  # delete-branch: the commit the branch was checked at

    def describe(self, done: bool = False) -> str:
        verb = _VERBS[self.kind][1 if done else 0]
        extra = " (registry rows, logs, snapshots)" if self.kind is ActionKind.FORGET else ""
        return f"{verb} {self.target}{extra}"


@dataclass
class CleanupPlan:
    actions: list[Action] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # what stays, and why
    notes: list[str] = field(default_factory=list)  # things to know, nothing to do

    def preview(self) -> list[str]:
        """What ``apply`` would do, line by line, in the words it would report."""
        return [f"would {action.describe()}" for action in self.actions]


@contextmanager
def serialized(state_dir: Path) -> Iterator[None]:
    """Hold the repository's cleanup lock: a second cleanup waits, then plans afresh.

    The lock is an flock on the state folder itself, so that even a dry run creates
    nothing; it goes with the descriptor, also when this process dies.
    """
    fd = os.open(state_dir, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Worktree:
    path: Path
    head: str | None  # None for a bare main repository
    branch: str | None  # checked out branch, without refs/heads/; None when detached
    locked: bool


def _listed_worktrees(root: Path, fd: int | None = None) -> list[_Worktree]:
    """git's worktrees, the main checkout first, under the worktree lock (``fd`` when the
    caller holds it): the list fails while another process's ``worktree add`` is half done."""
    if fd is None:
        with Worktrees(root).locked() as held:
            return _listed_worktrees(root, held)
    res = run_git(["worktree", "list", "--porcelain"], root, fd)
    if res.returncode != 0:
        raise RepositoryError(f"git worktree list failed in {root}: {res.stderr.strip()}")
    found = []
    for block in res.stdout.strip().split("\n\n"):
        attrs = dict(line.partition(" ")[::2] for line in block.splitlines())
        if "worktree" in attrs:
            branch = attrs.get("branch", "").removeprefix("refs/heads/") or None
            found.append(
                _Worktree(Path(attrs["worktree"]), attrs.get("HEAD"), branch, "locked" in attrs)
            )
    return found


def _real(path: Path | str) -> str:
    return os.path.realpath(path)


def _branch_tip(root: Path, branch: str) -> str | None:
    res = run_git(["rev-parse", "--verify", "--quiet", f"refs/heads/{branch}^{{commit}}"], root)
    return res.stdout.strip() if res.returncode == 0 else None


class _Keepers:
    """What stays once the removals decided so far are done.

    Every ref under ``refs/`` but the branches to delete, and the HEADs of the worktrees
    not to remove. A removal is decided only when what it holds is reachable from the
    rest, so what is reachable from the keepers never shrinks.
    """

    def __init__(self, root: Path, worktrees: Iterable[_Worktree]) -> None:
        self.root = root
        self.heads = {_real(w.path): w.head for w in worktrees if w.head}
        self.deleted: list[str] = []  # full ref names

    def lost_without_worktree(self, path: Path, merges: set[str]) -> int | None:
        """Commits only the worktree's HEAD reaches, gadugi's landing ``merges`` aside (the
        integration worktree is left at one)."""
        heads = dict(self.heads)
        tip = heads.pop(_real(path), None)
        return 0 if tip is None else self._unreached_but(tip, heads.values(), merges)

    def lost_without_branch(self, branch: str, tip: str) -> int | None:
        return self._unreached(tip, [*self.deleted, f"refs/heads/{branch}"], self.heads.values())

    def lost_without_merge(self, merge: str, merges: set[str]) -> int | None:
        """Commits of a deleted ref's merge that nothing kept reaches, leaving out gadugi's
        own merges (``merges``: an earlier candidate, a rebuilt queue's landings)."""
        return self._unreached_but(f"{merge}^@", self.heads.values(), merges)

    def _unreached_but(self, tip: str, heads: Iterable[str], merges: set[str]) -> int | None:
        excluded = [f"--exclude={ref}" for ref in self.deleted]
        args = ["rev-list", tip, "--not", *excluded, "--glob=*", *sorted(set(heads))]
        res = run_git(args, self.root)
        if res.returncode != 0:
            return None
        return len(set(res.stdout.split()) - merges)

    def remove_worktree(self, path: Path) -> None:
        self.heads.pop(_real(path), None)

    def delete_branch(self, branch: str) -> None:
        self.deleted.append(f"refs/heads/{branch}")

    def _unreached(self, tip: str, deleted: list[str], heads: Iterable[str]) -> int | None:
        """How many commits of ``tip`` nothing else kept reaches; None if git cannot tell."""
        # --exclude patterns are exact here: branch names cannot hold glob characters.
        excluded = [f"--exclude={ref}" for ref in deleted]
        args = ["rev-list", "--count", tip, "--not", *excluded, "--glob=*", *sorted(set(heads))]
        res = run_git(args, self.root)
        return int(res.stdout.strip()) if res.returncode == 0 else None


def _dirt(path: Path) -> str | None:
    """Why the worktree must not be removed as it is, or None when it is clean."""
    res = git_in(path, ["status", "--porcelain", "--untracked-files=all"])
    if res.returncode != 0:
        said = res.stderr.strip().splitlines()
        return f"git cannot inspect it ({said[0] if said else f'exit {res.returncode}'})"
    return "uncommitted changes" if res.stdout.strip() else None


def plan_cleanup(
    root: Path, registry: Registry, older_than_hours: float, force: bool, now: float | None = None
) -> CleanupPlan:
    now = time.time() if now is None else now
    plan = CleanupPlan()
    orchestrations = registry.orchestrations()
    finished = {o["id"] for o in orchestrations if o["state"] != "running"}
    busy: set[str] = set()
    for pid, orch_id, task_id in agents_of(finished):
        plan.notes.append(
            f"stale process {pid} (task {task_id} of finished {orch_id}) is still running"
        )
        busy.add(orch_id)
    chosen: list[dict[str, Any]] = []
    for orch in orchestrations:
        if orch["state"] == "running":
            if not orchestrator_alive(orch):
                # One that was landing is finished by land, which resumes it on the way.
                how = "land" if orch.get("landing_branch") else "resume"
                plan.notes.append(
                    f"{orch['id']}: its orchestrator (pid {orch['pid']}) is gone; "
                    f"finish it with gadugi {how} {orch['id']}"
                )
        elif orch["id"] in busy:
            plan.kept.append(f"{orch['id']}: left as it is while a process of it runs")
        elif (orch["finished_at"] or 0) <= now - older_than_hours * 3600:
            chosen.append(orch)
    rows = {o["id"]: registry.tasks(o["id"]) for o in orchestrations}
    _Planner(root, plan, force, rows, _landing_worktrees(root, orchestrations)).decide(
        [o["id"] for o in chosen]
    )
    _decide_cache(root, plan, now - older_than_hours * 3600)
    return plan


def _landing_worktrees(root: Path, orchestrations: list[dict[str, Any]]) -> dict[str, str]:
    """Each orchestration's integration worktree (where a lander killed mid-way left it),
    by its real path: it is the orchestration's as its tasks' worktrees are."""
    found = {}
    for orch in orchestrations:
        config = orch["config"] if isinstance(orch.get("config"), dict) else {}
        where = str(config.get("worktrees_dir") or ".worktrees")
        found[_real(root / where / landing_worktree_name(orch["id"]))] = orch["id"]
    return found


def _decide_cache(root: Path, plan: CleanupPlan, unused_since: float) -> None:
    """Stored worktree environments (``.gadugi/cache/``) no setup would use again."""
    try:
        config = load_config(root)
    except GadugiError as exc:
        plan.notes.append(f"cached environments left as they are: {exc}")
        return
    trees = [t.path for t in _listed_worktrees(root)[1:]]
    stale, kept = envsetup.stale_entries(root, config, unused_since, trees)
    plan.actions += [Action(ActionKind.REMOVE_CACHE, str(entry)) for entry in stale]
    plan.kept += kept


class _Planner:
    """Decides, for the chosen orchestrations, what may go and what holds work."""

    def __init__(
        self,
        root: Path,
        plan: CleanupPlan,
        force: bool,
        rows: dict[str, list[dict[str, Any]]],
        landing_trees: dict[str, str],
    ) -> None:
        self.root, self.plan, self.force, self.rows = root, plan, force, rows
        self.landing_trees = landing_trees
        self.merges: set[str] = set()  # gadugi's own landing merges: made again, never lost
        self.listed = _listed_worktrees(root)
        self.keepers = _Keepers(root, self.listed)
        self.holding: set[str] = set()  # orchestrations some of whose work stays
        self.kept_worktrees: set[str] = set()

    def decide(self, chosen: list[str]) -> None:
        owner = {
            **self.landing_trees,
            **{
                _real(row["worktree"]): orch_id
                for orch_id, rows in self.rows.items()
                for row in rows
                if row["worktree"]
            },
        }
        # Worktrees first: a branch checked out in a worktree can go only after it.
        removals: list[tuple[str, _Worktree]] = []
        for tree in self.listed[1:]:
            orch_id = owner.get(_real(tree.path), "")
            ours = orch_id in chosen
            orphan = not tree.path.exists()
            if orphan:
                note = f"orphaned worktree record: {tree.path} (its folder was deleted)"
                if orch_id and not ours:
                    note += f"; left to {orch_id}, which this cleanup does not touch"
                self.plan.notes.append(note)
            # Other people's worktrees are theirs, but their stale records may be pruned.
            if ours or (orphan and not orch_id):
                removals.append((orch_id, tree))
        # Candidates count as deleted while the branches are decided: a branch goes only
        # when its commits need no candidate to stay reachable.
        candidates = [c for orch_id in chosen for c in self._landing_refs(orch_id)]
        self.merges = {tip for _, _, tip in candidates}
        by_path = {_real(t.path): t for t in self.listed[1:]}
        for orch_id in chosen:
            for row in self.rows[orch_id]:
                self._check_unlisted(orch_id, row, by_path)
        for orch_id, tree in removals:
            self._decide_worktree(orch_id, tree)
        self._decide_branches(chosen)
        for orch_id, ref, tip in candidates:
            self._decide_landing_ref(orch_id, ref, tip, self.merges)
        for orch_id in chosen:
            if orch_id in self.holding:
                self.plan.kept.append(
                    f"{orch_id}: registry rows and logs kept while its work remains"
                )
            else:
                self.plan.actions.append(Action(ActionKind.FORGET, orch_id, orch_id))

    def _keep(self, orch_id: str, line: str) -> None:
        self.plan.kept.append(line)
        if orch_id:
            self.holding.add(orch_id)

    def _check_unlisted(
        self, orch_id: str, row: dict[str, Any], by_path: dict[str, _Worktree]
    ) -> None:
        """A task folder git no longer knows as a worktree is left alone: it may hold work."""
        path = row["worktree"]
        listed = bool(path) and _real(path) in by_path
        if path and not row["worktree_removed"] and not listed and Path(path).exists():
            self._keep(orch_id, f"{path}: no longer a git worktree; left as it is")

    def _decide_worktree(self, orch_id: str, tree: _Worktree) -> None:
        kind = ActionKind.REMOVE_WORKTREE if tree.path.exists() else ActionKind.PRUNE
        if tree.locked:
            self._keep(orch_id, f"{tree.path}: locked with git worktree lock")
        elif kind is ActionKind.REMOVE_WORKTREE and (dirt := _dirt(tree.path)) and not self.force:
            self._keep(orch_id, f"{tree.path}: {dirt} (use --force to remove)")
        elif (
            not self.force
            and (lost := self.keepers.lost_without_worktree(tree.path, self.merges)) != 0
        ):
            held = (
                "git could not tell whether its HEAD holds commits found nowhere else"
                if lost is None
                else f"its HEAD holds {lost} commit(s) that no branch or ref cleanup keeps reaches"
            )
            self._keep(orch_id, f"{tree.path}: {held} (use --force to remove)")
        else:
            self.keepers.remove_worktree(tree.path)
            self.plan.actions.append(Action(kind, str(tree.path), orch_id, self.force))
            return
        self.kept_worktrees.add(_real(tree.path))

    def _landing_refs(self, orch_id: str) -> list[tuple[str, str, str]]:
        """Landing candidates go with their orchestration: they hold gadugi's merges of
        task branches, which are decided on their own (and the integration branch last)."""
        res = run_git(
            ["for-each-ref", "--format=%(objectname) %(refname)", f"{LAND_REFS}/{orch_id}/"],
            self.root,
        )
        found = []
        for line in res.stdout.splitlines():
            tip, ref = line.split(" ", 1)
            self.keepers.deleted.append(ref)
            found.append((orch_id, ref, tip))
        return found

    def _decide_landing_ref(self, orch_id: str, ref: str, tip: str, merges: set[str]) -> None:
        """A candidate's own merge is gadugi's and made again by a landing; what it merged
        is not: it stays while it is the last thing reaching a task's commits (a task
        branch deleted by hand after a red verification)."""
        if not self.force and (lost := self.keepers.lost_without_merge(tip, merges)) != 0:
            self.keepers.deleted.remove(ref)
            held = (
                "git could not tell whether it holds commits found nowhere else"
                if lost is None
                else f"it merges {lost} commit(s) that no branch or other ref cleanup keeps reaches"
            )
            self._keep(orch_id, f"{ref}: {held} (use --force to delete)")
            return
        self.plan.actions.append(Action(ActionKind.DELETE_REF, ref, orch_id, tip=tip))

    def _decide_branches(self, chosen: list[str]) -> None:
        checked_out = {
            t.branch: t.path
            for t in self.listed
            if t.branch and _real(t.path) in self.keepers.heads
        }
        candidates = []
        for order, orch_id in enumerate(chosen):
            for row in self.rows[orch_id]:
                if row["branch"] and (tip := _branch_tip(self.root, row["branch"])):
                    candidates.append((order, orch_id, row, tip))
            # The integration branch is decided after every task branch: it goes with
            # --force, or once what it holds is reachable from elsewhere (merged --into).
            branch = integration_branch(orch_id)
            if tip := _branch_tip(self.root, branch):
                landing = {"branch": branch, "commits": _LAST, "seq": 0, "worktree": None}
                candidates.append((order, orch_id, landing, tip))
        # The branches that added least go first, so that of two holding the same commits
        # the one that made them stays (a dependent task that committed nothing goes).
        candidates.sort(key=lambda c: (c[2]["commits"] or 0, -c[0], -c[2]["seq"]))
        seen: set[str] = set()
        for _, orch_id, row, tip in candidates:
            branch = row["branch"]
            if branch in seen:
                continue
            seen.add(branch)
            worktree = row["worktree"] and _real(row["worktree"])
            if worktree in self.kept_worktrees:
                self._keep(orch_id, f"{branch}: its worktree is kept")
            elif branch in checked_out:
                self._keep(orch_id, f"{branch}: checked out at {checked_out[branch]}")
            elif not self.force and (lost := self.keepers.lost_without_branch(branch, tip)) != 0:
                held = (
                    "git could not tell whether it holds commits found nowhere else"
                    if lost is None
                    else f"{lost} commit(s) that exist on no other branch or ref cleanup keeps"
                )
                self._keep(orch_id, f"{branch}: {held} (merge it, or use --force to delete)")
            else:
                self.keepers.delete_branch(branch)
                self.plan.actions.append(
                    Action(ActionKind.DELETE_BRANCH, branch, orch_id, self.force, tip)
                )


def apply(root: Path, registry: Registry, plan: CleanupPlan, state_dir: Path) -> list[str]:
    """Carry out the plan; returns one line per thing done, skipped or failed.

    An orchestration is forgotten only when every removal of its work succeeded, and
    nothing is done to one that became running again since the plan was made.
    """
    done: list[str] = []
    failed: set[str] = set()
    skipped: set[str] = set()
    worktrees = Worktrees(root)
    held: dict[str, lease.Lease] = {}
    try:
        _apply(root, registry, plan, state_dir, worktrees, done, failed, skipped, held)
    finally:
        for claim in held.values():
            claim.release()
    return done


def _apply(
    root: Path,
    registry: Registry,
    plan: CleanupPlan,
    state_dir: Path,
    worktrees: Worktrees,
    done: list[str],
    failed: set[str],
    skipped: set[str],
    held: dict[str, lease.Lease],
) -> None:
    for action in plan.actions:
        orch_id = action.orchestration_id
        if orch_id in skipped:
            continue
        if orch_id and orch_id not in held:
            # Owning the orchestration while its work is removed: a resume or retry
            # starting now is refused instead of running in a worktree being removed.
            try:
                held[orch_id] = lease.claim(state_dir, orch_id)
            except lease.Owned:
                skipped.add(orch_id)
                done.append(f"skipped {orch_id}: another gadugi process owns it")
                continue
        if orch_id and (why := _untouchable(registry, orch_id)):
            skipped.add(orch_id)
            done.append(f"skipped {orch_id}: {why}")
            continue
        if action.kind is ActionKind.FORGET and orch_id in failed:
            done.append(f"kept {orch_id}: registry rows and logs kept, as removing its work failed")
            continue
        try:
            gone = _carry_out(root, registry, worktrees, state_dir, action)
        except GadugiError as exc:
            failed.add(orch_id)
            done.append(f"could not {action.describe()}: {exc}")
        else:
            done.append(action.describe(done=True) + (" (it was already gone)" if gone else ""))


def _carry_out(
    root: Path, registry: Registry, worktrees: Worktrees, state_dir: Path, action: Action
) -> bool:
    """Do one action; True when what it removes had gone meanwhile."""
    if action.kind is ActionKind.FORGET:
        _forget(registry, root, state_dir, action.target)
        return False
    if action.kind is ActionKind.DELETE_BRANCH:
        return _delete_branch(root, action)
    if action.kind is ActionKind.DELETE_REF:
        return _delete_ref(root, action)
    if action.kind is ActionKind.REMOVE_CACHE:
        if not Path(action.target).exists():
            return True
        if not envsetup.prune(Path(action.target)):
            raise RepositoryError("a setup is using it now; run cleanup again later")
        return False
    return _remove_worktree(root, worktrees, action)


def _untouchable(registry: Registry, orch_id: str) -> str | None:
    """Why the orchestration must be left alone now (taken over since planning), or None."""
    try:
        state = registry.orchestration(orch_id)["state"]
    except NotFoundError:
        return "it is no longer in the registry"
    return "it is running again" if state == "running" else None


def _remove_worktree(root: Path, worktrees: Worktrees, action: Action) -> bool:
    path = Path(action.target)
    args = ["worktree", "remove", *(["--force"] if action.force else []), str(path)]
    with worktrees.locked() as fd:
        listed = _listed_worktrees(root, fd)
        if not path.exists() and all(_real(t.path) != _real(path) for t in listed):
            return True  # folder and record both went meanwhile
        # A folder that went meanwhile is no error: git then drops its record.
        res = run_git(args, root, fd)
    if res.returncode != 0:
        raise WorktreeError(action.orchestration_id, "worktree remove", res.stderr, res.returncode)
    return False


def _monitoring_dir(root: Path, registry: Registry, orch_id: str) -> Path:
    """Where the orchestration wrote its snapshots: its configuration's ``monitoring_dir``.

    Only a relative path inside the project is taken (as configuration allows); anything
    else a damaged record might hold falls back to the default folder.
    """
    config = registry.orchestration(orch_id).get("config")
    value = config.get("monitoring_dir") if isinstance(config, dict) else None
    if isinstance(value, str) and value and not value.startswith("-"):
        path = Path(value)
        if not path.is_absolute() and ".." not in path.parts:
            return root / path
    return root / ".gadugi" / "monitoring"


def _delete_branch(root: Path, action: Action) -> bool:
    tip = _branch_tip(root, action.target)
    if tip is None:
        return True
    if tip != action.tip:
        raise RepositoryError(
            f"it moved to {tip[:12]} after cleanup looked at it; run cleanup again"
        )
    # Whether its commits are safe was decided in the plan (against what stays), so
    # git's own "merged into HEAD" test, which knows nothing of that, does not apply.
    res = run_git(["branch", "-D", "--", action.target], root)
    if res.returncode != 0:
        raise WorktreeError(action.orchestration_id, "branch -D", res.stderr, res.returncode)
    return False


def _delete_ref(root: Path, action: Action) -> bool:
    """Compare-and-delete: a ref that moved since the plan was made stays."""
    res = run_git(["update-ref", "-d", action.target, action.tip], root)
    if res.returncode != 0:
        raise RepositoryError(f"git update-ref -d failed: {res.stderr.strip()}")
    return False


def _forget(registry: Registry, root: Path, state_dir: Path, orch_id: str) -> None:
    folders = {state_dir / "monitoring", _monitoring_dir(root, registry, orch_id)}
    registry.forget(orch_id)
    for folder in ("logs", "prompts"):
        shutil.rmtree(state_dir / folder / orch_id, ignore_errors=True)
    for monitoring in folders:
        for suffix in ("_status.json", "_final.json"):
            (monitoring / f"{orch_id}{suffix}").unlink(missing_ok=True)
    lock_path(state_dir, orch_id).unlink(missing_ok=True)

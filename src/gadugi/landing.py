"""Landing: completed tasks merged, verified and integrated on ``gadugi/land/<orch>``.

The lander works in bounded steps (``Lander.step(now)``) that never wait, so the runner's
loop can take one per tick (``run --land``) and ``gadugi land`` can drive it alone. Each
merge is computed without touching a working tree (``git merge-tree --write-tree``, then
``git commit-tree`` with the user's identity); the candidate is kept reachable under
``refs/gadugi/land/<orch>/`` before anything else happens to it, verified in the
integration worktree, and only a green one moves the integration branch, by
compare-and-swap (``update-ref <ref> <new> <old>``).

Exactly once under kill -9: the integration ref is the truth and the registry follows
it. A task whose branch tip is already an ancestor of the integration head is landed,
whatever the registry last said, so a lander killed between the ref move and its
registry write never merges that task twice; a candidate recorded before a crash is
verified again when it still applies to the head, or replaced when it does not.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from . import procs
from .config import MAX_COMMAND_LENGTH
from .envsetup import shell_argv
from .errors import GadugiError, RequestError, SpawnError
from .phases import tail_of
from .registry import Registry
from .tasks import TaskStatus
from .worktrees import Worktrees, git_in, run_git, user_identity

log = logging.getLogger(__name__)
LAND_REFS = "refs/gadugi/land"
VERIFY_TASK_ID = "land"  # GADUGI_TASK_ID of a verification, so a restart can find it
DEFAULT_VERIFY_TIMEOUT_MIN = 30.0
GH_TIMEOUT_S = 120.0
PUSH_TIMEOUT_S = 600.0  # one branch's push; a remote that never answers must not hold landing
MAX_MOVED_UNDER = 3  # merges (or queues) in a row their branch may move under
# Tests only: "after-advance" kills the lander between moving the integration ref and
# recording it, the window the exactly-once argument has to cover; "after-keep" between
# keeping a candidate and recording it.
FAULT_ENV = "GADUGI_LAND_FAULT"
HELD_NOTE = "lands after"  # a held task's landing note begins so


class LandingStatus(StrEnum):
    PENDING = "pending"
    LANDED = "landed"
    CONFLICT = "conflict"
    VERIFY_FAILED = "verify_failed"
    NEEDS_PERSON = "needs_person"


RERUN = frozenset({LandingStatus.CONFLICT, LandingStatus.VERIFY_FAILED})  # a re-run asked


class LandError(GadugiError):
    """git refused a step of landing; the refs say how far it got."""


@dataclass(frozen=True)
class LandOptions:
    into: str | None = None
    verify: str | None = None
    verify_timeout_s: float = 1800.0
    push: str | None = None
    pr: str | None = None  # "tasks" (one per task) or "integration" (one for the branch)
    kill_grace_s: float = 5.0
    retries: int = 1  # land_retries: re-runs of a task whose merge conflicts or turns red
    # conflict_policy optimistic: a task predicted to conflict with one still unfinished
    # waits for it, and of a pair both done the one that ran longer lands first, so a
    # conflict is resolved once, by re-running the agent with the least work to redo.
    hold_conflicts: bool = False


def integration_branch(orch_id: str) -> str:
    return f"gadugi/land/{orch_id}"


def landing_worktree_name(orch_id: str) -> str:
    """The integration worktree's folder under ``worktrees_dir``: ``land-<xxxx>``."""
    return f"land-{orch_id.rsplit('-', 1)[-1]}"


def task_landing(row: dict[str, Any]) -> dict[str, Any] | None:
    """A task's ``landing`` in the result: null until a lander has looked at it."""
    if not row.get("landing_status"):
        return None
    return {
        "status": row["landing_status"],
        "commit": row.get("landing_commit"),
        "attempts": row.get("landing_attempts") or 0,
        "note": row.get("landing_note"),
    }


def orchestration_landing(
    orch: dict[str, Any], rows: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The orchestration's ``landing`` in the result: null when it was never landed."""
    if not orch.get("landing_branch"):
        return None
    head = orch.get("landing_head")
    return {
        "branch": orch["landing_branch"],
        "head": head,
        "into": orch.get("landing_into"),
        "landed": sum(r.get("landing_status") == LandingStatus.LANDED for r in rows),
        "verified": head is not None and orch.get("landing_verified") == head,
    }


def all_landed(rows: list[dict[str, Any]]) -> bool:
    """Every completed task landed (one that a landing re-run failed counts as completed):
    what ``gadugi land`` exits 0 for."""
    return all(
        r.get("landing_status") == LandingStatus.LANDED
        for r in rows
        if r["status"] == TaskStatus.COMPLETED or r.get("landing_status")
    )


@dataclass
class Verification:
    """One verification run of a candidate, in the integration worktree."""

    task_id: str
    candidate: str
    head: str  # the integration head the candidate was merged onto
    child: procs.Child
    log_file: Path
    deadline: float
    timed_out: bool = False


class Lander:
    """Lands one orchestration's completed tasks, one bounded step at a time."""

    def __init__(
        self,
        root: Path,
        registry: Registry,
        orch_id: str,
        options: LandOptions,
        *,
        logs_dir: Path,
        worktrees_dir: Path,
        owner: str | None = None,
    ) -> None:
        self.root = root
        self.registry = registry
        self.orch_id = orch_id
        self.options = options
        self.logs_dir = logs_dir
        self.owner = owner
        self.branch = integration_branch(orch_id)
        self.ref = f"refs/heads/{self.branch}"
        self.worktree = worktrees_dir / landing_worktree_name(orch_id)
        self.worktrees = Worktrees(root)
        self.identity = user_identity(root)
        self.verifying: Verification | None = None
        # Set by the loop that owns the tasks: run one again with a text, the integration
        # head merged into its branch first (Runner.follow_up); None lands without re-runs.
        self.rerun: Callable[[str, str, str, str], None] | None = None
        # Told (task id, note) when a task needs a person: a notification, where set.
        self.on_needs_person: Callable[[str, str], None] | None = None
        self.done = False
        self.into_moved = False  # --into was fast-forwarded
        self.delivery_failed = False  # a push was rejected, or a pull request not opened
        self.stopped = False  # a step failed: landing ended early
        self.moved_under = 0  # merges in a row whose compare-and-swap found the branch moved
        self.into_moves = 0  # queues --into moved under, each rebuilt on its new tip
        self.notes: list[str] = []  # what a person should hear (refusals, rejected pushes)
        self._stop_stale_verification()
        self._start_queue()

    # -- the steps -----------------------------------------------------------------------

    def step(self, now: float) -> bool:
        """One bounded step; returns whether it changed anything.

        A step git refuses (a ref deleted under it, a repository in trouble) ends the
        landing with a note instead of the loop that owns it: the tasks go on, and the
        next ``gadugi land`` starts from the refs. Out of processes is the loop's to wait
        out: the same step is taken again later.
        """
        if self.done:
            return False
        try:
            return self._step(now)
        except SpawnError:
            raise
        except GadugiError as exc:
            log.error("landing stopped: %s", exc)
            self.notes.append(f"landing stopped: {exc}")
            self.abort(now)
            self.stopped = self.done = True
            return True

    def _step(self, now: float) -> bool:
        if self.verifying is not None:
            return self._poll(now)
        rows = self.registry.tasks(self.orch_id)
        if self._settle(rows):
            return True
        task = self._next(rows)
        if task is None and any(not TaskStatus(r["status"]).finished for r in rows):
            return False  # run --land: the rest land as they complete (no git asked)
        head = self._oid(self.ref)
        if head is None:
            raise LandError(f"{self.branch} was deleted while landing; run gadugi land again")
        return self._land(task, head, now) if task is not None else self._finish(head)

    def abort(self, now: float) -> None:
        """Stop a verification under way (an interrupt); its candidate stays recorded."""
        if self.verifying is not None:
            procs.terminate([self.verifying.child], self.options.kill_grace_s)
            self.verifying = None

    @property
    def exit_code(self) -> int:
        rows = self.registry.tasks(self.orch_id)
        into_ok = self.options.into is None or self.into_moved
        ok = all_landed(rows) and into_ok and not (self.delivery_failed or self.stopped)
        return 0 if ok else 1

    # -- the queue -----------------------------------------------------------------------

    def _start_queue(self) -> None:
        """The integration branch (made at the base if new), and each task's place in it."""
        orch = self.registry.orchestration(self.orch_id)
        into = self.options.into
        base = self._oid(f"refs/heads/{into}") if into else orch["base_commit"]
        if base is None:
            raise LandError(f"--into {into}: no such branch")
        head = self._oid(self.ref)
        if head is None:
            if not self._update_ref(self.ref, base, "", "start the landing queue"):
                raise LandError(f"git could not create the integration branch {self.branch}")
            head, fields = base, {"landing_base": base, "landing_head": base}
        else:
            fields = {}
        self._set_orch(landing_branch=self.branch, landing_into=into, **fields)
        if into and not self._is_ancestor(base, head):
            self._rebuild(base, head)
            head = base
        changes = {}
        for row in self.registry.tasks(self.orch_id):
            if row["status"] != TaskStatus.COMPLETED:
                continue
            tip = self._tip(row)
            status = row.get("landing_status")
            # A landed task whose branch cleanup deleted is still in the head by its merge.
            held = tip or row.get("landing_commit")
            landed = held is not None and self._is_ancestor(held, head)
            if status == LandingStatus.LANDED and not landed:
                changes[row["task_id"]] = {"landing_status": LandingStatus.PENDING.value}
            elif status == LandingStatus.NEEDS_PERSON and tip != row.get("landing_tip"):
                # Someone resolved it on the task branch since: it gets its turn again.
                changes[row["task_id"]] = {"landing_status": LandingStatus.PENDING.value}
            elif status is None:
                changes[row["task_id"]] = {"landing_status": LandingStatus.PENDING.value}
        self.registry.update_tasks(self.orch_id, changes, owner=self.owner)

    def _settle(self, rows: list[dict[str, Any]]) -> bool:
        """A task whose dependency needs a person needs one too (its branch holds that
        work), and so does one whose re-run came back with its branch unchanged."""
        by_id = {r["task_id"]: r for r in rows}
        changes: dict[str, dict[str, Any]] = {}
        for row in rows:
            status = TaskStatus(row["status"])
            if _landing(row) in RERUN and status.finished and status is not TaskStatus.COMPLETED:
                changes[row["task_id"]] = {
                    "landing_status": LandingStatus.NEEDS_PERSON.value,
                    "landing_note": f"{row['landing_note']}; the re-run ended {status}: "
                    f"{row['error_message']}",
                }
                continue
            if row["status"] == TaskStatus.COMPLETED and _landing(row) in RERUN:
                if self._tip(row) == row.get("landing_tip"):
                    # Re-run and completed, but its branch did not move: nothing new to try.
                    changes[row["task_id"]] = {
                        "landing_status": LandingStatus.NEEDS_PERSON.value,
                        "landing_note": f"{row['landing_note']}; the re-run changed nothing",
                    }
                continue
            if row["status"] != TaskStatus.COMPLETED or _landing(row) is not LandingStatus.PENDING:
                continue
            stuck = [
                d
                for d in row["depends_on"]
                if d in by_id and _landing(by_id[d]) is LandingStatus.NEEDS_PERSON
            ]
            if stuck:
                # No tip recorded: the next queue gives it its turn again, as its own
                # branch is not what held it.
                changes[row["task_id"]] = {
                    "landing_status": LandingStatus.NEEDS_PERSON.value,
                    "landing_tip": None,
                    "landing_note": f"waits for {', '.join(stuck)}, which did not land; "
                    f"once it has, run gadugi land {self.orch_id} again",
                }
        self.registry.update_tasks(self.orch_id, changes, owner=self.owner)
        if self.on_needs_person is not None:
            for task_id, change in changes.items():
                self.on_needs_person(task_id, change["landing_note"])
        return bool(changes)

    def _next(self, rows: list[dict[str, Any]]) -> dict[str, Any] | None:
        """The next task to land: completed, its dependencies landed; then priority, then
        request order (so dependencies come first)."""
        by_id = {r["task_id"]: r for r in rows}
        ready = [
            r
            for r in rows
            if r["status"] == TaskStatus.COMPLETED
            and (_landing(r) is LandingStatus.PENDING or _landing(r) in RERUN)
            and all(
                d not in by_id or _landing(by_id[d]) is LandingStatus.LANDED
                for d in r["depends_on"]
            )
        ]
        if not self.options.hold_conflicts:
            return min(ready, key=lambda r: (-r["priority"], r["seq"]), default=None)
        partners = _partners(rows)
        ready = self._unheld(ready, by_id, partners)
        first = min(ready, key=lambda r: (-r["priority"], r["seq"]), default=None)
        if first is None:
            return None
        # Of the ready tasks of its priority it may conflict with (their partners all
        # done), the one that ran longest: should they clash, the one re-run is the one
        # with less to redo.
        mine = partners.get(first["task_id"], set())
        cluster = [
            r
            for r in ready
            if r is first or (r["task_id"] in mine and r["priority"] == first["priority"])
        ]
        return max(cluster, key=lambda r: (_ran_for(r), -r["seq"]))

    def _unheld(
        self,
        ready: list[dict[str, Any]],
        by_id: dict[str, dict[str, Any]],
        partners: dict[str, set[str]],
    ) -> list[dict[str, Any]]:
        """The ready tasks no unfinished partner holds back; each held one says why."""
        free: list[dict[str, Any]] = []
        notes: dict[str, dict[str, Any]] = {}
        for row in ready:
            waits = sorted(
                p
                for p in partners.get(row["task_id"], ())
                if p in by_id and not TaskStatus(by_id[p]["status"]).finished
            )
            if not waits:
                free.append(row)
                if (row.get("landing_note") or "").startswith(HELD_NOTE):
                    notes[row["task_id"]] = {"landing_note": None}
                continue
            note = f"{HELD_NOTE} {', '.join(waits)} (predicted to conflict) finishes"
            if row.get("landing_note") != note:
                notes[row["task_id"]] = {
                    "landing_status": (_landing(row) or LandingStatus.PENDING).value,
                    "landing_note": note,
                }
        if notes:
            self.registry.update_tasks(self.orch_id, notes, owner=self.owner)
        return free

    # -- one task ------------------------------------------------------------------------

    def _land(self, task: dict[str, Any], head: str, now: float) -> bool:
        task_id = task["task_id"]
        tip = self._tip(task)
        if tip is None:
            return self._needs_person(task, None, f"its branch {task['branch']} is gone")
        if self._is_ancestor(tip, head):
            # Merged already (a lander killed after the ref moved), or nothing to merge.
            merge = self._merge_of(tip, head)
            if merge is None and self._moved_back(task, tip):
                return self._needs_person(
                    task,
                    tip,
                    f"its branch {task['branch']} was moved back to {tip[:12]}: it holds none "
                    f"of the task's {task['commits']} commit(s) any more (git reflog show "
                    f"{task['branch']} says where they are); put them back on it, then "
                    f"gadugi land {self.orch_id}",
                )
            self._landed(task_id, merge, head)
            return True
        candidate = self._recorded_candidate(task, head, tip)
        if candidate is None:
            tree, conflicts = self._merge_tree(head, tip)
            if tree is None:
                return self._conflict(task, tip, head, conflicts)
            candidate = self._commit(task, tree, head, tip)
            number = self._keep(task_id, candidate)
            _fault("after-keep")
            self.registry.update_task(
                self.orch_id,
                task_id,
                owner=self.owner,
                landing_status=LandingStatus.PENDING.value,
                landing_commit=candidate,
                landing_attempts=number,
                landing_tip=tip,
            )
        if self.options.verify and not self._verified_by_task(task, candidate):
            self._start_verification(task_id, candidate, head, now)
            return True
        self._advance(task_id, candidate, head, verified=bool(self.options.verify))
        return True

    def _verified_by_task(self, task: dict[str, Any], candidate: str) -> bool:
        """Whether the task's own verification passed, with this very command, on the
        candidate's tree: a first task merged onto the base, or one started from the
        branch it lands after (stacked, a dependent, a landing re-run). Verifying the same
        tree with the same command again would only repeat the answer."""
        seen = task.get("verification") or {}
        if not (seen.get("passed") and seen.get("command") == self.options.verify):
            return False
        tree = seen.get("tree")
        if not tree or self._oid(f"{candidate}^{{tree}}") != tree:
            return False
        log.info("%s: its verification passed on this tree already", task["task_id"])
        return True

    def _moved_back(self, task: dict[str, Any], tip: str) -> bool:
        """The task completed with commits, yet its branch now holds none past its base."""
        base = task.get("base_commit")
        return bool(task.get("commits")) and base is not None and self._is_ancestor(tip, base)

    def _recorded_candidate(self, task: dict[str, Any], head: str, tip: str) -> str | None:
        """A candidate recorded before a restart that still applies: merged onto ``head``."""
        candidate = task.get("landing_commit")
        if not candidate or self._oid(f"{candidate}^{{commit}}") is None:
            return None
        parents = run_git(["rev-list", "--parents", "-n", "1", candidate], self.root).stdout
        return candidate if parents.split()[1:] == [head, tip] else None

    def _merge_tree(self, head: str, tip: str) -> tuple[str | None, list[str]]:
        res = run_git(
            ["merge-tree", "--write-tree", "--name-only", "--no-messages", head, tip], self.root
        )
        lines = res.stdout.splitlines()
        if res.returncode == 0:
            return lines[0], []
        if res.returncode == 1:
            return None, [line for line in lines[1:] if line]
        raise LandError(f"git merge-tree failed: {res.stderr.strip()}")

    def _commit(self, task: dict[str, Any], tree: str, head: str, tip: str) -> str:
        message = f"Land {task['task_id']}: {task['name']}\n\nMerge branch {task['branch']}."
        res = run_git(
            ["commit-tree", tree, "-p", head, "-p", tip, "-m", message],
            self.root,
            env=self.identity,
        )
        if res.returncode != 0:
            raise LandError(f"git commit-tree failed: {res.stderr.strip()}")
        return res.stdout.strip()

    def _keep(self, task_id: str, candidate: str) -> int:
        """Keep the candidate reachable under its own new ref; returns its attempt number."""
        for number in range(1, 10_000):
            ref = f"{LAND_REFS}/{self.orch_id}/{task_id}.{number}"
            if self._oid(ref) is None and self._update_ref(ref, candidate, "", "keep a candidate"):
                return number
        raise LandError(f"{task_id}: no free ref under {LAND_REFS}/{self.orch_id}/")

    def _advance(self, task_id: str, candidate: str, head: str, *, verified: bool) -> None:
        """Move the integration branch to a green candidate (compare-and-swap), then record."""
        if not self._update_ref(self.ref, candidate, head, f"land {task_id}"):
            # Bounded: something that moves the branch under every merge (a verification
            # that commits onto it) would have the queue merge and verify for ever.
            self.moved_under += 1
            if self.moved_under >= MAX_MOVED_UNDER:
                raise LandError(
                    f"{self.branch} moved under {self.moved_under} merges in a row; stop what "
                    "moves it, then run gadugi land again"
                )
            log.warning("%s moved while %s was landing; it is merged again", self.branch, task_id)
            return
        self.moved_under = 0
        _fault("after-advance")
        self._landed(task_id, candidate, candidate, verified=verified)

    def _landed(self, task_id: str, commit: str | None, head: str, verified: bool = False) -> None:
        self.registry.update_task(
            self.orch_id,
            task_id,
            owner=self.owner,
            landing_status=LandingStatus.LANDED.value,
            landing_commit=commit,
            landing_note=None,
        )
        self._set_orch(landing_head=head, **({"landing_verified": head} if verified else {}))
        log.info("%s landed on %s", task_id, self.branch)

    def _conflict(self, task: dict[str, Any], tip: str, head: str, files: list[str]) -> bool:
        what = f"merging {task['branch']} into {self.branch} conflicts in {', '.join(files)}"
        text = (
            f"Landing your work failed: your branch conflicts with the integration branch "
            f"{self.branch}, which holds the other tasks' finished work ({', '.join(files)}). "
            "It has been merged into your branch; resolve the conflicts so that both changes "
            "keep working, and commit the merge."
        )
        return self._reject(task, tip, head, LandingStatus.CONFLICT, what, text)

    def _reject(
        self,
        task: dict[str, Any],
        tip: str | None,
        head: str,
        status: LandingStatus,
        what: str,
        text: str,
    ) -> bool:
        """Re-run the task on the integration head while ``land_retries`` allow; then a
        person is needed."""
        reruns = task.get("landing_reruns") or 0
        if self.rerun is None or reruns >= self.options.retries or tip is None:
            return self._needs_person(task, tip, what, self._resolve_commands(task))
        why = f"landing: {what}; re-run {reruns + 1} of {self.options.retries}"
        self.registry.update_task(
            self.orch_id,
            task["task_id"],
            owner=self.owner,
            landing_status=status.value,
            landing_tip=tip,
            landing_note=why,
            landing_reruns=reruns + 1,
        )
        log.info("%s: %s", task["task_id"], why)
        self.rerun(task["task_id"], text, head, why)
        return True

    def _needs_person(
        self, task: dict[str, Any], tip: str | None, what: str, commands: str = ""
    ) -> bool:
        note = f"{what}{'; to resolve it by hand: ' + commands if commands else ''}"
        self.registry.update_task(
            self.orch_id,
            task["task_id"],
            owner=self.owner,
            landing_status=LandingStatus.NEEDS_PERSON.value,
            landing_tip=tip,
            landing_note=note,
        )
        log.warning("%s needs a person: %s", task["task_id"], note)
        if self.on_needs_person is not None:
            self.on_needs_person(task["task_id"], note)
        return True

    def _resolve_commands(self, task: dict[str, Any]) -> str:
        where = (
            f"cd {task['worktree']}"
            if task["worktree"] and not task["worktree_removed"]
            else f"git switch {task['branch']}"
        )
        return (
            f"{where} && git merge {self.branch}, fix and commit what it reports, "
            f"then gadugi land {self.orch_id}"
        )

    # -- verification --------------------------------------------------------------------

    def _start_verification(self, task_id: str, candidate: str, head: str, now: float) -> None:
        self._check_out(candidate)
        number = 1 + len(list(self.logs_dir.glob("land.*.verify.log")))
        log_file = self.logs_dir / f"land.{number}.verify.log"
        command = self.options.verify
        assert command is not None
        env = {
            **os.environ,
            "GADUGI_ORCHESTRATION_ID": self.orch_id,
            "GADUGI_TASK_ID": VERIFY_TASK_ID,
            "GADUGI_LAND_TASK_ID": task_id,
            "GADUGI_LAND_COMMIT": candidate,
            "GADUGI_WORKTREE": str(self.worktree),
            "GADUGI_PROJECT_ROOT": str(self.root),
        }
        result_file = self.logs_dir / f"land.{number}.exit.json"
        try:
            child = procs.spawn(
                shell_argv(command), self.worktree, env, log_file, log_file, result_file
            )
        except SpawnError:
            raise  # out of processes: the loop takes the step again later
        except OSError as exc:  # its log's folder replaced, the worktree gone
            raise LandError(f"cannot start the verification of {task_id}: {exc}") from None
        deadline = now + self.options.verify_timeout_s
        self.verifying = Verification(task_id, candidate, head, child, log_file, deadline)
        log.info("%s: verifying %s (%s)", task_id, candidate[:12], log_file)

    def _poll(self, now: float) -> bool:
        run = self.verifying
        assert run is not None
        ended = run.child.check()
        if ended is None and not run.timed_out:
            if now < run.deadline:
                return False
            run.timed_out = True
            procs.begin_stop(run.child, now, self.options.kill_grace_s)
        if not procs.finish_stop(run.child, now):
            # Ended, but its group lives on: nothing it started may outlive it.
            if run.child.kill_at is None:
                procs.begin_stop(run.child, now, self.options.kill_grace_s)
            return False
        self.verifying = None
        ended = run.child.check()
        if not run.timed_out and ended is not None and ended.returncode == 0:
            self._advance(run.task_id, run.candidate, run.head, verified=True)
            return True
        task = self.registry.find_task(run.task_id, self.orch_id)
        how = (
            f"timed out after {self.options.verify_timeout_s / 60:g} minutes"
            if run.timed_out
            else (ended.describe() if ended is not None else "ended unseen")
        )
        tail = _tail(run.log_file)
        what = (
            f"verification `{self.options.verify}` {how} on {run.candidate[:12]} "
            f"(log {run.log_file}): {tail}"
        )
        text = (
            f"Landing your work failed: the verification `{self.options.verify}` {how} once "
            f"your branch was merged with the integration branch {self.branch}, which holds "
            "the other tasks' finished work. That branch has been merged into yours. The end "
            f"of its output:\n\n```\n{tail.replace(' | ', chr(10))}\n```\n\n"
            "Make the verification pass and commit."
        )
        return self._reject(
            task, self._tip(task), run.head, LandingStatus.VERIFY_FAILED, what, text
        )

    def _check_out(self, commit: str) -> None:
        """The integration worktree, detached at ``commit`` (made the first time).

        git run in a folder that is not a worktree of its own finds the checkout around
        it: a forced checkout there would overwrite the user's files. So anything else at
        the worktree's path is refused, and only a worktree git lists is checked out.
        """
        path = self.worktree
        if path.is_symlink() or (path.exists() and not self._is_integration_worktree()):
            raise LandError(
                f"{path} is in the way: it is not the integration worktree git knows; "
                "move it aside, then run gadugi land again"
            )
        if not path.exists():
            # --force: a worktree whose folder was deleted by hand is still registered.
            with self.worktrees.locked() as fd:
                res = run_git(
                    ["worktree", "add", "--quiet", "--force", "--detach", str(path), commit],
                    self.root,
                    fd,
                )
        else:
            self._keep_stray_head()
            # git_in: a verification that removed the worktree's .git must not turn this
            # forced checkout and clean on the main checkout.
            res = git_in(self.worktree, ["checkout", "--quiet", "--detach", "--force", commit])
            if res.returncode == 0:
                res = git_in(self.worktree, ["clean", "-fdq"])
        if res.returncode != 0:
            raise LandError(f"cannot check out {commit[:12]} at {path}: {res.stderr.strip()}")

    def _keep_stray_head(self) -> None:
        """The integration worktree's HEAD, kept under a ref when no ref reaches it (a
        verification committed there; a cleanup deleted the candidate it was left at),
        before a checkout or removal would leave it unreachable."""
        head = git_in(self.worktree, ["rev-parse", "--verify", "--quiet", "HEAD"]).stdout.strip()
        if not head:
            return
        res = run_git(["rev-list", "-n", "1", head, "--not", "--glob=refs/*"], self.root)
        if res.returncode == 0 and res.stdout.strip():
            number = self._keep("kept", head)
            self.notes.append(
                f"{head[:12]}, left in the integration worktree and on no branch, is kept as "
                f"{LAND_REFS}/{self.orch_id}/kept.{number}"
            )

    def _is_integration_worktree(self) -> bool:
        """The folder is a directory git lists as a worktree, and git run in it works
        there (its ``.git`` file was not deleted), not in a checkout around it."""
        if not self.worktree.is_dir():
            return False
        out = run_git(["worktree", "list", "--porcelain"], self.root).stdout
        listed = {
            Path(line.removeprefix("worktree ")).resolve()
            for line in out.splitlines()
            if line.startswith("worktree ")
        }
        here = self.worktree.resolve()
        if here not in listed or here == self.root.resolve():
            return False
        top = run_git(["rev-parse", "--show-toplevel"], here)
        return top.returncode == 0 and Path(top.stdout.strip()).resolve() == here

    def _remove_worktree(self) -> None:
        """The integration worktree goes once landing is done: every commit verified there
        is kept under a ref, and what verification left in it is only its output."""
        if not self.worktree.exists() or not self._is_integration_worktree():
            return
        self._keep_stray_head()
        with self.worktrees.locked() as fd:
            res = run_git(["worktree", "remove", "--force", str(self.worktree)], self.root, fd)
        if res.returncode != 0:
            self.notes.append(
                f"the integration worktree {self.worktree} stays: {_last(res.stderr)}"
            )

    def _stop_stale_verification(self) -> None:
        """A verification a killed lander left running is stopped; its candidate is
        verified again from the start."""
        found = procs.find_agent(self.orch_id, VERIFY_TASK_ID)
        if found is not None:
            pid, start_time = found
            log.info("stopping the verification (pid %d) a previous lander left", pid)
            procs.terminate(
                [procs.Child(pid, start_time, Path(os.devnull))], self.options.kill_grace_s
            )

    # -- the end -------------------------------------------------------------------------

    def _finish(self, head: str) -> bool:
        into = self.options.into
        if into:
            tip = self._oid(f"refs/heads/{into}")
            if tip is None:
                raise LandError(
                    f"{into} was deleted while landing; {self.branch} holds the landed work"
                )
            if not self._is_ancestor(tip, head):
                self.into_moves += 1
                if self.into_moves >= MAX_MOVED_UNDER:
                    # Bounded as the merges are: each rebuild merges and verifies it all.
                    raise LandError(
                        f"{into} moved under {self.into_moves} queues in a row; stop what "
                        f"moves it, then run gadugi land again ({self.branch} holds the "
                        "last queue)"
                    )
                self.notes.append(f"{into} moved to {tip[:12]} while landing: rebuilt on it")
                self._rebuild(tip, head)
                return True
            self.into_moved = self._fast_forward(into, tip, head)
        self._remove_worktree()
        if self.options.push:
            self._push(self.options.push)
            if self.options.pr and not self.delivery_failed:
                self._open_prs()
        self.done = True
        return True

    def _rebuild(self, base: str, head: str) -> None:
        """Start the queue again on ``base`` (``--into`` moved); the old one stays kept."""
        self._keep("rebuilt", head)
        if not self._update_ref(self.ref, base, head, "rebuild the landing queue"):
            raise LandError(
                f"{self.branch} moved while it was being rebuilt; run gadugi land again"
            )
        rows = self.registry.tasks(self.orch_id)
        self.registry.update_tasks(
            self.orch_id,
            {
                r["task_id"]: {"landing_status": LandingStatus.PENDING.value}
                for r in rows
                if r["status"] == TaskStatus.COMPLETED
            },
            owner=self.owner,
        )
        self._set_orch(landing_base=base, landing_head=base, landing_verified=None)

    def _fast_forward(self, into: str, tip: str, head: str) -> bool:
        """``into`` to ``head``: never forced; its checkout moves only when it is clean."""
        if tip == head:
            return True
        busy = operation_under_way(self.root, into)
        if busy:
            self.notes.append(f"{into} was left as it is: {busy}; fast-forward it once done")
            return False
        where = self._checked_out(f"refs/heads/{into}")
        if where is None:
            if self._update_ref(f"refs/heads/{into}", head, tip, f"land {self.orch_id}"):
                return True
            self.notes.append(f"{into} moved meanwhile; it was left as it is")
            return False
        if where != self.root.resolve():
            self.notes.append(f"{into} is checked out at {where}; fast-forward it there yourself")
            return False
        dirty = dirty_files(self.root)
        if dirty:
            self.notes.append(
                f"{into} is checked out in {self.root} with uncommitted changes "
                f"({', '.join(dirty[:3])}); it was left as it is"
            )
            return False
        blocking = self._untracked_in_the_way(tip, head)
        if blocking:
            shown = ", ".join(blocking[:3]) + (", ..." if len(blocking) > 3 else "")
            self.notes.append(
                f"{into} was left as it is: untracked or ignored files in {self.root} would be "
                f"overwritten ({shown}); move them aside, then run gadugi land again"
            )
            return False
        res = run_git(["merge", "--ff-only", "--quiet", head], self.root)
        if res.returncode != 0:
            self.notes.append(f"git merge --ff-only {head[:12]} failed: {res.stderr.strip()}")
            return False
        return True

    def _untracked_in_the_way(self, tip: str, head: str) -> list[str]:
        """Files of the main checkout that git does not track and that fast-forwarding it
        to ``head`` would write over: git refuses for an untracked one, and overwrites an
        ignored one without a word (a local ``.env``), so both are asked about here."""
        diff = ["diff", "--name-only", "--no-renames", "-z", tip, head]
        changed = set(run_git(diff, self.root).stdout.split("\0")) - {""}
        if not changed:
            return []
        tracked = set(run_git(["ls-files", "-z"], self.root).stdout.split("\0"))
        return sorted(p for p in changed - tracked if os.path.lexists(self.root / p))

    def _push(self, remote: str) -> None:
        """The landed task branches and the integration branch; never forced."""
        for branch in [*(r["branch"] for r in self._landed_rows()), self.branch]:
            spec = f"refs/heads/{branch}:refs/heads/{branch}"
            res = run_git(
                ["push", "--quiet", "--end-of-options", remote, spec],
                self.root,
                timeout_s=PUSH_TIMEOUT_S,
            )
            if res.returncode != 0:
                self.delivery_failed = True
                self.notes.append(f"push of {branch} to {remote} was rejected: {_last(res.stderr)}")

    def _open_prs(self) -> None:
        """Pull requests with gh: one per landed task (stacked on its dependency's branch),
        or one for the integration branch."""
        if self.options.pr == "integration":
            base = self.options.into or self._current_branch()
            title = f"gadugi: land {self.orch_id}"
            body = "\n\n".join(self._pr_body(r) for r in self._landed_rows())
            self._gh(self.branch, base, title, body)
            return
        rows = {r["task_id"]: r for r in self.registry.tasks(self.orch_id)}
        for row in self._landed_rows():
            deps = [rows[d]["branch"] for d in row["depends_on"] if d in rows]
            self._gh(
                row["branch"], deps[0] if deps else self.branch, row["name"], self._pr_body(row)
            )

    def _pr_body(self, row: dict[str, Any]) -> str:
        stat = run_git(
            ["diff", "--stat", f"{row['base_commit']}...refs/heads/{row['branch']}"], self.root
        ).stdout.rstrip()
        verified = f"`{self.options.verify}` passed on the integration branch"
        return (
            f"## {row['task_id']}: {row['name']}\n\n"
            f"{row.get('summary') or 'gadugi task ' + row['task_id'] + ' of ' + self.orch_id}\n\n"
            f"Verification: {verified if self.options.verify else 'none (merge only)'}\n\n"
            f"```\n{stat}\n```"
        )

    def _gh(self, head: str, base: str, title: str, body: str) -> None:
        argv = ["gh", "pr", "create", "--head", head, "--base", base, "--title", title]
        try:
            # A session of its own, so that past the time limit what gh started goes too.
            child = subprocess.Popen(
                [*argv, "--body", body],
                cwd=self.root,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        except OSError as exc:
            self.delivery_failed = True
            self.notes.append(f"gh pr create for {head} could not run: {exc}")
            return
        try:
            out, err = child.communicate(timeout=GH_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)
            child.communicate()
            self.delivery_failed = True
            self.notes.append(f"gh pr create for {head} took over {GH_TIMEOUT_S:g} s: stopped")
            return
        done = subprocess.CompletedProcess(argv, child.returncode, out, err)
        if done.returncode != 0:
            self.delivery_failed = True
            self.notes.append(f"gh pr create for {head} failed: {_last(done.stderr)}")
        else:
            self.notes.append(f"pull request for {head}: {_last(done.stdout)}")

    def _landed_rows(self) -> list[dict[str, Any]]:
        rows = self.registry.tasks(self.orch_id)
        return [r for r in rows if _landing(r) is LandingStatus.LANDED and r["branch"]]

    def _current_branch(self) -> str:
        out = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], self.root).stdout.strip()
        return out or "main"

    # -- git and the registry ------------------------------------------------------------

    def _set_orch(self, **fields: Any) -> None:
        self.registry.update_landing(self.orch_id, owner=self.owner, **fields)

    def _oid(self, ref: str) -> str | None:
        res = run_git(["rev-parse", "--verify", "--quiet", "--end-of-options", ref], self.root)
        return res.stdout.strip() if res.returncode == 0 else None

    def _tip(self, row: dict[str, Any]) -> str | None:
        return self._oid(f"refs/heads/{row['branch']}") if row["branch"] else None

    def _is_ancestor(self, older: str, newer: str) -> bool:
        return run_git(["merge-base", "--is-ancestor", older, newer], self.root).returncode == 0

    def _update_ref(self, ref: str, new: str, old: str, why: str) -> bool:
        res = run_git(["update-ref", "-m", f"gadugi: {why}", ref, new, old], self.root)
        return res.returncode == 0

    def _merge_of(self, tip: str, head: str) -> str | None:
        """The landing merge that brought ``tip`` into ``head``, if there is one."""
        out = run_git(["rev-list", "--first-parent", "--parents", head], self.root).stdout
        for line in out.splitlines():
            commit, *parents = line.split()
            if parents[1:2] == [tip]:
                return commit
        return None

    def _checked_out(self, ref: str) -> Path | None:
        out = run_git(["worktree", "list", "--porcelain"], self.root).stdout
        path = None
        for line in out.splitlines():
            if line.startswith("worktree "):
                path = Path(line.removeprefix("worktree ")).resolve()
            elif line == f"branch {ref}":
                return path
        return None


def dirty_files(root: Path) -> list[str]:
    """Tracked files with uncommitted changes in the checkout at ``root``."""
    out = run_git(["status", "--porcelain", "--untracked-files=no"], root).stdout
    return [line[3:] for line in out.splitlines() if line.strip()]


def operation_under_way(root: Path, branch: str) -> str | None:
    """What git is in the middle of with ``branch`` in any worktree, or None.

    A rebase or bisect detaches HEAD, so the branch looks checked out nowhere, yet git
    writes it back at the end; a merge, cherry-pick or revert commits onto it. Moving
    the branch under any of them breaks the person's work in progress.
    """
    ref = f"refs/heads/{branch}"
    out = run_git(["worktree", "list", "--porcelain"], root).stdout
    for block in out.strip().split("\n\n"):
        lines = block.splitlines()
        if not lines or not lines[0].startswith("worktree "):
            continue
        path = Path(lines[0].removeprefix("worktree "))
        res = run_git(["rev-parse", "--absolute-git-dir"], path) if path.is_dir() else None
        if res is None or res.returncode != 0:
            continue
        gitdir = Path(res.stdout.strip())
        for name in ("rebase-merge/head-name", "rebase-apply/head-name"):
            if _read(gitdir / name) == ref:
                return f"a rebase of {branch} is under way in {path}"
        if _read(gitdir / "BISECT_START") in (branch, ref):
            return f"a bisect of {branch} is under way in {path}"
        if f"branch {ref}" in lines:
            for head, what in (
                ("MERGE_HEAD", "merge"),
                ("CHERRY_PICK_HEAD", "cherry-pick"),
                ("REVERT_HEAD", "revert"),
            ):
                if (gitdir / head).exists():
                    return f"a {what} of {branch} is under way in {path}"
    return None


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def check_integration_room(root: Path) -> None:
    """Refuse a branch ``gadugi/land`` itself: git keeps branches as files, so none can
    then be made under it, and no integration branch could ever be created."""
    res = run_git(["rev-parse", "--verify", "--quiet", "refs/heads/gadugi/land"], root)
    if res.returncode == 0:
        raise RequestError(
            "a branch gadugi/land is in the way of the integration branch "
            "gadugi/land/<orchestration>; rename it (git branch -m gadugi/land NEW) first. "
            "Nothing was changed."
        )


def check_into(root: Path, into: str) -> None:
    """Refuse an ``--into`` that names no branch, or whose checkout here is dirty."""
    if into.startswith("-") or run_git(["check-ref-format", "--branch", into], root).returncode:
        raise RequestError(f"--into {into!r} is not a branch name")
    res = run_git(["rev-parse", "--verify", "--quiet", f"refs/heads/{into}"], root)
    if res.returncode != 0:
        raise RequestError(f"--into {into}: no such branch")
    busy = operation_under_way(root, into)
    if busy:
        raise RequestError(f"--into {into}: {busy}; finish or abort it first. Nothing was changed.")
    head = run_git(["symbolic-ref", "--quiet", "HEAD"], root).stdout.strip()
    dirty = dirty_files(root) if head == f"refs/heads/{into}" else []
    if dirty:
        raise RequestError(
            f"{into} is checked out in {root} with uncommitted changes ({', '.join(dirty[:3])}"
            f"{', ...' if len(dirty) > 3 else ''}); commit or stash them first. "
            "Nothing was changed."
        )


def options_for(
    orch: dict[str, Any],
    *,
    into: str | None = None,
    verify: str | None = None,
    push: str | None = None,
    pr: str | None = None,
) -> LandOptions:
    """What to land with: the flags, then the orchestration's recorded configuration."""
    config = orch["config"] if isinstance(orch.get("config"), dict) else {}
    into = into or config.get("land_into") or None
    timeout_min = config.get("verify_timeout_minutes") or DEFAULT_VERIFY_TIMEOUT_MIN
    return LandOptions(
        into=into,
        verify=verify or config.get("verify_command") or None,
        verify_timeout_s=float(timeout_min) * 60,
        push=push,
        pr=pr,
        kill_grace_s=float(config.get("kill_grace_seconds", 5.0)),
        retries=int(config.get("land_retries", 1)),
        hold_conflicts=config.get("conflict_policy") == "optimistic",
    )


def usable_command(command: str) -> bool:
    """A ``--verify`` that runs something: blank would pass every candidate unverified."""
    return bool(command.strip()) and len(command) <= MAX_COMMAND_LENGTH


def check_landable(orch_id: str, rows: list[dict[str, Any]]) -> None:
    """Refuse an orchestration that is over and has nothing a lander could ever merge."""
    if any(r["status"] == TaskStatus.COMPLETED or r.get("landing_status") for r in rows):
        return
    if not rows or not all(TaskStatus(r["status"]).finished for r in rows):
        return  # still to run: landing finishes the orchestration first
    ended = ", ".join(f"{r['task_id']}: {r['status']}" for r in rows[:5])
    more = f", and {len(rows) - 5} more" if len(rows) > 5 else ""
    raise RequestError(
        f"nothing to land: no task of {orch_id} completed ({ended}{more}); "
        "gadugi retry one, then land again"
    )


def check_remote(root: Path, remote: str) -> None:
    if remote.startswith("-") or run_git(["remote", "get-url", remote], root).returncode:
        raise RequestError(f"--push {remote!r}: no such remote (git remote -v lists them)")


def _partners(rows: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Each task's predicted conflicts, either way round (the plan names each pair once
    or twice)."""
    partners: dict[str, set[str]] = {}
    for row in rows:
        for other in row.get("conflicts_with") or ():
            partners.setdefault(row["task_id"], set()).add(other)
            partners.setdefault(other, set()).add(row["task_id"])
    return partners


def _ran_for(row: dict[str, Any]) -> float:
    started, ended = row.get("started_at"), row.get("completed_at")
    return float(ended - started) if started is not None and ended is not None else 0.0


def _landing(row: dict[str, Any]) -> LandingStatus | None:
    """A task's landing status; a completed task no lander has looked at yet is pending."""
    value = row.get("landing_status")
    if value:
        return LandingStatus(value)
    return LandingStatus.PENDING if row["status"] == TaskStatus.COMPLETED else None


def _fault(point: str) -> None:
    """Die here by SIGKILL when a test asks for it (``FAULT_ENV``); nothing otherwise."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)


def _last(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


def _tail(path: Path) -> str:
    """The end of a verification's output on one line: a bounded read, so a command that
    printed gigabytes (or one endless line) leaves a note of a few lines."""
    return " | ".join(tail_of(path).splitlines()) or "(no output)"

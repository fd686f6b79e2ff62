"""Fakes for stepping ``Runner.tick(now)`` by hand: each subclasses the real seam, so
mypy --strict checks it against the real interface, and records what was asked of it."""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gadugi import procs
from gadugi.health import Reading
from gadugi.runner import Processes
from gadugi.worktrees import HeadCheck, HeadOutcome, Worktrees

# Above the kernel's largest possible pid_max (2**22), so no fake pid ever names a real
# process: the runner's pidfd wake-up and any stray signal find nothing.
FIRST_PID = 2**22 + 1


@dataclass
class FakeChild(procs.Child):
    """An agent whose end the test decides (``end``); it may ignore SIGTERM."""

    task_id: str = ""
    ignores_term: bool = False

    def end(self, code: int, at: float) -> None:
        """It ends with ``code`` (-N: killed by signal N), as its supervisor records at ``at``."""
        self.exit = procs.exit_of_returncode(code, at)

    def check(self) -> procs.Exit | None:
        # The real one would look for a result file and a live pid: neither exists here.
        return self.exit


@dataclass
class FakeProcesses(Processes):
    """Spawns nothing; records every spawn, signal and blocking stop the loop asks for.

    Stops behave as the real ones do: SIGTERM at ``begin_stop`` (a polite agent ends at
    once), SIGKILL from ``finish_stop`` once the deadline has passed, and a child counts as
    stopped from the next look on."""

    stubborn: set[str] = field(default_factory=set)  # task ids whose agents ignore SIGTERM
    children: list[FakeChild] = field(default_factory=list)
    signals: list[tuple[str, signal.Signals]] = field(default_factory=list)
    terminated: list[list[str]] = field(default_factory=list)
    samples: int = 0  # resource readings taken

    def spawn(
        self,
        argv: Sequence[str],
        cwd: Path,
        env: dict[str, str],
        stdout: Path,
        stderr: Path,
        result_file: Path,
        limits: dict[int, int],
    ) -> procs.Child:
        task_id = env["GADUGI_TASK_ID"]
        pid = FIRST_PID + len(self.children)
        child = FakeChild(pid, float(pid), result_file, task_id=task_id)
        child.ignores_term = task_id in self.stubborn
        self.children.append(child)
        return child

    def begin_stop(
        self, child: procs.Child, now: float, grace_s: float, gracefully: bool = True
    ) -> None:
        assert isinstance(child, FakeChild)
        if child.kill_at is not None:
            return  # as the real one: a stop already begun sends nothing more
        if not gracefully:
            child.kill_at = now
            self.signals.append((child.task_id, signal.SIGKILL))
            if child.exit is None:
                child.end(-signal.SIGKILL, now)
            return
        child.kill_at = now + grace_s
        self.signals.append((child.task_id, signal.SIGTERM))
        if child.exit is None and not child.ignores_term:
            child.end(-signal.SIGTERM, now)

    def finish_stop(self, child: procs.Child, now: float) -> bool:
        assert isinstance(child, FakeChild)
        if child.exit is not None:
            return True
        if child.kill_at is not None and now >= child.kill_at:
            self.signals.append((child.task_id, signal.SIGKILL))
            child.end(-signal.SIGKILL, now)
        return False

    def terminate(
        self, children: list[procs.Child], grace_s: float, gracefully: bool = True
    ) -> None:
        self.terminated.append([c.task_id for c in children if isinstance(c, FakeChild)])
        for child in children:
            assert isinstance(child, FakeChild)
            sig = signal.SIGKILL if child.ignores_term or not gracefully else signal.SIGTERM
            child.end(-sig.value, 0.0)

    def sample(self, pids: Sequence[int]) -> dict[int, tuple[float, float]]:
        self.samples += 1
        return {}

    def reap(self) -> list[int]:
        return []

    def spawned(self) -> list[str]:
        """Task ids in the order their agents were started."""
        return [c.task_id for c in self.children]

    def child(self, task_id: str) -> FakeChild:
        """The latest agent started for ``task_id``."""
        return [c for c in self.children if c.task_id == task_id][-1]


class FakeWorktrees(Worktrees):
    """Makes a plain directory for each worktree; records creates, merges and removals."""

    def __init__(self, root: Path) -> None:
        # Not super().__init__: the real one asks git for the repository's common dir.
        self.root = root
        self.created: list[tuple[str, Path, str, str]] = []  # task, path, branch, base
        self.merged: list[tuple[str, list[str]]] = []
        self.removed: list[str] = []
        self.committed: list[str] = []  # tasks whose leftover work the loop committed
        self.absorbed: list[tuple[str, str]] = []  # task, commit merged before a follow-up
        self.changes = True  # what changed_since answers
        self.commits_after: dict[tuple[str, str], int] = {}  # (branch, base): commits

    def branch_exists(self, branch: str) -> bool:
        return any(b == branch for _, _, b, _ in self.created)

    def create(self, task_id: str, path: Path, branch: str, base: str) -> None:
        path.mkdir(parents=True)
        self.created.append((task_id, path, branch, base))

    def check_out(self, task_id: str, path: Path, branch: str) -> None:
        path.mkdir(parents=True)
        self.created.append((task_id, path, branch, branch))

    def is_free(self, path: Path, branch: str) -> bool:
        return not path.exists() and not self.branch_exists(branch)

    def reclaim(self, task_id: str, path: Path, branch: str, base: str) -> bool:
        if not path.exists():
            self.create(task_id, path, branch, base)
        return True

    def secure_head(self, task_id: str, path: Path, branch: str) -> HeadCheck:
        return HeadCheck(HeadOutcome.ON_BRANCH)

    def merge(self, task_id: str, path: Path, branches: Sequence[str]) -> None:
        self.merged.append((task_id, list(branches)))

    def head(self, path: Path) -> str:
        branch = next(b for _, p, b, _ in self.created if p == path)
        return f"head-of-{branch}"

    def is_clean(self, path: Path) -> bool:
        return True

    def branch_head(self, branch: str) -> str | None:
        return f"head-of-{branch}" if self.branch_exists(branch) else None

    def commits_ahead(self, branch: str, base: str) -> int:
        return self.commits_after.get((branch, base), 0)

    def commit_all(self, task_id: str, path: Path, message: str) -> str | None:
        self.committed.append(task_id)
        return None

    def changed_since(self, path: Path, base: str) -> bool:
        return self.changes

    def untracked(self, path: Path) -> list[str] | None:
        return []

    def discard_untracked(self, path: Path, files: Iterable[str]) -> list[str]:
        return []

    def absorb(self, task_id: str, path: Path, commit: str) -> list[str]:
        self.absorbed.append((task_id, commit))
        return []

    def diffstat(self, base: str, branch: str) -> tuple[int, int, int] | None:
        return None

    def remove(self, task_id: str, path: Path) -> None:
        shutil.rmtree(path)
        self.removed.append(task_id)


@dataclass
class Clock:
    """The runner's clock: whatever time the test last stepped to."""

    now: float

    def __call__(self) -> float:
        return self.now


@dataclass
class Machine:
    """Admission's machine reading, set by the test."""

    available_mb: float = 64_000.0
    load_1m: float = 0.0
    cpus: int = 4
    reads: int = 0

    def __call__(self) -> Reading:
        self.reads += 1
        return Reading(self.available_mb, self.load_1m, self.cpus)

"""The one error hierarchy of gadugi.

Every error carries what a user needs to act on it; ``cli.py`` alone turns them
into exit codes and messages.
"""

from __future__ import annotations

import os


class GadugiError(Exception):
    """Base of every error gadugi raises on purpose."""

    exit_code = 1


class RequestError(GadugiError):
    """The request names nothing that can run (exit 2, nothing created)."""

    exit_code = 2


class ConfigError(GadugiError):
    """Invalid configuration: names the key and the reason."""

    exit_code = 2

    def __init__(self, key: str, reason: str, source: str = "") -> None:
        where = f" in {source}" if source else ""
        super().__init__(f"invalid configuration{where}: {key}: {reason}")
        self.key = key
        self.reason = reason
        self.source = source


class PromptError(GadugiError):
    """A prompt file cannot be used: names the file and, where known, the key."""

    exit_code = 2

    def __init__(self, path: str, reason: str, key: str | None = None) -> None:
        what = f"{path}: {key}: {reason}" if key else f"{path}: {reason}"
        super().__init__(what)
        self.path = path
        self.key = key
        self.reason = reason


class PlanError(GadugiError):
    """The task graph is unusable (unknown dependency, cycle)."""

    exit_code = 2

    def __init__(self, message: str, tasks: list[str] | None = None) -> None:
        super().__init__(message)
        self.tasks = tasks or []


class RepositoryError(GadugiError):
    """The project is not a usable git repository, or a base ref is unknown."""

    exit_code = 2


class WorktreeError(GadugiError):
    """A git worktree or branch operation failed; carries git's own message."""

    def __init__(
        self, task_id: str, action: str, stderr: str, returncode: int, cause: str = ""
    ) -> None:
        lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
        # git's own verdict ("fatal: ...", "error: ...") says most; hints follow it.
        verdict = [line for line in lines if line.startswith(("fatal:", "error:"))]
        shown = " / ".join(([cause] if cause else []) + (verdict[:2] or lines[-3:]))
        super().__init__(f"{task_id}: git {action} failed (exit {returncode}): {shown}")
        self.task_id = task_id
        self.action = action
        self.stderr = stderr
        self.returncode = returncode


class SpawnError(GadugiError, OSError):
    """A process could not be started: the system is out of processes or memory.

    Transient by nature (fork's EAGAIN, ENOMEM): the runner lowers its parallelism,
    backs off and tries again instead of failing a task for it. Also an OSError with
    that errno, for code that only knows the system's errors.
    """

    def __init__(self, program: str, errno: int, detail: str = "") -> None:
        super().__init__(errno, os.strerror(errno))
        self.program = program
        self.detail = detail

    def __str__(self) -> str:
        said = f" ({self.detail})" if self.detail else ""
        return f"cannot start {self.program}: {self.strerror}{said}"


class AgentError(GadugiError):
    """An agent cannot be started for a task (missing CLI, no script)."""

    def __init__(self, task_id: str, reason: str) -> None:
        super().__init__(f"{task_id}: {reason}")
        self.task_id = task_id
        self.reason = reason


class IdentityError(GadugiError):
    """git has no identity to commit with in the project: gadugi never makes one up."""

    def __init__(self, root: str, said: str) -> None:
        super().__init__(
            f"git has no identity to commit with in {root} ({said}); set one with "
            '`git config user.email you@example.com` and `git config user.name "Your Name"` '
            "(add --global for every repository)"
        )
        self.root = root
        self.said = said


class RegistryError(GadugiError):
    """The registry (``.gadugi/state.db``) cannot be read or written."""

    exit_code = 2


class RegistryCorruptError(RegistryError):
    """What is at the registry's place is not a usable registry (damaged, not SQLite, not a
    regular file). The only registry error whose advice is to move the file aside."""


class RegistryLockedError(RegistryError):
    """Another process holds the registry's lock longer than the busy timeout."""


class RegistryFullError(RegistryError):
    """The disk holding the registry is full; the change was not recorded."""


class NotFoundError(GadugiError):
    """A named orchestration or task does not exist in the registry."""

    exit_code = 2

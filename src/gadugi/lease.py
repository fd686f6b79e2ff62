"""The owner lease: exactly one process drives an orchestration at a time.

Owning an orchestration means holding an exclusive ``flock`` on
``.gadugi/locks/<orchestration-id>.lock`` for as long as the owner lives. The kernel
drops the lock the moment the owner dies, however it dies, so "is the orchestrator
dead?" and "then I take it over" are one atomic step: a non-blocking lock attempt.
A second claimer is refused with the owner the registry names. The descriptor is not
inherited by agents or git (Python opens it close-on-exec), so a stray agent cannot
keep an orchestration owned after its orchestrator died.

Alongside the lock, the owner writes a token of its own into the registry's
``orchestrations.owner`` column in the same step; every task write is a compare-and-set
on that token (``Registry.transition``), so even a process that somehow lost the lease
cannot overwrite the new owner's state.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path

from .errors import GadugiError

LOCKS_DIR = "locks"
CLAIM_TRIES = 20  # a claim that meets a lock held for a moment (a liveness probe) tries again
CLAIM_PAUSE_S = 0.025


class Owned(GadugiError):
    """Another live process owns the orchestration."""

    exit_code = 2

    def __init__(self, orchestration_id: str, owner: str) -> None:
        super().__init__(f"orchestration {orchestration_id} is owned by {owner}")
        self.orchestration_id = orchestration_id
        self.owner = owner


class Lease:
    """A held claim on one orchestration; ``release`` (or the process's death) ends it."""

    def __init__(self, orchestration_id: str, path: Path, fd: int) -> None:
        self.orchestration_id = orchestration_id
        self.path = path
        self.token = f"{os.getpid()}-{secrets.token_hex(8)}"
        self._fd: int | None = fd

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the flock
            self._fd = None

    def discard(self) -> None:
        """Release and remove the lock file: for a claim whose orchestration was never made."""
        self.path.unlink(missing_ok=True)
        self.release()

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


def lock_path(state_dir: Path, orchestration_id: str) -> Path:
    return state_dir / LOCKS_DIR / f"{orchestration_id}.lock"


def claim(state_dir: Path, orchestration_id: str, owner_hint: str = "another process") -> Lease:
    """Take the lease now or raise ``Owned``; never waits for a live owner."""
    path = lock_path(state_dir, orchestration_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    for _ in range(CLAIM_TRIES):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            time.sleep(CLAIM_PAUSE_S)
            continue
        except OSError:
            os.close(fd)
            raise
        return Lease(orchestration_id, path, fd)
    os.close(fd)
    raise Owned(orchestration_id, owner_hint)


def held_elsewhere(state_dir: Path, orchestration_id: str) -> bool | None:
    """Whether a live process holds the lease; None when no lock file was ever made.

    Probing takes the lock for an instant when it is free, which is why ``claim`` tries a
    few times before it gives up.
    """
    path = lock_path(state_dir, orchestration_id)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False

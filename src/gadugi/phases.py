"""The words and files of an attempt's phases beside the agent: setup and verification.

The runner runs each phase as a supervised child (``runner.py``); this module says what a
phase's failure reads like, what a follow-up attempt is told, and which untracked files a
verification left behind (its output, not the agent's work).
"""

from __future__ import annotations

import json
from pathlib import Path

from .agents.base import ATTEMPT_MARK
from .files import write_json_atomic
from .procs import signal_name
from .worktrees import Worktrees

TAIL_LINES = 20
TAIL_CHARS = 2000
FOLLOWUP_HEADING = "## Follow-up from gadugi"
# Control characters but the tab: a NUL cannot be passed to an agent that takes its
# follow-up as an argument, and the others would act on the terminal a message reaches.
_CONTROLS = {c: "\N{REPLACEMENT CHARACTER}" for c in (*range(0x09), *range(0x0B, 0x20), 0x7F)}


def tail_of(path: Path, lines: int = TAIL_LINES, limit: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines a phase's latest run wrote to its log (at most ``limit``
    characters), for a message; "" when there are none."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - 8 * limit))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    latest: list[str] = []
    for line in text.splitlines():
        if line.startswith(ATTEMPT_MARK):
            latest = []  # an earlier run's output ends here
        elif line.strip():
            latest.append(line.rstrip())
    kept = latest[-lines:]
    joined = "\n".join(kept).translate(_CONTROLS)
    return joined[-limit:]


def how_it_ended(returncode: int) -> str:
    """``exited with code N`` or ``was killed by SIGNAME``, from subprocess's convention."""
    if returncode < 0:
        return f"was killed by {signal_name(-returncode)}"
    return f"exited with code {returncode}"


def phase_failed(what: str, command: str, returncode: int, log: Path) -> str:
    """The error message of a failed setup or verification: the command, how it ended,
    and the tail of its output."""
    tail = tail_of(log)
    said = f"; its output ends:\n{tail}" if tail else " (no output)"
    return f"{what} failed: `{command}` {how_it_ended(returncode)}{said}"


def verify_followup(command: str, returncode: int, log: Path) -> str:
    """What the agent is asked after a red verification."""
    tail = tail_of(log)
    return (
        f"gadugi ran the verification command `{command}` in your worktree after you "
        f"finished, and it {how_it_ended(returncode)}. Fix the cause, commit your work, "
        "and finish as before.\n\nThe end of its output:\n```\n"
        f"{tail or '(no output)'}\n```\n"
    )


def followup_prompt(original: str, followup: str) -> str:
    """For an agent without sessions: its original prompt, the follow-up under a heading."""
    return f"{original.rstrip()}\n\n{FOLLOWUP_HEADING}\n\n{followup.strip()}\n"


def note_untracked(worktrees: Worktrees, worktree: Path, record: Path) -> None:
    """Before an attempt's first verification: the untracked files there are (the
    agent's, where autocommit is off), in ``record``, so that what the verification adds
    can be told apart even by a resumed orchestrator. A verification run again in the same
    attempt keeps the first record."""
    if record.exists():
        return
    found = worktrees.untracked(worktree)
    if found is not None:
        write_json_atomic(record, found)


def discard_verify_output(worktrees: Worktrees, worktree: Path, record: Path) -> list[str]:
    """Remove the untracked files the verification made (``__pycache__``, reports): so
    they keep no finished worktree and no follow-up commits them. Only files named by
    neither the record nor git's ignore rules are touched; without a record nothing is.
    Returns the ones that stay (a name git quotes, a folder), for the log."""
    try:
        before = set(json.loads(record.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return []
    after = worktrees.untracked(worktree) if worktree.exists() else None
    if after is None:
        return []
    return worktrees.discard_untracked(worktree, [f for f in after if f not in before])

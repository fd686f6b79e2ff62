"""What every agent profile provides: a command line for a task, and a verdict on its run."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from ..tasks import Prompt, Verdict

# What every attempt is asked to end with (Claude Code's --json-schema, Codex's
# --output-schema): the agent's own verdict, as data.
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "outcome": {
            "type": "string",
            "enum": [v.value for v in Verdict],
            "description": "done: the task is finished and its work is in the worktree; "
            "blocked: it cannot be finished (say why in the summary); no_change: nothing "
            "needed changing",
        },
        "summary": {"type": "string", "description": "One paragraph: what you did, or why not."},
    },
    "required": ["outcome", "summary"],
    "additionalProperties": False,
}
SUMMARY_LIMIT = 4000


def verdict_of(structured: Any) -> tuple[str | None, str | None]:
    """The verdict and summary in an agent's structured output (an object shaped by
    ``VERDICT_SCHEMA``); (None, None) without a valid one."""
    if not isinstance(structured, dict):
        return None, None
    outcome, summary = structured.get("outcome"), structured.get("summary")
    if outcome not in {v.value for v in Verdict}:
        return None, None
    text = summary if isinstance(summary, str) else None
    if text is not None and len(text) > SUMMARY_LIMIT:
        text = text[: SUMMARY_LIMIT - 1] + "…"
    return str(outcome), text


@dataclass(frozen=True)
class AgentContext:
    """Where one attempt of one task runs, and where its output goes."""

    orchestration_id: str
    task_id: str
    project_root: Path
    worktree: Path
    branch: str
    prompt_file: Path  # the generated prompt (under .gadugi/, never in the worktree)
    source_prompt: Path  # the user's prompt file
    log_file: Path
    events_file: Path
    attempt: int = 1
    resume_session: str | None = None
    follow_up: bool = False  # this attempt continues the last one with gadugi's follow-up

    def environment(self) -> dict[str, str]:
        return {
            "GADUGI_ATTEMPT": str(self.attempt),
            **({"GADUGI_FOLLOW_UP": "1"} if self.follow_up else {}),
            "GADUGI_ORCHESTRATION_ID": self.orchestration_id,
            "GADUGI_TASK_ID": self.task_id,
            "GADUGI_WORKTREE": str(self.worktree),
            "GADUGI_BRANCH": self.branch,
            "GADUGI_PROMPT_FILE": str(self.prompt_file),
            "GADUGI_SOURCE_PROMPT": str(self.source_prompt),
            "GADUGI_PROJECT_ROOT": str(self.project_root),
        }


@dataclass
class Outcome:
    """The verdict on one finished attempt."""

    success: bool
    transient: bool = False  # worth retrying within the task's budget
    fatal: bool = False  # stop the whole orchestration (e.g. authentication)
    error: str | None = None
    agent: dict[str, Any] = field(default_factory=dict)
    # The agent's own structured verdict (Verdict values), where it gives one; never read
    # from its prose. None: the exit status is the verdict.
    verdict: str | None = None
    summary: str | None = None


@dataclass(frozen=True)
class Launch:
    """How to start one attempt."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    # True when stdout is a stream of JSON events: it then goes to the events file and
    # stderr alone to the log; otherwise both go to the log.
    structured_stdout: bool = False


class AgentProfile(Protocol):
    """Optional attributes the runner looks for: ``progress`` (live events) and
    ``stop_gracefully`` (default True; False for an agent that keeps working after SIGTERM,
    whose frozen tree is then killed at once)."""

    name: str

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        """The command line for one attempt; raise AgentError when it cannot run."""
        ...

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        """Read what the attempt left (exit code, events file) and give the verdict."""
        ...


ATTEMPT_MARK = "--- gadugi: attempt "  # the line the runner writes between attempts in a log


def last_line(path: Path, window: int = 4096) -> str:
    """The last non-empty line of an output file (not gadugi's own attempt marker), cut to
    300 characters; "" when there is none or the file cannot be read."""
    try:
        with path.open("rb") as fh:
            fh.seek(max(0, fh.seek(0, 2) - window))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return ""
    for line in reversed(lines):
        if line.strip() and not line.startswith(ATTEMPT_MARK):
            return line.strip()[:300]
    return ""


def log_tail(ctx: AgentContext) -> str:
    """The agent's last line of output in its log, for an error message."""
    return last_line(ctx.log_file)

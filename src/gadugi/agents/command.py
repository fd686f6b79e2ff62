"""The ``command`` agent: any program, from a template split like a shell command line.

The template is split first, then each placeholder is filled in within its own
argument, so a value with spaces or shell metacharacters stays one argument and no
shell ever sees it.
"""

from __future__ import annotations

import shlex

from ..errors import AgentError, ConfigError
from ..procs import signal_name
from ..promptgen import check_placeholders
from ..tasks import Prompt
from .base import AgentContext, Launch, Outcome, log_tail

PLACEHOLDERS = ("prompt_file", "source_prompt", "worktree", "task_id", "branch", "orchestration_id")
EX_TEMPFAIL = 75


def parse_template(template: str) -> list[str]:
    """Split the template and check every placeholder by filling each argument in once."""
    try:
        argv = shlex.split(template)
    except ValueError as exc:
        raise ConfigError("agent_cmd", f"cannot be split like a command line: {exc}") from exc
    if not argv:
        raise ConfigError("agent_cmd", "is empty")
    for arg in argv:
        check_placeholders(arg, PLACEHOLDERS, "agent_cmd")
    fill(argv, {p: p for p in PLACEHOLDERS})
    return argv


def fill(argv: list[str], values: dict[str, str]) -> list[str]:
    return [arg.format_map(values) for arg in argv]


def judge_exit(ctx: AgentContext, exit_code: int) -> Outcome:
    """Exit 0 succeeds; 75 (EX_TEMPFAIL) asks for a retry; anything else fails."""
    if exit_code == 0:
        return Outcome(success=True)
    tail = log_tail(ctx)
    detail = f": {tail}" if tail else ""
    if exit_code == EX_TEMPFAIL:
        return Outcome(False, transient=True, error=f"agent asked for a retry (exit 75){detail}")
    if exit_code < 0:
        return Outcome(False, error=f"agent killed by {signal_name(-exit_code)}{detail}")
    return Outcome(False, error=f"agent exited with code {exit_code}{detail}")


class CommandProfile:
    name = "command"

    def __init__(self, template: str) -> None:
        self.argv = parse_template(template)

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        values = {
            "prompt_file": str(ctx.prompt_file),
            "source_prompt": str(ctx.source_prompt),
            "worktree": str(ctx.worktree),
            "task_id": ctx.task_id,
            "branch": ctx.branch,
            "orchestration_id": ctx.orchestration_id,
        }
        argv = fill(self.argv, values)
        if not argv[0]:
            raise AgentError(ctx.task_id, "the agent command is empty after filling placeholders")
        return Launch(argv)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        return judge_exit(ctx, exit_code)

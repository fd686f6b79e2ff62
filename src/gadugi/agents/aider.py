"""The ``aider`` agent: aider headless, judged by its exit code and what it left in git.

``aider --message-file <prompt> --yes-always`` runs one request and exits; the prompt goes
as a file, so neither its size nor a leading "-" matters. aider has no machine-readable
result, and it **exits 0 even when the model API fails**, so the verdict comes from git:

- exit code other than 0: failed;
- new commits on the branch since the attempt started (aider commits its own edits), or
  uncommitted changes: completed (the runner keeps a worktree with uncommitted changes);
- exit 0 and nothing changed at all: failed, with "aider made no commit and changed
  nothing". To say why, the attempt's own log is searched for the name of a litellm
  exception aider printed (the only trace it leaves of an API error):
  ``AuthenticationError`` stops the orchestration, ``RateLimitError``,
  ``ServiceUnavailableError``, ``InternalServerError``, ``APIConnectionError`` and
  ``Timeout`` make the failure transient.

Numbers come from aider's analytics log (``--analytics-log`` into the task's events
file, written locally even with analytics off): each ``message_send`` event is one model
request with its ``prompt_tokens``, ``completion_tokens`` and ``cost``. The profile
writes a ``gadugi.attempt`` line there first, holding the commit the attempt started
from, so the verdict also works for an attempt adopted after a restart.

aider keeps files named ``.aider*`` in the repository root; they are listed in
``.git/info/exclude`` (aider would otherwise add them to ``.gitignore``, which gadugi never
edits), and its chat and input histories go beside the task's log instead. When git has
no ``user.name`` or ``user.email``, aider writes placeholders into the repository's
``.git/config``, which all worktrees share: parallel aiders then fail on its lock file. The
profile supplies the missing ones through ``GIT_CONFIG_COUNT`` (git 2.31 or newer) instead,
from ``GIT_AUTHOR_NAME``/``GIT_AUTHOR_EMAIL`` or "gadugi".
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from ..procs import signal_name
from ..tasks import Prompt
from ..worktrees import exclude_paths, git_in
from .base import AgentContext, Launch, Outcome
from .stream import clip, number, read_events, require, size

WHAT = "aider"
INSTALL = "python -m pip install aider-install && aider-install"
MARKER = "gadugi.attempt"
FATAL_ERRORS = frozenset({"AuthenticationError", "PermissionDeniedError"})
TRANSIENT_ERRORS = frozenset(
    {
        "RateLimitError",
        "ServiceUnavailableError",
        "InternalServerError",
        "APIConnectionError",
        "Timeout",
    }
)
_LITELLM_ERROR = re.compile(r"\blitellm\.(\w+)")
_LOG_WINDOW = 200_000


@dataclass(frozen=True)
class AiderOptions:
    executable: str = "aider"
    model: str | None = None
    extra_args: tuple[str, ...] = ()


class AiderProfile:
    name = "aider"

    def __init__(self, options: AiderOptions | None = None) -> None:
        self.options = options or AiderOptions()

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        opts = self.options
        executable = require(ctx.task_id, opts.executable, WHAT, INSTALL)
        exclude_paths(ctx.worktree, ["/.aider*"])
        marker = {
            "event": MARKER,
            "properties": {
                "head": _head(ctx),
                "attempt": ctx.attempt,
                "log_offset": size(ctx.log_file),
            },
            "time": int(time.time()),
        }
        ctx.events_file.parent.mkdir(parents=True, exist_ok=True)
        with ctx.events_file.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(marker) + "\n")
        stem = ctx.log_file.with_suffix("")
        argv = [
            executable,
            "--message-file",
            str(ctx.prompt_file),
            "--yes-always",
            "--no-pretty",
            "--no-fancy-input",
            "--no-check-update",
            "--no-show-release-notes",
            "--no-analytics",
            "--analytics-log",
            str(ctx.events_file),
            "--no-gitignore",
            "--no-detect-urls",
            "--no-suggest-shell-commands",
            "--chat-history-file",
            f"{stem}.aider-chat.md",
            "--input-history-file",
            f"{stem}.aider-input.txt",
        ]
        if opts.model:
            argv += ["--model", opts.model]
        return Launch([*argv, *opts.extra_args], env=_identity(ctx))

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        attempt = read_attempt(ctx)
        commits, dirty = _changes(ctx, attempt.head)
        agent = attempt.report() | {"commits_made": commits, "uncommitted_changes": dirty}
        tail = _log_since(ctx, attempt.log_offset)
        last = tail.strip().splitlines()[-1][:300] if tail.strip() else ""
        detail = f": {last}" if last else ""
        if exit_code < 0:
            return Outcome(
                False, agent=agent, error=f"aider was killed by {signal_name(-exit_code)}{detail}"
            )
        if exit_code != 0:
            return Outcome(False, agent=agent, error=f"aider exited with code {exit_code}{detail}")
        if commits or dirty:
            return Outcome(True, agent=agent)
        return _nothing_done(agent, tail)


@dataclass
class AiderAttempt:
    """One attempt as the events file records it: the marker, then aider's analytics."""

    head: str | None = None
    log_offset: int = 0
    requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost: float | None = None
    model: str | None = None
    exceptions: int = 0

    def add(self, event: dict[str, Any]) -> None:
        props = event.get("properties")
        props = props if isinstance(props, dict) else {}
        name = event.get("event")
        if name == MARKER:
            vars(self).update(vars(AiderAttempt()))
            self.head = props.get("head") if isinstance(props.get("head"), str) else None
            self.log_offset = number(props.get("log_offset")) or 0
        elif name == "message_send":
            self.requests += 1
            self.input_tokens += number(props.get("prompt_tokens")) or 0
            self.output_tokens += number(props.get("completion_tokens")) or 0
            cost = props.get("cost")
            if isinstance(cost, int | float) and not isinstance(cost, bool):
                self.cost = (self.cost or 0.0) + float(cost)
            if isinstance(props.get("main_model"), str):
                self.model = props["main_model"]
        elif name == "message_send_exception":
            self.exceptions += 1

    def report(self) -> dict[str, Any]:
        """The ``agent`` object: the same fields as claude's, null where aider has none."""
        sent = self.requests > 0
        return {
            "session_id": None,
            "num_turns": self.requests,
            "last_tool": None,
            "cost_usd": self.cost,
            "input_tokens": self.input_tokens if sent else None,
            "output_tokens": self.output_tokens if sent else None,
            "permission_denials": None,
            "is_error": None,
            "api_error_status": None,
            "model": self.model,
        }


def read_attempt(ctx: AgentContext) -> AiderAttempt:
    attempt = AiderAttempt()
    for event in read_events(ctx.events_file):
        attempt.add(event)
    return attempt


def _head(ctx: AgentContext) -> str | None:
    res = git_in(ctx.worktree, ["rev-parse", "--verify", "--quiet", "HEAD"])
    return res.stdout.strip() if res.returncode == 0 else None


def _identity(ctx: AgentContext) -> dict[str, str]:
    """Environment that gives git the identity it lacks, so aider writes no .git/config."""
    if "GIT_CONFIG_COUNT" in os.environ:  # the user's own; adding to it is not ours to do
        return {}
    wanted = {
        "user.name": os.environ.get("GIT_AUTHOR_NAME") or "gadugi",
        "user.email": os.environ.get("GIT_AUTHOR_EMAIL") or "gadugi@localhost",
    }
    missing = [
        (key, value)
        for key, value in wanted.items()
        if git_in(ctx.worktree, ["config", "--get", key]).returncode != 0
    ]
    env = {"GIT_CONFIG_COUNT": str(len(missing))} if missing else {}
    for n, (key, value) in enumerate(missing):
        env |= {f"GIT_CONFIG_KEY_{n}": key, f"GIT_CONFIG_VALUE_{n}": value}
    return env


def _changes(ctx: AgentContext, start: str | None) -> tuple[int, bool]:
    """Commits made since ``start`` and whether anything is left uncommitted."""
    commits = 0
    if start:
        res = git_in(ctx.worktree, ["rev-list", "--count", f"{start}..HEAD"])
        commits = int(res.stdout.strip()) if res.returncode == 0 else 0
    res = git_in(ctx.worktree, ["status", "--porcelain", "--untracked-files=all"])
    return commits, res.returncode == 0 and bool(res.stdout.strip())


def _log_since(ctx: AgentContext, offset: int) -> str:
    try:
        with ctx.log_file.open("rb") as fh:
            end = fh.seek(0, 2)
            fh.seek(max(offset, end - _LOG_WINDOW))
            return fh.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _nothing_done(agent: dict[str, Any], log_text: str) -> Outcome:
    names = _LITELLM_ERROR.findall(log_text)
    named = names[-1] if names else None
    agent["api_error"] = named
    base = "aider exited 0 but made no commit and changed nothing"
    if named in FATAL_ERRORS:
        return Outcome(
            False,
            fatal=True,
            agent=agent,
            error=f"{base}: it could not authenticate ({named}); check the model's API key",
        )
    if named in TRANSIENT_ERRORS:
        return Outcome(
            False, transient=True, agent=agent, error=f"{base}: temporary API error ({named})"
        )
    why = f" ({named})" if named else ""
    return Outcome(
        False,
        agent=agent,
        error=f"{base}{why}; aider exits 0 even when the model API fails, see the log"
        + (f": {clip(log_text.strip().splitlines()[-1], 200)}" if log_text.strip() else ""),
    )

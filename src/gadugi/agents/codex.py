"""The ``codex`` agent: OpenAI's Codex CLI headless, its JSONL events read back into a verdict.

``codex exec --json`` writes one JSON event per line on stdout (the runner stores them in
the task's events file): ``thread.started`` (the thread id, which ``codex exec resume``
takes), ``item.*`` (agent messages, shell commands, file changes), then ``turn.completed``
with the turn's token ``usage``, or ``turn.failed`` with an error message, and exit 1.

Those events say nothing structured about *why* a turn failed, but Codex records every
thread in a rollout file, ``$CODEX_HOME/sessions/YYYY/MM/DD/rollout-*-<thread id>.jsonl``,
whose ``task_complete`` event carries ``codex_error_info`` (for example
``{"http_connection_failed": {"http_status_code": 401}}``) and whose ``token_count``
events count the model requests. The verdict reads that file; only when it is missing
(``--ephemeral``, or another ``CODEX_HOME``) does it fall back to the status code in the
error message. Codex reports tokens but no cost, so ``cost_usd`` is null.

It never asks for approval (``approval_policy="never"``) and runs as root. The default
sandbox is ``danger-full-access``, the equivalent of Claude's allowed Bash: under
``workspace-write`` a task cannot commit, because a worktree's git directory lives in the
main repository's ``.git``, outside the writable root. With no connection at all Codex
waits for the network indefinitely; the task's timeout ends such a run.

Every attempt is asked for gadugi's verdict with ``--output-schema`` (a file beside the
generated prompt, outside the worktree): Codex then asks the model for a final answer
constrained to that JSON Schema (the Responses API's ``text.format``), so the last
``agent_message`` is that JSON object, and the verdict is read from it, never from prose.

Facts measured with Codex CLI 0.169.0 (see tests/test_other_agents.py).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..procs import signal_name
from ..tasks import Prompt
from .base import VERDICT_SCHEMA, AgentContext, Launch, Outcome, verdict_of
from .stream import Follower, clip, log_tail, number, prompt_text, read_events, require

WHAT = "the Codex CLI"
INSTALL = "npm install -g @openai/codex"
SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
FATAL_KINDS = frozenset({"unauthorized"})
TRANSIENT_KINDS = frozenset(
    {
        "server_overloaded",
        "internal_server_error",
        "usage_limit_exceeded",
        "response_stream_disconnected",
        "response_stream_connection_failed",
    }
)
_THREAD_ID = re.compile(r"^[0-9A-Za-z-]{8,64}$")
# Only for a failure whose rollout file cannot be found: "unexpected status 401 ..." or
# "exceeded retry limit, last status: 429 ...".
_STATUS_IN_TEXT = re.compile(r"\bstatus:? (\d{3})\b")
_TEXT_LIMIT = 4000


@dataclass(frozen=True)
class CodexOptions:
    executable: str = "codex"
    model: str | None = None
    sandbox: str = "danger-full-access"
    extra_args: tuple[str, ...] = ()
    home: str | None = None  # where Codex keeps its sessions: $CODEX_HOME, else ~/.codex


class CodexProfile:
    name = "codex"

    def __init__(self, options: CodexOptions | None = None) -> None:
        self.options = options or CodexOptions()
        self.follower: Follower[CodexTally] = Follower(CodexTally)

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        opts = self.options
        executable = require(ctx.task_id, opts.executable, WHAT, INSTALL)
        argv = [executable, "exec"]
        if ctx.resume_session:
            argv.append("resume")
        argv += [
            "--json",
            "-c",
            'approval_policy="never"',
            "-c",
            f'sandbox_mode="{opts.sandbox}"',
            # Parallel agents must not each look for a newer release.
            "-c",
            "check_for_update_on_startup=false",
        ]
        if opts.model:
            argv += ["-m", opts.model]
        schema = ctx.prompt_file.with_suffix(".verdict.json")
        schema.write_text(json.dumps(VERDICT_SCHEMA), encoding="utf-8")
        argv += ["--output-schema", str(schema)]
        text, _ = prompt_text(ctx.prompt_file)
        # After "--" a prompt that starts with "-" (front matter!) is not read as an option.
        argv += [*opts.extra_args, "--"]
        if ctx.resume_session:
            argv.append(ctx.resume_session)
        argv.append(text)
        self.follower.begin(ctx.events_file)
        return Launch(argv, structured_stdout=True)

    def progress(self, events_path: Path, offset: int) -> tuple[int, dict[str, Any]]:
        return self.follower.progress(events_path, offset)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        tally = self.follower.finish(ctx.events_file)
        rollout = None
        if tally.session_id and _THREAD_ID.match(tally.session_id):
            rollout = read_rollout(codex_home(self.options.home), tally.session_id)
        return verdict(
            tally, rollout, exit_code, resumed=ctx.resume_session, log_line=log_tail(ctx)
        )


@dataclass
class CodexTally:
    """What one attempt's stdout events say; fed one event at a time."""

    offset: int = 0
    session_id: str | None = None
    saw_start: bool = False
    finished: bool = False
    failed: str | None = None  # the message of turn.failed
    errors: list[str] = field(default_factory=list)
    usage: dict[str, int] = field(default_factory=dict)
    last_tool: str | None = None
    last_message: str | None = None
    commands: int = 0
    failed_commands: int = 0

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "thread.started":
            # A new attempt in the same file: what came before belongs to the last one.
            vars(self).update(vars(CodexTally(offset=self.offset)))
            self.saw_start = True
            thread = event.get("thread_id")
            self.session_id = thread if isinstance(thread, str) else None
        elif kind in ("item.started", "item.completed"):
            self._item(kind, event.get("item"))
        elif kind == "turn.completed":
            self.finished = True
            usage = event.get("usage")
            for key, value in (usage if isinstance(usage, dict) else {}).items():
                if number(value) is not None:
                    self.usage[key] = self.usage.get(key, 0) + value
        elif kind == "turn.failed":
            self.finished = True
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            self.failed = message if isinstance(message, str) else "turn failed"
        elif kind == "error" and isinstance(event.get("message"), str):
            self.errors = [*self.errors[-4:], event["message"]]

    def _item(self, kind: str, item: Any) -> None:
        if not isinstance(item, dict):
            return
        what = item.get("type")
        tool = {
            "command_execution": "shell",
            "file_change": "apply_patch",
            "web_search": "web_search",
        }.get(str(what))
        if what == "mcp_tool_call":
            tool = f"{item.get('server')}.{item.get('tool')}"
        if tool:
            self.last_tool = tool
        if kind != "item.completed":
            return
        if what == "agent_message" and isinstance(item.get("text"), str):
            self.last_message = item["text"]
        elif what == "command_execution":
            self.commands += 1
            code = item.get("exit_code")
            self.failed_commands += isinstance(code, int) and code != 0

    def live(self) -> dict[str, Any]:
        return {
            "num_turns": None,
            "last_tool": self.last_tool,
            "cost_usd": None,
            "session_id": self.session_id,
        }


@dataclass(frozen=True)
class Rollout:
    """What Codex's own record of the thread's last turn adds to the stdout events."""

    requests: int = 0
    model: str | None = None
    error_kind: str | None = None
    status: int | None = None


def codex_home(configured: str | None) -> Path:
    home = configured or os.environ.get("CODEX_HOME")
    return Path(home) if home else Path.home() / ".codex"


def read_rollout(home: Path, thread_id: str) -> Rollout | None:
    """The last turn of thread ``thread_id`` as its rollout file records it, if found."""
    try:
        found = list(home.glob(f"sessions/*/*/*/rollout-*-{thread_id}.jsonl"))
    except OSError:
        return None
    if not found:
        return None
    path = max(found, key=lambda p: p.stat().st_mtime)
    requests, model, kind, status = 0, None, None, None
    for event in read_events(path):
        payload = event.get("payload")
        if not isinstance(payload, dict):
            continue
        what = payload.get("type") if event.get("type") == "event_msg" else event.get("type")
        if what == "task_started":  # a resumed thread: only its last turn counts
            requests, kind, status = 0, None, None
        elif what == "turn_context" and isinstance(payload.get("model"), str):
            model = payload["model"]
        elif what == "token_count" and isinstance(payload.get("info"), dict):
            requests += 1
        elif what == "task_complete" and isinstance(payload.get("error"), dict):
            kind, status = error_info(payload["error"].get("codex_error_info"))
    return Rollout(requests, model, kind, status)


def error_info(info: Any) -> tuple[str | None, int | None]:
    """``codex_error_info`` is a bare kind or ``{kind: {"http_status_code": N}}``."""
    if isinstance(info, str):
        return info, None
    if isinstance(info, dict) and len(info) == 1:
        kind, detail = next(iter(info.items()))
        status = detail.get("http_status_code") if isinstance(detail, dict) else None
        return str(kind), number(status)
    return None, None


def report(tally: CodexTally, rollout: Rollout | None) -> dict[str, Any]:
    """The ``agent`` object: the same fields as claude's, null where Codex has no answer."""
    usage = tally.usage
    status, kind = (rollout.status, rollout.error_kind) if rollout else (None, None)
    if rollout is None and tally.failed:
        found = _STATUS_IN_TEXT.search(tally.failed)
        status = int(found.group(1)) if found else None
    return {
        **tally.live(),
        "num_turns": rollout.requests if rollout else None,
        "input_tokens": usage.get("input_tokens"),
        "output_tokens": usage.get("output_tokens"),
        "cache_read_input_tokens": usage.get("cached_input_tokens"),
        "reasoning_output_tokens": usage.get("reasoning_output_tokens"),
        "permission_denials": None,
        "is_error": (tally.failed is not None) if tally.finished else None,
        "api_error_status": status,
        "api_error": kind,
        "result": clip(tally.failed or tally.last_message, _TEXT_LIMIT),
        "model": rollout.model if rollout else None,
        "commands": tally.commands,
        "failed_commands": tally.failed_commands,
    }


def verdict(
    tally: CodexTally,
    rollout: Rollout | None,
    exit_code: int,
    *,
    resumed: str | None,
    log_line: str,
) -> Outcome:
    agent = report(tally, rollout)
    detail = f": {log_line}" if log_line else ""
    if resumed and not tally.saw_start and exit_code != 0:
        # The thread to resume could not be loaded; forget it so a retry starts afresh.
        agent["session_id"] = None
        return Outcome(
            False,
            transient=True,
            agent=agent,
            error=f"could not resume codex thread {resumed}{detail}",
        )
    if not tally.finished:
        if exit_code < 0:
            return Outcome(
                False, agent=agent, error=f"codex was killed by {signal_name(-exit_code)}{detail}"
            )
        what = tally.errors[-1] if tally.errors else log_line
        return Outcome(
            False,
            agent=agent,
            error=f"codex exited with code {exit_code} before its turn ended"
            + (f": {clip(what, 300)}" if what else ""),
        )
    if tally.failed is not None:
        return _failure(agent, tally.failed)
    if exit_code != 0:
        return Outcome(False, agent=agent, error=f"codex exited with code {exit_code}{detail}")
    outcome, summary = verdict_of(_json_object(tally.last_message))
    return Outcome(True, agent=agent, verdict=outcome, summary=summary)


def _json_object(text: str | None) -> Any:
    """The final answer as the JSON object the output schema made it; None if it is not."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _failure(agent: dict[str, Any], message: str) -> Outcome:
    status, kind = agent["api_error_status"], agent["api_error"]
    said = f": {clip(message, 300)}"
    what = ", ".join(x for x in (f"HTTP {status}" if status else None, kind) if x) or "no status"
    if status in (401, 403) or kind in FATAL_KINDS:
        return Outcome(
            False,
            fatal=True,
            agent=agent,
            error=f"codex could not authenticate ({what}); check OPENAI_API_KEY or run "
            f"`codex login`{said}",
        )
    if (status is not None and (status in (408, 429) or status >= 500)) or kind in TRANSIENT_KINDS:
        return Outcome(
            False,
            transient=True,
            agent=agent,
            error=f"codex hit a temporary API error ({what}){said}",
        )
    return Outcome(False, agent=agent, error=f"codex turn failed ({what}){said}")

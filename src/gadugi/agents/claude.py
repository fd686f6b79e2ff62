"""The ``claude`` agent: Claude Code headless, its stream-json events read back into a verdict.

Claude Code (``claude -p ... --output-format stream-json --verbose``) writes one JSON event
per line on stdout; the runner stores them in the task's events file. Every verdict here
comes from those structured events, never from the CLI's human text:

- ``system/init`` opens an attempt (session id, model); ``assistant`` lines carry one
  content block each, so a turn is a new top-level ``message.id``; a synthetic assistant
  message for an API failure carries an ``error`` kind (``authentication_failed``,
  ``rate_limit``, ``server_error``, ...); ``system/api_retry`` marks the CLI's own retries.
- ``result`` closes it: ``is_error``, ``subtype`` (``success``, ``error_max_turns``,
  ``error_during_execution``, ...), ``api_error_status`` (the HTTP status, or null for a
  connection failure), ``num_turns``, ``total_cost_usd``, ``usage`` and
  ``permission_denials``. ``subtype`` stays "success" on API errors, so ``is_error`` and the
  exit code decide.
- ``--json-schema`` makes the CLI offer the model a ``StructuredOutput`` tool whose input
  is the schema; the model's call ends the turn, and the ``result`` event carries its input
  as ``structured_output`` (``result`` is then that JSON as text). A model that never calls
  it ends the run with subtype ``error_max_structured_output_retries``. gadugi's verdict
  (``outcome`` done / blocked / no_change, a one-paragraph ``summary``) comes from there.
- ``rate_limit_event`` comes only for claude.ai subscription logins. When a usage limit is
  hit its ``rate_limit_info`` is ``{"status": "rejected", "resetsAt": <epoch seconds>,
  "rateLimitType": "five_hour", ...}``; that ``resetsAt`` becomes ``retry_after``. With an
  API key a 429 carries no reset time in any event.

Facts measured with Claude Code 2.1.197 (see tests/test_claude_agent.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import AgentError
from ..procs import signal_name
from ..tasks import Prompt, iso
from .base import VERDICT_SCHEMA, AgentContext, Launch, Outcome, log_tail, verdict_of

DEFAULT_ALLOWED_TOOLS = ("Bash", "Edit", "Write", "Read", "Glob", "Grep")
# One argv string may not exceed 128 KiB (Linux MAX_ARG_STRLEN); a larger prompt is handed
# over as a file to read instead.
MAX_PROMPT_ARG_BYTES = 100_000
FATAL_KINDS = frozenset({"authentication_failed", "oauth_org_not_allowed", "billing_error"})
TRANSIENT_KINDS = frozenset({"rate_limit", "overloaded", "server_error"})
STRUCTURED_OUTPUT_TOOL = "StructuredOutput"  # the tool --json-schema adds
_TEXT_LIMIT = 4000
_INPUT_LIMIT = 500


@dataclass(frozen=True)
class ClaudeOptions:
    executable: str = "claude"
    model: str | None = None
    # acceptEdits plus an allow-list works as root, unlike bypassPermissions; anything not
    # allowed is denied at once in -p mode (never a prompt that nobody can answer).
    permission_mode: str = "acceptEdits"
    allowed_tools: tuple[str, ...] = DEFAULT_ALLOWED_TOOLS
    max_turns: int | None = None
    extra_args: tuple[str, ...] = ()


class ClaudeProfile:
    name = "claude"
    # Claude Code 2.1.197 keeps its agent loop running about 1.5 s after SIGTERM reaches it
    # and its tool's child, long enough to run more tools (and commit) with a fast model:
    # a stop freezes its tree and kills it, with no polite window.
    stop_gracefully = False

    def __init__(self, options: ClaudeOptions | None = None) -> None:
        self.options = options or ClaudeOptions()
        # Where each running attempt's events begin: retries append to the same file.
        self._starts: dict[Path, int] = {}
        self._progress: dict[Path, Tally] = {}

    # -- starting ----------------------------------------------------------------------

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        opts = self.options
        executable = shutil.which(opts.executable)
        if executable is None:
            raise AgentError(
                ctx.task_id,
                f"{opts.executable} not found on PATH; install Claude Code "
                "(npm install -g @anthropic-ai/claude-code) or choose --agent shell or "
                "--agent command",
            )
        self._check_root_bypass(ctx)
        argv = [
            executable,
            "-p",
            "--output-format",
            "stream-json",
            "--verbose",
            "--permission-mode",
            opts.permission_mode,
        ]
        if opts.model:
            argv += ["--model", opts.model]
        if opts.max_turns is not None:
            argv += ["--max-turns", str(opts.max_turns)]
        if prompt.max_cost_usd is not None:
            argv += ["--max-budget-usd", str(prompt.max_cost_usd)]
        if ctx.resume_session:
            argv += ["--resume", ctx.resume_session]
        argv += ["--json-schema", json.dumps(VERDICT_SCHEMA, separators=(",", ":"))]
        text = ctx.prompt_file.read_text(encoding="utf-8")
        if len(text.encode()) > MAX_PROMPT_ARG_BYTES:
            argv += ["--add-dir", str(ctx.prompt_file.parent)]
            text = (
                f"Your task is written in the file {ctx.prompt_file}. "
                "Read all of it, then carry it out."
            )
        if opts.allowed_tools:
            # One argument per tool keeps patterns such as "Bash(git *)" whole.
            argv += ["--allowedTools", *opts.allowed_tools]
        # The prompt goes last, after "--": a prompt that starts with "-" (front matter!)
        # would otherwise be read as an option.
        argv += [*opts.extra_args, "--", text]
        self._starts[ctx.events_file] = _size(ctx.events_file)
        # Parallel agents must not replace their own binary mid-run; a user's own setting wins.
        env = {} if "DISABLE_AUTOUPDATER" in os.environ else {"DISABLE_AUTOUPDATER": "1"}
        return Launch(argv, env=env, structured_stdout=True)

    def _check_root_bypass(self, ctx: AgentContext) -> None:
        bypass = (
            self.options.permission_mode == "bypassPermissions"
            or "--dangerously-skip-permissions" in self.options.extra_args
        )
        sandboxed = os.environ.get("IS_SANDBOX") == "1" or os.environ.get("CLAUDE_CODE_BUBBLEWRAP")
        if bypass and os.geteuid() == 0 and not sandboxed:
            raise AgentError(
                ctx.task_id,
                "claude refuses bypassPermissions when run as root; use permission mode "
                "acceptEdits with allowed tools, or set IS_SANDBOX=1 if this machine is a "
                "disposable sandbox",
            )

    # -- watching ----------------------------------------------------------------------

    def progress(self, events_path: Path, offset: int) -> tuple[int, dict[str, Any]]:
        """Read the events written since byte ``offset``; return the new offset and a summary.

        Only complete lines are consumed, so a line being written is read on a later call.
        """
        tally = self._progress.get(events_path)
        if tally is None or tally.offset != offset:
            tally = self._progress[events_path] = Tally(offset=offset)
        try:
            with events_path.open("rb") as fh:
                if fh.seek(0, os.SEEK_END) < offset:  # replaced or truncated: start over
                    tally = self._progress[events_path] = Tally()
                fh.seek(tally.offset)
                data = fh.read()
        except OSError:
            return offset, tally.live()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            # Tool results (user lines) can be large and say nothing about progress.
            if not line.startswith(b'{"type":"user"'):
                event = _parse(line)
                if event is not None:
                    tally.add(event)
        tally.offset += end
        return tally.offset, tally.live()

    # -- judging -----------------------------------------------------------------------

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        start = self._starts.pop(ctx.events_file, 0)
        self._progress.pop(ctx.events_file, None)
        tally = Tally()
        for event in read_events(ctx.events_file, start):
            tally.add(event)
        return verdict(
            tally,
            exit_code,
            resumed=ctx.resume_session,
            max_turns=self.options.max_turns,
            log_line=log_tail(ctx),
        )


@dataclass
class Tally:
    """What one attempt's events say so far; fed one event at a time."""

    offset: int = 0
    session_id: str | None = None
    model: str | None = None
    saw_init: bool = False
    turns: int = 0
    last_message: str | None = None
    last_tool: str | None = None
    api_error: str | None = None  # the ``error`` kind of a synthetic API-error message
    api_retries: int = 0
    retry_after: float | None = None
    result: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind, subtype = event.get("type"), event.get("subtype")
        if isinstance(event.get("session_id"), str):
            self.session_id = event["session_id"]
        if kind == "system" and subtype == "init":
            # A new attempt in the same file: what came before belongs to the last one.
            fresh = Tally(
                offset=self.offset,
                session_id=self.session_id,
                saw_init=True,
                model=_str(event.get("model")),
            )
            vars(self).update(vars(fresh))
        elif kind == "system" and subtype == "api_retry":
            self.api_retries += 1
        elif kind == "assistant" and event.get("parent_tool_use_id") is None:
            self._assistant(event)
        elif kind == "rate_limit_event":
            info = event.get("rate_limit_info")
            if isinstance(info, dict) and info.get("status") == "rejected":
                reset = info.get("resetsAt")
                self.retry_after = float(reset) if isinstance(reset, int | float) else None
        elif kind == "result":
            self.result = event

    def _assistant(self, event: dict[str, Any]) -> None:
        message = event.get("message")
        if not isinstance(message, dict):
            return
        message_id = message.get("id")
        if message_id != self.last_message or message_id is None:
            self.turns += 1
            self.last_message = _str(message_id)
        if isinstance(event.get("error"), str):
            self.api_error = event["error"]
        for block in message.get("content") or ():
            if isinstance(block, dict) and block.get("type") == "tool_use":
                name = _str(block.get("name"))
                # The verdict's own tool is gadugi's question, not the agent's work.
                if name != STRUCTURED_OUTPUT_TOOL:
                    self.last_tool = name

    def live(self) -> dict[str, Any]:
        """What the live view shows of a running attempt."""
        result = self.result or {}
        turns = result.get("num_turns")
        return {
            "num_turns": turns if isinstance(turns, int) else self.turns,
            "last_tool": self.last_tool,
            "cost_usd": _number(result.get("total_cost_usd")),
            "session_id": self.session_id,
        }

    def report(self) -> dict[str, Any]:
        """The ``agent`` object of the finished attempt (PRODUCT.md, plus a few extras)."""
        result = self.result or {}
        usage = result.get("usage")
        usage = usage if isinstance(usage, dict) else {}
        denials = result.get("permission_denials")
        report: dict[str, Any] = {
            **self.live(),
            "input_tokens": usage.get("input_tokens"),
            "output_tokens": usage.get("output_tokens"),
            "cache_read_input_tokens": usage.get("cache_read_input_tokens"),
            "cache_creation_input_tokens": usage.get("cache_creation_input_tokens"),
            "permission_denials": [_denial(d) for d in denials if isinstance(d, dict)]
            if isinstance(denials, list)
            else [],
            "is_error": result.get("is_error") if self.result else None,
            "api_error_status": result.get("api_error_status"),
            "subtype": result.get("subtype"),
            "result": _clip(result.get("result"), _TEXT_LIMIT),
            "model": self.model,
            "api_retries": self.api_retries,
        }
        if self.api_error:
            report["api_error"] = self.api_error
        if self.retry_after is not None:
            report["retry_after"] = self.retry_after
        return report


def verdict(
    tally: Tally, exit_code: int, *, resumed: str | None, max_turns: int | None, log_line: str
) -> Outcome:
    """The outcome of one attempt from its tallied events and exit code."""
    agent = tally.report()
    result = tally.result
    if result is None:
        detail = f": {log_line}" if log_line else ""
        if exit_code < 0:
            return Outcome(
                False, error=f"claude was killed by {signal_name(-exit_code)}{detail}", agent=agent
            )
        return Outcome(
            False,
            agent=agent,
            error=f"claude exited with code {exit_code} without a result{detail}",
        )
    said = _said(result)
    status = result.get("api_error_status")
    status = status if isinstance(status, int) else None
    kind = tally.api_error
    if resumed and not tally.saw_init and result.get("subtype") == "error_during_execution":
        # The session to resume could not be loaded; forget it so a retry starts afresh.
        agent["session_id"] = None
        return Outcome(
            False,
            transient=True,
            agent=agent,
            error=f"could not resume claude session {resumed}{said}",
        )
    if result.get("is_error") is True:
        if status in (401, 403) or kind in FATAL_KINDS:
            what = f"HTTP {status}" if status else kind
            return Outcome(
                False,
                fatal=True,
                agent=agent,
                error=(
                    f"claude could not authenticate ({what}); check ANTHROPIC_API_KEY or log in "
                    f"with `claude /login`{said}"
                ),
            )
        if (status is not None and (status in (408, 429) or status >= 500)) or (
            status is None and kind in TRANSIENT_KINDS
        ):
            return Outcome(
                False, transient=True, agent=agent, error=_api_error(status, kind, tally) + said
            )
        if result.get("subtype") == "error_max_turns":
            limit = f" ({max_turns})" if max_turns else ""
            return Outcome(
                False, agent=agent, error=f"claude stopped: maximum number of turns{limit} reached"
            )
        if result.get("subtype") == "error_max_budget_usd":
            return Outcome(False, agent=agent, error="claude stopped: budget limit reached")
        # subtype stays "success" on API errors, so it only tells something when it differs.
        parts = [
            result.get("subtype") if result.get("subtype") != "success" else None,
            f"HTTP {status}" if status else None,
            kind,
        ]
        what = ", ".join(str(p) for p in parts if p) or "is_error"
        return Outcome(False, agent=agent, error=f"claude reported an error ({what}){said}")
    if exit_code != 0:
        return Outcome(False, agent=agent, error=f"claude exited with code {exit_code}{said}")
    if agent["permission_denials"]:
        names = sorted({d.get("tool_name") or "?" for d in agent["permission_denials"]})
        return Outcome(
            False,
            agent=agent,
            error=(
                f"claude was denied tool calls by its permission settings: {', '.join(names)}; "
                "allow them (claude_allowed_tools) or choose another permission mode"
            ),
        )
    outcome, summary = verdict_of(result.get("structured_output"))
    return Outcome(True, agent=agent, verdict=outcome, summary=summary)


def _api_error(status: int | None, kind: str | None, tally: Tally) -> str:
    what = f"HTTP {status}" if status is not None else "no connection"
    if kind:
        what += f", {kind}"
    text = f"claude hit a temporary API error ({what})"
    if tally.api_retries:
        text += f" after {tally.api_retries} retries of its own"
    reset = iso(tally.retry_after) if tally.retry_after is not None else None
    if reset is not None:  # None too for a reset no calendar holds
        text += f"; the usage limit resets at {reset[:19]}{reset[23:]}"
    return text


def read_events(path: Path, start: int = 0) -> list[dict[str, Any]]:
    """The JSON objects in ``path`` from byte ``start``; lines that are not one are skipped."""
    try:
        with path.open("rb") as fh:
            fh.seek(start)
            data = fh.read()
    except OSError:
        return []
    return [e for e in map(_parse, data.splitlines()) if e is not None]


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:  # a garbage or half-written line
        return None
    return event if isinstance(event, dict) else None


def _said(result: dict[str, Any]) -> str:
    """The CLI's own words about a failure, shown to the user (never parsed)."""
    errors = result.get("errors")
    text = result.get("result")
    if not isinstance(text, str) and isinstance(errors, list) and errors:
        text = str(errors[0])
    return f": {_clip(text, 300)}" if isinstance(text, str) and text.strip() else ""


def _denial(denial: dict[str, Any]) -> dict[str, Any]:
    tool_input = denial.get("tool_input")
    if isinstance(tool_input, dict):
        tool_input = {
            k: _clip(v, _INPUT_LIMIT) if isinstance(v, str) else v for k, v in tool_input.items()
        }
    return {**denial, "tool_input": tool_input}


def _clip(text: Any, limit: int) -> str | None:
    if not isinstance(text, str):
        return None
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0

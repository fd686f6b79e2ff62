"""The ``gemini`` agent: gemini-cli headless, its stream-json events read back into a verdict.

``gemini --prompt=... -o stream-json`` writes one JSON event per line on stdout (the
runner stores them in the task's events file): ``init`` (session id, model), ``message``
(the user's prompt, then the model's text in ``delta`` pieces), ``tool_use`` and
``tool_result``, and a closing ``result`` with ``status`` "success" or "error" (plus
``error.type`` and ``error.message``) and ``stats`` (tokens, tool calls).

On an API error gemini-cli exits with the error's HTTP status as its exit code, which the
operating system keeps modulo 256 (401 -> 145, 429 -> 173, 503 -> 247), and with 41 when
authentication is not set up; the verdict reads the status back from those codes, and only
when the ``result`` event says the run failed. A model turn is a run of model output
(text or tool calls) between the prompt and tool results. gemini-cli reports no cost.

It never asks for approval (``--approval-mode yolo``), trusts the worktree for the session
(``--skip-trust``; otherwise it would fall back to asking), and runs as root. It saves a
session only after a model turn completed: an attempt that failed before that reports no
session id, so a retry starts afresh instead of failing to resume.

Facts measured with gemini-cli 0.61.0 (see tests/test_other_agents.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..procs import signal_name
from ..tasks import Prompt
from .base import AgentContext, Launch, Outcome
from .stream import Follower, clip, log_tail, number, prompt_text, require

WHAT = "gemini-cli"
INSTALL = "npm install -g @google/gemini-cli"
# HTTP statuses as exit codes (modulo 256) that mean something to the verdict; none of
# them collides with gemini-cli's own exit codes (1, 41, 42, 44, 52, 53, 130).
STATUS_BY_EXIT = {s % 256: s for s in (400, 401, 403, 404, 408, 409, 429, 500, 502, 503, 504, 529)}
EXIT_AUTH = 41  # FatalAuthenticationError: no usable credentials or auth method
_TEXT_LIMIT = 4000


@dataclass(frozen=True)
class GeminiOptions:
    executable: str = "gemini"
    model: str | None = None
    extra_args: tuple[str, ...] = ()


class GeminiProfile:
    name = "gemini"

    def __init__(self, options: GeminiOptions | None = None) -> None:
        self.options = options or GeminiOptions()
        self.follower: Follower[GeminiTally] = Follower(GeminiTally)

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        opts = self.options
        executable = require(ctx.task_id, opts.executable, WHAT, INSTALL)
        argv = [executable, "-o", "stream-json", "--approval-mode", "yolo", "--skip-trust"]
        if opts.model:
            argv += ["-m", opts.model]
        if ctx.resume_session:
            argv += ["--resume", ctx.resume_session]
        text, pointer = prompt_text(ctx.prompt_file)
        if pointer:
            argv += ["--include-directories", str(ctx.prompt_file.parent)]
        # One argument with "=": a prompt that starts with "-" (front matter!) stays the value.
        argv += [*opts.extra_args, f"--prompt={text}"]
        self.follower.begin(ctx.events_file)
        return Launch(argv, structured_stdout=True)

    def progress(self, events_path: Path, offset: int) -> tuple[int, dict[str, Any]]:
        return self.follower.progress(events_path, offset)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        tally = self.follower.finish(ctx.events_file)
        return verdict(tally, exit_code, resumed=ctx.resume_session, log_line=log_tail(ctx))


@dataclass
class GeminiTally:
    """What one attempt's events say; fed one event at a time."""

    offset: int = 0
    session_id: str | None = None
    model: str | None = None
    saw_init: bool = False
    turns: int = 0
    in_turn: bool = False
    last_tool: str | None = None
    text: str = ""  # the model's text since its last tool call
    result: dict[str, Any] | None = None

    def add(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "init":
            # A new attempt in the same file: what came before belongs to the last one.
            vars(self).update(vars(GeminiTally(offset=self.offset)))
            self.saw_init = True
            self.session_id = _str(event.get("session_id"))
            self.model = _str(event.get("model"))
        elif kind == "message" and event.get("role") == "assistant":
            self._model_output()
            self.text += str(event.get("content") or "")
        elif kind == "tool_use":
            self._model_output()
            self.last_tool = _str(event.get("tool_name"))
            self.text = ""
        elif kind in ("tool_result", "message"):
            self.in_turn = False
        elif kind == "result":
            self.result = event

    def _model_output(self) -> None:
        if not self.in_turn:
            self.turns += 1
            self.in_turn = True

    def live(self) -> dict[str, Any]:
        return {
            "num_turns": self.turns,
            "last_tool": self.last_tool,
            "cost_usd": None,
            "session_id": self.session_id,
        }


def report(tally: GeminiTally, exit_code: int) -> dict[str, Any]:
    """The ``agent`` object: the same fields as claude's, null where gemini-cli has none."""
    result = tally.result or {}
    stats = result.get("stats")
    stats = stats if isinstance(stats, dict) else {}
    error = result.get("error")
    error = error if isinstance(error, dict) else {}
    failed = result.get("status") == "error"
    return {
        **tally.live(),
        "input_tokens": number(stats.get("input_tokens")),
        "output_tokens": number(stats.get("output_tokens")),
        "cache_read_input_tokens": number(stats.get("cached")),
        "tool_calls": number(stats.get("tool_calls")),
        "permission_denials": None,
        "is_error": failed if tally.result else None,
        "api_error_status": STATUS_BY_EXIT.get(exit_code) if failed else None,
        "api_error": _str(error.get("type")),
        "result": clip(error.get("message") if failed else tally.text, _TEXT_LIMIT),
        "model": tally.model,
    }


def verdict(tally: GeminiTally, exit_code: int, *, resumed: str | None, log_line: str) -> Outcome:
    agent = report(tally, exit_code)
    if not tally.turns:
        agent["session_id"] = None  # gemini-cli saved no session to resume
    detail = f": {log_line}" if log_line else ""
    if resumed and not tally.saw_init and exit_code != 0:
        return Outcome(
            False,
            transient=True,
            agent=agent,
            error=f"could not resume gemini session {resumed}{detail}",
        )
    result = tally.result
    if result is None:
        if exit_code < 0:
            return Outcome(
                False, agent=agent, error=f"gemini was killed by {signal_name(-exit_code)}{detail}"
            )
        return Outcome(
            False,
            agent=agent,
            error=f"gemini exited with code {exit_code} without a result{detail}",
        )
    if result.get("status") == "error":
        return _failure(agent, exit_code)
    if exit_code != 0:
        return Outcome(False, agent=agent, error=f"gemini exited with code {exit_code}{detail}")
    return Outcome(True, agent=agent)


def _failure(agent: dict[str, Any], exit_code: int) -> Outcome:
    status = agent["api_error_status"]
    said = f": {clip(agent['result'], 300)}" if agent["result"] else ""
    what = f"HTTP {status}" if status else f"exit {exit_code}"
    if status in (401, 403) or exit_code == EXIT_AUTH:
        return Outcome(
            False,
            fatal=True,
            agent=agent,
            error=f"gemini could not authenticate ({what}); check GEMINI_API_KEY and the "
            f"auth type in ~/.gemini/settings.json{said}",
        )
    if status is not None and (status in (408, 429) or status >= 500):
        return Outcome(
            False,
            transient=True,
            agent=agent,
            error=f"gemini hit a temporary API error ({what}){said}",
        )
    return Outcome(False, agent=agent, error=f"gemini reported an error ({what}){said}")


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None

"""Agents' structured events as lines a person reads: one renderer per event dialect.

Each renderer is fed one attempt's events in order and returns the lines each adds. The
lines use a few markers so a transcript can be scanned: plain text is what the model said,
``→`` a tool call with its input in short, ``  │`` the first lines of its result (``  ✗``
when it failed), ``!`` errors, retries and denials, ``·`` facts about the session, ``⚑``
the agent's structured verdict (its summary on the lines below), and ``=`` the attempt's
outcome with its turns, cost and tokens.

The dialects are the ones gadugi already reads for verdicts (see ``agents/claude.py``,
``agents/codex.py`` and ``agents/gemini.py``); events of a kind not listed are skipped.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any, Protocol

from .tasks import Verdict

RESULT_LINES = 4  # of a tool's output
LINE_LIMIT = 200  # characters of one shown line
INPUT_LIMIT = 120  # characters of a tool call's input
# The input fields that say most about a call, most telling first.
SUMMARY_KEYS = ("command", "file_path", "absolute_path", "path", "pattern", "url", "query")
VERDICTS = frozenset(v.value for v in Verdict)


class Renderer(Protocol):
    def feed(self, event: dict[str, Any]) -> list[str]:
        """The lines ``event`` adds to the transcript."""
        ...

    def flush(self) -> list[str]:
        """Lines held back until more events arrive (text still being streamed)."""
        ...


# -- the dialects: how each is recognised, where an attempt begins and ends ---------------


def dialect_of(event: dict[str, Any]) -> str | None:
    """Which agent's events these are, from one event; None when this one cannot tell."""
    kind = str(event.get("type"))
    if kind in ("system", "assistant", "user", "rate_limit_event", "stream_event"):
        return "claude"
    if kind.startswith(("thread.", "turn.", "item.")):
        return "codex"
    if kind in ("init", "message", "tool_use", "tool_result"):
        return "gemini"
    if kind == "result":
        return "claude" if "subtype" in event or "num_turns" in event else "gemini"
    return None


def opens_attempt(dialect: str, event: dict[str, Any]) -> bool:
    kind = event.get("type")
    if dialect == "claude":
        return kind == "system" and event.get("subtype") == "init"
    return kind == ("thread.started" if dialect == "codex" else "init")


def closes_attempt(dialect: str, event: dict[str, Any]) -> bool:
    kind = event.get("type")
    if dialect == "codex":
        return kind in ("turn.completed", "turn.failed")
    return kind == "result"


def renderer_for(dialect: str) -> Renderer:
    kinds: dict[str, type[Renderer]] = {
        "claude": ClaudeRenderer,
        "codex": CodexRenderer,
        "gemini": GeminiRenderer,
    }
    return kinds[dialect]()


# -- shared pieces ---------------------------------------------------------------------


def clip(text: str, limit: int = LINE_LIMIT) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def text_lines(text: Any, indent: str = "") -> list[str]:
    if not isinstance(text, str) or not text.strip():
        return []
    verdict = _verdict(text)
    if verdict is not None:
        outcome, summary = verdict
        return [f"{indent}⚑ verdict: {outcome}", *text_lines(summary, indent)]
    return [indent + clip(line) for line in text.strip("\n").splitlines()]


def _verdict(text: str) -> tuple[str, str] | None:
    """The agent's structured verdict, when ``text`` is one (the last message of an agent
    asked for ``VERDICT_SCHEMA``): shown as its outcome and its summary, not as JSON."""
    stripped = text.strip()
    if not (stripped.startswith("{") and stripped.endswith("}")):
        return None
    try:
        data = json.loads(stripped)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("outcome") not in VERDICTS:
        return None
    summary = data.get("summary")
    return str(data["outcome"]), summary if isinstance(summary, str) else ""


def call_line(name: Any, tool_input: Any, indent: str = "") -> str:
    return f"{indent}→ {_named(name, tool_input)}"


def _named(name: Any, tool_input: Any) -> str:
    brief = summary(tool_input)
    return f"{name or '?'}: {brief}" if brief else str(name or "?")


def summary(tool_input: Any) -> str:
    """A tool call's input in short: its most telling field's first line, or compact JSON."""
    if isinstance(tool_input, dict):
        for key in SUMMARY_KEYS:
            if isinstance(tool_input.get(key), str):
                return _first_line(tool_input[key])
        if not tool_input:
            return ""
    if isinstance(tool_input, str):
        return _first_line(tool_input)
    return clip(json.dumps(tool_input, ensure_ascii=False), INPUT_LIMIT)


def _first_line(text: str) -> str:
    lines = text.strip().splitlines() or [""]
    more = " …" if len(lines) > 1 else ""
    return clip(lines[0], INPUT_LIMIT) + more


def result_lines(output: Any, failed: bool, indent: str = "") -> list[str]:
    """A tool result's first lines, and how many more there were."""
    mark = f"{indent}  ✗ " if failed else f"{indent}  │ "
    lines = output.strip("\n").splitlines() if isinstance(output, str) else []
    if not lines:
        return [mark + ("(failed, no output)" if failed else "(no output)")]
    shown = [mark + clip(line) for line in lines[:RESULT_LINES]]
    if len(lines) > RESULT_LINES:
        shown.append(f"{mark}… {len(lines) - RESULT_LINES} more lines")
    return shown


def outcome_line(ok: bool, detail: str | None, *facts: str | None) -> str:
    head = "= success" if ok else "= error" + (f" ({detail})" if detail else "")
    return " · ".join([head, *(f for f in facts if f)])


def tokens(usage: Any, inp: str = "input_tokens", out: str = "output_tokens") -> str | None:
    if not isinstance(usage, dict) or not isinstance(usage.get(inp), int):
        return None
    return f"{usage[inp]} in / {usage.get(out) or 0} out tokens"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- Claude Code stream-json --------------------------------------------------------------


class ClaudeRenderer:
    def __init__(self) -> None:
        self.last_text: str | None = None

    def feed(self, event: dict[str, Any]) -> list[str]:
        kind, subtype = event.get("type"), event.get("subtype")
        indent = "    " if event.get("parent_tool_use_id") else ""  # a subagent's work
        if kind == "system":
            return self._system(subtype, event)
        if kind == "assistant":
            return self._assistant(event, indent)
        if kind == "user":
            return self._tool_results(event, indent)
        if kind == "rate_limit_event":
            return _rate_limit(event.get("rate_limit_info"))
        if kind == "result":
            return self._result(event)
        return []

    def flush(self) -> list[str]:
        return []

    @staticmethod
    def _system(subtype: Any, event: dict[str, Any]) -> list[str]:
        if subtype == "init":
            return [f"· {event.get('model') or 'claude'}, session {event.get('session_id')}"]
        if subtype == "api_retry":
            status = event.get("error_status")
            what = ", ".join(
                str(x) for x in (f"HTTP {status}" if status else None, event.get("error")) if x
            )
            delay = event.get("retry_delay_ms")
            wait = f" in {delay / 1000:.1f}s" if isinstance(delay, int | float) else ""
            return [
                f"! API error ({what or 'no status'}): Claude Code retries "
                f"({event.get('attempt')} of {event.get('max_retries')}){wait}"
            ]
        if subtype == "compact_boundary":
            return ["· context compacted"]
        return []

    def _assistant(self, event: dict[str, Any], indent: str) -> list[str]:
        message = event.get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
        lines: list[str] = []
        for block in blocks if isinstance(blocks, list) else ():
            if not isinstance(block, dict):
                continue
            if block.get("type") == "text" and isinstance(event.get("error"), str):
                first = _first_line(str(block.get("text") or ""))
                lines.append(f"{indent}! API error ({event['error']}): {first}")
                self.last_text = block.get("text")
            elif block.get("type") == "text":
                lines += text_lines(block.get("text"), indent)
                self.last_text = block.get("text")
            elif block.get("type") == "tool_use":
                lines.append(call_line(block.get("name"), block.get("input"), indent))
        return lines

    @staticmethod
    def _tool_results(event: dict[str, Any], indent: str) -> list[str]:
        message = event.get("message")
        blocks = message.get("content") if isinstance(message, dict) else None
        lines: list[str] = []
        for block in blocks if isinstance(blocks, list) else ():
            if isinstance(block, dict) and block.get("type") == "tool_result":
                content = block.get("content")
                if isinstance(content, list):  # text blocks (and images, not shown)
                    content = "\n".join(
                        str(b.get("text", "")) for b in content if isinstance(b, dict)
                    )
                lines += result_lines(content, block.get("is_error") is True, indent)
        return lines

    def _result(self, event: dict[str, Any]) -> list[str]:
        lines = []
        for denial in event.get("permission_denials") or ():
            if isinstance(denial, dict):
                what = _named(denial.get("tool_name"), denial.get("tool_input"))
                lines.append(f"! permission denied: {what}")
        text = event.get("result")
        if isinstance(text, str) and text.strip() and text != self.last_text:
            lines += text_lines(text)
        ok = event.get("is_error") is not True
        status = event.get("api_error_status")
        subtype = event.get("subtype")
        detail = ", ".join(
            str(x)
            for x in (
                f"HTTP {status}" if status else None,
                subtype if subtype != "success" else None,
            )
            if x
        )
        turns = event.get("num_turns")
        cost = event.get("total_cost_usd")
        lines.append(
            outcome_line(
                ok,
                detail,
                _plural(turns, "turn") if isinstance(turns, int) else None,
                f"${cost:.4f}" if isinstance(cost, int | float) else None,
                tokens(event.get("usage")),
            )
        )
        return lines


def _rate_limit(info: Any) -> list[str]:
    if not isinstance(info, dict) or info.get("status") != "rejected":
        return []  # subscriptions report every allowed request too
    reset = info.get("resetsAt")
    when = (
        f"; resets at {datetime.fromtimestamp(reset, UTC).isoformat(timespec='seconds')}"
        if isinstance(reset, int | float)
        else ""
    )
    return [f"! usage limit reached ({info.get('rateLimitType') or 'unknown'}){when}"]


# -- Codex exec --json ---------------------------------------------------------------------


class CodexRenderer:
    def __init__(self) -> None:
        self.started: set[str] = set()
        self.last_error: str | None = None

    def feed(self, event: dict[str, Any]) -> list[str]:
        kind = event.get("type")
        item = event.get("item")
        if kind == "thread.started":
            return [f"· codex, thread {event.get('thread_id')}"]
        if kind == "item.started" and isinstance(item, dict):
            return self._started(item)
        if kind == "item.completed" and isinstance(item, dict):
            return self._completed(item)
        if kind == "error" and isinstance(event.get("message"), str):
            self.last_error = event["message"]
            return [f"! {_first_line(event['message'])}"]
        if kind == "turn.completed":
            return [outcome_line(True, None, tokens(event.get("usage")))]
        if kind == "turn.failed":
            error = event.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            said = (
                [] if message == self.last_error or not message else [f"! {_first_line(message)}"]
            )
            return [*said, outcome_line(False, None)]
        return []

    def flush(self) -> list[str]:
        return []

    def _started(self, item: dict[str, Any]) -> list[str]:
        call = _codex_call(item)
        if call is None:
            return []
        self.started.add(str(item.get("id")))
        return [call]

    def _completed(self, item: dict[str, Any]) -> list[str]:
        what = item.get("type")
        if what == "agent_message":
            return text_lines(item.get("text"))
        if what == "error":
            return [f"! {_first_line(str(item.get('message')))}"]
        call = _codex_call(item)
        if call is None:
            return []
        lines = [] if str(item.get("id")) in self.started else [call]
        if what == "command_execution":
            code = item.get("exit_code")
            failed = isinstance(code, int) and code != 0
            lines += [f"  ✗ exit {code}"] if failed else []
            output = item.get("aggregated_output")
            if output or not failed:
                lines += result_lines(output, failed)
        elif what == "mcp_tool_call":
            error = item.get("error")
            lines += result_lines(
                json.dumps(error if error else item.get("result"), ensure_ascii=False), bool(error)
            )
        elif item.get("status") == "failed":
            lines.append("  ✗ failed")
        return lines


def _codex_call(item: dict[str, Any]) -> str | None:
    what = item.get("type")
    if what == "command_execution":
        return call_line("shell", item.get("command"))
    if what == "file_change":
        changes = item.get("changes")
        listed = ", ".join(
            f"{c.get('kind')} {c.get('path')}" for c in changes or () if isinstance(c, dict)
        )
        return call_line("apply_patch", clip(listed, INPUT_LIMIT))
    if what == "mcp_tool_call":
        return call_line(f"{item.get('server')}.{item.get('tool')}", item.get("arguments"))
    if what == "web_search":
        return call_line("web_search", item.get("query"))
    return None


# -- gemini-cli stream-json ----------------------------------------------------------------


class GeminiRenderer:
    def __init__(self) -> None:
        self.text = ""  # the model's text, streamed in pieces, until something else comes

    def feed(self, event: dict[str, Any]) -> list[str]:
        kind = event.get("type")
        if kind == "message" and event.get("role") == "assistant":
            content = str(event.get("content") or "")
            self.text = self.text + content if event.get("delta") else content
            return []
        lines = self.flush()
        if kind == "init":
            lines.append(f"· {event.get('model') or 'gemini'}, session {event.get('session_id')}")
        elif kind == "tool_use":
            lines.append(call_line(event.get("tool_name"), event.get("parameters")))
        elif kind == "tool_result":
            lines += self._tool_result(event)
        elif kind == "error":
            lines.append(f"! {_first_line(str(event.get('message')))}")
        elif kind == "result":
            lines += self._result(event)
        return lines

    def flush(self) -> list[str]:
        text, self.text = self.text, ""
        return text_lines(text)

    @staticmethod
    def _tool_result(event: dict[str, Any]) -> list[str]:
        if event.get("status") == "success":
            return result_lines(event.get("output"), False)
        error = event.get("error")
        message = error.get("message") if isinstance(error, dict) else event.get("output")
        return result_lines(message, True)

    @staticmethod
    def _result(event: dict[str, Any]) -> list[str]:
        stats = event.get("stats")
        calls = stats.get("tool_calls") if isinstance(stats, dict) else None
        facts = (
            tokens(stats),
            _plural(calls, "tool call") if isinstance(calls, int) else None,
        )
        if event.get("status") != "error":
            return [outcome_line(True, None, *facts)]
        error = event.get("error")
        error = error if isinstance(error, dict) else {}
        said = (
            [f"! {_first_line(error['message'])}"] if isinstance(error.get("message"), str) else []
        )
        return [*said, outcome_line(False, str(error.get("type") or "") or None, *facts)]

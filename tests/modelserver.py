"""A scripted model API server, for driving the real agent CLIs in tests.

It speaks Anthropic Messages (Claude Code) itself, and through sibling modules the OpenAI
Responses API (Codex CLI, tests/responses_api.py), the Gemini API (gemini-cli,
tests/gemini_api.py) and OpenAI Chat Completions (aider, tests/chat_api.py). They all play
the same scripts: a ``Bash`` tool call becomes Codex's ``exec_command`` or gemini-cli's
``run_shell_command``, so one scenario such as ``write_commit`` drives every CLI but aider
(which takes no tool calls).

Start it as a context manager and point the CLI at it with ``ANTHROPIC_BASE_URL``::

    with ModelServer() as srv:
        env["ANTHROPIC_BASE_URL"] = srv.url
        ...
        assert srv.count("write_commit") == 2

The server is stateless about conversations: every request carries the whole history, so
the script is chosen from the last user message with a ``[[scenario:NAME]]`` marker, and
the turn from the number of assistant messages after it. Parallel agents, retries and
resumed sessions therefore each get the right answer without the server tracking them
(a resumed session sends the prompt again, so its script starts over). Requests that
offer no tools (side requests such as title generation) get a short text answer and do not
advance any script.

Only the protocol subsets the CLIs use are spoken: ``HEAD /``, ``POST /v1/messages``
(SSE when ``stream`` is true, a plain ``message`` otherwise), ``POST
/v1/messages/count_tokens`` and ``GET /v1/models`` for Claude Code; ``POST /v1/responses``
for Codex; ``POST /v1beta/models/<model>:streamGenerateContent`` (and
``:generateContent``) for gemini-cli; ``POST /v1/chat/completions`` for aider. It binds
127.0.0.1 only, and stops by itself after ``lifetime_s`` so it can never outlive a test;
past ``max_requests`` it answers 500 so a runaway agent loop ends quickly.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Protocol

SCENARIO_TAG = re.compile(r"\[\[scenario:([A-Za-z0-9_.-]+)\]\]")
_CWD_LINE = re.compile(r"Primary working directory: (\S+)")
DEFAULT_MODEL = "claude-sonnet-4-5"


# -- what a script answers -------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class ToolUse:
    name: str
    input: dict[str, Any]


Block = Text | ToolUse


@dataclass(frozen=True)
class Reply:
    """One assistant message. ``stop_reason`` follows from the blocks unless given."""

    blocks: tuple[Block, ...]
    stop_reason: str | None = None
    delay_s: float = 0.0  # wait before answering (for tests that watch a running agent)
    # The structured output of a final answer, when the CLI asked for one (Claude Code's
    # --json-schema offers a StructuredOutput tool); None: {"outcome": "done", ...}.
    verdict: dict[str, Any] | None = None

    @property
    def effective_stop_reason(self) -> str:
        if self.stop_reason:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass(frozen=True)
class Failure:
    """An API error: HTTP ``status`` with the Messages API's error body."""

    status: int
    error_type: str
    message: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Turn:
    """What a script sees of one request."""

    scenario: str
    index: int  # assistant messages since the tagged user message: 0 on the first call
    session: str  # Claude Code's session id, from its header ("" if absent)
    cwd: str  # the agent's working directory, from its system prompt ("" if absent)
    body: dict[str, Any]
    seen: int  # earlier requests for this scenario and session


Script = Callable[[Turn], Reply | Failure]


def say(text: str) -> Reply:
    return Reply((Text(text),))


STRUCTURED_TOOL = "StructuredOutput"  # the tool Claude Code adds for --json-schema


def verdict(outcome: str, summary: str) -> dict[str, Any]:
    """A structured verdict as gadugi's schema asks for it."""
    return {"outcome": outcome, "summary": summary}


def with_structured_output(reply: Reply, body: dict[str, Any]) -> Reply:
    """A final answer to a request that offers the StructuredOutput tool ends by calling it
    (as a model does when the CLI asks for structured output), with the reply's verdict."""
    offered = {t.get("name") for t in body.get("tools") or () if isinstance(t, dict)}
    if STRUCTURED_TOOL not in offered or any(isinstance(b, ToolUse) for b in reply.blocks):
        return reply
    said = " ".join(b.text for b in reply.blocks if isinstance(b, Text)) or "Done."
    call = ToolUse(STRUCTURED_TOOL, reply.verdict or verdict("done", said))
    return Reply((*reply.blocks, call), delay_s=reply.delay_s)


def bash(command: str, text: str = "", description: str = "Run a command") -> Reply:
    call = ToolUse("Bash", {"command": command, "description": description})
    return Reply((Text(text), call) if text else (call,))


# -- built-in scenarios ----------------------------------------------------------------

COMMIT_FILE = "hello.txt"
COMMIT_MESSAGE = "Add hello.txt"


def write_commit(turn: Turn) -> Reply:
    """Turn 1: write a file and commit it with Bash in the cwd. Turn 2: say it is done."""
    if turn.index == 0:
        return bash(
            f"printf 'hello from the agent\\n' > {COMMIT_FILE} && git add -A && "
            f"git commit -q -m '{COMMIT_MESSAGE}' && git log --oneline -1",
            text="I'll create the file and commit it.",
            description="Create and commit hello.txt",
        )
    return say(f"Done: committed {COMMIT_FILE}.")


def deny(turn: Turn) -> Reply:
    """Ask for a tool outside gadugi's default allowed tools, then give up politely.

    WebFetch needs a permission prompt under ``--permission-mode acceptEdits`` unless it
    is listed in ``--allowedTools``; with ``-p`` no prompt can be answered, so the CLI
    denies the call. The URL is loopback, should any setting ever let it through.
    """
    if turn.index == 0:
        return Reply((ToolUse("WebFetch", {"url": "http://127.0.0.1:9/", "prompt": "Summarise"}),))
    return say("I could not fetch the page.")


def overloaded_once(turn: Turn) -> Reply | Failure:
    """The first request of each session is refused with 529; after that, write_commit."""
    if turn.seen == 0:
        return Failure(529, "overloaded_error", "Overloaded")
    return write_commit(turn)


def unauthorized(turn: Turn) -> Failure:
    return Failure(401, "authentication_error", "invalid x-api-key")


def loop(turn: Turn) -> Reply:
    """Always one more tool call: only ``--max-turns`` (or the request budget) ends it."""
    return bash(f"echo turn {turn.index}", description=f"Turn {turn.index}")


def usage_limit(turn: Turn) -> Failure:
    """429 with the unified rate-limit headers a subscription's usage limit carries."""
    reset = int(time.time()) + 3600
    headers = (
        ("anthropic-ratelimit-unified-status", "rejected"),
        ("anthropic-ratelimit-unified-reset", str(reset)),
        ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
        ("retry-after", "3600"),
    )
    return Failure(429, "rate_limit_error", "usage limit reached", headers)


def text_only(turn: Turn) -> Reply:
    return say("Nothing to do.")


def overloaded(turn: Turn) -> Failure:
    """Always 503: the server is down for this scenario (retries do not help)."""
    return Failure(503, "overloaded_error", "Service Unavailable: fake overload")


def rate_limited(turn: Turn) -> Failure:
    """Always 429, without any reset time."""
    return Failure(429, "rate_limit_error", "Too many requests: fake rate limit")


SCENARIOS: dict[str, Script] = {
    "write_commit": write_commit,
    "deny": deny,
    "overloaded_once": overloaded_once,
    "unauthorized": unauthorized,
    "loop": loop,
    "usage_limit": usage_limit,
    "text_only": text_only,
    "overloaded": overloaded,
    "rate_limited": rate_limited,
}


# -- recording -------------------------------------------------------------------------


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    headers: dict[str, str]  # x-api-key and authorization redacted
    body: dict[str, Any] | None
    scenario: str | None
    turn: int | None
    status: int
    api: str | None = None  # "anthropic", "responses", "gemini" or "chat" for model calls


# -- other APIs ------------------------------------------------------------------------


class Api(Protocol):
    """What a sibling module provides to speak one more API (a module satisfies this)."""

    NAME: str

    def handles(self, path: str) -> bool: ...

    def call(
        self, server: ModelServer, path: str, headers: Mapping[str, str], body: dict[str, Any]
    ) -> tuple[str | None, int | None, Reply | Failure]:
        """The scenario, turn index and scripted answer of one request."""
        ...

    def error_body(self, failure: Failure) -> dict[str, Any]: ...

    def render(
        self, server: ModelServer, reply: Reply, path: str, body: dict[str, Any]
    ) -> tuple[str, bytes]:
        """The content type and payload that deliver ``reply``."""
        ...


def other_apis() -> list[Api]:
    # Imported here: those modules build on this one's script types.
    import chat_api
    import gemini_api
    import responses_api

    return [responses_api, gemini_api, chat_api]


# -- the server ------------------------------------------------------------------------


@dataclass
class ModelServer:
    """A scripted Messages API on 127.0.0.1; see the module docstring."""

    script: Mapping[str, Script] = field(default_factory=dict)
    usage: tuple[int, int] = (1000, 100)  # input and output tokens reported per answer
    lifetime_s: float = 120.0
    max_requests: int = 200
    requests: list[Recorded] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.scenarios: dict[str, Script] = {**SCENARIOS, **self.script}
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], int] = {}
        self._ids = itertools.count(1)
        self._httpd: ThreadingHTTPServer | None = None
        self._timer: threading.Timer | None = None

    # lifecycle

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        httpd.daemon_threads = True
        self._httpd = httpd
        threading.Thread(
            target=httpd.serve_forever, args=(0.05,), name="modelserver", daemon=True
        ).start()
        # A test that forgets to stop the server (or hangs) must not leave it running.
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if self._timer is not None:
            self._timer.cancel()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()

    @property
    def running(self) -> bool:
        return self._httpd is not None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "the server is not running"
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    # assertions

    def messages(self, scenario: str | None = None) -> list[Recorded]:
        """The recorded ``POST /v1/messages`` requests, optionally for one scenario."""
        with self._lock:
            found = [r for r in self.requests if r.path == "/v1/messages"]
        return [r for r in found if scenario is None or r.scenario == scenario]

    def count(self, scenario: str | None = None) -> int:
        return len(self.messages(scenario))

    def calls(self, scenario: str | None = None) -> list[Recorded]:
        """The model calls of any API (side requests included), optionally for one scenario."""
        with self._lock:
            found = [r for r in self.requests if r.api is not None]
        return [r for r in found if scenario is None or r.scenario == scenario]

    # answering (called from handler threads)

    def _record(self, rec: Recorded) -> int:
        with self._lock:
            self.requests.append(rec)
            return len(self.requests)

    def _answer(
        self, body: dict[str, Any], session: str
    ) -> tuple[str | None, int | None, Reply | Failure]:
        scenario, index = locate(body.get("messages", []))
        if not body.get("tools") or scenario is None:
            return None, None, say("ok")  # a side request: does not advance any script
        cwd = _CWD_LINE.search(_system_text(body))
        reply = self.play(scenario, index, session, cwd.group(1) if cwd else "", body)
        if isinstance(reply, Reply):
            reply = with_structured_output(reply, body)
        return scenario, index, reply

    def play(
        self, scenario: str, index: int, session: str, cwd: str, body: dict[str, Any]
    ) -> Reply | Failure:
        """The scripted answer to one request of ``scenario``, whatever the API."""
        script = self.scenarios.get(scenario)
        if script is None:
            return Failure(400, "invalid_request_error", f"unknown scenario {scenario!r}")
        with self._lock:
            seen = self._seen.get((scenario, session), 0)
            self._seen[(scenario, session)] = seen + 1
        return script(Turn(scenario, index, session, cwd, body, seen))

    def next_id(self) -> int:
        return next(self._ids)

    def _message(self, reply: Reply, model: str) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        for block in reply.blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            else:
                content.append(
                    {
                        "type": "tool_use",
                        "id": f"toolu_fake{next(self._ids):06d}",
                        "name": block.name,
                        "input": block.input,
                    }
                )
        return {
            "id": f"msg_fake{next(self._ids):06d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": reply.effective_stop_reason,
            "stop_sequence": None,
            "usage": {
                "input_tokens": self.usage[0],
                "output_tokens": self.usage[1],
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
            },
        }


def locate(messages: list[dict[str, Any]]) -> tuple[str | None, int]:
    """The scenario named in the last tagged user message, and the turn index after it.

    The last, not the first: a resumed session sends its history and then the prompt
    again, and the script should start over for that new prompt.
    """
    for i in range(len(messages) - 1, -1, -1):
        if messages[i].get("role") != "user":
            continue
        found = SCENARIO_TAG.search(_text_of(messages[i].get("content")))
        if found:
            later = messages[i + 1 :]
            return found.group(1), sum(1 for m in later if m.get("role") == "assistant")
    return None, 0


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return ""


def _system_text(body: dict[str, Any]) -> str:
    return _text_of(body.get("system"))


def sse_events(message: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """The streaming events that deliver ``message``, as (event name, data) pairs."""
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "usage": {**message["usage"], "output_tokens": 1},
    }
    yield "message_start", {"type": "message_start", "message": start}
    yield "ping", {"type": "ping"}
    for index, block in enumerate(message["content"]):
        if block["type"] == "text":
            opening: dict[str, Any] = {"type": "text", "text": ""}
            delta = {"type": "text_delta", "text": block["text"]}
        else:
            opening = {**block, "input": {}}
            delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
        yield (
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": opening},
        )
        yield "content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta}
        yield "content_block_stop", {"type": "content_block_stop", "index": index}
    yield (
        "message_delta",
        {
            "type": "message_delta",
            "delta": {"stop_reason": message["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": message["usage"]["output_tokens"]},
        },
    )
    yield "message_stop", {"type": "message_stop"}


def _handler_for(server: ModelServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as the CLI's HTTP client expects
        timeout = 30  # an idle keep-alive connection must not pin a thread forever

        def log_message(self, format: str, *args: Any) -> None:
            pass  # requests are recorded instead; stderr stays quiet under pytest

        def do_HEAD(self) -> None:
            self._record(None, None, None, 200)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_GET(self) -> None:
            if self._path() == "/v1/models":
                self._record(None, None, None, 200)
                models = [
                    {
                        "type": "model",
                        "id": m,
                        "display_name": m,
                        "created_at": "2025-01-01T00:00:00Z",
                    }
                    for m in (DEFAULT_MODEL, "claude-opus-4-1", "claude-haiku-4-5")
                ]
                self._json(
                    200,
                    {
                        "data": models,
                        "has_more": False,
                        "first_id": models[0]["id"],
                        "last_id": models[-1]["id"],
                    },
                )
            else:
                self._not_found(None)

        def do_POST(self) -> None:
            body = self._body()
            path = self._path()
            if path == "/v1/messages/count_tokens":
                self._record(body, None, None, 200)
                self._json(200, {"input_tokens": server.usage[0]})
            elif path == "/v1/messages":
                self._messages(body or {})
            else:
                api = next((a for a in other_apis() if a.handles(path)), None)
                if api is None:
                    self._not_found(body)
                else:
                    self._other(api, path, body or {})

        def _other(self, api: Api, path: str, body: dict[str, Any]) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            scenario, index, reply = api.call(server, path, headers, body)
            status = reply.status if isinstance(reply, Failure) else 200
            number = self._record(body, scenario, index, status, api.NAME)
            if number > server.max_requests:
                reply = Failure(500, "api_error", f"request budget of {server.max_requests} spent")
            if isinstance(reply, Failure):
                self._json(reply.status, api.error_body(reply), reply.headers)
                return
            time.sleep(reply.delay_s)
            content_type, data = api.render(server, reply, path, body)
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _messages(self, body: dict[str, Any]) -> None:
            session = self.headers.get("X-Claude-Code-Session-Id", "")
            scenario, index, reply = server._answer(body, session)
            status = reply.status if isinstance(reply, Failure) else 200
            number = self._record(body, scenario, index, status, "anthropic")
            if number > server.max_requests:
                reply = Failure(500, "api_error", f"request budget of {server.max_requests} spent")
            if isinstance(reply, Failure):
                error = {
                    "type": "error",
                    "error": {"type": reply.error_type, "message": reply.message},
                }
                self._json(reply.status, error, reply.headers)
                return
            time.sleep(reply.delay_s)
            message = server._message(reply, str(body.get("model") or DEFAULT_MODEL))
            if not body.get("stream"):
                self._json(200, message)
                return
            stream = "".join(
                f"event: {name}\ndata: {json.dumps(data)}\n\n" for name, data in sse_events(message)
            ).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("request-id", f"req_fake{number:06d}")
            self.send_header("Content-Length", str(len(stream)))
            self.end_headers()
            self.wfile.write(stream)

        def _path(self) -> str:
            return self.path.split("?", 1)[0]

        def _body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            try:
                parsed = json.loads(raw) if raw else None
            except ValueError:
                return None
            return parsed if isinstance(parsed, dict) else None

        def _record(
            self,
            body: dict[str, Any] | None,
            scenario: str | None,
            turn: int | None,
            status: int,
            api: str | None = None,
        ) -> int:
            secret = {"x-api-key", "authorization", "x-goog-api-key"}
            headers = {
                k.lower(): ("<redacted>" if k.lower() in secret else v)
                for k, v in self.headers.items()
            }
            return server._record(
                Recorded(self.command, self._path(), headers, body, scenario, turn, status, api)
            )

        def _not_found(self, body: dict[str, Any] | None) -> None:
            self._record(body, None, None, 404)
            self._json(
                404, {"type": "error", "error": {"type": "not_found_error", "message": self.path}}
            )

        def _json(
            self, status: int, payload: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
        ) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("request-id", "req_fake")
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler

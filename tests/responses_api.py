"""The OpenAI Responses API subset the Codex CLI uses, for tests/modelserver.py.

Codex sends ``POST /v1/responses`` with ``stream: true`` and reads SSE events:
``response.created``, ``response.in_progress``, per output item ``output_item.added`` then
its deltas then ``output_item.done``, and finally ``response.completed`` carrying the whole
response with its ``usage``. A script's ``Bash`` call becomes Codex's ``exec_command``
function call (``{"cmd": ...}``), which runs in the CLI's working directory.

The scenario comes from the last user message with a ``[[scenario:NAME]]`` tag, and the
turn index from the number of model turns after it (a turn is a run of consecutive
model-made items: reasoning, messages and tool calls, up to the next tool output).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from modelserver import SCENARIO_TAG, Failure, ModelServer, Reply, Text, ToolUse, say

NAME = "responses"
_CWD = re.compile(r"<cwd>([^<]+)</cwd>")
_MODEL_ITEMS = frozenset(
    {"reasoning", "function_call", "custom_tool_call", "local_shell_call", "web_search_call"}
)
# A script's tool calls as Codex's own tools.
TOOLS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "Bash": ("exec_command", lambda i: {"cmd": i["command"], "yield_time_ms": 10_000}),
}


def handles(path: str) -> bool:
    return path == "/v1/responses"


def call(
    server: ModelServer, path: str, headers: Mapping[str, str], body: dict[str, Any]
) -> tuple[str | None, int | None, Reply | Failure]:
    items = body.get("input")
    items = items if isinstance(items, list) else []
    scenario, index = locate(items)
    if not body.get("tools") or scenario is None:
        return None, None, say("ok")  # a side request: does not advance any script
    session = headers.get("session_id") or headers.get("conversation_id") or ""
    cwd = _CWD.search("\n".join(_text(i) for i in items))
    reply = server.play(scenario, index, session, cwd.group(1) if cwd else "", body)
    return scenario, index, shaped(reply, body) if isinstance(reply, Reply) else reply


def shaped(reply: Reply, body: dict[str, Any]) -> Reply:
    """A final answer to a request whose ``text.format`` is a JSON Schema (Codex's
    --output-schema) is that JSON, as a model constrained to it answers: the reply's
    verdict, or done with its text as the summary."""
    text = body.get("text")
    form = text.get("format") if isinstance(text, dict) else None
    if not isinstance(form, dict) or form.get("type") != "json_schema":
        return reply
    if any(isinstance(b, ToolUse) for b in reply.blocks):
        return reply
    said = " ".join(b.text for b in reply.blocks if isinstance(b, Text)) or "Done."
    answer = reply.verdict or {"outcome": "done", "summary": said}
    return Reply((Text(json.dumps(answer)),), delay_s=reply.delay_s)


def locate(items: list[Any]) -> tuple[str | None, int]:
    """The scenario of the last tagged user message, and the model turns after it."""
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        if not (isinstance(item, dict) and item.get("role") == "user"):
            continue
        found = SCENARIO_TAG.search(_text(item))
        if found:
            turns, inside = 0, False
            for later in items[i + 1 :]:
                made = isinstance(later, dict) and _by_model(later)
                turns += made and not inside
                inside = made
            return found.group(1), turns
    return None, 0


def _by_model(item: dict[str, Any]) -> bool:
    if item.get("type") == "message":
        return item.get("role") == "assistant"
    return item.get("type") in _MODEL_ITEMS


def _text(item: Any) -> str:
    if not isinstance(item, dict):
        return ""
    content = item.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
    return ""


def error_body(failure: Failure) -> dict[str, Any]:
    return {
        "error": {
            "message": failure.message,
            "type": failure.error_type,
            "param": None,
            "code": failure.error_type,
        }
    }


def output_items(server: ModelServer, reply: Reply) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for block in reply.blocks:
        n = server.next_id()
        if isinstance(block, Text):
            items.append(
                {
                    "id": f"msg_fake{n:06d}",
                    "type": "message",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": block.text, "annotations": []}],
                }
            )
        else:
            items.append(_function_call(block, n))
    return items


def _function_call(block: ToolUse, n: int) -> dict[str, Any]:
    name, convert = TOOLS.get(block.name, (block.name, dict))
    return {
        "id": f"fc_fake{n:06d}",
        "type": "function_call",
        "status": "completed",
        "call_id": f"call_fake{n:06d}",
        "name": name,
        "arguments": json.dumps(convert(block.input)),
    }


def render(server: ModelServer, reply: Reply, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    items = output_items(server, reply)
    response = {
        "id": f"resp_fake{server.next_id():06d}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "model": str(body.get("model") or "gpt-5.5"),
        "output": items,
        "usage": {
            "input_tokens": server.usage[0],
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": server.usage[1],
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": sum(server.usage),
        },
    }
    if not body.get("stream"):
        return "application/json", json.dumps(response).encode()
    stream = "".join(
        f"event: {data['type']}\ndata: {json.dumps({**data, 'sequence_number': n})}\n\n"
        for n, data in enumerate(sse_events(response))
    )
    return "text/event-stream", stream.encode()


def sse_events(response: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The streaming events that deliver a completed ``response``."""
    opening = {**response, "status": "in_progress", "output": [], "usage": None}
    yield {"type": "response.created", "response": opening}
    yield {"type": "response.in_progress", "response": opening}
    for index, item in enumerate(response["output"]):
        where = {"item_id": item["id"], "output_index": index}
        if item["type"] == "message":
            yield {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "status": "in_progress", "content": []},
            }
            text = item["content"][0]["text"]
            empty = {"type": "output_text", "text": "", "annotations": []}
            yield {
                "type": "response.content_part.added",
                **where,
                "content_index": 0,
                "part": empty,
            }
            yield {"type": "response.output_text.delta", **where, "content_index": 0, "delta": text}
            yield {"type": "response.output_text.done", **where, "content_index": 0, "text": text}
            part = item["content"][0]
            yield {"type": "response.content_part.done", **where, "content_index": 0, "part": part}
        else:
            yield {
                "type": "response.output_item.added",
                "output_index": index,
                "item": {**item, "status": "in_progress", "arguments": ""},
            }
            arguments = item["arguments"]
            yield {"type": "response.function_call_arguments.delta", **where, "delta": arguments}
            yield {"type": "response.function_call_arguments.done", **where, "arguments": arguments}
        yield {"type": "response.output_item.done", "output_index": index, "item": item}
    yield {"type": "response.completed", "response": response}

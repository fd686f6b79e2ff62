"""The OpenAI Chat Completions subset aider uses, for tests/modelserver.py.

aider sends ``POST /v1/chat/completions`` (streamed ``chat.completion.chunk`` lines ending
with ``data: [DONE]``, or one ``chat.completion`` with ``--no-stream``). It uses no tool
calls: its edits are SEARCH/REPLACE blocks in the text, so its scripts answer with text
(see ``edit_block``). Its first request carries few-shot example turns before the real
prompt, which is why the turn index counts from the last tagged user message. The
request for a commit message (its system prompt asks for one) is a side request.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from modelserver import Failure, ModelServer, Reply, Text, locate, say

NAME = "chat"


def edit_block(path: str, new_text: str, old_text: str = "") -> str:
    """An aider edit: an empty SEARCH part creates the file."""
    return f"{path}\n```\n<<<<<<< SEARCH\n{old_text}=======\n{new_text}>>>>>>> REPLACE\n```\n"


def handles(path: str) -> bool:
    return path == "/v1/chat/completions"


def call(
    server: ModelServer, path: str, headers: Mapping[str, str], body: dict[str, Any]
) -> tuple[str | None, int | None, Reply | Failure]:
    messages = body.get("messages")
    messages = messages if isinstance(messages, list) else []
    system = " ".join(
        str(m.get("content")) for m in messages if isinstance(m, dict) and m.get("role") == "system"
    )
    if "commit message" in system.lower():
        return None, None, say("fake: agent changes")
    scenario, index = locate(messages)
    if scenario is None:
        return None, None, say("ok")
    return scenario, index, server.play(scenario, index, "", "", body)


def error_body(failure: Failure) -> dict[str, Any]:
    return {
        "error": {
            "message": failure.message,
            "type": failure.error_type,
            "param": None,
            "code": failure.error_type,
        }
    }


def render(server: ModelServer, reply: Reply, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    text = "".join(b.text for b in reply.blocks if isinstance(b, Text))
    ident = f"chatcmpl-fake{server.next_id():06d}"
    model = str(body.get("model") or "fake-model")
    usage = {
        "prompt_tokens": server.usage[0],
        "completion_tokens": server.usage[1],
        "total_tokens": sum(server.usage),
    }
    base = {"id": ident, "created": int(time.time()), "model": model}
    if not body.get("stream"):
        message = {"role": "assistant", "content": text}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        answer = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        return "application/json", json.dumps(answer).encode()
    chunks = [
        {"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None},
        {"index": 0, "delta": {}, "finish_reason": "stop"},
    ]
    lines = [{**base, "object": "chat.completion.chunk", "choices": [c]} for c in chunks] + [
        {**base, "object": "chat.completion.chunk", "choices": [], "usage": usage}
    ]
    stream = "".join(f"data: {json.dumps(line)}\n\n" for line in lines) + "data: [DONE]\n\n"
    return "text/event-stream", stream.encode()

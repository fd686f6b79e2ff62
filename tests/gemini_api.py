"""The Gemini API subset gemini-cli uses, for tests/modelserver.py.

gemini-cli sends ``POST /v1beta/models/<model>:streamGenerateContent?alt=sse`` for agent
turns (one ``data:`` event carrying the whole candidate is enough), ``:generateContent``
for side requests (JSON answers shaped by a ``responseJsonSchema``, e.g. the model router
or the next-speaker check) and ``:countTokens``. A script's ``Bash`` call becomes
gemini-cli's ``run_shell_command``, which runs in the CLI's working directory.

The scenario comes from the last user content with a ``[[scenario:NAME]]`` tag, and the
turn index from the number of ``model`` contents after it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from modelserver import SCENARIO_TAG, Block, Failure, ModelServer, Reply, Text, say

NAME = "gemini"
_PATH = re.compile(r"^/v1(?:beta|alpha)?/models/([^:/]+):(\w+)$")
_CWD = re.compile(r"working directory:?\s+['\"]?(/\S+?)['\"]?[\s.]", re.IGNORECASE)
STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
}
TOOLS: dict[str, tuple[str, Callable[[dict[str, Any]], dict[str, Any]]]] = {
    "Bash": (
        "run_shell_command",
        lambda i: {"command": i["command"], "description": i.get("description", "")},
    ),
}


def handles(path: str) -> bool:
    return _PATH.match(path) is not None


def call(
    server: ModelServer, path: str, headers: Mapping[str, str], body: dict[str, Any]
) -> tuple[str | None, int | None, Reply | Failure]:
    contents = body.get("contents")
    contents = contents if isinstance(contents, list) else []
    scenario, index = locate(contents)
    if not body.get("tools") or scenario is None or not path.endswith("GenerateContent"):
        return None, None, say("ok")  # a side request: does not advance any script
    cwd = _CWD.search("\n".join(_text(c) for c in contents))
    session = headers.get("x-gemini-session-id", "")
    return scenario, index, server.play(scenario, index, session, cwd.group(1) if cwd else "", body)


def locate(contents: list[Any]) -> tuple[str | None, int]:
    """The scenario of the last tagged user content, and the model turns after it."""
    for i in range(len(contents) - 1, -1, -1):
        content = contents[i]
        if not (isinstance(content, dict) and content.get("role") == "user"):
            continue
        found = SCENARIO_TAG.search(_text(content))
        if found:
            later = contents[i + 1 :]
            return found.group(1), sum(
                1 for c in later if isinstance(c, dict) and c.get("role") == "model"
            )
    return None, 0


def _text(content: Any) -> str:
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "\n".join(str(p.get("text", "")) for p in parts if isinstance(p, dict))


def error_body(failure: Failure) -> dict[str, Any]:
    return {
        "error": {
            "code": failure.status,
            "message": failure.message,
            "status": STATUS_NAMES.get(failure.status, "UNKNOWN"),
        }
    }


def render(server: ModelServer, reply: Reply, path: str, body: dict[str, Any]) -> tuple[str, bytes]:
    match = _PATH.match(path)
    model, method = match.groups() if match else ("gemini-2.5-pro", "generateContent")
    usage = {
        "promptTokenCount": server.usage[0],
        "candidatesTokenCount": server.usage[1],
        "totalTokenCount": sum(server.usage),
    }
    if method == "countTokens":
        return "application/json", json.dumps({"totalTokens": server.usage[0]}).encode()
    config = body.get("generationConfig")
    config = config if isinstance(config, dict) else {}
    schema = config.get("responseJsonSchema") or config.get("responseSchema")
    if config.get("responseMimeType") == "application/json" and isinstance(schema, dict):
        parts: list[dict[str, Any]] = [{"text": json.dumps(fill(schema))}]
    else:
        parts = [_part(server, block) for block in reply.blocks]
    answer = {
        "candidates": [
            {"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}
        ],
        "usageMetadata": usage,
        "modelVersion": model,
        "responseId": f"fake{server.next_id():06d}",
    }
    if method == "streamGenerateContent":
        return "text/event-stream", f"data: {json.dumps(answer)}\n\n".encode()
    return "application/json", json.dumps(answer).encode()


def _part(server: ModelServer, block: Block) -> dict[str, Any]:
    if isinstance(block, Text):
        return {"text": block.text}
    name, convert = TOOLS.get(block.name, (block.name, dict))
    call = {"name": name, "args": convert(block.input), "id": f"call_fake{server.next_id():06d}"}
    return {"functionCall": call}


def fill(schema: dict[str, Any]) -> Any:
    """A small value that satisfies ``schema`` (the first enum value, minimum numbers)."""
    if schema.get("enum"):
        return schema["enum"][0]
    kind = str(schema.get("type", "object")).lower()
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        return {k: fill(v) for k, v in properties.items() if isinstance(v, dict)}
    if kind in ("integer", "number"):
        return max(1, int(schema.get("minimum", 1)))
    if kind == "boolean":
        return False
    if kind == "array":
        return []
    return "ok"

"""Reading prompt files: optional YAML front matter, the body, a title, a safe id."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

from .errors import PromptError
from .tasks import Prompt

MAX_PROMPT_BYTES = 1_000_000
MAX_ID_LENGTH = 64
_FRONT_MATTER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*\r?$\n?", re.DOTALL | re.MULTILINE)
_HEADING = re.compile(r"^#[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_UNSAFE = re.compile(r"[^a-z0-9._-]+")

KNOWN_KEYS = frozenset(
    {
        "id",
        "title",
        "depends_on",
        "touches",
        "priority",
        "timeout_minutes",
        "retries",
        "agent",
        "type",
        "estimate_minutes",
        "memory_limit_mb",
        "open_files_limit",
    }
)
TASK_TYPES = ("feature", "bug fix", "tests", "docs", "refactor", "config")


def safe_id(raw: str) -> str:
    """Lower-case ``raw`` and keep ``[a-z0-9._-]``; never empty, never dot-led."""
    text = _UNSAFE.sub("-", raw.lower()).strip("-.")
    # Runs of dots or dashes collapse, so an id is always a valid part of a branch name.
    text = re.sub(r"\.{2,}", ".", re.sub(r"-{2,}", "-", text))[:MAX_ID_LENGTH].strip("-.")
    return text or "task"


def read_prompt(path: Path, project_root: Path) -> Prompt:
    """Read one prompt file; invalid front matter raises PromptError naming the key."""
    rel = path.relative_to(project_root).as_posix()
    try:
        size = path.stat().st_size
        if size > MAX_PROMPT_BYTES:
            raise PromptError(rel, f"is {size} bytes; prompts are limited to {MAX_PROMPT_BYTES}")
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise PromptError(rel, f"is not UTF-8 text ({exc.reason})") from exc
    except OSError as exc:
        raise PromptError(rel, exc.strerror or str(exc)) from exc
    meta, body = split_front_matter(text, rel)
    fields = _validate(meta, rel)
    title = fields.pop("title", None) or _first_heading(body) or path.stem
    task_id = safe_id(fields.pop("id", None) or path.stem)
    return Prompt(
        path=path, rel_path=rel, task_id=task_id, title=title, body=body, text=text, **fields
    )


def split_front_matter(text: str, rel: str) -> tuple[dict[str, Any], str]:
    match = _FRONT_MATTER.match(text)
    if not match:
        return {}, text
    import yaml  # only prompts that have front matter need the parser

    try:
        meta = yaml.safe_load(match.group(1))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 2})" if mark is not None else ""
        raise PromptError(rel, f"front matter is not valid YAML{where}") from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise PromptError(rel, "front matter must be a mapping of keys to values")
    return meta, text[match.end() :]


def _first_heading(body: str) -> str | None:
    match = _HEADING.search(body)
    return match.group(1).strip() if match else None


def _validate(meta: dict[str, Any], rel: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in meta.items():
        if not isinstance(key, str) or key not in KNOWN_KEYS:
            known = ", ".join(sorted(KNOWN_KEYS))
            raise PromptError(rel, f"unknown key (known keys: {known})", key=str(key))
        out[key] = _check(key, value, rel)
    return out


def _check(key: str, value: Any, rel: str) -> Any:
    def bad(reason: str) -> PromptError:
        return PromptError(rel, reason, key=key)

    if key in ("id", "title", "agent", "type"):
        if not isinstance(value, str) or not value.strip():
            raise bad("must be a non-empty string")
        if len(value) > 200:
            raise bad("must be at most 200 characters")
        if key == "type" and value not in TASK_TYPES:
            raise bad(f"must be one of: {', '.join(TASK_TYPES)}")
        return value.strip()
    if key in ("depends_on", "touches"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise bad("must be a string or a list of non-empty strings")
        if len(items) > 1000:
            raise bad("has more than 1000 entries")
        return tuple(items)
    if key in ("memory_limit_mb", "open_files_limit"):
        if isinstance(value, bool) or not isinstance(value, int) or value < 16:
            raise bad("must be an integer of at least 16")
        return value
    if key in ("priority", "retries"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad("must be an integer")
        if key == "retries" and not 0 <= value <= 100:
            raise bad("must be between 0 and 100")
        return value
    # timeout_minutes, estimate_minutes
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise bad("must be a positive number of minutes")
    return float(value)


def unique_ids(prompts: Iterable[Prompt]) -> list[Prompt]:
    """Give duplicate ids the suffixes ``-2``, ``-3``… in request order."""
    seen: set[str] = set()
    out: list[Prompt] = []
    for prompt in prompts:
        candidate, n = prompt.task_id, 1
        while candidate in seen:
            n += 1
            candidate = f"{prompt.task_id}-{n}"
        seen.add(candidate)
        out.append(prompt if candidate == prompt.task_id else replace(prompt, task_id=candidate))
    return out

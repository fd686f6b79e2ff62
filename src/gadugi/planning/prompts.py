"""Reading prompt files: optional YAML front matter, the body, a title, a safe id."""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import (
    AGENTS,
    MAX_BUDGET_USD,
    MAX_COMMAND_LENGTH,
    MAX_TIMEOUT_HOURS,
    MIN_RESOURCE_LIMIT,
    limit_ceiling,
    within,
)
from ..errors import PromptError
from ..tasks import Prompt

if TYPE_CHECKING:
    import yaml

MAX_PROMPT_BYTES = 1_000_000
MAX_ID_LENGTH = 64
MAX_PRIORITY = 10**6  # SQLite stores 64-bit integers; an order needs far fewer
MAX_MINUTES = MAX_TIMEOUT_HOURS * 60
MAX_DEPTH = 64  # PyYAML composes nodes recursively; deeper input would hit the recursion limit
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
        "setup",
        "verify",
        "max_cost_usd",
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
        meta = yaml.load(match.group(1), Loader=_loader())  # noqa: S506 (a SafeLoader)
    except _Refused as exc:
        raise PromptError(rel, f"{exc.reason}{_line(exc.mark)}", key=exc.key) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise PromptError(rel, f"front matter is not valid YAML{_line(mark)}") from exc
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise PromptError(rel, "front matter must be a mapping of keys to values")
    return meta, text[match.end() :]


def _line(mark: yaml.Mark | None) -> str:
    # The front matter starts on the file's second line, after its "---".
    return f" (line {mark.line + 2})" if mark is not None else ""


class _Refused(Exception):
    """Front matter that parses but is refused: a duplicate key, too deep a nesting."""

    def __init__(self, key: str | None, reason: str, mark: yaml.Mark | None) -> None:
        super().__init__(reason)
        self.key, self.reason, self.mark = key, reason, mark


@functools.cache
def _loader() -> type[yaml.SafeLoader]:
    import yaml

    class Loader(yaml.SafeLoader):
        """SafeLoader that refuses duplicate keys (PyYAML keeps the last one silently) and
        nesting deeper than MAX_DEPTH (instead of a RecursionError)."""

        depth = 0

        def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
            self.depth += 1
            try:
                if self.depth > MAX_DEPTH:
                    mark = parent.start_mark if parent is not None else None
                    raise _Refused(
                        None, f"front matter is nested more than {MAX_DEPTH} levels deep", mark
                    )
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
            seen: set[Any] = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue  # "<<: *base" then a key of its own overrides it on purpose
                key = self.construct_object(key_node, deep=True)
                try:
                    again = key in seen
                except TypeError:
                    continue  # an unhashable key: the base class refuses it
                if again:
                    raise _Refused(
                        str(key), "duplicate key in the front matter", key_node.start_mark
                    )
                seen.add(key)
            return super().construct_mapping(node, deep)

    return Loader


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
        if "\0" in value:
            raise bad("must not contain a NUL byte")
        if key == "type" and value not in TASK_TYPES:
            raise bad(f"must be one of: {', '.join(TASK_TYPES)}")
        if key == "agent" and value.strip() not in AGENTS:
            raise bad(f"unknown agent {value!r} (known: {', '.join(AGENTS)})")
        return value.strip()
    if key in ("setup", "verify"):
        if not isinstance(value, str) or not value.strip():
            raise bad("must be a non-empty shell command")
        if len(value) > MAX_COMMAND_LENGTH or "\0" in value:
            raise bad(f"must be at most {MAX_COMMAND_LENGTH} characters, without a NUL byte")
        return value.strip()
    if key in ("depends_on", "touches"):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(i, str) and i for i in items):
            raise bad("must be a string or a list of non-empty strings")
        if len(items) > 1000:
            raise bad("has more than 1000 entries")
        if any("\0" in i for i in items):
            raise bad("must not contain a NUL byte")
        return tuple(items)
    if key in ("memory_limit_mb", "open_files_limit"):
        ceiling, what = limit_ceiling(key)
        if not _integer(value) or not MIN_RESOURCE_LIMIT <= value <= ceiling:
            raise bad(f"must be an integer between {MIN_RESOURCE_LIMIT} and {ceiling} ({what})")
        return value
    if key == "priority":
        if not _integer(value) or not -MAX_PRIORITY <= value <= MAX_PRIORITY:
            raise bad(f"must be an integer between {-MAX_PRIORITY} and {MAX_PRIORITY}")
        return value
    if key == "max_cost_usd":
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not (number and value > 0 and within(value, 0, MAX_BUDGET_USD)):
            raise bad(f"must be a number of US dollars more than 0 and at most {MAX_BUDGET_USD:g}")
        return float(value)
    if key == "retries":
        if not _integer(value) or not 0 <= value <= 100:
            raise bad("must be an integer between 0 and 100")
        return value
    # timeout_minutes, estimate_minutes
    number = isinstance(value, int | float) and not isinstance(value, bool)
    if not (number and value > 0 and within(value, 0, MAX_MINUTES)):
        raise bad(f"must be a number of minutes more than 0 and at most {MAX_MINUTES}")
    return float(value)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


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

"""The prompt each agent receives: the task's own text inside a workflow template.

A project may replace the template with ``.gadugi/templates/workflow.md``. Placeholders
are written ``{name}``; literal braces are doubled (``{{`` and ``}}``). A template that
names an unknown placeholder, or gives one a format spec or conversion (``{task_id:d}``,
``{title!r}``), is refused before anything starts.
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .errors import ConfigError

PLACEHOLDERS = (
    "task_id",
    "title",
    "branch",
    "worktree",
    "orchestration_id",
    "source_prompt",
    "footprint",
    "depends_on",
    "prompt_text",
)
PROJECT_TEMPLATE = Path(".gadugi/templates/workflow.md")
MAX_TEMPLATE_BYTES = 200_000


@dataclass(frozen=True)
class Template:
    text: str
    source: str

    def render(self, **values: str) -> str:
        return self.text.format_map(values)


def load_template(project_root: Path) -> Template:
    path = project_root / PROJECT_TEMPLATE
    if path.is_file():
        source = PROJECT_TEMPLATE.as_posix()
        if path.stat().st_size > MAX_TEMPLATE_BYTES:
            raise ConfigError("template", f"larger than {MAX_TEMPLATE_BYTES} bytes", source)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as exc:
            raise ConfigError("template", "is not UTF-8 text", source) from exc
    else:
        source = "built-in workflow template"
        text = resources.files("gadugi").joinpath("templates/workflow.md").read_text("utf-8")
    check_template(text, source)
    return Template(text, source)


def check_template(text: str, source: str) -> None:
    """Refuse a template that could fail when a task's prompt is rendered."""
    if "\0" in text:
        raise ConfigError("template", "contains a NUL byte", source)
    check_placeholders(text, PLACEHOLDERS, "template", source)
    Template(text, source).render(**{p: p for p in PLACEHOLDERS})


def check_placeholders(text: str, known: Sequence[str], key: str, source: str = "") -> None:
    """Every placeholder in ``text`` is a bare ``{name}`` from ``known``; ConfigError names it.

    The values are paths, ids and prose: a spec such as ``{task_id:d}`` or a conversion
    such as ``{title!z}`` would fail only when a task's prompt is filled in, after its
    worktree exists, so neither is allowed.
    """
    try:
        parsed = list(string.Formatter().parse(text))
    except ValueError as exc:
        shown = text if len(text) <= 60 else f"{text[:57]}..."
        raise ConfigError(
            key, f"{shown!r}: {exc} (write literal braces as {{{{ and }}}})", source
        ) from exc
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        shown = (
            "{"
            + name
            + (f"!{conversion}" if conversion else "")
            + (f":{spec}" if spec else "")
            + "}"
        )
        if name not in known:
            names = ", ".join("{" + p + "}" for p in known)
            raise ConfigError(key, f"unknown placeholder {shown} (known: {names})", source)
        if spec or conversion:
            raise ConfigError(
                key, f"placeholder {shown} takes no format spec or conversion", source
            )

"""The prompt each agent receives: the task's own text inside a workflow template.

A project may replace the template with ``.gadugi/templates/workflow.md``. Placeholders
are written ``{name}``; literal braces are doubled (``{{`` and ``}}``). A template that
names an unknown placeholder is refused before anything starts.
"""

from __future__ import annotations

import string
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
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ConfigError(
            "template", f"{exc} (write literal braces as {{{{ and }}}})", source
        ) from exc
    for name in fields:
        if name not in PLACEHOLDERS:
            known = ", ".join("{" + p + "}" for p in PLACEHOLDERS)
            raise ConfigError(
                "template", f"unknown placeholder {{{name}}} (known: {known})", source
            )

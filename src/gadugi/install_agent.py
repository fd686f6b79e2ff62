"""``gadugi install-agent``: the Claude Code subagent that hands requests to ``gadugi run``.

It writes ``.claude/agents/orchestrator-agent.md`` into a project. The file carries, as a
YAML comment in its front matter, the SHA-256 of everything else in it, as gadugi wrote
it. So a later install can tell a file nobody touched (refreshed to the current text)
from one the user changed (left alone unless ``--force``), without any state outside the
file: the check travels with the file into every clone.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path

from .errors import GadugiError

AGENT_FILE = Path(".claude/agents/orchestrator-agent.md")
_MARKER = (
    "# gadugi: sha256={digest} (written by `gadugi install-agent`; kept up to date while unchanged)"
)
_MARKER_LINE = re.compile(r"^# gadugi: sha256=([0-9a-f]{64})\b.*\n", re.MULTILINE)


class AgentFileChanged(GadugiError):
    """The subagent file exists and is not what gadugi wrote: it is left alone."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} {reason}; it was left as it is. Run `gadugi install-agent --force` to "
            "replace it (your version is then lost: copy it first if you want to keep it)."
        )
        self.path = path


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"  # gadugi's earlier text, unchanged by the user, refreshed
    UNCHANGED = "unchanged"  # already the current text
    REPLACED = "replaced"  # a changed file overwritten with --force


@dataclass(frozen=True)
class Installed:
    path: Path
    action: Action


def render(command: str = "gadugi") -> str:
    """The subagent file as gadugi writes it, marker included."""
    template = resources.files("gadugi").joinpath("templates/orchestrator-agent.md")
    text = template.read_text("utf-8").replace("@GADUGI@", command)
    body = text.replace("@MARKER@\n", "")
    return text.replace("@MARKER@", _MARKER.format(digest=_digest(body)))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def written_by_gadugi(text: str) -> bool:
    """True when ``text`` is exactly what some gadugi wrote: its marker matches the rest."""
    found = _MARKER_LINE.search(text)
    if found is None:
        return False
    rest = text[: found.start()] + text[found.end() :]
    return found.group(1) == _digest(rest)


def install(root: Path, *, force: bool = False, command: str = "gadugi") -> Installed:
    """Write (or refresh) the subagent file in the project at ``root``."""
    path = root / AGENT_FILE
    wanted = render(command)
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        if not force:
            raise AgentFileChanged(path, f"cannot be read ({exc})") from exc
        current = ""
    if current == wanted:
        return Installed(path, Action.UNCHANGED)
    if current is None:
        action = Action.CREATED
    elif written_by_gadugi(current):
        action = Action.UPDATED
    elif force:
        action = Action.REPLACED
    else:
        why = (
            "was changed since gadugi wrote it"
            if _MARKER_LINE.search(current)
            else "was not written by gadugi"
        )
        raise AgentFileChanged(path, why)
    _write_atomic(path, wanted)
    return Installed(path, action)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise

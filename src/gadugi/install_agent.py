"""``gadugi install-agent``: what makes ``/agent:orchestrator-agent`` work in Claude Code.

Two files go into a project's ``.claude/`` (or, with ``--user``, into Claude Code's own
folder, ``$CLAUDE_CONFIG_DIR`` or ``~/.claude``, for every project):

- ``commands/agent/orchestrator-agent.md``: the project command that the seed's message
  ``/agent:orchestrator-agent`` names (Claude Code 2.1.197 answers "Unknown command"
  without it; a subagent alone makes no slash command). The rest of the message reaches
  the model as the command's ``$ARGUMENTS``.
- ``agents/orchestrator-agent.md``: the subagent, for the same request in plain words.

Both tell the model to start gadugi detached and to ``gadugi wait`` in a loop, since a
Bash tool call ends after at most 10 minutes and takes its command down with it. They call
gadugi by the command that runs this very gadugi (its absolute path), checked to work
before anything is written. ``--allow`` adds the permission rule for that command to
``settings.local.json`` (headless Claude Code denies an unlisted Bash call and still ends
"success"); ``--layout`` adds the seed's ``.claude/orchestrator/`` launchers.

Every file carries, in a comment, the SHA-256 of everything else in it, as gadugi wrote it.
So a later install can tell a file nobody touched (refreshed to the current text) from one
the user changed (left alone unless ``--force``), without any state outside the file: the
check travels with the file into every clone.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from . import __version__
from .errors import GadugiError
from .files import write_text_atomic

AGENT_FILE = Path("agents/orchestrator-agent.md")  # inside a .claude folder
COMMAND_FILE = Path("commands/agent/orchestrator-agent.md")
PROJECT_SETTINGS = Path("settings.local.json")  # a project's own, not committed
USER_SETTINGS = Path("settings.json")
LAYOUT_DIR = Path(".claude/orchestrator")  # inside a project
LAUNCHERS = {
    "run_orchestrator.sh": 0o755,
    "orchestrator_cli.py": 0o755,
    "process_registry.py": 0o755,
    "orchestrator_main.py": 0o644,
}
CHECK_TIMEOUT_S = 30.0
_MARKER = (
    "# gadugi: sha256={digest} (written by `gadugi install-agent`; kept up to date while unchanged)"
)
_MARKER_LINE = re.compile(r"^# gadugi: sha256=([0-9a-f]{64})\b.*\n", re.MULTILINE)
_COMMAND_LINE = re.compile(r"^# gadugi command: (.+)$", re.MULTILINE)
_REQUEST = {
    "agent": "The request is the message that asked for you.",
    "command": "The request:\n\n$ARGUMENTS",
}


class AgentFileChanged(GadugiError):
    """A file to write exists and is not what gadugi wrote: it is left alone."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(
            f"{path} {reason}; it was left as it is. Run `gadugi install-agent --force` to "
            "replace it (your version is then lost: copy it first if you want to keep it)."
        )
        self.path = path


class CommandNotFound(GadugiError):
    """The command the files would call does not run gadugi."""

    exit_code = 2

    def __init__(self, command: str, reason: str) -> None:
        super().__init__(
            f"the installed files would call `{command}`, which {reason}; pass "
            "`--command` with the absolute path of gadugi (`command -v gadugi` in the shell "
            "where it works), or put the folder holding gadugi on PATH"
        )
        self.command = command
        self.reason = reason


class SettingsError(GadugiError):
    """The Claude Code settings file cannot take the permission rule."""

    exit_code = 2

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}; fix or move it, then run install-agent again")
        self.path = path


class Action(StrEnum):
    CREATED = "created"
    UPDATED = "updated"  # gadugi's earlier text, unchanged by the user, refreshed
    UNCHANGED = "unchanged"  # already the current text
    REPLACED = "replaced"  # a changed file overwritten with --force
    ALLOWED = "allowed"  # the permission rule added to a settings file


@dataclass(frozen=True)
class Installed:
    path: Path
    action: Action


# -- what gets written ------------------------------------------------------------------


def render(command: str = "gadugi", kind: str = "agent") -> str:
    """The subagent (``kind="agent"``) or command (``"command"``) file, marker included."""
    head = _template(f"orchestrator-{kind}.md")
    body = _template("orchestrator-instructions.md").replace("@REQUEST@", _REQUEST[kind])
    text = (head + body).replace("@ALLOWED@", json.dumps(permission_rule(command)))
    return _stamp(text.replace("@GADUGI@", command))


def render_launcher(name: str, command: str) -> str:
    """One of the seed's ``.claude/orchestrator/`` files, calling ``command``."""
    import gadugi

    text = _template(f"layout/{name}.in")
    text = text.replace("@ARGV@", repr(shlex.split(command)))
    text = text.replace("@SRC@", repr(str(Path(gadugi.__file__).resolve().parent.parent)))
    return _stamp(text.replace("@GADUGI@", command))


def permission_rule(command: str) -> str:
    """The Claude Code rule that lets Bash run every gadugi command without asking."""
    return f"Bash({command}:*)"


def _template(name: str) -> str:
    return resources.files("gadugi").joinpath(f"templates/{name}").read_text("utf-8")


def _stamp(text: str) -> str:
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


def installed_command(text: str) -> str | None:
    """The gadugi command an installed agent or command file calls."""
    found = _COMMAND_LINE.search(text)
    return found.group(1).strip() if found else None


# -- which gadugi -------------------------------------------------------------------------


def default_command() -> str:
    """The command that runs this very gadugi, by absolute paths."""
    script = Path(sys.argv[0])
    if script.name == "gadugi" and os.access(script, os.X_OK) and script.is_file():
        return shlex.quote(str(script.absolute()))
    return f"{shlex.quote(sys.executable)} -m gadugi"


def check_command(command: str, cwd: Path, environ: Mapping[str, str] | None = None) -> None:
    """Raise ``CommandNotFound`` unless ``command --version`` runs this version of gadugi."""
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise CommandNotFound(command, f"cannot be read as a command line ({exc})") from None
    if not argv:
        raise CommandNotFound(command, "is empty")
    env = dict(os.environ if environ is None else environ)
    program = argv[0]
    if "/" not in program:
        found = shutil.which(program, path=env.get("PATH"))
        if found is None:
            raise CommandNotFound(command, f"is not found: {program} is not on PATH")
    elif not os.access(cwd / program, os.X_OK):
        raise CommandNotFound(command, f"is not found: {program} is not an executable file")
    try:
        done = subprocess.run(
            [*argv, "--version"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHECK_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise CommandNotFound(command, f"cannot be run ({exc})") from None
    said = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if done.returncode != 0 or not said or not said[0].startswith("gadugi"):
        what = said[-1][:200] if said else "nothing"
        raise CommandNotFound(
            command, f"is not gadugi (`--version` exit {done.returncode}: {what})"
        )
    if __version__ not in said[0]:
        raise CommandNotFound(command, f"is another gadugi ({said[0]}, this is {__version__})")


# -- where it goes ------------------------------------------------------------------------


def claude_home(environ: Mapping[str, str] | None = None) -> Path:
    """Claude Code's own folder: ``$CLAUDE_CONFIG_DIR``, else ``~/.claude``."""
    env = os.environ if environ is None else environ
    configured = env.get("CLAUDE_CONFIG_DIR")
    return Path(configured) if configured else Path(env.get("HOME") or Path.home()) / ".claude"


def settings_files(root: Path | None, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Every settings file whose ``permissions.allow`` Claude Code reads for ``root``."""
    found = [claude_home(environ) / USER_SETTINGS]
    if root is not None:
        found += [root / ".claude" / "settings.json", root / ".claude" / PROJECT_SETTINGS]
    return found


def rule_present(path: Path, rule: str) -> bool:
    """Whether the settings file at ``path`` allows ``rule`` (or every Bash command)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    allowed = data.get("permissions", {}).get("allow", []) if isinstance(data, dict) else []
    return isinstance(allowed, list) and any(r in (rule, "Bash", "Bash(*)") for r in allowed)


# -- writing ------------------------------------------------------------------------------


def install(
    claude_dir: Path,
    command: str,
    *,
    force: bool = False,
    settings: Path | None = None,
    layout: Path | None = None,
) -> list[Installed]:
    """Write the command and the subagent into ``claude_dir`` (a ``.claude`` folder); with
    ``settings``, the permission rule into that file; with ``layout``, the seed's launchers
    into that folder. Every refusal comes before anything is written."""
    writes: list[tuple[Path, str, int, Action]] = []
    for kind, rel in (("command", COMMAND_FILE), ("agent", AGENT_FILE)):
        text = render(command, kind)
        writes.append((claude_dir / rel, text, 0o644, _decide(claude_dir / rel, text, force)))
    if layout is not None:
        for name, mode in LAUNCHERS.items():
            text = render_launcher(name, command)
            writes.append((layout / name, text, mode, _decide(layout / name, text, force)))
    if settings is not None:
        merged = _merge_rule(settings, permission_rule(command))
        if merged is not None:
            writes.append((settings, merged, 0o644, Action.ALLOWED))
        else:
            writes.append((settings, "", 0o644, Action.UNCHANGED))
    done = []
    for path, text, mode, action in writes:
        if action is not Action.UNCHANGED:
            write_text_atomic(path, text, mode)
        done.append(Installed(path, action))
    return done


def _decide(path: Path, wanted: str, force: bool) -> Action:
    try:
        current: str | None = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    except (OSError, UnicodeDecodeError) as exc:
        if not force:
            raise AgentFileChanged(path, f"cannot be read ({exc})") from exc
        current = ""
    if current == wanted:
        return Action.UNCHANGED
    if current is None:
        return Action.CREATED
    if written_by_gadugi(current):
        return Action.UPDATED
    if force:
        return Action.REPLACED
    why = (
        "was changed since gadugi wrote it"
        if _MARKER_LINE.search(current)
        else "was not written by gadugi"
    )
    raise AgentFileChanged(path, why)


def _merge_rule(path: Path, rule: str) -> str | None:
    """The settings file's text with ``rule`` added, or None when it is there already.

    Everything else in the file is kept; a file that is not a JSON object is an error,
    never a reason to start it afresh.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = ""
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(path, f"cannot be read ({exc})") from exc
    data: Any = {}
    if text.strip():
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SettingsError(path, f"is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise SettingsError(path, "is not a JSON object")
    permissions = data.setdefault("permissions", {})
    if not isinstance(permissions, dict):
        raise SettingsError(path, '"permissions" is not an object')
    allow = permissions.setdefault("allow", [])
    if not isinstance(allow, list):
        raise SettingsError(path, '"permissions.allow" is not a list')
    if rule in allow:
        return None
    allow.append(rule)
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"

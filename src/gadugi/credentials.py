"""Whether an agent CLI has something to authenticate with, seen without a network call.

Each CLI takes a key from its environment, or a login it stored in its own folder; this
looks for those where each CLI looks (its folder moved by ``CLAUDE_CONFIG_DIR``,
``CODEX_HOME`` or ``HOME``). It cannot tell a valid key from a revoked one, only that the
CLI would not even try.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

CLAUDE_VARIABLES = (
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "CLAUDE_CODE_USE_BEDROCK",
    "CLAUDE_CODE_USE_VERTEX",
)
CODEX_VARIABLES = ("OPENAI_API_KEY", "CODEX_API_KEY")
GEMINI_VARIABLES = (
    "GEMINI_API_KEY",
    "GOOGLE_API_KEY",
    "GOOGLE_GENAI_USE_VERTEXAI",
    "GOOGLE_APPLICATION_CREDENTIALS",
)
HOW_TO = {
    "claude": "set ANTHROPIC_API_KEY, or run `claude` once and log in (/login)",
    "codex": "set OPENAI_API_KEY, or run `codex login`",
    "gemini": "set GEMINI_API_KEY, or run `gemini` once and sign in",
}


def found(agent: str, env: Mapping[str, str]) -> str | None:
    """Where ``agent`` would find its credentials (a variable or a file), or None."""
    home = Path(env.get("HOME") or Path.home())
    if agent == "claude":
        return _claude(env, home)
    if agent == "codex":
        return _codex(env, home)
    if agent == "gemini":
        variable = _variable(env, GEMINI_VARIABLES)
        login = home / ".gemini" / "oauth_creds.json"
        return variable or (str(login) if login.is_file() else None)
    return "not needed"  # aider, shell, command: nothing gadugi can check


def _variable(env: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((f"${name}" for name in names if env.get(name)), None)


def _claude(env: Mapping[str, str], home: Path) -> str | None:
    variable = _variable(env, CLAUDE_VARIABLES)
    if variable:
        return variable
    folder = Path(env["CLAUDE_CONFIG_DIR"]) if env.get("CLAUDE_CONFIG_DIR") else home / ".claude"
    login = folder / ".credentials.json"
    if login.is_file():
        return str(login)
    state = (folder if env.get("CLAUDE_CONFIG_DIR") else home) / ".claude.json"
    if _json(state).get("primaryApiKey"):
        return f"{state} (primaryApiKey)"
    settings = folder / "settings.json"
    if _json(settings).get("apiKeyHelper"):
        return f"{settings} (apiKeyHelper)"
    return None


def _codex(env: Mapping[str, str], home: Path) -> str | None:
    variable = _variable(env, CODEX_VARIABLES)
    if variable:
        return variable
    folder = Path(env["CODEX_HOME"]) if env.get("CODEX_HOME") else home / ".codex"
    login = folder / "auth.json"
    if login.is_file():
        return str(login)
    # A provider of the user's own names the variable that holds its key.
    try:
        config: dict[str, Any] = tomllib.loads((folder / "config.toml").read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None
    provider = config.get("model_providers", {}).get(config.get("model_provider", ""), {})
    key = provider.get("env_key") if isinstance(provider, dict) else None
    if isinstance(key, str) and env.get(key):
        return f"${key} (model provider {config['model_provider']})"
    return None


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}

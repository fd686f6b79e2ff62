"""OrchestrationConfig: defaults, then the project file, then environment, then flags."""

from __future__ import annotations

import errno
import math
import os
import resource
import stat
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import ConfigError, RepositoryError
from .tasks import ConflictPolicy

STALL_ACTIONS = ("warn", "restart")
CONFLICT_POLICIES = tuple(p.value for p in ConflictPolicy)
AGENTS = ("claude", "shell", "command", "codex", "gemini", "aider")
CODEX_SANDBOXES = ("read-only", "workspace-write", "danger-full-access")
ENVIRONMENT = {
    "GADUGI_AGENT": "agent",
    "GADUGI_AGENT_CMD": "agent_cmd",
    "GADUGI_MAX_PARALLEL": "max_parallel_tasks",
    "GADUGI_TIMEOUT_HOURS": "execution_timeout_hours",
    # A shared machine (CI) whose load says nothing of this run's own: 0 turns it off.
    "GADUGI_MAX_LOAD_PER_CPU": "max_load_per_cpu",
}
MAX_TIMEOUT_HOURS = 24 * 7  # no task runs longer, so no estimate or stall limit is longer either
MAX_DELAY_SECONDS = 3600.0
MAX_LOAD_PER_CPU = 1000.0
MAX_BUDGET_USD = 1_000_000.0
MIN_RESOURCE_LIMIT = 16
MAX_COMMAND_LENGTH = 10_000  # setup_command, verify_command: a command line, not a script
# Where the hard RLIMIT_NOFILE is unlimited (macOS), the kernel still refuses more than this.
OPEN_FILES_CAP = 2**20


@dataclass(frozen=True)
class OrchestrationConfig:
    """The seed's fields and defaults, plus what the product needs beyond them."""

    max_parallel_tasks: int = 4
    execution_timeout_hours: float = 2.0
    monitoring_interval_seconds: float = 30.0
    fallback_to_sequential: bool = True
    worktrees_dir: str = ".worktrees"
    monitoring_dir: str = ".gadugi/monitoring"
    agent: str = "claude"
    agent_cmd: str | None = None
    base_ref: str = "HEAD"
    land: bool = False  # run --land: each task lands on gadugi/land/<orch> as it completes
    land_into: str | None = None  # run --into: the branch fast-forwarded when all is green
    land_retries: int = 1  # re-runs of a task whose landing conflicts or turns verification red
    retries: int = 2  # transient failures only (exit 75, HTTP 429/5xx/529, a lost connection)
    retry_base_delay_seconds: float = 2.0
    kill_grace_seconds: float = 5.0
    stall_timeout_minutes: float | None = 15.0
    stall_action: str = "warn"
    conflict_policy: str = ConflictPolicy.STACK.value  # what overlapping footprints cost
    min_available_memory_mb: int = 256
    max_load_per_cpu: float = 3.0
    memory_limit_mb: int | None = None
    open_files_limit: int | None = None
    claude_model: str | None = None
    claude_permission_mode: str = "acceptEdits"
    claude_allowed_tools: tuple[str, ...] = ("Bash", "Edit", "Write", "Read", "Glob", "Grep")
    claude_max_turns: int | None = None
    claude_extra_args: tuple[str, ...] = field(default_factory=tuple)
    claude_executable: str = "claude"
    codex_executable: str = "codex"
    codex_model: str | None = None
    codex_sandbox: str = "danger-full-access"
    codex_extra_args: tuple[str, ...] = field(default_factory=tuple)
    gemini_executable: str = "gemini"
    gemini_model: str | None = None
    gemini_extra_args: tuple[str, ...] = field(default_factory=tuple)
    aider_executable: str = "aider"
    aider_model: str | None = None
    aider_extra_args: tuple[str, ...] = field(default_factory=tuple)
    setup_command: str | None = None  # run in each new worktree before its agent starts
    setup_timeout_minutes: float = 30.0
    verify_command: str | None = None  # must pass after the agent exits (front matter wins)
    verify_timeout_minutes: float = 30.0
    autocommit: bool = True  # commit work an agent left uncommitted, as the user
    setup_cache_key: tuple[str, ...] = field(default_factory=tuple)
    setup_cache_paths: tuple[str, ...] = field(default_factory=tuple)
    setup_cache_link: bool = False
    # No new task starts once the agents' cost reaches this many US dollars (None: no budget).
    budget_usd: float | None = None
    budget_hard: bool = False  # also stop running tasks when the budget is reached
    # Tasks parked by a usage limit wait this long past its reset time.
    usage_limit_margin_seconds: float = 60.0
    # The `notify` table: a command (argv) and/or a webhook URL told about events (notify.py).
    notify_command: tuple[str, ...] = field(default_factory=tuple)
    notify_webhook: str | None = None

    def __post_init__(self) -> None:
        validate(self)

    @property
    def timeout_seconds(self) -> float:
        return self.execution_timeout_hours * 3600.0


def validate(cfg: OrchestrationConfig, source: str = "") -> None:
    def bad(key: str, reason: str) -> ConfigError:
        return ConfigError(key, reason, source)

    for f in fields(cfg):
        value = getattr(cfg, f.name)
        # A NUL byte cannot reach a child: argv and the environment are C strings.
        if any(
            isinstance(v, str) and "\0" in v
            for v in (value if isinstance(value, tuple) else (value,))
        ):
            raise bad(f.name, "must not contain a NUL byte")
    if not 1 <= cfg.max_parallel_tasks <= 1024:
        raise bad("max_parallel_tasks", "must be between 1 and 1024")
    if not (
        cfg.execution_timeout_hours > 0
        and within(cfg.execution_timeout_hours, 0, MAX_TIMEOUT_HOURS)
    ):
        raise bad("execution_timeout_hours", f"must be more than 0 and at most {MAX_TIMEOUT_HOURS}")
    if not within(cfg.monitoring_interval_seconds, 0.05, 3600):
        raise bad("monitoring_interval_seconds", "must be between 0.05 and 3600")
    if cfg.agent not in AGENTS:
        raise bad("agent", f"unknown agent {cfg.agent!r} (known: {', '.join(AGENTS)})")
    if cfg.agent == "command" and not cfg.agent_cmd:
        raise bad("agent_cmd", "the command agent needs --agent-cmd TEMPLATE")
    if cfg.agent_cmd is not None:
        # Front matter may choose the command agent for one task, so a set template is
        # always checked; the agents package imports this module, hence the late import.
        from .agents.command import parse_template

        parse_template(cfg.agent_cmd)
    if not 0 <= cfg.retries <= 100:
        raise bad("retries", "must be between 0 and 100")
    for key in ("retry_base_delay_seconds", "kill_grace_seconds"):
        if not within(getattr(cfg, key), 0, MAX_DELAY_SECONDS):
            raise bad(key, f"must be between 0 and {MAX_DELAY_SECONDS:g} seconds")
    for key in ("worktrees_dir", "monitoring_dir"):
        value = getattr(cfg, key)
        parts = Path(value).parts
        if not value or Path(value).is_absolute() or ".." in parts or value.startswith("-"):
            raise bad(key, "must be a relative path inside the project without '..'")
    if cfg.base_ref.startswith("-"):
        raise bad("base_ref", "a git ref cannot start with '-'")
    if not 0 <= cfg.land_retries <= 100:
        raise bad("land_retries", "must be between 0 and 100")
    if cfg.land_into is not None and (not cfg.land_into or cfg.land_into.startswith("-")):
        raise bad("land_into", "must be a branch name not starting with '-'")
    stall = cfg.stall_timeout_minutes
    if stall is not None and not (stall > 0 and within(stall, 0, MAX_TIMEOUT_HOURS * 60)):
        raise bad(
            "stall_timeout_minutes",
            f"must be more than 0 and at most {MAX_TIMEOUT_HOURS * 60} minutes",
        )
    if cfg.stall_action not in STALL_ACTIONS:
        raise bad("stall_action", f"must be one of: {', '.join(STALL_ACTIONS)}")
    if cfg.conflict_policy not in CONFLICT_POLICIES:
        shown = repr(cfg.conflict_policy)[:40]
        raise bad("conflict_policy", f"{shown} is not one of: {', '.join(CONFLICT_POLICIES)}")
    total_mb = machine_memory_mb()
    # A floor at or above the machine's memory would hold every task back for ever.
    if not 0 <= cfg.min_available_memory_mb < total_mb:
        raise bad(
            "min_available_memory_mb",
            f"must be at least 0 (disabled) and below this machine's memory ({total_mb} MB)",
        )
    if not within(cfg.max_load_per_cpu, 0, MAX_LOAD_PER_CPU):
        raise bad("max_load_per_cpu", f"must be between 0 (disabled) and {MAX_LOAD_PER_CPU:g}")
    for key in ("memory_limit_mb", "open_files_limit"):
        value = getattr(cfg, key)
        if value is not None:
            ceiling, what = limit_ceiling(key)
            if not MIN_RESOURCE_LIMIT <= value <= ceiling:
                raise bad(key, f"must be between {MIN_RESOURCE_LIMIT} and {ceiling} ({what})")
    if cfg.budget_usd is not None and not (
        cfg.budget_usd > 0 and within(cfg.budget_usd, 0, MAX_BUDGET_USD)
    ):
        raise bad("budget_usd", f"must be more than 0 and at most {MAX_BUDGET_USD:g} (US dollars)")
    if cfg.budget_hard and cfg.budget_usd is None:
        raise bad("budget_hard", "needs a budget (--budget-usd or budget_usd)")
    if not within(cfg.usage_limit_margin_seconds, 0, MAX_DELAY_SECONDS):
        raise bad(
            "usage_limit_margin_seconds", f"must be between 0 and {MAX_DELAY_SECONDS:g} seconds"
        )
    if cfg.claude_max_turns is not None and cfg.claude_max_turns < 1:
        raise bad("claude_max_turns", "must be at least 1")
    if cfg.codex_sandbox not in CODEX_SANDBOXES:
        raise bad("codex_sandbox", f"must be one of {', '.join(CODEX_SANDBOXES)}")
    for key in ("setup_command", "verify_command"):
        value = getattr(cfg, key)
        if value is not None and (not value.strip() or len(value) > MAX_COMMAND_LENGTH):
            raise bad(
                key, f"must be a non-empty shell command of at most {MAX_COMMAND_LENGTH} characters"
            )
    for key in ("setup_timeout_minutes", "verify_timeout_minutes"):
        if not (getattr(cfg, key) > 0 and within(getattr(cfg, key), 0, MAX_TIMEOUT_HOURS * 60)):
            raise bad(key, f"must be more than 0 and at most {MAX_TIMEOUT_HOURS * 60} minutes")
    for name in ("claude", "codex", "gemini", "aider"):
        key = f"{name}_executable"
        if not getattr(cfg, key).strip():
            raise bad(key, "cannot be empty")
    _validate_setup_cache(cfg, bad)
    if cfg.notify_command and not cfg.notify_command[0].strip():
        raise bad("notify.command", "the command's first word cannot be empty")
    if cfg.notify_webhook is not None and not _webhook_url(cfg.notify_webhook):
        raise bad("notify.webhook", "must be an http:// or https:// URL naming a host")


def _validate_setup_cache(cfg: OrchestrationConfig, bad: Callable[[str, str], ConfigError]) -> None:
    """The cache's globs and paths stay inside the worktree, and come together."""
    for key in ("setup_cache_key", "setup_cache_paths"):
        for value in getattr(cfg, key):
            parts = Path(value).parts
            if not value.strip() or Path(value).is_absolute() or ".." in parts:
                raise bad(
                    key, f"{value!r} must be a relative path inside the worktree without '..'"
                )
            if not parts or parts[0] == ".git":
                raise bad(key, f"{value!r} names the worktree itself or its .git")
            # Each path becomes a line of .git/info/exclude: a pattern there (`*`) would
            # hide the agent's work from the autocommit, and it would go with the worktree.
            if key == "setup_cache_paths" and (
                any(c in value for c in "*?[\\") or any(p != p.strip() for p in parts)
            ):
                raise bad(
                    key,
                    f"{value!r} must be a plain path: no *, ? or [, no \\, no spaces at the ends",
                )
    paths = [Path(p) for p in cfg.setup_cache_paths]
    for i, a in enumerate(paths):
        for b in paths[i + 1 :]:
            if a == b or a in b.parents or b in a.parents:
                raise bad("setup_cache_paths", f"{a.as_posix()!r} and {b.as_posix()!r} overlap")
    if bool(cfg.setup_cache_key) != bool(cfg.setup_cache_paths):
        missing = "setup_cache_paths" if cfg.setup_cache_key else "setup_cache_key"
        raise bad(
            missing,
            "setup_cache_key and setup_cache_paths go together: what decides the "
            "environment, and what the setup command makes",
        )


def _webhook_url(url: str) -> bool:
    """Whether ``url`` is one urllib can post to: http(s), a host, a valid port, and no
    whitespace or control characters (which http.client refuses only when it sends)."""
    if any(ch.isspace() or not ch.isprintable() for ch in url):
        return False
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError when out of range or not a number)
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def within(value: float, low: float, high: float) -> bool:
    """``low <= value <= high`` for a finite value: NaN passes no comparison, so none fails."""
    return (isinstance(value, int) or math.isfinite(value)) and low <= value <= high


def machine_memory_mb() -> int:
    return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2**20


def limit_ceiling(key: str) -> tuple[int, str]:
    """The largest ``memory_limit_mb`` or ``open_files_limit`` an agent can be given, and why.

    The limits are set in the child after its worktree exists; one above the hard limit
    (or beyond what the machine has) would fail there, so it is refused up front.
    """
    if key == "memory_limit_mb":
        total = machine_memory_mb()
        hard = resource.getrlimit(resource.RLIMIT_AS)[1]
        if hard != resource.RLIM_INFINITY and hard // 2**20 < total:
            return hard // 2**20, "the hard RLIMIT_AS of gadugi, in MB"
        return total, "this machine's memory in MB"
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY or hard > OPEN_FILES_CAP:
        return OPEN_FILES_CAP, "the most open files gadugi sets"
    return hard, "the hard RLIMIT_NOFILE of gadugi"


def check_directories(root: Path, cfg: OrchestrationConfig, state_dir: str) -> None:
    """Refuse, before anything is made, a directory a run needs that cannot be one."""
    needed = {
        state_dir: "",
        f"{state_dir}/logs": "",
        f"{state_dir}/prompts": "",
        cfg.worktrees_dir: "worktrees_dir",
        cfg.monitoring_dir: "monitoring_dir",
    }
    for rel, key in needed.items():
        problem = _unusable_directory(root, rel)
        if problem is None:
            continue
        if key:
            raise ConfigError(key, problem)
        raise RepositoryError(f"{problem}; gadugi keeps its state in the directory {state_dir}/")


def _unusable_directory(root: Path, rel: str) -> str | None:
    """Why ``root/rel`` cannot be (or become) a directory, or None when it can."""
    path = root
    for part in Path(rel).parts:
        path = path / part
        shown = path.relative_to(root).as_posix()
        try:
            mode = path.stat().st_mode  # a symlink to a directory is a directory
        except FileNotFoundError:
            if path.is_symlink():
                return f"{shown} is a dangling symlink"
            return None  # the run creates it, and everything below it
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return f"{shown} is a symlink loop"
            return f"{shown} cannot be used ({exc.strerror})"
        if stat.S_ISREG(mode):
            return f"{shown} is a file, not a directory"
        if not stat.S_ISDIR(mode):
            return f"{shown} is not a directory"
    return None


def _coerce(name: str, value: Any, source: str) -> Any:
    """Turn a value from TOML or the environment into the field's type, or say why not."""
    kinds = {f.name: f.type for f in fields(OrchestrationConfig)}
    kind = str(kinds[name])
    try:
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "0", "false", "no"):
                return value.lower() in ("1", "true", "yes")
            raise ValueError
        if kind.startswith("tuple"):
            if isinstance(value, str):
                return tuple(value.split())
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                return tuple(value)
            raise ValueError
        if kind == "int | None":
            return None if value in (None, "") else _coerce_int(value)
        if kind == "float | None":
            if value in (None, ""):
                return None
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if not isinstance(value, str):
            raise ValueError
        return value
    except (TypeError, ValueError, OverflowError):
        shown = repr(value) if len(repr(value)) <= 40 else f"{repr(value)[:30]}..."
        raise ConfigError(name, f"{shown} is not a valid {kind}", source) from None


def _coerce_int(value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError
    return int(value)


def read_project_file(root: Path) -> tuple[dict[str, Any], str]:
    """The project's settings: ``gadugi.toml``, else ``[tool.gadugi]`` in pyproject.toml."""
    import tomllib  # only commands that load configuration pay for the parser

    for name, table in (("gadugi.toml", None), ("pyproject.toml", ("tool", "gadugi"))):
        path = root / name
        if not path.is_file():
            continue
        try:
            data: Any = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(name, f"cannot be parsed: {exc}", name) from exc
        for key in table or ():
            data = data.get(key, {}) if isinstance(data, dict) else {}
        if not isinstance(data, dict):
            raise ConfigError(name, "the gadugi table must be a table", name)
        if table is None or data:
            return data, name
    return {}, ""


def _notify_table(data: dict[str, Any], source: str) -> dict[str, Any]:
    """``[notify]`` (``command`` = argv list or a shell-like string, ``webhook`` = URL) as
    the ``notify_command`` and ``notify_webhook`` fields."""
    if "notify" not in data:
        return data
    import shlex

    table = data["notify"]
    if not isinstance(table, dict):
        raise ConfigError("notify", "must be a table (command and/or webhook)", source)
    unknown = sorted(set(table) - {"command", "webhook"})
    if unknown:
        raise ConfigError(f"notify.{unknown[0]}", "unknown setting", source)
    out = {k: v for k, v in data.items() if k != "notify"}
    command = table.get("command")
    if isinstance(command, str):
        try:
            out["notify_command"] = shlex.split(command)
        except ValueError as exc:
            raise ConfigError("notify.command", f"cannot be split: {exc}", source) from None
        if not out["notify_command"]:  # a blank string would silently notify nobody
            raise ConfigError("notify.command", "cannot be empty", source)
    elif isinstance(command, list) and command and all(isinstance(c, str) for c in command):
        out["notify_command"] = command
    elif command is not None:
        raise ConfigError("notify.command", "must be a string or a list of strings", source)
    webhook = table.get("webhook")
    if webhook is not None and not isinstance(webhook, str):
        raise ConfigError("notify.webhook", "must be a URL string", source)
    if webhook is not None:
        out["notify_webhook"] = webhook
    return out


def load_config(
    root: Path,
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> OrchestrationConfig:
    """Apply the project file, then the environment, then flags, over the defaults."""
    known = {f.name for f in fields(OrchestrationConfig)}
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    data, source = read_project_file(root)
    data = _notify_table(data, source)
    for key, value in data.items():
        if key not in known:
            raise ConfigError(key, "unknown setting", source)
        values[key], origin[key] = _coerce(key, value, source), source
    env = os.environ if environ is None else environ
    for var, key in ENVIRONMENT.items():
        if env.get(var):
            where = f"environment variable {var}"
            values[key], origin[key] = _coerce(key, env[var], where), where
    for key, value in (flags or {}).items():
        if value is not None:
            values[key], origin[key] = value, "command-line flags"
    if values.get("agent_cmd") and "agent" not in values:
        values["agent"] = "command"
    try:
        return replace(OrchestrationConfig(), **values)
    except ConfigError as exc:
        raise ConfigError(exc.key, exc.reason, origin.get(exc.key) or source) from None

"""Fixtures for driving the real agent CLIs against tests/modelserver.py.

``claude_bin``, ``codex_bin`` and ``gemini_bin`` install the pinned CLI once per session
with scripts/install-agent-clis.sh (into ``$GADUGI_CLI_CACHE`` or
``~/.cache/gadugi/agent-clis``); they skip only when npm itself is missing. ``claude_rig``
(or ``make_claude_rig(script=...)``, or ``make_rig(bin_dir, ...)`` for another CLI) gives
each test a model server, a real git repository and an environment built from nothing, so
no real credential or setting of the caller reaches the CLI and all its state stays under
the test's tmp_path. The same environment points Claude Code (``ANTHROPIC_BASE_URL``),
Codex (a ``model_providers`` entry in ``$CODEX_HOME/config.toml``) and gemini-cli
(``GOOGLE_GEMINI_BASE_URL`` plus ``~/.gemini/settings.json``) at the server.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

import gadugi as gadugi_package
from gadugi.agents.base import AgentContext, AgentProfile, Outcome
from gadugi.agents.claude import ClaudeOptions, ClaudeProfile
from gadugi.tasks import Prompt
from modelserver import ModelServer

ROOT = Path(__file__).resolve().parent.parent
# The gadugi these tests import, so that `python -m gadugi` in the rig runs the same code
# (the rig's environment is built from nothing, and an installed gadugi may be another tree).
GADUGI_SRC = Path(gadugi_package.__file__).resolve().parent.parent
INSTALLER = ROOT / "scripts" / "install-agent-clis.sh"
# Deterministic cost: 1000 input and 100 output tokens per turn at Sonnet prices.
TEST_MODEL = "claude-sonnet-4-5"
CLI_TIMEOUT_S = 60
NPM_MISSING = 127  # the installer's exit code when it needs npm and finds none
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "Test Agent",
    "GIT_AUTHOR_EMAIL": "agent@example.invalid",
    "GIT_COMMITTER_NAME": "Test Agent",
    "GIT_COMMITTER_EMAIL": "agent@example.invalid",
}


# The rig's Codex provider: our server, no retries, nothing that phones home.
CODEX_CONFIG = """\
model_provider = "gadugi-test"
check_for_update_on_startup = false

[analytics]
enabled = false

[features]
plugins = false
remote_plugin = false
apps = false

[model_providers.gadugi-test]
name = "gadugi test server"
base_url = "{url}/v1"
env_key = "GADUGI_TEST_OPENAI_KEY"
wire_api = "responses"
request_max_retries = 0
stream_max_retries = 0
"""
# gemini-cli: an API key (the base-URL variable alone selects an auth type it rejects),
# no statistics or telemetry, no update checks, no retries of its own.
GEMINI_SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "general": {"disableAutoUpdate": True, "disableUpdateNag": True, "maxAttempts": 1},
}


def install_cli(name: str) -> Path:
    """The folder holding the pinned CLI ``name``, installed on first use."""
    done = subprocess.run(
        ["bash", str(INSTALLER), name], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode == NPM_MISSING and shutil.which("npm") is None:
        pytest.skip(f"npm is not available, so the {name} CLI cannot be installed")
    if done.returncode != 0:
        pytest.fail(f"{INSTALLER.name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The folder holding the pinned ``claude``, installed on first use."""
    return install_cli("claude")


@pytest.fixture(scope="session")
def codex_bin() -> Path:
    """The folder holding the pinned ``codex``, installed on first use."""
    return install_cli("codex")


@pytest.fixture(scope="session")
def gemini_bin() -> Path:
    """The folder holding the pinned ``gemini``, installed on first use."""
    return install_cli("gemini")


@dataclass
class ClaudeRun:
    ctx: AgentContext
    profile: AgentProfile
    exit_code: int
    outcome: Outcome
    seconds: float


class ClaudeRig:
    """One model server, one git repository and a clean environment for the CLI (any CLI
    in ``bin_dir``: the environment sets up Claude Code, Codex and gemini-cli alike)."""

    def __init__(self, root: Path, bin_dir: Path, server: ModelServer) -> None:
        self.root, self.bin_dir, self.server = root, bin_dir, server
        self.repo = root / "repo"
        home = root / "home"
        for folder in (self.repo, home, root / "tmp", root / "gadugi"):
            folder.mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "CLAUDE_CONFIG_DIR": str(home / ".claude"),
            "TMPDIR": str(root / "tmp"),
            "PYTHONPATH": str(GADUGI_SRC),
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "CODEX_HOME": str(home / ".codex"),
            "GADUGI_TEST_OPENAI_KEY": "sk-test-not-a-real-key",
            "GOOGLE_GEMINI_BASE_URL": server.url,
            "GEMINI_API_KEY": "test-not-a-real-key",
            **GIT_IDENTITY,
        }
        (home / ".codex").mkdir()
        (home / ".codex" / "config.toml").write_text(
            CODEX_CONFIG.format(url=server.url), encoding="utf-8"
        )
        (home / ".gemini").mkdir()
        (home / ".gemini" / "settings.json").write_text(
            json.dumps(GEMINI_SETTINGS), encoding="utf-8"
        )
        self.git("init", "-q", "-b", "main")
        (self.repo / "README.md").write_text("# test repo\n", encoding="utf-8")
        self.git("add", "-A")
        self.git("commit", "-q", "-m", "Initial commit")

    def git(self, *args: str) -> str:
        done = subprocess.run(
            ["git", *args],
            cwd=self.repo,
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout

    def options(self, **changes: Any) -> ClaudeOptions:
        """Options for the installed CLI, with the test model unless ``changes`` say otherwise."""
        base = ClaudeOptions(executable=str(self.bin_dir / "claude"), model=TEST_MODEL)
        return replace(base, **changes)

    def context(
        self,
        prompt_text: str,
        *,
        task_id: str = "task-1",
        attempt: int = 1,
        resume_session: str | None = None,
    ) -> AgentContext:
        logs = self.root / "gadugi" / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        prompt_file = self.root / "gadugi" / "prompts" / f"{task_id}.md"
        prompt_file.parent.mkdir(parents=True, exist_ok=True)
        prompt_file.write_text(prompt_text, encoding="utf-8")
        return AgentContext(
            orchestration_id="orch-test",
            task_id=task_id,
            project_root=self.repo,
            worktree=self.repo,
            branch="main",
            prompt_file=prompt_file,
            source_prompt=prompt_file,
            log_file=logs / f"{task_id}.log",
            events_file=logs / f"{task_id}.events.jsonl",
            attempt=attempt,
            resume_session=resume_session,
        )

    def start(
        self, profile: AgentProfile, ctx: AgentContext, env: Mapping[str, str | None] | None = None
    ) -> subprocess.Popen[bytes]:
        """Spawn the attempt as the runner does: stdout to the events file (or the log, for
        an agent without structured output), stderr to the log."""
        launch = profile.prepare(ctx, _prompt_of(ctx.prompt_file))
        merged: dict[str, str | None] = {
            **self.env,
            **ctx.environment(),
            **launch.env,
            **(env or {}),
        }
        stdout = ctx.events_file if launch.structured_stdout else ctx.log_file
        with stdout.open("ab") as out, ctx.log_file.open("ab") as err:
            return subprocess.Popen(
                launch.argv,
                cwd=ctx.worktree,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env={k: v for k, v in merged.items() if v is not None},
                start_new_session=True,
            )

    def run(
        self,
        prompt_text: str,
        *,
        options: ClaudeOptions | None = None,
        profile: AgentProfile | None = None,
        env: Mapping[str, str | None] | None = None,
        task_id: str = "task-1",
        attempt: int = 1,
        resume_session: str | None = None,
    ) -> ClaudeRun:
        """One whole attempt: prepare, run the real CLI, judge."""
        profile = profile or ClaudeProfile(options or self.options())
        ctx = self.context(
            prompt_text, task_id=task_id, attempt=attempt, resume_session=resume_session
        )
        started = time.monotonic()
        child = self.start(profile, ctx, env)
        try:
            code = child.wait(timeout=CLI_TIMEOUT_S)
        finally:
            if child.poll() is None:
                os.killpg(child.pid, 9)
                child.wait()
        seconds = time.monotonic() - started
        return ClaudeRun(ctx, profile, code, profile.judge(ctx, code), seconds)


def gadugi(
    rig: ClaudeRig, *args: str, env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """gadugi as a subprocess in the rig's repository, with the rig's environment."""
    return subprocess.run(
        [sys.executable, "-m", "gadugi", *args],
        cwd=rig.repo,
        env={**rig.env, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _prompt_of(path: Path) -> Prompt:
    text = path.read_text(encoding="utf-8")
    return Prompt(
        path=path, rel_path=path.name, task_id=path.stem, title=path.stem, body=text, text=text
    )


@pytest.fixture
def make_rig(tmp_path: Path) -> Iterator[Callable[..., ClaudeRig]]:
    """Make rigs for the CLI in ``bin_dir``; the other arguments go to ``ModelServer``."""
    with ExitStack() as servers:
        count = itertools.count(1)

        def make(bin_dir: Path, **server_args: Any) -> ClaudeRig:
            server = servers.enter_context(ModelServer(**server_args))
            return ClaudeRig(tmp_path / f"rig-{next(count)}", bin_dir, server)

        yield make


@pytest.fixture
def make_claude_rig(
    make_rig: Callable[..., ClaudeRig], claude_bin: Path
) -> Callable[..., ClaudeRig]:
    """Make rigs whose servers take these ``ModelServer`` arguments (e.g. ``script=``)."""

    def make(**server_args: Any) -> ClaudeRig:
        return make_rig(claude_bin, **server_args)

    return make


@pytest.fixture
def claude_rig(make_claude_rig: Callable[..., ClaudeRig]) -> ClaudeRig:
    return make_claude_rig()

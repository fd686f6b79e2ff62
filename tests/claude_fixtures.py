"""Fixtures for driving the real Claude Code CLI against tests/modelserver.py.

``claude_bin`` installs the pinned CLI once per session with scripts/install-agent-clis.sh
(into ``$GADUGI_CLI_CACHE`` or ``~/.cache/gadugi/agent-clis``); it skips only when npm itself
is missing. ``claude_rig`` (or ``make_claude_rig(script=...)``) gives each test a model
server, a real git repository and an environment built from nothing, so no real credential
or setting of the caller reaches the CLI and all its state stays under the test's tmp_path.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest

from gadugi.agents.base import AgentContext, Outcome
from gadugi.agents.claude import ClaudeOptions, ClaudeProfile
from gadugi.tasks import Prompt
from modelserver import ModelServer

ROOT = Path(__file__).resolve().parent.parent
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


@pytest.fixture(scope="session")
def claude_bin() -> Path:
    """The folder holding the pinned ``claude``, installed on first use."""
    done = subprocess.run(
        ["bash", str(INSTALLER)], capture_output=True, text=True, timeout=600, check=False
    )
    if done.returncode == NPM_MISSING and shutil.which("npm") is None:
        pytest.skip("npm is not available, so the Claude Code CLI cannot be installed")
    if done.returncode != 0:
        pytest.fail(f"{INSTALLER.name} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


@dataclass
class ClaudeRun:
    ctx: AgentContext
    profile: ClaudeProfile
    exit_code: int
    outcome: Outcome
    seconds: float


class ClaudeRig:
    """One model server, one git repository and a clean environment for the CLI."""

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
            "LANG": "C.UTF-8",
            "ANTHROPIC_BASE_URL": server.url,
            "ANTHROPIC_API_KEY": "sk-ant-test-not-a-real-key",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "DISABLE_AUTOUPDATER": "1",
            "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1",
            "CLAUDE_CODE_MAX_RETRIES": "0",
            **GIT_IDENTITY,
        }
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
        self, profile: ClaudeProfile, ctx: AgentContext, env: Mapping[str, str | None] | None = None
    ) -> subprocess.Popen[bytes]:
        """Spawn the attempt as the runner does: stdout to the events file, stderr to the log."""
        launch = profile.prepare(ctx, _prompt_of(ctx.prompt_file))
        merged: dict[str, str | None] = {
            **self.env,
            **ctx.environment(),
            **launch.env,
            **(env or {}),
        }
        assert launch.structured_stdout
        with ctx.events_file.open("ab") as out, ctx.log_file.open("ab") as err:
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
        profile: ClaudeProfile | None = None,
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


def _prompt_of(path: Path) -> Prompt:
    text = path.read_text(encoding="utf-8")
    return Prompt(
        path=path, rel_path=path.name, task_id=path.stem, title=path.stem, body=text, text=text
    )


@pytest.fixture
def make_claude_rig(tmp_path: Path, claude_bin: Path) -> Iterator[Callable[..., ClaudeRig]]:
    """Make rigs whose servers take these ``ModelServer`` arguments (e.g. ``script=``)."""
    with ExitStack() as servers:
        count = itertools.count(1)

        def make(**server_args: Any) -> ClaudeRig:
            server = servers.enter_context(ModelServer(**server_args))
            return ClaudeRig(tmp_path / f"rig-{next(count)}", claude_bin, server)

        yield make


@pytest.fixture
def claude_rig(make_claude_rig: Callable[..., ClaudeRig]) -> ClaudeRig:
    return make_claude_rig()

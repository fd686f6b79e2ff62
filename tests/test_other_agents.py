"""The codex, gemini and aider profiles: the real CLIs against our scripted model server.

Each CLI is the pinned release scripts/install-agent-clis.sh installs from npm; the rig
points it at tests/modelserver.py on 127.0.0.1 (Codex through a provider entry in its
config.toml, gemini-cli through GOOGLE_GEMINI_BASE_URL), with its own HOME. aider runs
too when it is installed (see GADUGI_AIDER_BIN below).
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chat_api import edit_block
from claude_fixtures import gadugi
from gadugi.agents.aider import AiderOptions, AiderProfile
from gadugi.agents.base import AgentProfile
from gadugi.agents.codex import CodexOptions, CodexProfile
from gadugi.agents.gemini import GeminiOptions, GeminiProfile
from modelserver import COMMIT_FILE, COMMIT_MESSAGE, Failure, Reply, Turn, say, write_commit

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

CODEX_MODEL = "gpt-5.5"  # a slug Codex 0.169 knows, so it logs no fallback-metadata error
GEMINI_MODEL = "gemini-2.5-pro"  # naming the model skips gemini-cli's router request


def tagged(scenario: str, text: str = "Do the task.") -> str:
    return f"# Task\n\n{text}\n\n[[scenario:{scenario}]]\n"


def codex(rig: ClaudeRig) -> CodexProfile:
    return CodexProfile(
        CodexOptions(
            executable=str(rig.bin_dir / "codex"), model=CODEX_MODEL, home=rig.env["CODEX_HOME"]
        )
    )


def gemini(rig: ClaudeRig) -> GeminiProfile:
    return GeminiProfile(GeminiOptions(executable=str(rig.bin_dir / "gemini"), model=GEMINI_MODEL))


PROFILES: dict[str, Callable[[ClaudeRig], AgentProfile]] = {"codex": codex, "gemini": gemini}


@pytest.fixture(params=["codex", "gemini"])
def cli(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_cli_rig(
    cli: str, request: pytest.FixtureRequest, make_rig: Callable[..., ClaudeRig]
) -> Callable[..., ClaudeRig]:
    bin_dir: Path = request.getfixturevalue(f"{cli}_bin")

    def make(**server_args: object) -> ClaudeRig:
        return make_rig(bin_dir, **server_args)

    return make


@pytest.fixture
def rig(make_cli_rig: Callable[..., ClaudeRig]) -> ClaudeRig:
    return make_cli_rig()


# -- the real CLIs ---------------------------------------------------------------------


def test_write_commit_succeeds_with_the_agent_fields(cli: str, rig: ClaudeRig) -> None:
    # Front matter first: a prompt starting with "-" must not be read as an option.
    run = rig.run("---\nid: hello\n---\n" + tagged("write_commit"), profile=PROFILES[cli](rig))

    assert run.exit_code == 0, run.ctx.log_file.read_text()
    assert run.outcome.success, run.outcome.error
    assert (rig.repo / COMMIT_FILE).exists()
    assert rig.git("log", "-1", "--format=%s").strip() == COMMIT_MESSAGE
    assert rig.git("status", "--porcelain") == ""
    agent = run.outcome.agent
    assert uuid.UUID(agent["session_id"])
    assert agent["num_turns"] == 2
    assert agent["cost_usd"] is None  # neither CLI prices its requests
    assert (agent["input_tokens"], agent["output_tokens"]) == (2000, 200)
    assert agent["is_error"] is False
    assert agent["api_error_status"] is None
    if cli == "codex":  # asked for gadugi's verdict, its final answer is that JSON
        assert (run.outcome.verdict, run.outcome.summary) == (
            "done",
            f"Done: committed {COMMIT_FILE}.",
        )
    else:
        assert agent["result"] == f"Done: committed {COMMIT_FILE}."
    assert agent["model"] == (CODEX_MODEL if cli == "codex" else GEMINI_MODEL)
    assert run.seconds < 20
    turns = rig.server.calls("write_commit")
    assert [r.turn for r in turns] == [0, 1]
    assert {r.api for r in turns} == {"responses" if cli == "codex" else "gemini"}


def test_progress_follows_the_events(cli: str, rig: ClaudeRig) -> None:
    profile = PROFILES[cli](rig)
    ctx = rig.context(tagged("write_commit"))
    child = rig.start(profile, ctx)
    offset, seen = 0, []
    deadline = time.monotonic() + 30
    progress = getattr(profile, "progress")
    while child.poll() is None and time.monotonic() < deadline:
        if ctx.events_file.exists():
            offset, info = progress(ctx.events_file, offset)
            seen.append(info)
        time.sleep(0.02)
    assert child.wait(timeout=5) == 0
    offset, info = progress(ctx.events_file, offset)

    assert offset == ctx.events_file.stat().st_size
    expected = "shell" if cli == "codex" else "run_shell_command"
    assert info["last_tool"] == expected and info["cost_usd"] is None
    assert uuid.UUID(info["session_id"])
    assert profile.judge(ctx, 0).success


def test_unauthorized_is_fatal(cli: str, rig: ClaudeRig) -> None:
    run = rig.run(tagged("unauthorized"), profile=PROFILES[cli](rig))

    assert run.exit_code != 0
    assert run.outcome.fatal and not run.outcome.success and not run.outcome.transient
    assert "authenticate" in (run.outcome.error or "")
    assert "HTTP 401" in (run.outcome.error or "")
    assert run.outcome.agent["api_error_status"] == 401
    assert run.outcome.agent["is_error"] is True


@pytest.mark.parametrize(("scenario", "status"), [("overloaded", 503), ("rate_limited", 429)])
def test_server_errors_and_rate_limits_are_transient(
    cli: str, rig: ClaudeRig, scenario: str, status: int
) -> None:
    run = rig.run(tagged(scenario), profile=PROFILES[cli](rig))

    assert run.exit_code != 0
    assert run.outcome.transient and not run.outcome.success and not run.outcome.fatal
    assert f"HTTP {status}" in (run.outcome.error or "")
    assert run.outcome.agent["api_error_status"] == status
    # Nothing was done, so there is no session worth resuming for gemini-cli; Codex keeps
    # the thread it started.
    assert (run.outcome.agent["session_id"] is None) == (cli == "gemini")


def fail_after_commit(turn: Turn) -> Reply | Failure:
    """Turn 1 commits; the next request fails with 503 until the session is resumed."""
    if turn.index == 0 or turn.seen >= 2:
        return write_commit(turn)
    return Failure(503, "overloaded_error", "fake overload")


def test_transient_failure_then_resumed_session(
    cli: str, make_cli_rig: Callable[..., ClaudeRig]
) -> None:
    rig = make_cli_rig(script={"half": fail_after_commit})
    profile = PROFILES[cli](rig)
    first = rig.run(tagged("half"), profile=profile)

    assert first.outcome.transient, first.outcome.error
    session = first.outcome.agent["session_id"]
    assert session and first.outcome.agent["num_turns"] == 1

    # The runner's retry resumes the same session; its events go on in the same file.
    second = rig.run(tagged("half"), profile=profile, attempt=2, resume_session=session)

    assert second.outcome.success, second.outcome.error
    assert second.outcome.agent["session_id"] == session
    assert [r.status for r in rig.server.calls("half")] == [200, 503, 200, 200]
    # The resumed request carries the earlier turns (the prompt was sent again).
    assert rig.git("log", "--format=%s").splitlines().count(COMMIT_MESSAGE) >= 1


def test_unknown_session_to_resume_is_transient_and_forgotten(cli: str, rig: ClaudeRig) -> None:
    run = rig.run(tagged("text_only"), profile=PROFILES[cli](rig), resume_session=str(uuid.uuid4()))

    assert run.exit_code != 0
    assert run.outcome.transient and not run.outcome.success
    assert run.outcome.agent["session_id"] is None
    assert re.search(r"could not resume (codex thread|gemini session)", run.outcome.error or "")


# -- through gadugi ----------------------------------------------------------------------


def test_gadugi_run_with_the_cli(cli: str, rig: ClaudeRig) -> None:
    model = CODEX_MODEL if cli == "codex" else GEMINI_MODEL
    (rig.repo / "gadugi.toml").write_text(f'{cli}_model = "{model}"\n')
    for name in ("one", "two"):
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\nCommit a file.\n\n[[scenario:write_commit]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")

    done = gadugi(rig, "run", "--agent", cli, "--json", "one", "two")

    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    for task in result["tasks"]:
        assert task["status"] == "completed" and task["commits"] == 1
        assert rig.git("log", "-1", "--format=%s", task["branch"]).strip() == COMMIT_MESSAGE
        agent = task["agent"]
        assert uuid.UUID(agent["session_id"]) and agent["num_turns"] == 2
        assert (agent["input_tokens"], agent["output_tokens"]) == (2000, 200)
        assert agent["cost_usd"] is None and agent["model"] == model
        events = Path(task["log_file"]).with_suffix(".events.jsonl")
        assert events.stat().st_size > 0  # the CLI's JSONL went to the events file


# -- aider, when installed ---------------------------------------------------------------
#
# aider is a ~700 MB PyPI virtualenv, too heavy to install in CI: this runs only when
# GADUGI_AIDER_BIN names a folder holding the `aider` program (e.g. `python -m venv V &&
# V/bin/pip install aider-chat==0.86.2`, then GADUGI_AIDER_BIN=V/bin).

AIDER_META = {
    "openai/fake-model": {
        "max_input_tokens": 128000,
        "max_tokens": 8192,
        "max_output_tokens": 8192,
        "input_cost_per_token": 0.000001,
        "output_cost_per_token": 0.000002,
        "litellm_provider": "openai",
        "mode": "chat",
    }
}


def aider_write(turn: Turn) -> Reply:
    if turn.index == 0:
        return say("I'll create it.\n\n" + edit_block(COMMIT_FILE, "hello from the agent\n"))
    return say("Done.")


@pytest.fixture
def aider_rig(make_rig: Callable[..., ClaudeRig]) -> tuple[ClaudeRig, AiderProfile]:
    folder = os.environ.get("GADUGI_AIDER_BIN")
    if not folder or not (Path(folder) / "aider").exists():
        pytest.skip("aider is not installed (set GADUGI_AIDER_BIN to the folder holding it)")
    rig = make_rig(Path(folder), script={"aider_write": aider_write})
    meta = rig.root / "aider-models.json"
    meta.write_text(json.dumps(AIDER_META))
    rig.env |= {
        "OPENAI_API_BASE": rig.server.url + "/v1",
        "OPENAI_API_KEY": "sk-test-not-a-real-key",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no price list from the internet
    }
    extra = ("--model-metadata-file", str(meta), "--edit-format", "diff", "--map-tokens", "0")
    options = AiderOptions(str(Path(folder) / "aider"), "openai/fake-model", extra)
    return rig, AiderProfile(options)


def test_aider_commits_its_edit(aider_rig: tuple[ClaudeRig, AiderProfile]) -> None:
    rig, profile = aider_rig
    run = rig.run(tagged("aider_write"), profile=profile)

    assert run.outcome.success, run.outcome.error
    assert (rig.repo / COMMIT_FILE).read_text() == "hello from the agent\n"
    assert rig.git("log", "-1", "--format=%s").strip() == "fake: agent changes"
    assert rig.git("status", "--porcelain", "--untracked-files=all") == ""
    agent = run.outcome.agent
    assert agent["num_turns"] == 1 and agent["commits_made"] == 1
    assert agent["cost_usd"] and agent["input_tokens"] and agent["output_tokens"]


def test_aider_unauthorized_is_fatal(aider_rig: tuple[ClaudeRig, AiderProfile]) -> None:
    rig, profile = aider_rig
    run = rig.run(tagged("unauthorized"), profile=profile)

    assert run.exit_code == 0  # aider's own verdict on a failed API call
    assert run.outcome.fatal and not run.outcome.success
    assert run.outcome.agent["api_error"] == "AuthenticationError"


def test_gadugi_run_with_parallel_aiders(aider_rig: tuple[ClaudeRig, AiderProfile]) -> None:
    rig, profile = aider_rig
    extra = json.dumps(list(profile.options.extra_args))
    (rig.repo / "gadugi.toml").write_text(
        f'aider_model = "openai/fake-model"\naider_extra_args = {extra}\n'
    )
    for name in ("one", "two"):
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\n[[scenario:aider_write]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")

    done = gadugi(rig, "run", "--agent", "aider", "--json", "one", "two")

    assert done.returncode == 0, done.stdout + done.stderr
    for task in json.loads(done.stdout)["tasks"]:
        assert task["status"] == "completed" and task["commits"] == 1
        assert task["worktree"] is None  # nothing of aider's own was left behind
    assert "user" not in (rig.repo / ".git" / "config").read_text()

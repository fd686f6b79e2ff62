"""The codex, gemini and aider profiles on crafted input: command lines, and verdicts on
crafted event files, rollout files, logs and real git repositories."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from conftest import git
from gadugi.agents import CLIS, executable_for, profile_for
from gadugi.agents.aider import AiderOptions, AiderProfile
from gadugi.agents.base import AgentContext
from gadugi.agents.claude import MAX_PROMPT_ARG_BYTES, ClaudeProfile
from gadugi.agents.codex import CodexOptions, CodexProfile
from gadugi.agents.gemini import STATUS_BY_EXIT, GeminiOptions, GeminiProfile
from gadugi.config import OrchestrationConfig, load_config
from gadugi.errors import AgentError, ConfigError
from gadugi.tasks import Prompt

THREAD = "01a213a9-fa86-73e3-b1b9-f4e1ebe83d88"


def prompt_of(path: Path) -> Prompt:
    text = path.read_text(encoding="utf-8")
    return Prompt(
        path=path, rel_path=path.name, task_id=path.stem, title=path.stem, body=text, text=text
    )


@pytest.fixture
def ctx(tmp_path: Path) -> AgentContext:
    worktree = tmp_path / "wt"
    worktree.mkdir()
    git(worktree, "init", "-q", "-b", "main")
    (worktree / "README.md").write_text("# wt\n")
    git(worktree, "add", "-A")
    git(worktree, "commit", "-q", "-m", "start")
    prompt_file = tmp_path / "gadugi" / "prompts" / "t1.md"
    prompt_file.parent.mkdir(parents=True)
    prompt_file.write_text("---\nid: t1\n---\n# Task\nDo it.\n", encoding="utf-8")
    logs = tmp_path / "gadugi" / "logs"
    logs.mkdir()
    return AgentContext(
        orchestration_id="orch-1",
        task_id="t1",
        project_root=worktree,
        worktree=worktree,
        branch="main",
        prompt_file=prompt_file,
        source_prompt=prompt_file,
        log_file=logs / "t1.log",
        events_file=logs / "t1.events.jsonl",
    )


def fake_program(tmp_path: Path, name: str) -> str:
    exe = tmp_path / "bin" / name
    exe.parent.mkdir(exist_ok=True)
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return str(exe)


def write_events(path: Path, *events: dict[str, Any] | str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for event in events:
            fh.write(event if isinstance(event, str) else json.dumps(event) + "\n")


# -- wiring ------------------------------------------------------------------------------


def test_profile_for_builds_each_cli_profile_from_the_config() -> None:
    config = OrchestrationConfig(
        claude_executable="my-claude",
        codex_executable="my-codex",
        codex_model="gpt-5.5",
        codex_sandbox="workspace-write",
        gemini_model="gemini-2.5-pro",
        gemini_extra_args=("--debug",),
        aider_model="openai/x",
    )
    claude = profile_for("claude", config)
    codex = profile_for("codex", config)
    gemini = profile_for("gemini", config)
    aider = profile_for("aider", config)

    assert isinstance(claude, ClaudeProfile) and claude.options.executable == "my-claude"
    assert isinstance(codex, CodexProfile)
    assert codex.options == CodexOptions("my-codex", "gpt-5.5", "workspace-write")
    assert isinstance(gemini, GeminiProfile)
    assert gemini.options == GeminiOptions("gemini", "gemini-2.5-pro", ("--debug",))
    assert isinstance(aider, AiderProfile) and aider.options.model == "openai/x"
    assert {n: executable_for(n, config) for n in CLIS} == {
        "claude": "my-claude",
        "codex": "my-codex",
        "gemini": "gemini",
        "aider": "aider",
    }
    assert executable_for("shell", config) is None


def test_new_settings_are_checked(tmp_path: Path) -> None:
    (tmp_path / "gadugi.toml").write_text(
        'codex_model = "gpt-5.5"\ncodex_extra_args = ["-c", "x=1"]\ngemini_extra_args = "--a --b"\n'
    )
    config = load_config(tmp_path, environ={})
    assert config.codex_model == "gpt-5.5"
    assert config.codex_extra_args == ("-c", "x=1")
    assert config.gemini_extra_args == ("--a", "--b")

    with pytest.raises(ConfigError, match="codex_sandbox: must be one of"):
        OrchestrationConfig(codex_sandbox="open")
    with pytest.raises(ConfigError, match="aider_executable: cannot be empty"):
        OrchestrationConfig(aider_executable=" ")


@pytest.mark.parametrize(
    ("profile", "hint"),
    [
        (CodexProfile(CodexOptions("gadugi-no-codex")), "npm install -g @openai/codex"),
        (GeminiProfile(GeminiOptions("gadugi-no-gemini")), "npm install -g @google/gemini-cli"),
        (AiderProfile(AiderOptions("gadugi-no-aider")), "pip install aider-install"),
    ],
)
def test_missing_cli_is_an_agent_error_with_an_install_hint(
    ctx: AgentContext, profile: Any, hint: str
) -> None:
    with pytest.raises(AgentError, match=r"not found on PATH; install .*--agent") as caught:
        profile.prepare(ctx, prompt_of(ctx.prompt_file))
    assert hint in str(caught.value)


# -- codex -------------------------------------------------------------------------------


def test_codex_argv(ctx: AgentContext, tmp_path: Path) -> None:
    exe = fake_program(tmp_path, "codex")
    launch = CodexProfile(CodexOptions(exe)).prepare(ctx, prompt_of(ctx.prompt_file))
    schema = ctx.prompt_file.with_suffix(".verdict.json")

    assert launch.argv == [
        exe,
        "exec",
        "--json",
        "-c",
        'approval_policy="never"',
        "-c",
        'sandbox_mode="danger-full-access"',
        "-c",
        "check_for_update_on_startup=false",
        "--output-schema",
        str(schema),
        "--",
        "---\nid: t1\n---\n# Task\nDo it.\n",
    ]
    assert launch.structured_stdout and launch.env == {}
    # gadugi's verdict, asked for from beside the generated prompt (never in the worktree).
    assert json.loads(schema.read_text())["required"] == ["outcome", "summary"]


def test_codex_argv_resuming_with_every_option(ctx: AgentContext, tmp_path: Path) -> None:
    exe = fake_program(tmp_path, "codex")
    options = CodexOptions(exe, "gpt-5.5", "workspace-write", ("--enable", "x"))
    resumed = replace(ctx, attempt=2, resume_session=THREAD)

    argv = CodexProfile(options).prepare(resumed, prompt_of(ctx.prompt_file)).argv

    assert argv[1:3] == ["exec", "resume"]
    assert 'sandbox_mode="workspace-write"' in argv
    assert argv[argv.index("-m") + 1] == "gpt-5.5"
    assert argv[-5:] == ["--enable", "x", "--", THREAD, "---\nid: t1\n---\n# Task\nDo it.\n"]


def test_huge_prompts_become_a_pointer_to_the_file(ctx: AgentContext, tmp_path: Path) -> None:
    ctx.prompt_file.write_text("x" * (MAX_PROMPT_ARG_BYTES + 1), encoding="utf-8")
    codex = CodexProfile(CodexOptions(fake_program(tmp_path, "codex")))
    gemini = GeminiProfile(GeminiOptions(fake_program(tmp_path, "gemini")))

    codex_argv = codex.prepare(ctx, prompt_of(ctx.prompt_file)).argv
    gemini_argv = gemini.prepare(ctx, prompt_of(ctx.prompt_file)).argv

    assert str(ctx.prompt_file) in codex_argv[-1] and len(codex_argv[-1]) < 200
    assert gemini_argv[-1].startswith("--prompt=Your task is written in the file ")
    where = gemini_argv.index("--include-directories") + 1
    assert gemini_argv[where] == str(ctx.prompt_file.parent)


def thread_started() -> dict[str, Any]:
    return {"type": "thread.started", "thread_id": THREAD}


def agent_message(text: str) -> dict[str, Any]:
    return {"type": "item.completed", "item": {"type": "agent_message", "text": text}}


def command(code: int) -> dict[str, Any]:
    item = {"type": "command_execution", "command": "ls", "exit_code": code}
    return {"type": "item.completed", "item": item}


def turn_completed(input_tokens: int = 10, output_tokens: int = 5) -> dict[str, Any]:
    usage = {"input_tokens": input_tokens, "cached_input_tokens": 2, "output_tokens": output_tokens}
    return {"type": "turn.completed", "usage": usage}


def turn_failed(message: str) -> dict[str, Any]:
    return {"type": "turn.failed", "error": {"message": message}}


def write_rollout(home: Path, *payloads: dict[str, Any]) -> Path:
    path = home / "sessions/2026/11/25" / f"rollout-2026-11-25T17-00-00-{THREAD}.jsonl"
    path.parent.mkdir(parents=True)
    lines = [
        {"type": "turn_context", "payload": {"model": "gpt-5.5"}}
        if p.get("type") == "turn_context"
        else {"type": "event_msg", "payload": p}
        for p in payloads
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def codex_judge(ctx: AgentContext, home: Path, code: int, *events: dict[str, Any] | str) -> Any:
    write_events(ctx.events_file, *events)
    return CodexProfile(CodexOptions(home=str(home))).judge(ctx, code)


def test_codex_success_with_its_rollout(ctx: AgentContext, tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    tokens = {"type": "token_count", "info": {"last_token_usage": {}}}
    write_rollout(
        home,
        {"type": "task_started"},
        {"type": "turn_context"},
        tokens,
        {"type": "token_count", "info": None},  # a rate-limit update, not a request
        tokens,
        {"type": "task_complete"},
    )
    outcome = codex_judge(
        ctx, home, 0, thread_started(), command(0), command(2), agent_message("Done."),
        turn_completed(),
    )  # fmt: skip

    assert outcome.success
    assert outcome.agent == outcome.agent | {
        "session_id": THREAD,
        "num_turns": 2,
        "cost_usd": None,
        "input_tokens": 10,
        "output_tokens": 5,
        "cache_read_input_tokens": 2,
        "is_error": False,
        "api_error_status": None,
        "result": "Done.",
        "model": "gpt-5.5",
        "last_tool": "shell",
        "commands": 2,
        "failed_commands": 1,
        "permission_denials": None,
    }


@pytest.mark.parametrize(
    ("info", "fatal", "transient", "status"),
    [
        ({"http_connection_failed": {"http_status_code": 401}}, True, False, 401),
        ({"http_connection_failed": {"http_status_code": 403}}, True, False, 403),
        ("unauthorized", True, False, None),
        ({"http_connection_failed": {"http_status_code": 503}}, False, True, 503),
        ({"response_too_many_failed_attempts": {"http_status_code": 429}}, False, True, 429),
        ("usage_limit_exceeded", False, True, None),
        ("server_overloaded", False, True, None),
        ({"http_connection_failed": {"http_status_code": 400}}, False, False, 400),
        ("context_window_exceeded", False, False, None),
    ],
)
def test_codex_failure_classified_from_the_rollout(
    ctx: AgentContext, tmp_path: Path, info: Any, fatal: bool, transient: bool, status: int | None
) -> None:
    home = tmp_path / "codex-home"
    error = {"message": "whatever it says", "codex_error_info": info}
    write_rollout(home, {"type": "task_started"}, {"type": "task_complete", "error": error})
    outcome = codex_judge(ctx, home, 1, thread_started(), turn_failed("whatever it says"))

    assert (outcome.success, outcome.fatal, outcome.transient) == (False, fatal, transient)
    assert outcome.agent["api_error_status"] == status
    assert outcome.agent["is_error"] is True
    assert "whatever it says" in outcome.error


def test_codex_resumed_thread_counts_only_its_last_turn(ctx: AgentContext, tmp_path: Path) -> None:
    home = tmp_path / "codex-home"
    failed = {"message": "503", "codex_error_info": {"x": {"http_status_code": 503}}}
    tokens = {"type": "token_count", "info": {}}
    write_rollout(
        home,
        {"type": "task_started"},
        tokens,
        {"type": "task_complete", "error": failed},
        {"type": "task_started"},
        tokens,
        {"type": "task_complete"},
    )
    outcome = codex_judge(ctx, home, 0, thread_started(), turn_completed())
    assert outcome.success and outcome.agent["num_turns"] == 1
    assert outcome.agent["api_error_status"] is None


@pytest.mark.parametrize(
    ("message", "fatal", "transient", "status"),
    [
        (
            "unexpected status 401 Unauthorized: bad key, url: http://x/v1/responses",
            True,
            False,
            401,
        ),
        ("exceeded retry limit, last status: 429 Too Many Requests", False, True, 429),
        ("unexpected status 502 Bad Gateway", False, True, 502),
        ("stream disconnected", False, False, None),
    ],
)
def test_codex_without_a_rollout_reads_the_status_in_the_message(
    ctx: AgentContext,
    tmp_path: Path,
    message: str,
    fatal: bool,
    transient: bool,
    status: int | None,
) -> None:
    outcome = codex_judge(ctx, tmp_path / "empty-home", 1, thread_started(), turn_failed(message))

    assert (outcome.fatal, outcome.transient) == (fatal, transient)
    assert outcome.agent["api_error_status"] == status
    assert outcome.agent["num_turns"] is None


def test_codex_exit_without_a_turn_end(ctx: AgentContext, tmp_path: Path) -> None:
    error = {"type": "error", "message": "Reconnecting... waiting for network"}
    outcome = codex_judge(ctx, tmp_path, -15, thread_started(), error)
    assert outcome.error == "codex was killed by SIGTERM"

    ctx.events_file.unlink()
    outcome = codex_judge(ctx, tmp_path, 1, thread_started(), error)
    assert outcome.error == (
        "codex exited with code 1 before its turn ended: Reconnecting... waiting for network"
    )
    assert outcome.agent["is_error"] is None


def test_codex_unknown_thread_to_resume(ctx: AgentContext, tmp_path: Path) -> None:
    ctx.log_file.write_text("Error: thread/resume failed: no rollout found\n")
    resumed = replace(ctx, resume_session=THREAD)
    outcome = CodexProfile(CodexOptions(home=str(tmp_path))).judge(resumed, 1)

    assert outcome.transient and outcome.agent["session_id"] is None
    assert outcome.error == (
        f"could not resume codex thread {THREAD}: Error: thread/resume failed: no rollout found"
    )


def test_codex_judges_only_the_latest_attempt(ctx: AgentContext, tmp_path: Path) -> None:
    write_events(ctx.events_file, thread_started(), turn_completed())
    profile = CodexProfile(CodexOptions(fake_program(tmp_path, "codex"), home=str(tmp_path)))
    profile.prepare(ctx, prompt_of(ctx.prompt_file))  # attempt 2 starts here
    assert not profile.judge(ctx, 1).success  # and wrote nothing
    # Without a recorded start (after a restart) the last thread.started opens the attempt.
    write_events(ctx.events_file, thread_started(), turn_failed("unexpected status 500"))
    assert CodexProfile(CodexOptions(home=str(tmp_path))).judge(ctx, 1).transient


def test_codex_progress(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    profile = CodexProfile()
    line = json.dumps(command(0)) + "\n"
    write_events(path, thread_started(), line[:15])

    offset, info = profile.progress(path, 0)
    assert offset == len(json.dumps(thread_started())) + 1
    assert info == {"num_turns": None, "last_tool": None, "cost_usd": None, "session_id": THREAD}

    write_events(path, line[15:], "garbage\n")
    offset, info = profile.progress(path, offset)
    assert offset == path.stat().st_size and info["last_tool"] == "shell"


# -- gemini ------------------------------------------------------------------------------


def test_gemini_argv(ctx: AgentContext, tmp_path: Path) -> None:
    exe = fake_program(tmp_path, "gemini")
    plain = GeminiProfile(GeminiOptions(exe)).prepare(ctx, prompt_of(ctx.prompt_file))
    options = GeminiOptions(exe, "gemini-2.5-pro", ("--debug",))
    resumed = GeminiProfile(options).prepare(
        replace(ctx, resume_session="abc"), prompt_of(ctx.prompt_file)
    )

    assert plain.argv == [
        exe,
        "-o",
        "stream-json",
        "--approval-mode",
        "yolo",
        "--skip-trust",
        "--prompt=---\nid: t1\n---\n# Task\nDo it.\n",
    ]
    assert plain.structured_stdout
    assert resumed.argv[6:] == [
        "-m",
        "gemini-2.5-pro",
        "--resume",
        "abc",
        "--debug",
        "--prompt=---\nid: t1\n---\n# Task\nDo it.\n",
    ]


SESSION = "b2a43688-c8e8-4be6-9396-02edf100fdf4"


def g_init() -> dict[str, Any]:
    return {"type": "init", "session_id": SESSION, "model": "gemini-2.5-pro"}


def g_text(text: str) -> dict[str, Any]:
    return {"type": "message", "role": "assistant", "content": text, "delta": True}


def g_tool(name: str) -> dict[str, Any]:
    return {"type": "tool_use", "tool_name": name, "tool_id": "t", "parameters": {}}


def g_result(status: str = "success", **extra: Any) -> dict[str, Any]:
    stats = {"input_tokens": 20, "output_tokens": 4, "cached": 1, "tool_calls": 2}
    return {"type": "result", "status": status, "stats": stats, **extra}


def gemini_judge(ctx: AgentContext, code: int, *events: dict[str, Any] | str) -> Any:
    write_events(ctx.events_file, *events)
    return GeminiProfile().judge(ctx, code)


def test_gemini_success_counts_model_turns(ctx: AgentContext) -> None:
    user = {"type": "message", "role": "user", "content": "Do it."}
    outcome = gemini_judge(
        ctx, 0, g_init(), user, g_text("I'll "), g_text("look."), g_tool("read_file"),
        {"type": "tool_result", "tool_id": "t", "status": "success"}, g_tool("write_file"),
        {"type": "tool_result", "tool_id": "t", "status": "error"}, g_text("Done"),
        g_text("."), g_result(),
    )  # fmt: skip

    assert outcome.success
    assert outcome.agent == outcome.agent | {
        "session_id": SESSION,
        "num_turns": 3,
        "last_tool": "write_file",
        "cost_usd": None,
        "input_tokens": 20,
        "output_tokens": 4,
        "cache_read_input_tokens": 1,
        "tool_calls": 2,
        "is_error": False,
        "api_error_status": None,
        "result": "Done.",
        "model": "gemini-2.5-pro",
    }


@pytest.mark.parametrize(
    ("code", "fatal", "transient", "status"),
    [
        (145, True, False, 401),
        (147, True, False, 403),
        (41, True, False, None),
        (173, False, True, 429),
        (244, False, True, 500),
        (247, False, True, 503),
        (17, False, True, 529),
        (144, False, False, 400),
        (1, False, False, None),
    ],
)
def test_gemini_failure_classified_from_its_exit_code(
    ctx: AgentContext, code: int, fatal: bool, transient: bool, status: int | None
) -> None:
    error = {"type": "unknown", "message": "[API Error: something]"}
    outcome = gemini_judge(ctx, code, g_init(), g_result("error", error=error))

    assert (outcome.success, outcome.fatal, outcome.transient) == (False, fatal, transient)
    assert outcome.agent["api_error_status"] == status
    assert outcome.agent["is_error"] is True
    assert outcome.agent["session_id"] is None  # no model turn: nothing to resume
    assert "[API Error: something]" in outcome.error


def test_gemini_status_codes_do_not_collide() -> None:
    assert len(STATUS_BY_EXIT) == 12
    assert not set(STATUS_BY_EXIT) & {0, 1, 41, 42, 44, 52, 53, 130}


def test_gemini_without_a_result(ctx: AgentContext) -> None:
    ctx.log_file.write_text("Error: Invalid auth method selected.\n")
    outcome = gemini_judge(ctx, 2, g_init(), g_text("hm"))
    assert (
        outcome.error
        == "gemini exited with code 2 without a result: Error: Invalid auth method selected."
    )
    assert outcome.agent["session_id"] == SESSION and outcome.agent["num_turns"] == 1


def test_gemini_success_with_a_nonzero_exit_fails(ctx: AgentContext) -> None:
    outcome = gemini_judge(ctx, 3, g_init(), g_text("x"), g_result())
    assert not outcome.success and outcome.error == "gemini exited with code 3"


def test_gemini_unknown_session_to_resume(ctx: AgentContext) -> None:
    ctx.log_file.write_text('Error resuming session: Invalid session identifier "x".\n')
    outcome = GeminiProfile().judge(replace(ctx, resume_session="x"), 42)
    assert outcome.transient and outcome.agent["session_id"] is None
    assert (outcome.error or "").startswith("could not resume gemini session x: Error resum")


# -- aider -------------------------------------------------------------------------------


@pytest.fixture
def aider(tmp_path: Path) -> AiderProfile:
    return AiderProfile(AiderOptions(fake_program(tmp_path, "aider"), "openai/fake"))


def message_send(prompt: int, completion: int, cost: float) -> dict[str, Any]:
    props = {
        "main_model": "openai/fake",
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cost": cost,
        "total_cost": cost,
    }
    return {"event": "message_send", "properties": props, "time": 1}


def test_aider_argv_and_attempt_marker(ctx: AgentContext, aider: AiderProfile) -> None:
    launch = aider.prepare(ctx, prompt_of(ctx.prompt_file))

    argv = launch.argv
    assert argv[1:3] == ["--message-file", str(ctx.prompt_file)]
    for flag in ("--yes-always", "--no-pretty", "--no-check-update", "--no-gitignore"):
        assert flag in argv
    assert argv[argv.index("--analytics-log") + 1] == str(ctx.events_file)
    assert argv[argv.index("--chat-history-file") + 1].startswith(str(ctx.log_file.parent))
    assert argv[-2:] == ["--model", "openai/fake"]
    assert not launch.structured_stdout  # its stdout is text: it goes to the log
    marker = json.loads(ctx.events_file.read_text().splitlines()[-1])
    head = git(ctx.worktree, "rev-parse", "HEAD").strip()
    assert marker["event"] == "gadugi.attempt"
    assert marker["properties"] == {"head": head, "attempt": 1, "log_offset": 0}
    exclude = git(ctx.worktree, "rev-parse", "--git-path", "info/exclude").strip()
    assert "/.aider*" in (ctx.worktree / exclude).read_text().splitlines()


def test_aider_commit_means_success(ctx: AgentContext, aider: AiderProfile) -> None:
    aider.prepare(ctx, prompt_of(ctx.prompt_file))
    (ctx.worktree / "hello.txt").write_text("hi\n")
    git(ctx.worktree, "add", "-A")
    git(ctx.worktree, "commit", "-q", "-m", "fake: agent changes")
    write_events(ctx.events_file, message_send(1800, 20, 0.002), message_send(200, 10, 0.001))

    outcome = aider.judge(ctx, 0)

    assert outcome.success
    assert outcome.agent["num_turns"] == 2
    assert outcome.agent["cost_usd"] == pytest.approx(0.003)
    assert (outcome.agent["input_tokens"], outcome.agent["output_tokens"]) == (2000, 30)
    assert outcome.agent["commits_made"] == 1 and not outcome.agent["uncommitted_changes"]
    assert outcome.agent["session_id"] is None and outcome.agent["is_error"] is None
    assert outcome.agent["model"] == "openai/fake"


def test_aider_uncommitted_changes_count_as_work(ctx: AgentContext, aider: AiderProfile) -> None:
    aider.prepare(ctx, prompt_of(ctx.prompt_file))
    (ctx.worktree / "README.md").write_text("# changed\n")
    outcome = aider.judge(ctx, 0)
    assert outcome.success and outcome.agent["uncommitted_changes"]


def test_aider_files_of_its_own_are_not_changes(ctx: AgentContext, aider: AiderProfile) -> None:
    aider.prepare(ctx, prompt_of(ctx.prompt_file))
    (ctx.worktree / ".aider.tags.cache.v4").mkdir()
    (ctx.worktree / ".aider.tags.cache.v4" / "cache.db").write_text("x")
    outcome = aider.judge(ctx, 0)
    assert not outcome.success
    assert (outcome.error or "").startswith("aider exited 0 but made no commit and changed")


@pytest.mark.parametrize(
    ("log", "fatal", "transient", "named"),
    [
        ("litellm.AuthenticationError: bad key", True, False, "AuthenticationError"),
        ("litellm.RateLimitError: RateLimitError: slow down", False, True, "RateLimitError"),
        ("litellm.ServiceUnavailableError: overloaded", False, True, "ServiceUnavailableError"),
        ("litellm.BadRequestError: bad model", False, False, "BadRequestError"),
        ("Nothing to change.", False, False, None),
    ],
)  # fmt: skip
def test_aider_nothing_done_says_why(
    ctx: AgentContext,
    aider: AiderProfile,
    log: str,
    fatal: bool,
    transient: bool,
    named: str | None,
) -> None:
    ctx.log_file.write_text("litellm.AuthenticationError: from an earlier attempt\n")
    aider.prepare(ctx, prompt_of(ctx.prompt_file))
    with ctx.log_file.open("a") as fh:
        fh.write(f"Aider v0.86.2\n{log}\n")

    outcome = aider.judge(ctx, 0)

    assert (outcome.success, outcome.fatal, outcome.transient) == (False, fatal, transient)
    assert outcome.agent["api_error"] == named
    assert "made no commit and changed nothing" in (outcome.error or "")


def test_aider_nonzero_exit_fails(ctx: AgentContext, aider: AiderProfile) -> None:
    aider.prepare(ctx, prompt_of(ctx.prompt_file))
    (ctx.worktree / "x.txt").write_text("x")
    ctx.log_file.write_text("Model openai/nope not found\n")
    outcome = aider.judge(ctx, 1)
    assert not outcome.success and not outcome.transient
    assert outcome.error == "aider exited with code 1: Model openai/nope not found"


def test_aider_judges_the_last_attempt_even_after_a_restart(
    ctx: AgentContext, aider: AiderProfile
) -> None:
    aider.prepare(ctx, prompt_of(ctx.prompt_file))
    write_events(ctx.events_file, message_send(1, 1, 0.5))
    git(ctx.worktree, "commit", "-q", "--allow-empty", "-m", "first attempt")
    aider.prepare(replace(ctx, attempt=2), prompt_of(ctx.prompt_file))

    outcome = AiderProfile().judge(ctx, 0)  # a fresh profile, as after a restart

    assert not outcome.success  # the second attempt did nothing
    assert outcome.agent["num_turns"] == 0 and outcome.agent["cost_usd"] is None


def test_no_cli_profile_reads_real_credentials(ctx: AgentContext, tmp_path: Path) -> None:
    for profile in (
        CodexProfile(CodexOptions(fake_program(tmp_path, "codex"))),
        GeminiProfile(GeminiOptions(fake_program(tmp_path, "gemini"))),
        AiderProfile(AiderOptions(fake_program(tmp_path, "aider"))),
    ):
        launch = profile.prepare(ctx, prompt_of(ctx.prompt_file))
        assert not any(k.endswith(("KEY", "TOKEN")) for k in launch.env)


def test_aider_gets_the_git_identity_it_lacks(
    ctx: AgentContext, aider: AiderProfile, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without one, aider writes placeholders into the .git/config all worktrees share.
    monkeypatch.setenv("HOME", str(tmp_path / "empty-home"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("GIT_CONFIG_COUNT", raising=False)
    monkeypatch.setenv("GIT_AUTHOR_NAME", "Ada")
    monkeypatch.delenv("GIT_AUTHOR_EMAIL", raising=False)

    env = aider.prepare(ctx, prompt_of(ctx.prompt_file)).env
    assert env == {
        "GIT_CONFIG_COUNT": "2",
        "GIT_CONFIG_KEY_0": "user.name",
        "GIT_CONFIG_VALUE_0": "Ada",
        "GIT_CONFIG_KEY_1": "user.email",
        "GIT_CONFIG_VALUE_1": "gadugi@localhost",
    }

    git(ctx.worktree, "config", "user.name", "Grace")
    git(ctx.worktree, "config", "user.email", "grace@example.invalid")
    assert aider.prepare(ctx, prompt_of(ctx.prompt_file)).env == {}


def test_every_agent_setting_reaches_its_profile_options() -> None:
    """Each `<agent>_<field>` configuration key is the field of that agent's options."""
    from dataclasses import fields as dc_fields

    from gadugi.agents import CLI_PROFILES, profile_for
    from gadugi.config import OrchestrationConfig

    config = OrchestrationConfig(
        claude_model="m-claude",
        codex_model="m-codex",
        gemini_model="m-gemini",
        aider_model="m-aider",
        claude_max_turns=7,
        codex_sandbox="read-only",
        gemini_extra_args=("--x",),
    )
    for name, (_, options) in CLI_PROFILES.items():
        profile = profile_for(name, config)
        opts = profile.options  # type: ignore[attr-defined]
        assert isinstance(opts, options)
        assert opts.model == f"m-{name}"
        for f in dc_fields(options):
            key = f"{name}_{f.name}"
            if hasattr(config, key):
                assert getattr(opts, f.name) == getattr(config, key), key
    assert profile_for("claude", config).options.max_turns == 7  # type: ignore[attr-defined]

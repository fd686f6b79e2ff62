"""The claude agent profile: the real Claude Code CLI against our scripted model server,
then judge and progress on crafted event files."""

from __future__ import annotations

import json
import os
import socket
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from gadugi.agents.base import VERDICT_SCHEMA, AgentContext, Outcome
from gadugi.agents.claude import (
    DEFAULT_ALLOWED_TOOLS,
    MAX_PROMPT_ARG_BYTES,
    ClaudeOptions,
    ClaudeProfile,
)
from gadugi.errors import AgentError
from gadugi.tasks import Prompt
from modelserver import COMMIT_FILE, COMMIT_MESSAGE, Failure, ModelServer, Turn, locate

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

# Imported as a plugin, not by name, so that pytest rewrites its asserts.

TEST_MODEL = "claude-sonnet-4-5"  # what claude_fixtures runs, for its deterministic cost
# 2 turns of 1000 input and 100 output tokens at Sonnet's $3/M and $15/M.
TWO_TURN_COST = 2 * (1000 * 3 + 100 * 15) / 1e6
SCHEMA = json.dumps(VERDICT_SCHEMA, separators=(",", ":"))


def test_the_verdict_schema_asks_for_an_outcome_and_a_summary() -> None:
    schema = json.loads(SCHEMA)
    assert schema["required"] == ["outcome", "summary"]
    assert schema["properties"]["outcome"]["enum"] == ["done", "blocked", "no_change"]
    assert schema["properties"]["summary"]["type"] == "string"
    assert schema["additionalProperties"] is False


def prompt_of(path: Path) -> Prompt:
    text = path.read_text(encoding="utf-8")
    return Prompt(
        path=path, rel_path=path.name, task_id=path.stem, title=path.stem, body=text, text=text
    )


def tagged(scenario: str, text: str = "Do the task.") -> str:
    return f"# Task\n\n{text}\n\n[[scenario:{scenario}]]\n"


# -- the real CLI ------------------------------------------------------------------------


def test_write_commit_succeeds_and_commits(claude_rig: ClaudeRig) -> None:
    # Front matter first: a prompt starting with "-" must not be read as an option.
    run = claude_rig.run("---\nid: hello\n---\n" + tagged("write_commit"))

    assert run.exit_code == 0, run.ctx.log_file.read_text()
    assert run.outcome.success, run.outcome.error
    assert (claude_rig.repo / COMMIT_FILE).exists()
    assert claude_rig.git("log", "-1", "--format=%s").strip() == COMMIT_MESSAGE
    assert claude_rig.git("status", "--porcelain") == ""
    agent = run.outcome.agent
    assert uuid.UUID(agent["session_id"])
    assert agent["num_turns"] == 3  # the verdict's StructuredOutput call is a turn of its own
    assert agent["cost_usd"] == pytest.approx(TWO_TURN_COST)
    assert (agent["input_tokens"], agent["output_tokens"]) == (2000, 200)
    assert agent["permission_denials"] == []
    assert agent["is_error"] is False
    assert agent["api_error_status"] is None
    assert agent["subtype"] == "success"
    assert (run.outcome.verdict, run.outcome.summary) == ("done", f"Done: committed {COMMIT_FILE}.")
    assert agent["model"] == TEST_MODEL
    assert run.seconds < 20
    turns = claude_rig.server.messages("write_commit")
    assert [r.turn for r in turns] == [0, 1]
    offered = {tool["name"] for tool in turns[0].body["tools"]}  # type: ignore[index]
    assert set(DEFAULT_ALLOWED_TOOLS) <= offered


def test_progress_reads_a_finished_events_file(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("write_commit"))
    events = run.ctx.events_file

    offset, info = ClaudeProfile().progress(events, 0)

    assert offset == events.stat().st_size
    assert info == {
        "num_turns": 3,
        "last_tool": "Bash",
        "cost_usd": pytest.approx(TWO_TURN_COST),
        "session_id": run.outcome.agent["session_id"],
    }


def test_progress_follows_a_running_agent(claude_rig: ClaudeRig) -> None:
    profile = ClaudeProfile(claude_rig.options())
    ctx = claude_rig.context(tagged("write_commit"))
    child = claude_rig.start(profile, ctx)
    offset, seen = 0, []
    deadline = time.monotonic() + 30
    while child.poll() is None and time.monotonic() < deadline:
        if ctx.events_file.exists():
            offset, info = profile.progress(ctx.events_file, offset)
            seen.append(dict(info))
        time.sleep(0.02)
    assert child.wait(timeout=5) == 0
    offset, info = profile.progress(ctx.events_file, offset)

    assert offset == ctx.events_file.stat().st_size
    assert info["num_turns"] == 3 and info["last_tool"] == "Bash"
    assert all(s["num_turns"] <= 3 for s in seen)
    assert profile.judge(ctx, 0).success


def test_denied_tool_is_reported_and_fails(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("deny"))

    assert run.exit_code == 0  # the CLI itself calls this a success
    assert not run.outcome.success
    assert not run.outcome.transient and not run.outcome.fatal
    assert "WebFetch" in (run.outcome.error or "")
    denials = run.outcome.agent["permission_denials"]
    assert [d["tool_name"] for d in denials] == ["WebFetch"]
    assert denials[0]["tool_input"]["url"].startswith("http://127.0.0.1")


def test_overload_retried_by_the_cli_itself(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("overloaded_once"), env={"CLAUDE_CODE_MAX_RETRIES": "1"})

    assert run.outcome.success, run.outcome.error
    assert run.outcome.agent["api_retries"] == 1
    assert [r.status for r in claude_rig.server.messages("overloaded_once")] == [529, 200, 200]
    assert claude_rig.git("log", "-1", "--format=%s").strip() == COMMIT_MESSAGE


def test_overload_without_cli_retries_is_transient_and_resumable(claude_rig: ClaudeRig) -> None:
    first = claude_rig.run(tagged("overloaded_once"))  # CLAUDE_CODE_MAX_RETRIES=0

    assert first.exit_code == 1
    assert not first.outcome.success and first.outcome.transient and not first.outcome.fatal
    assert first.outcome.agent["api_error_status"] == 529
    assert "529" in (first.outcome.error or "")
    session = first.outcome.agent["session_id"]

    # The runner's retry resumes the same session; its events go on in the same file.
    second = claude_rig.run(tagged("overloaded_once"), attempt=2, resume_session=session)

    assert second.outcome.success, second.outcome.error
    assert second.outcome.agent["session_id"] == session
    assert claude_rig.git("log", "-1", "--format=%s").strip() == COMMIT_MESSAGE
    assert [r.status for r in claude_rig.server.messages("overloaded_once")] == [529, 200, 200]


def test_unknown_session_to_resume_is_transient_and_forgotten(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("text_only"), resume_session=str(uuid.uuid4()))

    assert run.exit_code == 1
    assert run.outcome.transient and not run.outcome.success
    assert run.outcome.agent["session_id"] is None
    assert "could not resume" in (run.outcome.error or "")


def test_unauthorized_is_fatal(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("unauthorized"))

    assert run.exit_code == 1
    assert run.outcome.fatal and not run.outcome.success and not run.outcome.transient
    assert "authenticate" in (run.outcome.error or "")
    assert run.outcome.agent["api_error_status"] == 401
    assert run.outcome.agent["api_error"] == "authentication_failed"


def test_max_turns_is_a_failure_naming_the_limit(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("loop"), options=claude_rig.options(max_turns=2))

    assert run.exit_code == 1
    assert not run.outcome.success and not run.outcome.transient
    assert run.outcome.error == "claude stopped: maximum number of turns (2) reached"
    assert run.outcome.agent["subtype"] == "error_max_turns"
    assert claude_rig.server.count("loop") == 2


def test_connection_refused_is_transient(claude_rig: ClaudeRig) -> None:
    with socket.socket() as sock:  # a port that was free a moment ago and now is closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    run = claude_rig.run(
        tagged("text_only"), env={"ANTHROPIC_BASE_URL": f"http://127.0.0.1:{port}"}
    )

    assert run.outcome.transient and not run.outcome.success
    assert run.outcome.agent["api_error_status"] is None
    assert "no connection" in (run.outcome.error or "")


def test_usage_limit_gives_retry_after(make_claude_rig: Callable[..., ClaudeRig]) -> None:
    # The reset time reaches the events only for a claude.ai login, so this run uses a
    # (fake) OAuth token instead of an API key. Traced with strace in a network namespace:
    # the CLI then still connects to nothing but the server's loopback port.
    reset = int(time.time()) + 5 * 3600

    def usage_limit(turn: Turn) -> Failure:
        return Failure(
            429,
            "rate_limit_error",
            "usage limit reached",
            (
                ("anthropic-ratelimit-unified-status", "rejected"),
                ("anthropic-ratelimit-unified-reset", str(reset)),
                ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
            ),
        )

    rig = make_claude_rig(script={"usage_limit": usage_limit})
    run = rig.run(
        tagged("usage_limit"),
        env={"ANTHROPIC_API_KEY": None, "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test-not-real"},
    )

    assert run.outcome.transient and not run.outcome.success
    assert run.outcome.agent["api_error_status"] == 429
    assert run.outcome.agent["retry_after"] == reset
    assert "resets at" in (run.outcome.error or "")


def test_usage_limit_with_an_api_key_has_no_reset_time(claude_rig: ClaudeRig) -> None:
    run = claude_rig.run(tagged("usage_limit"))

    assert run.outcome.transient
    assert run.outcome.agent["api_error_status"] == 429
    assert "retry_after" not in run.outcome.agent


def test_parallel_agents_each_follow_their_own_script(claude_rig: ClaudeRig) -> None:
    profile = ClaudeProfile(claude_rig.options())
    contexts = [claude_rig.context(tagged(s), task_id=s) for s in ("text_only", "deny")]
    children = [claude_rig.start(profile, ctx) for ctx in contexts]
    codes = [child.wait(timeout=60) for child in children]

    ok, denied = (profile.judge(ctx, code) for ctx, code in zip(contexts, codes, strict=True))
    assert ok.success and (ok.verdict, ok.summary) == ("done", "Nothing to do.")
    assert not denied.success and denied.agent["permission_denials"]


# -- prepare ---------------------------------------------------------------------------


@pytest.fixture
def ctx(tmp_path: Path) -> AgentContext:
    prompt_file = tmp_path / "prompts" / "t1.md"
    prompt_file.parent.mkdir()
    prompt_file.write_text("# Task\nDo it.\n", encoding="utf-8")
    return AgentContext(
        orchestration_id="orch-1",
        task_id="t1",
        project_root=tmp_path,
        worktree=tmp_path,
        branch="gadugi/t1",
        prompt_file=prompt_file,
        source_prompt=prompt_file,
        log_file=tmp_path / "t1.log",
        events_file=tmp_path / "t1.events.jsonl",
    )


@pytest.fixture
def fake_claude(tmp_path: Path) -> str:
    exe = tmp_path / "bin" / "claude"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\nexit 0\n")
    exe.chmod(0o755)
    return str(exe)


def test_default_argv(ctx: AgentContext, fake_claude: str) -> None:
    launch = ClaudeProfile(ClaudeOptions(executable=fake_claude)).prepare(
        ctx, prompt_of(ctx.prompt_file)
    )

    assert launch.argv == [
        fake_claude,
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "acceptEdits",
        "--json-schema",
        SCHEMA,
        "--allowedTools",
        "Bash",
        "Edit",
        "Write",
        "Read",
        "Glob",
        "Grep",
        "--",
        "# Task\nDo it.\n",
    ]
    assert launch.structured_stdout
    assert not any("KEY" in k or "TOKEN" in k for k in launch.env)


def test_argv_with_every_option(ctx: AgentContext, fake_claude: str) -> None:
    options = ClaudeOptions(
        executable=fake_claude,
        model="claude-sonnet-4-5",
        permission_mode="dontAsk",
        allowed_tools=("Bash(git *)",),
        max_turns=7,
        extra_args=("--append-system-prompt", "Be brief."),
    )
    resumed = AgentContext(**{**vars(ctx), "attempt": 2, "resume_session": "abc-123"})

    argv = ClaudeProfile(options).prepare(resumed, prompt_of(ctx.prompt_file)).argv

    assert argv[1:] == [
        "-p",
        "--output-format",
        "stream-json",
        "--verbose",
        "--permission-mode",
        "dontAsk",
        "--model",
        "claude-sonnet-4-5",
        "--max-turns",
        "7",
        "--resume",
        "abc-123",
        "--json-schema",
        SCHEMA,
        "--allowedTools",
        "Bash(git *)",
        "--append-system-prompt",
        "Be brief.",
        "--",
        "# Task\nDo it.\n",
    ]


def test_huge_prompt_is_handed_over_as_a_file(ctx: AgentContext, fake_claude: str) -> None:
    ctx.prompt_file.write_text("x" * (MAX_PROMPT_ARG_BYTES + 1), encoding="utf-8")

    argv = (
        ClaudeProfile(ClaudeOptions(executable=fake_claude))
        .prepare(ctx, prompt_of(ctx.prompt_file))
        .argv
    )

    assert str(ctx.prompt_file) in argv[-1] and len(argv[-1]) < 200
    assert argv[argv.index("--add-dir") + 1] == str(ctx.prompt_file.parent)


def test_missing_cli_is_an_agent_error(ctx: AgentContext) -> None:
    profile = ClaudeProfile(ClaudeOptions(executable="gadugi-test-no-such-claude"))
    with pytest.raises(AgentError, match=r"not found.*install.*--agent"):
        profile.prepare(ctx, prompt_of(ctx.prompt_file))


def test_bypass_as_root_is_refused_unless_sandboxed(
    ctx: AgentContext, fake_claude: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.delenv("IS_SANDBOX", raising=False)
    monkeypatch.delenv("CLAUDE_CODE_BUBBLEWRAP", raising=False)
    profile = ClaudeProfile(
        ClaudeOptions(executable=fake_claude, permission_mode="bypassPermissions")
    )
    with pytest.raises(AgentError, match="root"):
        profile.prepare(ctx, prompt_of(ctx.prompt_file))

    monkeypatch.setenv("IS_SANDBOX", "1")
    assert "bypassPermissions" in profile.prepare(ctx, prompt_of(ctx.prompt_file)).argv


# -- judge on crafted events -------------------------------------------------------------

SESSION = "11111111-2222-3333-4444-555555555555"


def init() -> dict[str, Any]:
    return {"type": "system", "subtype": "init", "session_id": SESSION, "model": TEST_MODEL}


def assistant(message_id: str, *blocks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "session_id": SESSION,
        "parent_tool_use_id": None,
        "message": {"id": message_id, "role": "assistant", "content": list(blocks)},
        **extra,
    }


def tool_use(name: str) -> dict[str, Any]:
    return {"type": "tool_use", "id": f"toolu_{name}", "name": name, "input": {}}


def result(**fields: Any) -> dict[str, Any]:
    base = {
        "type": "result",
        "subtype": "success",
        "is_error": False,
        "api_error_status": None,
        "num_turns": 2,
        "result": "Done.",
        "session_id": SESSION,
        "total_cost_usd": 0.5,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "permission_denials": [],
    }
    return {**base, **fields}


def write_events(path: Path, *events: dict[str, Any] | str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for event in events:
            fh.write(event if isinstance(event, str) else json.dumps(event) + "\n")


def judge(ctx: AgentContext, exit_code: int, *events: dict[str, Any] | str) -> Outcome:
    write_events(ctx.events_file, *events)
    return ClaudeProfile().judge(ctx, exit_code)


def test_judge_success(ctx: AgentContext) -> None:
    outcome = judge(ctx, 0, init(), assistant("m1", tool_use("Bash")), result())
    assert outcome.success
    assert outcome.agent["session_id"] == SESSION
    assert outcome.agent["cost_usd"] == 0.5
    assert (outcome.agent["input_tokens"], outcome.agent["output_tokens"]) == (10, 5)


def test_judge_reads_the_verdict_from_the_structured_output_only(ctx: AgentContext) -> None:
    said = {"outcome": "blocked", "summary": "No database here."}
    outcome = judge(ctx, 0, init(), result(structured_output=said, result="All done!"))
    assert (outcome.success, outcome.verdict, outcome.summary) == (
        True,
        "blocked",
        "No database here.",
    )
    for bad in ({"outcome": "finished", "summary": "x"}, "done", None):
        outcome = judge(ctx, 0, init(), result(structured_output=bad, result="done"))
        assert (outcome.success, outcome.verdict, outcome.summary) == (True, None, None)


def test_judge_skips_garbage_and_partial_lines(ctx: AgentContext) -> None:
    outcome = judge(
        ctx,
        0,
        "not json at all\n",
        init(),
        "[1, 2]\n",
        result(),
        '{"type":"assistant","message":{"id":"m9","con',
    )
    assert outcome.success
    assert outcome.agent["num_turns"] == 2


def test_judge_without_result_fails_with_the_log_tail(ctx: AgentContext) -> None:
    ctx.log_file.write_text("Error: something broke\n")
    outcome = judge(ctx, 1, init(), assistant("m1", tool_use("Bash")))
    assert not outcome.success and not outcome.transient
    assert outcome.error == "claude exited with code 1 without a result: Error: something broke"
    assert outcome.agent["session_id"] == SESSION
    assert outcome.agent["last_tool"] == "Bash"
    assert outcome.agent["is_error"] is None


def test_judge_on_an_empty_or_missing_file(ctx: AgentContext) -> None:
    assert not ClaudeProfile().judge(ctx, 0).success
    ctx.events_file.write_text("")
    assert "without a result" in (ClaudeProfile().judge(ctx, 0).error or "")


def test_judge_nonzero_exit_with_a_good_result_fails(ctx: AgentContext) -> None:
    outcome = judge(ctx, 2, init(), result())
    assert not outcome.success
    assert outcome.error == "claude exited with code 2: Done."


def test_judge_signal(ctx: AgentContext) -> None:
    outcome = judge(ctx, -9, init())
    assert outcome.error == "claude was killed by SIGKILL"


@pytest.mark.parametrize(
    ("status", "kind", "fatal", "transient"),
    [
        (401, "authentication_failed", True, False),
        (403, None, True, False),
        (400, "billing_error", True, False),
        (429, "rate_limit", False, True),
        (529, "server_error", False, True),
        (500, None, False, True),
        (None, "server_error", False, True),  # connection refused
        (400, "invalid_request", False, False),
        (404, "model_not_found", False, False),
    ],
)
def test_judge_classifies_api_errors(
    ctx: AgentContext, status: int | None, kind: str | None, fatal: bool, transient: bool
) -> None:
    error_message = assistant(
        "e1", {"type": "text", "text": "API Error"}, **({"error": kind} if kind else {})
    )
    outcome = judge(
        ctx,
        1,
        init(),
        error_message,
        result(is_error=True, api_error_status=status, result="API Error: ..."),
    )
    assert (outcome.success, outcome.fatal, outcome.transient) == (False, fatal, transient)
    assert outcome.agent["api_error_status"] == status
    assert outcome.error


def test_judge_denials_fail_even_when_the_cli_says_success(ctx: AgentContext) -> None:
    denial = {
        "tool_name": "Write",
        "tool_use_id": "t1",
        "tool_input": {"file_path": "/x", "content": "y" * 10_000},
    }
    outcome = judge(
        ctx, 0, init(), result(permission_denials=[denial, {**denial, "tool_name": "Bash"}])
    )
    assert not outcome.success
    assert "Bash, Write" in (outcome.error or "")
    assert len(outcome.agent["permission_denials"][0]["tool_input"]["content"]) <= 500


def test_judge_rate_limit_event_gives_retry_after(ctx: AgentContext) -> None:
    event = {
        "type": "rate_limit_event",
        "session_id": SESSION,
        "rate_limit_info": {
            "status": "rejected",
            "resetsAt": 1900000000,
            "rateLimitType": "five_hour",
        },
    }
    outcome = judge(
        ctx,
        1,
        init(),
        event,
        assistant("e1", error="rate_limit"),
        result(is_error=True, api_error_status=429),
    )
    assert outcome.transient
    assert outcome.agent["retry_after"] == 1900000000
    assert "2030-03-17T17:46:40+00:00" in (outcome.error or "")


def test_judge_reads_only_this_attempt(ctx: AgentContext, fake_claude: str) -> None:
    write_events(ctx.events_file, init(), result())  # attempt 1 succeeded... then was retried
    profile = ClaudeProfile(ClaudeOptions(executable=fake_claude))
    profile.prepare(ctx, prompt_of(ctx.prompt_file))  # attempt 2 starts here
    assert not profile.judge(ctx, 1).success  # and wrote nothing


def test_judge_without_a_recorded_start_uses_the_last_attempt(ctx: AgentContext) -> None:
    write_events(
        ctx.events_file, init(), assistant("m1"), result(is_error=True, api_error_status=529)
    )
    outcome = judge(ctx, 0, init(), assistant("m2"), result(num_turns=1))
    assert outcome.success
    assert outcome.agent["num_turns"] == 1 and outcome.agent["api_error_status"] is None


# -- progress on crafted events ------------------------------------------------------------


def test_progress_waits_for_complete_lines(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    profile = ClaudeProfile()
    line = json.dumps(assistant("m1", tool_use("Read"))) + "\n"
    write_events(path, init(), line[:20])

    offset, info = profile.progress(path, 0)
    assert offset == len(json.dumps(init())) + 1
    assert info == {"num_turns": 0, "last_tool": None, "cost_usd": None, "session_id": SESSION}

    write_events(path, line[20:], assistant("m1", tool_use("Grep")), "garbage\n")
    offset, info = profile.progress(path, offset)
    assert offset == path.stat().st_size
    assert (info["num_turns"], info["last_tool"]) == (1, "Grep")

    subagent = {**assistant("s1", tool_use("Task")), "parent_tool_use_id": "toolu_x"}
    write_events(path, subagent, assistant("m2", tool_use("Edit")), result(num_turns=5))
    offset, info = profile.progress(path, offset)
    assert info == {"num_turns": 5, "last_tool": "Edit", "cost_usd": 0.5, "session_id": SESSION}


def test_progress_starts_over_on_a_new_attempt_or_reader(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    profile = ClaudeProfile()
    write_events(path, init(), assistant("m1", tool_use("Bash")), result())
    offset, _ = profile.progress(path, 0)

    write_events(path, init(), assistant("m7"))
    offset, info = profile.progress(path, offset)
    assert (info["num_turns"], info["last_tool"], info["cost_usd"]) == (1, None, None)

    # Another reader (or a restarted orchestrator) with its own offset.
    _, info = ClaudeProfile().progress(path, offset)
    assert info["num_turns"] == 0


def test_progress_on_a_missing_file(tmp_path: Path) -> None:
    assert ClaudeProfile().progress(tmp_path / "nope.jsonl", 0)[0] == 0


# -- the model server itself ---------------------------------------------------------------


def _post(url: str, body: dict[str, Any]) -> tuple[int, bytes]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_model_server_speaks_json_and_sse() -> None:
    tools = [{"name": "Bash", "input_schema": {"type": "object"}}]
    body = {
        "model": "m",
        "tools": tools,
        "messages": [{"role": "user", "content": tagged("write_commit")}],
    }
    with ModelServer() as srv:
        status, raw = _post(srv.url + "/v1/messages", body)
        message = json.loads(raw)
        assert status == 200 and message["stop_reason"] == "tool_use"
        assert message["content"][1]["input"]["command"].startswith("printf")

        status, raw = _post(srv.url + "/v1/messages?beta=true", {**body, "stream": True})
        names = [
            line.split(": ", 1)[1]
            for line in raw.decode().splitlines()
            if line.startswith("event: ")
        ]
        assert names == ["message_start", "ping"] + [
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
        ] * 2 + ["message_delta", "message_stop"]

        assert _post(srv.url + "/v1/messages/count_tokens", body) == (
            200,
            b'{"input_tokens": 1000}',
        )
        with urllib.request.urlopen(srv.url + "/v1/models", timeout=10) as response:
            assert json.loads(response.read())["data"]
        side = _post(srv.url + "/v1/messages", {**body, "tools": []})
        assert json.loads(side[1])["content"] == [{"type": "text", "text": "ok"}]
        unknown = {**body, "messages": [{"role": "user", "content": "[[scenario:nope]]"}]}
        assert _post(srv.url + "/v1/messages", unknown)[0] == 400
        assert [r.scenario for r in srv.messages()] == ["write_commit"] * 2 + [None, "nope"]
        assert all(r.headers.get("x-api-key") in (None, "<redacted>") for r in srv.requests)


def test_model_server_budget_and_lifetime() -> None:
    body = {"tools": [{"name": "Bash"}], "messages": [{"role": "user", "content": tagged("loop")}]}
    with ModelServer(max_requests=1) as srv:
        assert _post(srv.url + "/v1/messages", body)[0] == 200
        assert _post(srv.url + "/v1/messages", body)[0] == 500
    srv = ModelServer(lifetime_s=0.2)
    srv.start()
    url = srv.url
    deadline = time.monotonic() + 5
    while srv.running and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(OSError):
        _post(url + "/v1/messages", body)


def test_locate_counts_turns_after_the_last_tagged_prompt() -> None:
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": "hi [[scenario:a]]"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "x"}]},
        {"role": "user", "content": [{"type": "tool_result", "content": "[[scenario:b]]"}]},
        {"role": "assistant", "content": []},
    ]
    assert locate(messages) == ("a", 2)
    assert locate([*messages, {"role": "user", "content": "again [[scenario:a]]"}]) == ("a", 0)
    assert locate([{"role": "user", "content": "untagged"}]) == (None, 0)

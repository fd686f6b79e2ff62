"""``gadugi install-agent``: the Claude Code command and subagent, their refresh rules, the
permission rule, and the seed's exact ``/agent:orchestrator-agent`` message in the real
Claude Code 2.1.197 against the scripted model server."""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

import gadugi
from claude_fixtures import ClaudeRig
from conftest import Repo, run_cli
from gadugi.install_agent import (
    AGENT_FILE,
    COMMAND_FILE,
    Action,
    AgentFileChanged,
    install,
    installed_command,
    permission_rule,
    render,
    written_by_gadugi,
)
from modelserver import ModelServer, Reply, ToolUse, Turn, bash, locate, say

# The guide's "primary way to use the orchestrator", verbatim.
SEED_MESSAGE = """/agent:orchestrator-agent

Execute these specific prompts in parallel:
- implement-feature-a.md
- fix-bug-b.md
- add-tests-c.md
"""
SEED_PROMPTS = ["implement-feature-a", "fix-bug-b", "add-tests-c"]
TEST_MODEL = "claude-sonnet-4-5"
# Where the gadugi under test is imported from, for the gadugi that Claude Code starts.
GADUGI_SRC = str(Path(gadugi.__file__).resolve().parent.parent)
COMMAND = f"{shlex.quote(sys.executable)} -m gadugi"


def front_matter(text: str) -> dict[str, object]:
    assert text.startswith("---\n")
    data = yaml.safe_load(text.split("---\n", 2)[1])
    assert isinstance(data, dict)
    return data


def test_the_subagent_and_the_command_start_detached_and_wait_in_a_loop() -> None:
    agent, command = render(COMMAND, "agent"), render(COMMAND, "command")

    meta = front_matter(agent)
    assert meta == {
        "name": "orchestrator-agent",
        "description": meta["description"],
        "tools": "Bash",
    }
    assert "Execute these prompts" in str(meta["description"])
    assert front_matter(command)["allowed-tools"] == f"Bash({COMMAND}:*)"
    assert "$ARGUMENTS" in command and "$ARGUMENTS" not in agent
    for text in (agent, command):
        body = text.split("---\n", 2)[2]
        assert f"{COMMAND} run --detach --stdin --json <<'GADUGI_REQUEST'\n" in body
        assert "\nGADUGI_REQUEST\n" in body
        assert f"{COMMAND} wait <orchestration_id> --timeout 540 --json" in body
        assert "Exit 124 means it is still running" in body
        assert "Never edit, create or delete files yourself" in body
        assert f"`{COMMAND} install-agent --allow`" in body  # what to do when denied
        assert installed_command(text) == COMMAND
        assert written_by_gadugi(text)


def test_create_then_unchanged_then_refreshed(tmp_path: Path) -> None:
    first = install(tmp_path, COMMAND)
    assert [(i.path, i.action) for i in first] == [
        (tmp_path / COMMAND_FILE, Action.CREATED),
        (tmp_path / AGENT_FILE, Action.CREATED),
    ]
    assert {i.action for i in install(tmp_path, COMMAND)} == {Action.UNCHANGED}

    # What an older gadugi wrote, untouched since: refreshed to the current text.
    (tmp_path / AGENT_FILE).write_text(render("old-gadugi"))
    assert [i.action for i in install(tmp_path, COMMAND)] == [Action.UNCHANGED, Action.UPDATED]
    assert (tmp_path / AGENT_FILE).read_text() == render(COMMAND)


def test_a_changed_file_is_refused_unless_forced_and_nothing_is_written(tmp_path: Path) -> None:
    install(tmp_path, "old-gadugi")
    path = tmp_path / AGENT_FILE
    changed = path.read_text().replace("Keep the report short", "Keep the report very short")
    path.write_text(changed)

    with pytest.raises(AgentFileChanged, match=r"changed since gadugi wrote it.*--force"):
        install(tmp_path, COMMAND)
    assert path.read_text() == changed
    # The command file, which could have been refreshed, was not: a refusal writes nothing.
    assert installed_command((tmp_path / COMMAND_FILE).read_text()) == "old-gadugi"

    assert [i.action for i in install(tmp_path, COMMAND, force=True)] == [
        Action.UPDATED,
        Action.REPLACED,
    ]
    assert path.read_text() == render(COMMAND)


def test_a_users_own_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / COMMAND_FILE
    path.parent.mkdir(parents=True)
    path.write_text("Mine.\n")

    with pytest.raises(AgentFileChanged, match="not written by gadugi"):
        install(tmp_path, COMMAND)
    assert path.read_text() == "Mine.\n"
    assert not (tmp_path / AGENT_FILE).exists()


def test_cli_installs_both_files_calling_this_gadugi_by_absolute_path(repo: Repo) -> None:
    done = run_cli(["install-agent", "--project-root", str(repo.root)], repo.root)
    assert done.returncode == 0, done.stderr
    claude = repo.root / ".claude"
    assert done.stdout.splitlines() == [
        f"wrote {claude / COMMAND_FILE}",
        f"wrote {claude / AGENT_FILE}",
    ]
    for rel in (COMMAND_FILE, AGENT_FILE):
        assert installed_command((claude / rel).read_text()) == COMMAND
    # Not allowed yet: it says what is missing and how to add it.
    assert f"until Bash({COMMAND}:*) is allowed: run this again with --allow" in done.stderr
    assert not (claude / "settings.local.json").exists()


def test_cli_refuses_a_changed_file_with_exit_1(repo: Repo) -> None:
    assert run_cli(["install-agent"], repo.root).returncode == 0
    path = repo.root / ".claude" / AGENT_FILE
    path.write_text(path.read_text() + "\nAlso say hello.\n")
    done = run_cli(["install-agent"], repo.root)
    assert done.returncode == 1
    assert "was changed since gadugi wrote it" in done.stderr and "--force" in done.stderr
    assert path.read_text().endswith("Also say hello.\n")

    done = run_cli(["install-agent", "--force"], repo.root)
    assert done.returncode == 0 and "replaced" in done.stdout
    assert path.read_text() == render(COMMAND)


def test_a_command_that_does_not_run_gadugi_is_refused_with_the_fix(repo: Repo) -> None:
    for command, why in [
        ("gadugi-nowhere", "gadugi-nowhere is not on PATH"),
        ("/nonexistent/bin/gadugi", "/nonexistent/bin/gadugi is not an executable file"),
        ("true", "is not gadugi"),
    ]:
        done = run_cli(["install-agent", "--command", command], repo.root)
        assert done.returncode == 2, done.stderr
        assert why in done.stderr and "--command` with the absolute path of gadugi" in done.stderr
    assert not (repo.root / ".claude").exists()


def test_allow_merges_the_rule_and_keeps_everything_else(repo: Repo) -> None:
    settings = repo.root / ".claude" / "settings.local.json"
    settings.parent.mkdir()
    mine = {"model": "opus", "permissions": {"allow": ["Bash(make:*)"], "deny": ["WebFetch"]}}
    settings.write_text(json.dumps(mine))

    done = run_cli(["install-agent", "--allow"], repo.root)
    assert done.returncode == 0, done.stderr
    rule = permission_rule(COMMAND)
    assert f"allowed {rule} in {settings}" in done.stdout
    assert "--allow" not in done.stderr  # nothing missing any more
    assert json.loads(settings.read_text()) == {
        "model": "opus",
        "permissions": {"allow": ["Bash(make:*)", rule], "deny": ["WebFetch"]},
    }
    again = run_cli(["install-agent", "--allow"], repo.root)
    assert again.returncode == 0 and f"already up to date: {settings}" in again.stdout
    assert json.loads(settings.read_text())["permissions"]["allow"].count(rule) == 1


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("{not json", "is not valid JSON"),
        ("[]", "is not a JSON object"),
        ('{"permissions": {"allow": "Bash"}}', '"permissions.allow" is not a list'),
    ],
)
def test_allow_refuses_a_settings_file_it_cannot_merge_into(
    repo: Repo, text: str, why: str
) -> None:
    settings = repo.root / ".claude" / "settings.local.json"
    settings.parent.mkdir()
    settings.write_text(text)
    done = run_cli(["install-agent", "--allow"], repo.root)
    assert done.returncode == 2
    assert f"{settings}: {why}" in done.stderr
    assert settings.read_text() == text  # never reset
    assert sorted(p.name for p in settings.parent.iterdir()) == ["settings.local.json"]


def test_user_installs_into_claudes_own_folder(repo: Repo, tmp_path: Path) -> None:
    home = tmp_path / "claude-home"
    done = run_cli(
        ["install-agent", "--user", "--allow"], repo.root, env={"CLAUDE_CONFIG_DIR": str(home)}
    )
    assert done.returncode == 0, done.stderr
    assert installed_command((home / COMMAND_FILE).read_text()) == COMMAND
    assert installed_command((home / AGENT_FILE).read_text()) == COMMAND
    rules = json.loads((home / "settings.json").read_text())["permissions"]["allow"]
    assert rules == [permission_rule(COMMAND)]
    assert not (repo.root / ".claude").exists()


# -- the real Claude Code -----------------------------------------------------------------


def _tool_results(body: dict[str, Any]) -> list[str]:
    """The text of every tool result in the conversation, oldest first."""
    found = []
    for message in body.get("messages", []):
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                inner = block.get("content")
                if isinstance(inner, list):
                    inner = "\n".join(b.get("text", "") for b in inner if isinstance(b, dict))
                found.append(str(inner))
    return found


def _conversation_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages", []):
        content = message.get("content")
        if isinstance(content, str):
            parts.append(content)
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "text":
                parts.append(block.get("text", ""))
    return "\n".join(parts)


def follow_the_command(turn: Turn) -> Reply:
    """A model that does what the installed command says: start detached, wait, report."""
    text = _conversation_text(turn.body)
    start = re.search(r"^(.+) run --detach --stdin --json <<'GADUGI_REQUEST'$", text, re.M)
    request = re.search(r"The request:\n\n(.*?)\n\n## Rules", text, re.S)
    assert start and request, "the installed command did not reach the model"
    command = start.group(1)
    results = _tool_results(turn.body)
    if not results:
        return bash(
            f"{command} run --detach --stdin --json <<'GADUGI_REQUEST'\n"
            f"{request.group(1)}\nGADUGI_REQUEST",
            description="Start the orchestration",
        )
    last = results[-1]
    found = re.search(r"\{.*\}", last, re.S)
    data = json.loads(found.group(0)) if found else {}
    if "tasks" in data:
        return say(f"{data['successful_tasks']}/{data['total_tasks']} tasks completed.")
    orch_id = data.get("orchestration_id")
    if orch_id is None:
        return say(f"gadugi did not start: {last}")
    return bash(f"{command} wait {orch_id} --timeout 540 --json", description="Wait for it")


def _system(body: dict[str, Any]) -> str:
    system = body.get("system")
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in system or [] if isinstance(b, dict))


def be_the_subagent(turn: Turn) -> Reply:
    """The subagent, doing what its definition (its system prompt) says with its prompt."""
    start = re.search(
        r"^(.+) run --detach --stdin --json <<'GADUGI_REQUEST'$", _system(turn.body), re.M
    )
    assert start, "the subagent's definition did not reach the model"
    command = start.group(1)
    results = _tool_results(turn.body)
    if not results:
        request = _conversation_text({"messages": turn.body["messages"][:1]})
        return bash(
            f"{command} run --detach --stdin --json <<'GADUGI_REQUEST'\n{request}\nGADUGI_REQUEST",
            description="Start the orchestration",
        )
    found = re.search(r"\{.*\}", results[-1], re.S)
    data = json.loads(found.group(0)) if found else {}
    if "tasks" in data:
        return say(f"{data['successful_tasks']}/{data['total_tasks']} tasks completed.")
    if "orchestration_id" not in data:
        return say(f"gadugi did not run: {results[-1]}")
    return bash(f"{command} wait {data['orchestration_id']} --timeout 540 --json")


def hand_to_the_subagent(turn: Turn) -> Reply:
    """The main session, given a request in plain words: hand it to the orchestrator agent."""
    results = _tool_results(turn.body)
    if results:
        return say(results[-1])
    request = _conversation_text({"messages": turn.body["messages"][-1:]})
    call = {"description": "Run the prompts", "prompt": request}
    return Reply((ToolUse("Agent", call | {"subagent_type": "orchestrator-agent"}),))


class SeedServer(ModelServer):
    """Plays the conversations that carry gadugi's installed texts: the command
    (``follow_the_command``), the subagent, and a main session asked in plain words. The
    nested agents' prompts carry their own ``[[scenario:...]]`` tags as usual."""

    def _answer(self, body: dict[str, Any], session: str) -> Any:
        scenario, _ = locate(body.get("messages", []))
        if scenario is None and body.get("tools"):
            if "You are the orchestrator agent" in _system(body):
                scenario = "subagent"
            elif "You are the orchestrator agent" in str(body.get("messages")):
                scenario = "seed"
            elif "Execute these prompts" in str(body.get("messages")):
                scenario = "plain"
        if scenario in ("seed", "subagent", "plain"):
            index = sum(1 for m in body["messages"] if m.get("role") == "assistant")
            return scenario, index, self.play(scenario, index, session, "", body)
        return super()._answer(body, session)


def _seed_project(rig: ClaudeRig) -> None:
    (rig.repo / "gadugi.toml").write_text(f'claude_model = "{TEST_MODEL}"\nretries = 0\n')
    for name in SEED_PROMPTS:
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\nCreate and commit a file.\n\n[[scenario:write_commit]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")


def _claude(rig: ClaudeRig, message: str) -> list[dict[str, Any]]:
    """``claude -p MESSAGE`` in the rig's repository, as a user would type it; its events."""
    done = subprocess.run(
        [
            str(rig.bin_dir / "claude"),
            "-p",
            message,
            "--output-format",
            "stream-json",
            "--verbose",
            "--model",
            TEST_MODEL,
        ],
        cwd=rig.repo,
        env={**rig.env, "PYTHONPATH": GADUGI_SRC},
        capture_output=True,
        text=True,
        timeout=240,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture
def seed_rig(tmp_path: Path, claude_bin: Path) -> Iterator[ClaudeRig]:
    scripts = {
        "seed": follow_the_command,
        "subagent": be_the_subagent,
        "plain": hand_to_the_subagent,
    }
    with SeedServer(script=scripts, lifetime_s=300.0) as server:
        rig = ClaudeRig(tmp_path / "rig", claude_bin, server)
        _seed_project(rig)
        yield rig


def _install(rig: ClaudeRig, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gadugi", "install-agent", *args],
        cwd=rig.repo,
        env={**rig.env, "PYTHONPATH": GADUGI_SRC},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_the_seed_message_runs_an_orchestration_in_real_claude_code(seed_rig: ClaudeRig) -> None:
    # No --allow: the command's own allowed-tools lets headless Claude Code run gadugi.
    _install(seed_rig)

    events = _claude(seed_rig, SEED_MESSAGE)

    result = events[-1]
    assert result["type"] == "result" and result["subtype"] == "success", result
    assert result["permission_denials"] == []
    assert result["result"] == "3/3 tasks completed."
    seed_calls = seed_rig.server.messages("seed")
    assert len(seed_calls) >= 3  # start, wait (as often as needed), report
    # The command reached the model with the request as its arguments, word for word.
    assert "Execute these specific prompts in parallel:\n- implement-feature-a.md" in (
        _conversation_text(seed_calls[0].body or {})
    )
    branches = seed_rig.git("branch", "--list", "gadugi/*", "--format=%(refname:short)").split()
    assert sorted(b.split("/")[1].rsplit("-", 1)[0] for b in branches) == sorted(SEED_PROMPTS)
    for branch in branches:
        assert seed_rig.git("log", "-1", "--format=%s", branch).strip() == "Add hello.txt"


@pytest.mark.slow
def test_real_claude_code_lists_the_command_and_the_agent(claude_rig: ClaudeRig) -> None:
    _install(claude_rig)
    run = claude_rig.run("# Task\n\nSay hi.\n\n[[scenario:text_only]]\n")

    assert run.outcome.success, run.outcome.error
    first = json.loads(run.ctx.events_file.read_text().splitlines()[0])
    assert first["type"] == "system" and first["subtype"] == "init"
    assert "orchestrator-agent" in first["agents"]
    assert "agent:orchestrator-agent" in first["slash_commands"]


@pytest.mark.slow
def test_the_subagent_runs_a_plain_request_once_its_calls_are_allowed(
    seed_rig: ClaudeRig,
) -> None:
    request = "Execute these prompts: implement-feature-a.md, fix-bug-b.md"
    _install(seed_rig)

    denied = _claude(seed_rig, request)[-1]

    # Headless, without the rule: the call is denied, nothing runs, and Claude says "success".
    assert denied["subtype"] == "success"
    assert [d["tool_name"] for d in denied["permission_denials"]] == ["Bash"]
    assert seed_rig.git("branch", "--list", "gadugi/*") == ""

    _install(seed_rig, "--allow")
    allowed = _claude(seed_rig, request)[-1]

    assert allowed["subtype"] == "success" and allowed["permission_denials"] == []
    assert "2/2 tasks completed." in allowed["result"]
    branches = seed_rig.git("branch", "--list", "gadugi/*", "--format=%(refname:short)").split()
    assert len(branches) == 2
    for branch in branches:
        assert seed_rig.git("log", "-1", "--format=%s", branch).strip() == "Add hello.txt"


def _tmux(socket: Path, *args: str) -> str:
    done = subprocess.run(
        ["tmux", "-S", str(socket), *args], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


@pytest.mark.slow
def test_the_seed_message_works_in_interactive_claude_code(seed_rig: ClaudeRig) -> None:
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    _install(seed_rig)
    # The agents' claude by absolute path: the interactive Bash tool builds its own PATH.
    with (seed_rig.repo / "gadugi.toml").open("a") as fh:
        fh.write(f'claude_executable = "{seed_rig.bin_dir / "claude"}"\n')
    env = {**seed_rig.env, "PYTHONPATH": GADUGI_SRC, "TERM": "xterm-256color"}
    # A user who has used Claude Code before: onboarding done, this folder trusted, the key
    # approved; nothing here answers a dialog for gadugi.
    state = Path(env["CLAUDE_CONFIG_DIR"]) / ".claude.json"
    state.parent.mkdir(parents=True, exist_ok=True)
    trusted = {"hasTrustDialogAccepted": True, "hasCompletedProjectOnboarding": True}
    state.write_text(
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "theme": "dark",
                "customApiKeyResponses": {"approved": [env["ANTHROPIC_API_KEY"][-20:]]},
                "projects": {str(seed_rig.repo): trusted},
            }
        )
    )
    socket = seed_rig.root / "tmux.sock"
    settings = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
    claude = [str(seed_rig.bin_dir / "claude"), "--model", TEST_MODEL]
    _tmux(
        socket,
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-c",
        str(seed_rig.repo),
        *settings,
        *claude,
    )
    try:
        screen = partial(_tmux, socket, "capture-pane", "-p")
        _until(screen, "❯")
        _tmux(socket, "send-keys", "-l", SEED_MESSAGE.strip())
        _until(screen, "- add-tests-c.md")
        # Keys that follow typed text at once are taken as part of a paste: let it settle.
        time.sleep(1.0)
        _tmux(socket, "send-keys", "Enter")
        _until(screen, "3/3 tasks completed.")
    finally:
        subprocess.run(["tmux", "-S", str(socket), "kill-server"], check=False)

    assert seed_rig.server.count("seed") >= 3
    branches = seed_rig.git("branch", "--list", "gadugi/*", "--format=%(refname:short)").split()
    assert len(branches) == 3
    for branch in branches:
        assert seed_rig.git("log", "-1", "--format=%s", branch).strip() == "Add hello.txt"


def _until(screen: Callable[[], str], text: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while text not in (shown := screen()):
        assert time.monotonic() < deadline, f"{text!r} never appeared on the screen:\n{shown}"
        time.sleep(0.5)

"""`gadugi logs` and `gadugi show` with the real agent CLIs (Claude Code 2.1.197, Codex and
gemini-cli) against the scripted model server: the transcript a person reads is rendered
from the events each CLI really writes."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import pytest

from claude_fixtures import gadugi
from modelserver import COMMIT_FILE, Reply, Turn, bash, say, write_commit
from test_claude_run import NO_CLI_RETRIES, TWO_TURN_COST, setup_project
from test_other_agents import CODEX_MODEL, GEMINI_MODEL
from test_views import _sections

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

WAIT_S = 60.0


def test_logs_and_show_of_a_claude_task_that_was_retried(claude_rig: ClaudeRig) -> None:
    setup_project(claude_rig, {"later": "overloaded_once"})
    with (claude_rig.repo / "gadugi.toml").open("a") as fh:
        fh.write("retry_base_delay_seconds = 0.1\n")
    ran = gadugi(claude_rig, "run", "--retries", "1", "--json", "later", env=NO_CLI_RETRIES)
    assert ran.returncode == 0, ran.stdout + ran.stderr

    done = gadugi(claude_rig, "logs", "later")

    assert done.returncode == 0, done.stderr
    first, second = _sections(done.stdout)
    # Attempt 1: Claude Code got a 529 and gave up (its own retries are off).
    assert first[-1].startswith("=== attempt 1 retrying (exit 1,")
    assert any(line.startswith("! API error (") and "529" in line for line in first), first
    assert any(line.startswith("= error (HTTP 529)") for line in first), first
    # Attempt 2: the text, the tool call in short, its result's first line, the result.
    body = second[1:-1]
    assert body[0].startswith("· claude-sonnet-4-5, session ")
    assert "I'll create the file and commit it." in body
    call = next(line for line in body if line.startswith("→ Bash: "))
    assert call.startswith("→ Bash: printf 'hello from the agent\\n' > hello.txt && git add -A")
    result = body[body.index(call) + 1]
    assert result.startswith("  │ ") and result.endswith(" Add hello.txt")
    assert f"Done: committed {COMMIT_FILE}." in body
    assert body[-1] == "= success · 3 turns · $0.0090 · 2000 in / 200 out tokens"
    assert second[-1].startswith("=== attempt 2 completed (exit 0,")

    raw = gadugi(claude_rig, "logs", "later", "--raw", "--attempt", "2").stdout.splitlines()
    events = [json.loads(line) for line in raw]
    assert (events[0]["type"], events[0]["subtype"]) == ("system", "init")
    assert events[-1]["type"] == "result" and events[-1]["is_error"] is False
    assert sum(e["type"] == "system" and e.get("subtype") == "init" for e in events) == 1

    task = json.loads(gadugi(claude_rig, "show", "later", "--json").stdout)
    assert task["status"] == "completed" and task["why"] is None
    assert [a["status"] for a in task["attempts"]] == ["retrying", "completed"]
    assert "529" in task["attempts"][0]["error"]
    assert (task["commits"], task["changed_files"], task["insertions"]) == (1, 1, 1)
    assert task["cost_usd"] == pytest.approx(TWO_TURN_COST)
    # Three turns: the edit, the commit, and the structured verdict (StructuredOutput).
    assert (task["input_tokens"], task["output_tokens"], task["num_turns"]) == (2000, 200, 3)
    assert task["agent"]["session_id"]
    text = gadugi(claude_rig, "show", "later").stdout
    assert "$0.0090" in text and "1 file changed, 1 insertion(+), 0 deletions(-)" in text


def test_logs_follow_a_running_claude_task_until_it_ends(
    make_claude_rig: Callable[..., ClaudeRig],
) -> None:
    held, gate = threading.Event(), threading.Event()

    def gated(turn: Turn) -> Reply:
        if turn.index == 0:
            return bash("echo first step done", description="First step")
        if turn.index == 1:
            held.set()
            gate.wait(WAIT_S)  # the agent is held here, running, until the test lets it go
            return write_commit(replace(turn, index=0))
        return say("All done.")

    rig = make_claude_rig(script={"gated": gated})
    setup_project(rig, {"slow": "gated"})
    run = subprocess.Popen(
        [sys.executable, "-m", "gadugi", "run", "--quiet", "slow"],
        cwd=rig.repo,
        env=rig.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    follow: subprocess.Popen[str] | None = None
    try:
        assert held.wait(WAIT_S), "the agent never asked for its second turn"
        follow = subprocess.Popen(
            [sys.executable, "-m", "gadugi", "logs", "slow", "-f"],
            cwd=rig.repo,
            env=rig.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        seen = _read_until(follow, "  │ first step done")
        assert not any(line.startswith("= ") for line in seen)  # the task has not ended
        gate.set()
        out, err = follow.communicate(timeout=WAIT_S)
        assert follow.returncode == 0, err
        assert run.wait(timeout=WAIT_S) == 0, run.stderr.read() if run.stderr else ""
    finally:
        gate.set()
        for proc in (run, follow):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()

    followed = "".join(line + "\n" for line in seen) + out
    assert "All done." in followed
    assert followed.splitlines()[-1].startswith("=== attempt 1 completed (exit 0,")
    # Following prints exactly what the finished transcript holds, in the same order.
    assert followed == gadugi(rig, "logs", "slow").stdout


def _read_until(proc: subprocess.Popen[str], wanted: str) -> list[str]:
    """Lines of ``proc``'s stdout up to and including ``wanted`` (bounded by WAIT_S)."""
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip("\n"))
            if lines[-1] == wanted:
                found.set()
                return

    threading.Thread(target=read, daemon=True).start()
    assert found.wait(WAIT_S), f"{wanted!r} not printed; got {lines}"
    return lines


MODELS = {"codex": CODEX_MODEL, "gemini": GEMINI_MODEL}
TOOLS = {"codex": "shell", "gemini": "run_shell_command"}


@pytest.mark.parametrize("cli", ["codex", "gemini"])
def test_logs_of_codex_and_gemini_tasks(
    cli: str, request: pytest.FixtureRequest, make_rig: Callable[..., ClaudeRig]
) -> None:
    rig = make_rig(request.getfixturevalue(f"{cli}_bin"))
    (rig.repo / "gadugi.toml").write_text(f'{cli}_model = "{MODELS[cli]}"\n')
    prompt = rig.repo / "prompts" / "one.md"
    prompt.parent.mkdir(exist_ok=True)
    prompt.write_text("# one\n\nCommit a file.\n\n[[scenario:write_commit]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")
    ran = gadugi(rig, "run", "--agent", cli, "--quiet", "one")
    assert ran.returncode == 0, ran.stdout + ran.stderr

    done = gadugi(rig, "logs", "one")

    assert done.returncode == 0, done.stderr
    [attempt] = _sections(done.stdout)
    body = attempt[1:-1]
    assert "I'll create the file and commit it." in body
    call = next(line for line in body if line.startswith(f"→ {TOOLS[cli]}: "))
    assert "printf 'hello from the agent" in call
    result = body[body.index(call) + 1]
    assert result.startswith("  │ ") and result.endswith(" Add hello.txt"), body
    assert f"Done: committed {COMMIT_FILE}." in body
    assert body[-1].startswith("= success") and "2000 in / 200 out tokens" in body[-1], body
    assert attempt[-1].startswith("=== attempt 1 completed (exit 0,")
    shown: dict[str, Any] = json.loads(gadugi(rig, "show", "one", "--json").stdout)
    assert shown["cost_usd"] is None and shown["input_tokens"] == 2000

"""``gadugi run --agent claude`` end to end: gadugi as a subprocess, the real Claude Code CLI
in parallel worktrees, our scripted model server on 127.0.0.1.

gadugi gets the rig's environment (HOME, CLAUDE_CONFIG_DIR, ANTHROPIC_BASE_URL, the fake
API key, the DISABLE_* variables and the CLI on PATH), and passes it on to each agent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pytest

from claude_fixtures import gadugi
from modelserver import COMMIT_FILE, COMMIT_MESSAGE, Reply, Turn, write_commit

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

TEST_MODEL = "claude-sonnet-4-5"
TWO_TURN_COST = 2 * (1000 * 3 + 100 * 15) / 1e6  # 2 turns of 1000 in / 100 out at Sonnet's
SLOW_S = 20.0


def setup_project(rig: ClaudeRig, scenarios: dict[str, str]) -> None:
    # No load ceiling: the shared machine's load must not outlast the model server.
    (rig.repo / "gadugi.toml").write_text(
        f'claude_model = "{TEST_MODEL}"\nretries = 0\nmax_load_per_cpu = 0\n'
    )
    for name, scenario in scenarios.items():
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\nCreate and commit a file.\n\n[[scenario:{scenario}]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")


def at(stamp: str) -> float:
    return datetime.fromisoformat(stamp).timestamp()


def test_three_claude_tasks_run_in_parallel_worktrees(claude_rig: ClaudeRig) -> None:
    names = ["alpha", "beta", "gamma"]
    setup_project(claude_rig, dict.fromkeys(names, "write_commit"))

    done = gadugi(claude_rig, "run", "--agent", "claude", "--json", *names)

    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    assert (result["total_tasks"], result["successful_tasks"]) == (3, 3)
    tasks = {t["task_id"]: t for t in result["tasks"]}
    assert sorted(tasks) == names
    for name, task in tasks.items():
        assert task["status"] == "completed", task
        assert task["commits"] == 1
        branch = task["branch"]
        assert branch.startswith(f"gadugi/{name}-")
        assert claude_rig.git("log", "-1", "--format=%s", branch).strip() == COMMIT_MESSAGE
        assert claude_rig.git("show", f"{branch}:{COMMIT_FILE}") == "hello from the agent\n"
        agent = task["agent"]
        assert agent["session_id"] and agent["num_turns"] == 3  # the verdict is a turn
        assert agent["cost_usd"] == pytest.approx(TWO_TURN_COST)
        assert agent["is_error"] is False and agent["permission_denials"] == []
    # Parallel: every task started before any finished.
    assert max(at(t["started_at"]) for t in tasks.values()) < min(
        at(t["completed_at"]) for t in tasks.values()
    )
    assert len({t["agent"]["session_id"] for t in tasks.values()}) == 3
    # Each agent worked in its own worktree (Claude names it in its system prompt).
    cwds = {_cwd(r.body) for r in claude_rig.server.messages("write_commit")}
    assert len(cwds) == 3 and all("/.worktrees/" in c for c in cwds)
    assert claude_rig.git("status", "--porcelain") == ""  # the main checkout is untouched


def _cwd(body: dict[str, Any] | None) -> str:
    system = (body or {}).get("system") or []
    text = "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    found = re.search(r"[Ww]orking directory: (\S+)", text)
    return found.group(1) if found else ""


def slow_commit(turn: Turn) -> Reply:
    """write_commit, with a first answer slow enough to be still running when stopped."""
    reply = write_commit(turn)
    return Reply(reply.blocks, delay_s=SLOW_S) if turn.index == 0 else reply


def test_unauthorized_stops_the_orchestration_at_once(
    make_claude_rig: Callable[..., ClaudeRig],
) -> None:
    rig = make_claude_rig(script={"slow_commit": slow_commit})
    setup_project(rig, {"bad-key": "unauthorized", "one": "slow_commit", "two": "slow_commit"})

    done = gadugi(rig, "run", "--agent", "claude", "bad-key", "one", "two")

    assert done.returncode == 1, done.stdout + done.stderr
    stopped = "orchestration stopped: bad-key: claude could not authenticate (HTTP 401)"
    final = json.loads(next((rig.repo / ".gadugi" / "monitoring").glob("*_final.json")).read_text())
    assert final["error_summary"][0].startswith(stopped)
    tasks = {t["task_id"]: t for t in final["tasks"]}
    assert tasks["bad-key"]["status"] == "failed"
    assert tasks["bad-key"]["agent"]["api_error_status"] == 401
    for name in ("one", "two"):
        assert tasks[name]["status"] == "cancelled"
        assert tasks[name]["error_message"].startswith("cancelled")
        assert "orchestration stopped: bad-key" in tasks[name]["error_message"]
        assert tasks[name]["commits"] == 0
    # Nobody waited for the slow answers: the slow tasks were stopped in their first
    # model request, which never got its answer.
    assert {r.turn for r in rig.server.messages("slow_commit")} <= {0}
    # The summary states the one cause once, on its own line.
    lines = done.stdout.splitlines()
    assert sum(line.startswith(stopped) for line in lines) == 1


# Claude Code's own retries off, so that a 529 reaches gadugi.
NO_CLI_RETRIES = {"CLAUDE_CODE_MAX_RETRIES": "0"}


def test_a_529_is_retried_by_gadugi_and_succeeds(claude_rig: ClaudeRig) -> None:
    setup_project(claude_rig, {"flaky": "overloaded_once"})
    with (claude_rig.repo / "gadugi.toml").open("a") as fh:
        fh.write("retry_base_delay_seconds = 0.1\n")
    done = gadugi(
        claude_rig,
        "run",
        "--agent",
        "claude",
        "--retries",
        "1",
        "--json",
        "flaky",
        env=NO_CLI_RETRIES,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    task = json.loads(done.stdout)["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 2
    assert task["commits"] == 1 and task["agent"]["session_id"]


def test_retry_continues_the_agents_session(claude_rig: ClaudeRig) -> None:
    setup_project(claude_rig, {"later": "overloaded_once"})
    first = gadugi(claude_rig, "run", "--agent", "claude", "--json", "later", env=NO_CLI_RETRIES)
    assert first.returncode == 1  # transient, but no retries allowed
    failed = json.loads(first.stdout)["tasks"][0]
    session = failed["agent"]["session_id"]
    assert failed["status"] == "failed" and session
    again = gadugi(claude_rig, "retry", "later", "--json", env=NO_CLI_RETRIES)
    assert again.returncode == 0, again.stdout + again.stderr
    task = json.loads(again.stdout)["tasks"][0]
    assert task["status"] == "completed" and task["attempts"] == 2 and task["commits"] == 1
    exported = claude_rig.repo / "export.json"
    assert gadugi(claude_rig, "export", "--output", str(exported)).returncode == 0
    command = json.loads(exported.read_text())["orchestrations"][0]["tasks"][0]["command"]
    assert command[command.index("--resume") + 1] == session

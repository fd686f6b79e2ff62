"""Cancel, budgets and usage limits with the real Claude Code CLI against the scripted model
server (gadugi as a subprocess, as a person would run it).

``GADUGI_CANCEL_TRIES`` sets how many times the cancel test is tried (default 2);
``bench/cancel_claude.py`` runs it 20 times and reports the figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from claude_fixtures import gadugi
from conftest import wait_until
from modelserver import Failure, Reply, Turn, bash, say, write_commit

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

TEST_MODEL = "claude-sonnet-4-5"
CANCEL_TRIES = int(os.environ.get("GADUGI_CANCEL_TRIES", "2"))
# For bench/cancel_claude.py's comparison: the gadugi source tree the cancel test runs.
CANCEL_SRC = (
    {"PYTHONPATH": os.environ["GADUGI_CANCEL_SRC"]} if "GADUGI_CANCEL_SRC" in os.environ else {}
)
TURN_COST = (1000 * 3 + 100 * 15) / 1e6  # one turn of 1000 in / 100 out at Sonnet's prices


def setup_project(rig: ClaudeRig, scenarios: dict[str, str], settings: str = "") -> None:
    (rig.repo / "gadugi.toml").write_text(
        f'claude_model = "{TEST_MODEL}"\nretries = 0\nmax_load_per_cpu = 0\n{settings}',
        encoding="utf-8",
    )
    for name, scenario in scenarios.items():
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\nDo the work.\n\n[[scenario:{scenario}]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")


def start_gadugi(
    rig: ClaudeRig, *args: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "gadugi", *args],
        cwd=rig.repo,
        env={**rig.env, **(env or {})},
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )


# -- cancel during a tool call --------------------------------------------------------


def gated(markers: Path) -> Callable[[Turn], Reply]:
    """Turn 1: a Bash call that says it started, then waits on a gate nobody opens.
    Turn 2, should the agent ever get there: commit. Turn 3: done. Answers are instant."""

    def script(turn: Turn) -> Reply:
        if turn.index == 0:
            return bash(
                f"touch {markers}/started-$GADUGI_TASK_ID; "
                f"while [ ! -e {markers}/gate ]; do sleep 0.05; done",
                description="Wait for the gate",
            )
        if turn.index == 1:
            return bash(
                "printf 'late\\n' > late.txt && git add -A && git commit -q -m 'after cancel'",
                description="Commit",
            )
        return say("Done.")

    return script


@pytest.mark.slow
def test_cancel_during_a_tool_call_lets_no_commit_through(
    make_claude_rig: Callable[..., ClaudeRig], tmp_path: Path
) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    rig = make_claude_rig(script={"gated": gated(markers)}, lifetime_s=60 + 30 * CANCEL_TRIES)
    names = [f"try-{n}" for n in range(1, CANCEL_TRIES + 1)]
    setup_project(rig, dict.fromkeys(names, "gated"))
    seen: list[dict[str, Any]] = []
    for name in names:
        run = start_gadugi(rig, "run", "--agent", "claude", "--json", name, env=CANCEL_SRC)
        try:
            wait_until((markers / f"started-{name}").exists, timeout=60)
            asked = time.monotonic()
            cancel = gadugi(rig, "cancel", name, env=CANCEL_SRC)
            cancel_s = time.monotonic() - asked
            assert cancel.returncode == 0, cancel.stdout + cancel.stderr
            out, err = run.communicate(timeout=60)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        task = json.loads(out)["tasks"][0]
        task["commits"] = int(rig.git("rev-list", "--count", f"main..{task['branch']}"))
        later_turns = [r.turn for r in rig.server.messages("gated") if (r.turn or 0) > 0]
        seen.append({"task": task, "cancel_s": cancel_s, "later_turns": later_turns, "err": err})
    report = [
        (s["task"]["status"], s["task"]["commits"], s["task"].get("commits_after_cancel"))
        for s in seen
    ]
    figures = {
        "tries": len(seen),
        "committed": sum(s["task"]["commits"] > 0 for s in seen),
        "asked_for_another_turn": sum(bool(s["later_turns"]) for s in seen),
        "cancel_seconds": [round(s["cancel_s"], 3) for s in seen],
    }
    print(f"CANCEL-FIGURES {json.dumps(figures)}")
    assert report == [("cancelled", 0, 0)] * len(names), [s["err"][-500:] for s in seen]
    # The agent never got to ask for its next turn: the frozen tool never returned.
    assert all(s["later_turns"] == [] for s in seen)


# -- budgets --------------------------------------------------------------------------


def test_a_budget_stops_the_third_task_from_starting(claude_rig: ClaudeRig) -> None:
    # Each task: 2 turns (write_commit); a budget of 1.5 tasks' cost, one task at a time.
    setup_project(claude_rig, {"a": "write_commit", "b": "write_commit", "c": "write_commit"})
    budget = 3 * TURN_COST
    done = gadugi(
        claude_rig,
        "run", "--agent", "claude", "--json", "--max-parallel", "1",
        "--budget-usd", f"{budget}", "a", "b", "c",
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    result = json.loads(done.stdout)
    tasks = {t["task_id"]: t for t in result["tasks"]}
    assert [tasks[n]["status"] for n in "abc"] == ["completed", "completed", "cancelled"]
    assert tasks["c"]["error_message"] == f"budget of ${budget:g} spent"
    assert tasks["c"]["attempts"] == 0
    assert result["budget_usd"] == pytest.approx(budget)
    assert result["spent_usd"] == pytest.approx(4 * TURN_COST)
    assert result["waited_seconds"].get("budget", 0) >= 0
    assert claude_rig.server.count("write_commit") == 4  # c never asked the model anything


def test_max_cost_usd_reaches_claude_as_its_budget(claude_rig: ClaudeRig) -> None:
    setup_project(claude_rig, {"capped": "write_commit"})
    prompt = claude_rig.repo / "prompts" / "capped.md"
    prompt.write_text("---\nmax_cost_usd: 0.25\n---\n" + prompt.read_text())
    claude_rig.git("commit", "-qam", "cap")
    done = gadugi(claude_rig, "run", "--agent", "claude", "--json", "capped")
    assert done.returncode == 0, done.stdout + done.stderr
    exported = claude_rig.repo / "export.json"
    assert gadugi(claude_rig, "export", "--output", str(exported)).returncode == 0
    command = json.loads(exported.read_text())["orchestrations"][0]["tasks"][0]["command"]
    assert command[command.index("--max-budget-usd") + 1] == "0.25"


# -- usage limits ---------------------------------------------------------------------

OAUTH = {"ANTHROPIC_API_KEY": "", "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-test-not-real"}


def limited_once(reset_at: Callable[[], int]) -> Callable[[Turn], Reply | Failure]:
    """The first request of all (one task's) meets the usage limit; the rest write_commit."""
    calls: list[int] = []

    def script(turn: Turn) -> Reply | Failure:
        calls.append(turn.index)
        if len(calls) == 1:
            return Failure(
                429,
                "rate_limit_error",
                "usage limit reached",
                (
                    ("anthropic-ratelimit-unified-status", "rejected"),
                    ("anthropic-ratelimit-unified-reset", str(reset_at())),
                    ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
                ),
            )
        return write_commit(turn)

    return script


def test_a_usage_limit_parks_the_agents_tasks_then_a_canary_resumes_first(
    make_claude_rig: Callable[..., ClaudeRig],
) -> None:
    resets: list[int] = []

    def reset_at() -> int:
        resets.append(int(time.time()) + 4)
        return resets[-1]

    rig = make_claude_rig(script={"limited": limited_once(reset_at)})
    # The reset time reaches the events only for a claude.ai login (see test_claude_agent).
    del rig.env["ANTHROPIC_API_KEY"]
    rig.env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-test-not-real"
    setup_project(
        rig, dict.fromkeys(("a", "b", "c"), "limited"), "usage_limit_margin_seconds = 0\n"
    )
    run = start_gadugi(
        rig, "run", "--agent", "claude", "--json", "--max-parallel", "1", "a", "b", "c"
    )
    try:
        shown: list[str] = []

        def parked() -> bool:
            status = gadugi(rig, "status")
            shown.append(status.stdout)
            return "usage limit of claude: resets at" in status.stdout

        wait_until(parked, timeout=60)
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert run.returncode == 0, err
    result = json.loads(out)
    tasks = {t["task_id"]: t for t in result["tasks"]}
    assert [tasks[n]["status"] for n in "abc"] == ["completed"] * 3
    assert [tasks[n]["attempts"] for n in "abc"] == [2, 1, 1]  # no retry budget was needed
    reset = time.strftime("%H:%M:%S", time.localtime(resets[0]))
    assert any(f"usage limit of claude: resets at {reset}" in s for s in shown)
    # Nothing started before the reset, and the canary (a) answered before b or c asked.
    calls = [r for r in rig.server.messages("limited") if r.status == 200]
    assert calls[0].body is not None
    first_after = [_task_of(r.body or {}) for r in calls]
    assert first_after[0] == "a" and set(first_after) == {"a", "b", "c"}
    for name in "bc":
        assert datetime.fromisoformat(tasks[name]["started_at"]).timestamp() >= resets[0]
    assert result["waited_seconds"]["usage_limit"] > 0


def _task_of(body: dict[str, Any]) -> str:
    """The task a request came from: its worktree, named in the system prompt."""
    system = body.get("system") or []
    text = "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    found = re.search(r"/\.worktrees/([a-z])-", text)
    return found.group(1) if found else "?"

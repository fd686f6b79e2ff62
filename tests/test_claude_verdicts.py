"""The real Claude Code (and Codex) against the scripted model server: the structured
verdict (Claude's ``--json-schema``, Codex's ``--output-schema``) decides with the branch's
change whether a task is done, and a red verification goes back to the same session."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from claude_fixtures import gadugi
from gadugi.agents.codex import CodexOptions, CodexProfile
from modelserver import Reply, Text, Turn, bash, say, verdict

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

TEST_MODEL = "claude-sonnet-4-5"
FOLLOWUP_MARK = "gadugi ran the verification command"


def blocked(turn: Turn) -> Reply:
    return Reply(
        (Text("I could not finish."),),
        verdict=verdict("blocked", "The tests need a database this machine does not have."),
    )


def nothing_needed(turn: Turn) -> Reply:
    return Reply((Text("Already so."),), verdict=verdict("no_change", "It already did that."))


def fix_on_followup(turn: Turn) -> Reply:
    """Commit a wrong state.txt; asked again after a red verification, commit the fix."""
    messages = turn.body.get("messages", [])
    asked = [
        i
        for i, m in enumerate(messages)
        if m.get("role") == "user" and FOLLOWUP_MARK in json.dumps(m)
    ]
    if not asked:
        if turn.index == 0:
            return bash("echo bad > state.txt && git add -A && git commit -qm 'First try'")
        return say("Done.")
    later = sum(1 for m in messages[asked[-1] + 1 :] if m.get("role") == "assistant")
    if later == 0:
        return bash("echo good > state.txt && git commit -qam 'Fix state'")
    return say("Fixed.")


def setup_project(rig: ClaudeRig, scenarios: dict[str, str], toml: str = "") -> None:
    (rig.repo / "gadugi.toml").write_text(
        f'claude_model = "{TEST_MODEL}"\nmax_load_per_cpu = 0\n{toml}'
    )
    for name, scenario in scenarios.items():
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\nDo the task.\n\n[[scenario:{scenario}]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")


def test_the_structured_verdict_decides_with_the_change(
    make_claude_rig: Callable[..., ClaudeRig],
) -> None:
    rig = make_claude_rig(script={"blocked": blocked, "nothing_needed": nothing_needed})
    setup_project(
        rig,
        {"stuck": "blocked", "idle": "text_only", "noop": "nothing_needed", "work": "write_commit"},
        "retries = 0\n",
    )
    done = gadugi(rig, "run", "--agent", "claude", "--json", "stuck", "idle", "noop", "work")
    assert done.returncode == 1, done.stdout + done.stderr
    tasks = {t["task_id"]: t for t in json.loads(done.stdout)["tasks"]}
    stuck, idle, noop, work = (tasks[t] for t in ("stuck", "idle", "noop", "work"))
    assert (stuck["status"], stuck["verdict"]) == ("failed", "blocked")
    assert stuck["error_message"] == (
        "the agent says it is blocked: The tests need a database this machine does not have."
    )
    assert (idle["status"], idle["verdict"]) == ("failed", "done")
    assert "said done but changed nothing" in idle["error_message"]
    assert (noop["status"], noop["verdict"], noop["summary"]) == (
        "completed",
        "no_change",
        "It already did that.",
    )
    assert (work["status"], work["verdict"], work["commits"]) == ("completed", "done", 1)
    assert (work["changed_files"], work["insertions"], work["deletions"]) == (1, 1, 0)
    # Every request offered the verdict's tool: it was asked for on each attempt.
    assert all(
        any(t.get("name") == "StructuredOutput" for t in (r.body or {}).get("tools", []))
        for r in rig.server.messages()
        if r.scenario
    )
    show = gadugi(rig, "show", "stuck")
    assert "verdict:" in show.stdout and "blocked" in show.stdout
    assert "a database this machine does not have" in show.stdout


def test_a_red_verification_is_fixed_in_the_same_session(
    make_claude_rig: Callable[..., ClaudeRig],
) -> None:
    rig = make_claude_rig(script={"fix_on_followup": fix_on_followup})
    setup_project(
        rig, {"fix": "fix_on_followup"}, 'retries = 1\nverify_command = "grep -q good state.txt"\n'
    )
    done = gadugi(rig, "run", "--agent", "claude", "--json", "fix")
    assert done.returncode == 0, done.stdout + done.stderr
    task: dict[str, Any] = json.loads(done.stdout)["tasks"][0]
    assert (task["status"], task["attempts"], task["verdict"]) == ("completed", 2, "done")
    assert task["verification"]["passed"] is True
    assert rig.git("show", f"{task['branch']}:state.txt") == "good\n"
    followups = [
        r for r in rig.server.messages("fix_on_followup") if FOLLOWUP_MARK in json.dumps(r.body)
    ]
    assert followups, "the follow-up never reached the model"
    # The same conversation went on: the follow-up request carries the first attempt's turns.
    first = json.dumps(followups[0].body)
    assert "First try" in first and "grep -q good state.txt" in first


def test_codex_gives_its_verdict_through_the_output_schema(
    make_rig: Callable[..., ClaudeRig], codex_bin: Path
) -> None:
    rig = make_rig(codex_bin, script={"blocked": blocked})
    profile = CodexProfile(
        CodexOptions(
            executable=str(codex_bin / "codex"), model="gpt-5.5", home=rig.env["CODEX_HOME"]
        )
    )
    run = rig.run("# Task\n\nDo the task.\n\n[[scenario:blocked]]\n", profile=profile)
    assert run.exit_code == 0, run.ctx.log_file.read_text()
    assert (run.outcome.success, run.outcome.verdict) == (True, "blocked")
    assert run.outcome.summary == "The tests need a database this machine does not have."
    asked = [r.body for r in rig.server.calls("blocked")]
    assert asked and all((b or {})["text"]["format"]["type"] == "json_schema" for b in asked)
    # The schema file lives beside the generated prompt, never in the worktree.
    assert run.ctx.prompt_file.with_suffix(".verdict.json").is_file()
    assert not (rig.repo / "task-1.verdict.json").exists()

"""Phases, verdicts and follow-ups stepped by hand through ``Runner.tick(now)`` (fakes for
processes and git, a real registry): what the loop starts, in which order, and why a task
ends as it does."""

from __future__ import annotations

import pytest

from gadugi import procs, recovery
from gadugi.agents import AgentContext, AgentProfile, Launch, Outcome, profile_for
from gadugi.config import OrchestrationConfig
from gadugi.errors import RequestError
from gadugi.phases import FOLLOWUP_HEADING
from gadugi.promptgen import load_template
from gadugi.registry import Registry
from gadugi.runner import Runner
from gadugi.tasks import Prompt, TaskStatus
from test_runner_tick import BASE, ORCH, OWNER, T0, MakeRig, Rig, rig, task

__all__ = ["rig"]  # the fixture, used by name


class Judged(AgentProfile):
    """The shell agent, whose every exit 0 comes with this structured verdict."""

    name = "judged"

    def __init__(self, verdict: str, summary: str) -> None:
        self.verdict, self.summary = verdict, summary

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        return profile_for("shell", OrchestrationConfig(agent="shell")).prepare(ctx, prompt)

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        return Outcome(exit_code == 0, verdict=self.verdict, summary=self.summary)


def test_setup_then_agent_then_verify_each_a_child_of_its_own(rig: MakeRig) -> None:
    r = rig([task("t", retries=0)], setup_command="make env", verify_command="make test")
    r.step(T0)
    assert r.row("t")["phase"] == "setup" and r.status("t") is TaskStatus.RUNNING
    assert [c.result_file.name for c in r.procs.children] == ["t.1.setup.exit.json"]
    r.exit("t", 0)
    r.step(T0 + 1)
    assert r.row("t")["phase"] == "agent"
    assert r.procs.children[-1].result_file.name == "t.1.exit.json"
    r.exit("t", 0)
    r.step(T0 + 2)
    assert r.row("t")["phase"] == "verify"
    assert r.procs.children[-1].result_file.name == "t.1.verify.exit.json"
    assert r.worktrees.committed == ["t"]  # leftover work committed before verifying
    r.exit("t", 3)
    assert not r.step(T0 + 3)
    row = r.row("t")
    assert row["status"] == "failed" and row["attempts"] == 1
    assert row["error_message"].startswith("verification failed: `make test` exited with code 3")
    assert row["verification"]["passed"] is False and row["verification"]["exit_code"] == 3
    assert row["verification"]["duration_seconds"] == 1.0
    assert len(r.procs.children) == 3


def test_a_setup_that_times_out_fails_before_any_agent(rig: MakeRig) -> None:
    r = rig([task("t")], setup_command="sleep 1000", setup_timeout_minutes=1)
    r.step(T0)
    r.step(T0 + 61)
    r.step(T0 + 62)
    assert r.status("t") is TaskStatus.TIMEOUT
    assert r.row("t")["error_message"] == "setup timed out after 1 minutes"
    assert len(r.procs.children) == 1


@pytest.mark.parametrize(
    ("verdict", "changes", "status", "why"),
    [
        ("blocked", True, "failed", "the agent says it is blocked: tests fail upstream"),
        ("done", False, "failed", "the agent said done but changed nothing"),
        ("no_change", False, "completed", None),
        ("done", True, "completed", None),
    ],
)
def test_the_agent_s_verdict_decides_with_its_change(
    rig: MakeRig, verdict: str, changes: bool, status: str, why: str | None
) -> None:
    r = rig([task("t")], profile=Judged(verdict, "tests fail upstream"))
    r.worktrees.changes = changes
    r.step(T0)
    r.exit("t", 0)
    r.step(T0 + 1)
    row = r.row("t")
    assert (row["status"], row["verdict"], row["summary"]) == (
        status,
        verdict,
        "tests fail upstream",
    )
    assert row["error_message"] is None if why is None else row["error_message"].startswith(why)


def test_a_follow_up_of_a_completed_task_continues_on_its_branch_with_the_text(
    rig: MakeRig,
) -> None:
    r = rig([task("t")])
    r.step(T0)
    r.exit("t", 0)
    assert not r.step(T0 + 1)
    run = r.runner.by_id["t"]
    r.runner.follow_up(run, "Merging left conflicts in a.py; resolve them.", T0 + 2, base="c0ffee")
    row = r.row("t")
    assert row["status"] == "queued" and row["followup"].startswith("Merging left")
    assert r.step(T0 + 3)
    assert r.worktrees.absorbed == [("t", "c0ffee")]
    assert r.worktrees.created[-1][2] == row["branch"]  # its own branch, checked out again
    prompt = (r.layout.prompts_dir / "t.md").read_text()
    assert f"{FOLLOWUP_HEADING}\n\nMerging left conflicts in a.py" in prompt
    assert r.row("t")["followup"] is None  # said once, in attempt 2's prompt
    r.exit("t", 0)
    assert not r.step(T0 + 4)
    assert r.attempts("t") == [(1, "completed", 0), (2, "completed", 0)]


def test_a_follow_up_of_a_running_agent_is_refused(rig: MakeRig) -> None:
    r = rig([task("t")])
    r.step(T0)
    with pytest.raises(RequestError, match="running"):
        r.runner.follow_up(r.runner.by_id["t"], "more", T0 + 1)


def test_a_verification_lost_with_its_process_is_run_again_not_the_agent(rig: MakeRig) -> None:
    r = rig([task("t")], verify_command="make test")
    r.step(T0)
    r.exit("t", 0)
    r.step(T0 + 1)
    assert r.row("t")["phase"] == "verify"
    r.procs.children[-1].exit = procs.Exit(None, None, T0 + 2, lost=True)  # as after a crash
    r.step(T0 + 3)
    names = [c.result_file.name for c in r.procs.children]
    assert names == ["t.1.exit.json", "t.1.verify.exit.json", "t.1.verify.exit.json"]
    r.exit("t", 0)
    assert not r.step(T0 + 4)
    row = r.row("t")
    assert (row["status"], row["attempts"]) == ("completed", 1)
    assert row["verification"]["passed"] is True


def test_a_verification_that_times_out_is_recorded_as_not_passed(rig: MakeRig) -> None:
    r = rig([task("t", retries=0)], verify_command="sleep 1000", verify_timeout_minutes=1)
    r.step(T0)
    r.exit("t", 0)
    r.step(T0 + 1)
    r.step(T0 + 62)
    r.step(T0 + 63)
    row = r.row("t")
    assert (row["status"], row["error_message"]) == ("timeout", "verify timed out after 1 minutes")
    assert row["verification"]["passed"] is False and row["verification"]["exit_code"] is None


def _rebuilt(r: Rig) -> Runner:
    """The runner a resume builds after a kill -9: its tasks restored from the registry."""
    for run in r.runner.runs:  # recovery reads each prompt from the project
        path = r.layout.root / run.prompt.rel_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(run.prompt.text)
    fresh = Registry(r.layout.root / ".gadugi/state.db")
    runs = recovery.restore_runs(fresh.tasks(ORCH), fresh.attempts(ORCH), r.layout, r.config)
    return Runner(
        r.layout,
        runs,
        r.config,
        fresh,
        r.worktrees,
        load_template(r.layout.root),
        BASE,
        owner=OWNER,
        clock=r.clock,
        processes=r.procs,
    )


@pytest.mark.parametrize("removed", [True, False])
def test_a_follow_up_and_its_merge_base_survive_a_crash_before_the_next_attempt(
    rig: MakeRig, removed: bool
) -> None:
    r = rig([task("t")])
    r.step(T0)
    r.exit("t", 0)
    assert not r.step(T0 + 1)
    run = r.runner.by_id["t"]
    if not removed:  # kept (say, it held untracked files): the follow-up runs in it
        run.worktree = r.layout.worktrees_dir / "kept"
        run.worktree.mkdir()
        r.worktrees.created.append(("t", run.worktree, run.branch or "", BASE))
        r.registry.update_task(ORCH, "t", worktree=str(run.worktree), worktree_removed=0)
    r.runner.follow_up(run, "Merging left conflicts in a.py; resolve them.", T0 + 2, base="c0ffee")
    # kill -9 here: the next attempt never started; a resume builds the loop again.
    again = _rebuilt(r)
    r.clock.now = T0 + 3
    try:
        assert again.tick(T0 + 3)
    finally:
        again.exits.close()
        again.registry.close()
    assert r.worktrees.absorbed == [("t", "c0ffee")]
    prompt = (r.layout.prompts_dir / "t.md").read_text()
    assert f"{FOLLOWUP_HEADING}\n\nMerging left conflicts in a.py" in prompt
    assert r.row("t")["followup"] is None and r.row("t")["followup_base"] is None


def test_a_crash_after_the_merge_before_the_agent_merges_nothing_twice(rig: MakeRig) -> None:
    r = rig([task("t")], setup_command="make env")
    r.step(T0)
    r.exit("t", 0)  # the setup
    r.step(T0 + 1)
    r.exit("t", 0)  # the agent
    assert not r.step(T0 + 2)
    run = r.runner.by_id["t"]
    r.runner.follow_up(run, "Merge main in and fix the clash.", T0 + 3, base="c0ffee")
    assert r.step(T0 + 4)  # merged, then the reopened worktree's setup started
    assert r.row("t")["phase"] == "setup" and r.worktrees.absorbed == [("t", "c0ffee")]
    assert r.row("t")["followup_base"] is None  # the merge is in git now
    assert r.row("t")["followup"] == "Merge main in and fix the clash."

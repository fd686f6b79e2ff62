"""Conflict policies on real repositories with shell agents making real, conflicting edits.

Under ``stack`` the later task of a conflicting pair starts from the earlier one's
branch, so the two compose and the later merge is clean; ``serialize`` starts both
from the base (the conflict comes back at merge time); ``optimistic`` runs them
together. Concurrency is shown with gates (each task waits for the other's marker),
never with timings.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from conftest import GIT_ENV, Repo, git, run_cli, start_cli, wait_until
from gadugi.agents import profile_for
from gadugi.cli.livetable import LiveTable
from gadugi.config import OrchestrationConfig
from gadugi.planning.schedule import Slot
from gadugi.runner import TaskRun
from gadugi.tasks import Prompt

SHARED = "value = 0\n"
# Each edit rewrites line 1 on top of whatever is there: from the base, two of them clash.
FIRST = "sed -i 's/^value = .*/value = 1/' shared.py\ngit commit -qam 'first: value 1'"
SECOND = "sed -i 's/$/  # and 2/' shared.py\ngit commit -qam 'second: annotate value'"
THIRD = "sed -i 's/$/  # and 3/' shared.py\ngit commit -qam 'third: annotate again'"


def _repo_with_shared(repo: Repo) -> None:
    # Admission control off: a busy test machine must not turn "a slot" into "the load".
    (repo.root / "gadugi.toml").write_text("max_load_per_cpu = 0\nmin_available_memory_mb = 0\n")
    (repo.root / "shared.py").write_text(SHARED)
    (repo.root / "docs").mkdir()
    (repo.root / "docs/shared.md").write_text("# shared\n")
    (repo.root / "test_shared.py").write_text("import shared\n")
    repo.commit("shared module")


def _run(repo: Repo, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli(["run", "--agent", "shell", "--json", *args], repo.root)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def _tasks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in result["tasks"]}


def _merges_cleanly(repo: Repo, ours: str, theirs: str) -> bool:
    proc = subprocess.run(
        ["git", "merge-tree", "--write-tree", ours, theirs],
        cwd=repo.root,
        capture_output=True,
        text=True,
        env={**GIT_ENV},
        check=False,
    )
    assert proc.returncode in (0, 1), proc.stderr
    return proc.returncode == 0


def _is_ancestor(repo: Repo, older: str, newer: str) -> bool:
    proc = subprocess.run(
        ["git", "merge-base", "--is-ancestor", older, newer], cwd=repo.root, check=False
    )
    return proc.returncode == 0


def _edit_prompts(repo: Repo, *scripts: tuple[str, str]) -> None:
    for name, script in scripts:
        repo.prompt(f"{name}.md", f"# {name}\n\nEdit `shared.py`.\n\n```sh\n{script}\n```\n")
    repo.commit()


@pytest.mark.slow
def test_stack_starts_the_later_task_from_the_earlier_branch(repo: Repo) -> None:
    _repo_with_shared(repo)
    _edit_prompts(repo, ("first", FIRST), ("second", SECOND), ("third", THIRD))
    code, result = _run(repo, "--max-parallel", "3", "first", "second", "third")
    assert code == 0, result["error_summary"]
    tasks = _tasks(result)
    first, second, third = (tasks[t]["branch"] for t in ("first", "second", "third"))
    # The chain composes: third holds second, which holds first.
    assert _is_ancestor(repo, first, second) and _is_ancestor(repo, second, third)
    assert git(repo.root, "show", f"{third}:shared.py") == "value = 1  # and 2  # and 3\n"
    assert [tasks[t]["commits"] for t in ("first", "second", "third")] == [1, 1, 1]
    # With first landed on the base, second merges in without a conflict (and so on).
    assert _merges_cleanly(repo, first, second)
    assert _merges_cleanly(repo, second, third)
    # Each branch, counted from its own base, changed shared.py: every pair was real.
    accuracy = result["plan_accuracy"]
    pairs = [["first", "second"], ["first", "third"], ["second", "third"]]
    assert accuracy == {
        "predicted_pairs": pairs,
        "actual_pairs": pairs,
        "precision": 1.0,
        "recall": 1.0,
    }
    listed = run_cli(["list"], repo.root).stdout
    assert "plan: 3 conflicting pairs predicted, 3 real (3 of them predicted)" in listed


@pytest.mark.slow
def test_serialize_starts_each_from_the_base_and_the_conflict_comes_back(repo: Repo) -> None:
    _repo_with_shared(repo)
    _edit_prompts(repo, ("first", FIRST), ("second", SECOND))
    code, result = _run(repo, "--conflict-policy", "serialize", "first", "second")
    assert code == 0, result["error_summary"]
    tasks = _tasks(result)
    assert not _is_ancestor(repo, tasks["first"]["branch"], tasks["second"]["branch"])
    assert not _merges_cleanly(repo, tasks["first"]["branch"], tasks["second"]["branch"])


@pytest.mark.slow
def test_a_failed_earlier_task_never_dooms_the_later_one(repo: Repo) -> None:
    _repo_with_shared(repo)
    _edit_prompts(repo, ("first", FIRST + "\nexit 3"), ("second", SECOND))
    main = git(repo.root, "rev-parse", "HEAD").strip()
    code, result = _run(repo, "--retries", "0", "first", "second")
    assert code == 1
    tasks = _tasks(result)
    assert tasks["first"]["status"] == "failed"
    assert tasks["second"]["status"] == "completed"
    # It started from the base, not from the failed task's branch.
    assert git(repo.root, "rev-parse", f"{tasks['second']['branch']}~1").strip() == main


def _gated(me: str, other: str, gates: Path, extra: str = "") -> str:
    """Mark that ``me`` runs, then wait (bounded) for ``other`` to run too."""
    return (
        f"touch {gates}/{me}\n"
        f"for i in $(seq 300); do [ -e {gates}/{other} ] && break; sleep 0.1; done\n"
        f"test -e {gates}/{other}\n{extra}"
    )


@pytest.mark.slow
def test_optimistic_runs_conflicting_tasks_together(repo: Repo, tmp_path: Path) -> None:
    _repo_with_shared(repo)
    _edit_prompts(
        repo,
        ("first", _gated("first", "second", tmp_path, FIRST)),
        ("second", _gated("second", "first", tmp_path, SECOND)),
    )
    code, result = _run(repo, "--conflict-policy", "optimistic", "first", "second")
    assert code == 0, result["error_summary"]  # each saw the other running


@pytest.mark.slow
def test_an_import_relation_alone_does_not_keep_tasks_apart(repo: Repo, tmp_path: Path) -> None:
    _repo_with_shared(repo)
    # A docs-only edit of the test module's docstring: the test imports shared.py.
    repo.prompt(
        "doc.md",
        "# Document the test\n\nImprove the docstring of test_shared.py.\n\n```sh\n"
        + _gated("doc", "code", tmp_path, "echo '# doc' >> test_shared.py\ngit commit -qam doc")
        + "\n```\n",
    )
    repo.prompt(
        "code.md",
        "# Change the module\n\nChange shared.py.\n\n```sh\n"
        + _gated("code", "doc", tmp_path, FIRST)
        + "\n```\n",
    )
    repo.prompt(
        "narrow.md",
        "---\ntouches: [docs/shared.md]\n---\n# Docs\n\nDocument shared.py in docs/shared.md.\n",
    )
    repo.commit()
    plan = json.loads(run_cli(["plan", "--json", "doc", "code", "narrow"], repo.root).stdout)
    tasks = {t["task_id"]: t for t in plan["tasks"]}
    assert tasks["doc"]["conflicts_with"] == [] and tasks["doc"]["related_to"] == ["code"]
    # Declared touches narrow a footprint: the mention of shared.py counts for nothing.
    assert tasks["narrow"]["footprint"] == ["docs/shared.md"]
    assert tasks["narrow"]["conflicts_with"] == []
    assert plan["waves"] == [["doc", "code", "narrow"]]
    code, result = _run(repo, "doc", "code")
    assert code == 0, result["error_summary"]  # they ran side by side
    assert result["plan_accuracy"]["predicted_pairs"] == []
    assert result["plan_accuracy"]["precision"] is None


def test_plan_waves_are_the_simulated_schedule(repo: Repo) -> None:
    for name in ("a", "b", "c"):
        repo.shell_prompt(f"{name}.md", "true")
    repo.shell_prompt("d.md", "true", front="depends_on: [a]")
    repo.commit()
    one = json.loads(
        run_cli(["plan", "--json", "--max-parallel", "1", "a", "b", "c", "d"], repo.root).stdout
    )
    assert one["waves"] == [["a"], ["b"], ["c"], ["d"]]
    assert one["conflict_policy"] == "stack"
    two = json.loads(
        run_cli(["plan", "--json", "--max-parallel", "2", "a", "b", "c", "d"], repo.root).stdout
    )
    assert two["waves"] == [["a", "b"], ["c", "d"]]
    text = run_cli(["plan", "--max-parallel", "1", "a", "b"], repo.root).stdout
    assert "conflict policy stack" in text and "  2: b" in text


@pytest.mark.parametrize("where", ["flag", "file"])
def test_a_bad_conflict_policy_exits_2_and_changes_nothing(repo: Repo, where: str) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    args = ["--conflict-policy", "merge"] if where == "flag" else []
    if where == "file":
        (repo.root / "gadugi.toml").write_text('conflict_policy = "merge"\n')
    before = repo.snapshot()
    for command in ("run", "plan"):
        proc = run_cli([command, "--agent", "shell", *args, "a"], repo.root)
        assert proc.returncode == 2, proc.stderr
        assert "conflict" in proc.stderr and "merge" in proc.stderr
    assert repo.snapshot() == before


@pytest.mark.slow
def test_every_queued_task_says_why_it_waits(repo: Repo, tmp_path: Path) -> None:
    _repo_with_shared(repo)
    gate = tmp_path / "gate"
    hold = f"while [ ! -e {gate} ]; do sleep 0.05; done\n"
    _edit_prompts(repo, ("first", hold + FIRST), ("second", SECOND))
    repo.shell_prompt("after.md", "true", front="depends_on: [first]")
    repo.shell_prompt("free.md", "true")
    repo.commit()
    run = start_cli(
        [
            "run",
            "--agent",
            "shell",
            "--max-parallel",
            "1",
            "--json",
            "first",
            "second",
            "after",
            "free",
        ],
        repo.root,
    )
    try:
        expected = {
            "second": "stacked after first (running): starts from its branch once it completes",
            "after": "waiting for dependency first (running)",
            "free": "waiting for a slot: 1 of 1 running",
        }
        seen: dict[str, Any] = {}

        def reasons_shown() -> bool:
            proc = run_cli(["status", "--json"], repo.root)
            if proc.returncode != 0:
                return False
            seen.update({t["task_id"]: t for t in json.loads(proc.stdout)["tasks"]})
            return {t: seen.get(t, {}).get("waiting_reason") for t in expected} == expected

        wait_until(reasons_shown)
        assert seen["first"]["status"] == "running" and seen["first"]["waiting_reason"] is None
        text = run_cli(["status"], repo.root).stdout
        assert "waiting for a slot: 1 of 1 running" in text
        monitoring = next((repo.root / ".gadugi/monitoring").glob("orch-*_status.json"))

        def monitored() -> bool:
            doc = json.loads(monitoring.read_text())
            return {t["task_id"]: t["waiting_reason"] for t in doc["tasks"]}.get("free") == (
                expected["free"]
            )

        wait_until(monitored)
        shown = json.loads(run_cli(["show", "free", "--json"], repo.root).stdout)
        assert shown["waiting_reason"] == expected["free"]
        gate.touch()
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, err
    assert all(t["status"] == "completed" for t in json.loads(out)["tasks"])
    final = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    assert all(t["waiting_reason"] is None for t in final["tasks"])


def test_the_live_table_shows_why_a_queued_task_waits(tmp_path: Path) -> None:
    prompt = Prompt(
        path=tmp_path / "a.md", rel_path="prompts/a.md", task_id="a", title="A", body="", text=""
    )
    run = TaskRun(
        prompt=prompt,
        slot=Slot("a", 0),
        profile=profile_for("shell", OrchestrationConfig()),
        waiting_reason="waiting for a slot: 1 of 1 running",
        last_line="an old line",
    )
    console = Console(record=True, width=120, height=30)
    console.print(LiveTable(console).render([run], 0.0))
    assert "waiting for a slot: 1 of 1 running" in console.export_text()

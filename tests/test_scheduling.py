"""Runs that follow the plan: dependencies, conflicts, priorities, cascades, fallback."""

from __future__ import annotations

import itertools
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

import gadugi.planning.plan
from conftest import Repo, git, run_cli, start_cli
from gadugi import OrchestrationConfig, OrchestratorCoordinator
from gadugi.errors import PlanError


def _spans(result: dict[str, Any]) -> dict[str, tuple[float, float]]:
    return {
        t["task_id"]: (
            datetime.fromisoformat(t["started_at"]).timestamp(),
            datetime.fromisoformat(t["completed_at"]).timestamp(),
        )
        for t in result["tasks"]
        if t["started_at"]
    }


def _commit_file(name: str, content: str) -> str:
    return f"echo {content} > {name}\ngit add {name}\ngit commit -qm 'write {name}'"


def _run(repo: Repo, *args: str) -> tuple[int, dict[str, Any]]:
    proc = run_cli(["run", "--agent", "shell", "--json", *args], repo.root)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.slow
def test_a_dependent_task_starts_after_and_sees_its_dependency(repo: Repo) -> None:
    repo.shell_prompt("setup-db.md", "sleep 0.5\n" + _commit_file("schema.sql", "tables"))
    repo.shell_prompt(
        "use-db.md",
        'test "$(cat schema.sql)" = tables\n' + _commit_file("app.txt", "uses-schema"),
        front="depends_on: [setup-db.md]",
    )
    repo.commit()
    code, result = _run(repo, "--max-parallel", "4", "use-db", "setup-db")
    assert code == 0, result["error_summary"]
    spans = _spans(result)
    assert spans["use-db"][0] >= spans["setup-db"][1]
    use = next(t for t in result["tasks"] if t["task_id"] == "use-db")
    assert use["commits"] == 1  # its own commit, counted from its dependency's tip
    assert git(repo.root, "show", f"{use['branch']}:schema.sql").strip() == "tables"


@pytest.mark.slow
def test_a_diamond_merges_both_branches_for_the_last_task(repo: Repo) -> None:
    repo.shell_prompt("base.md", _commit_file("base.txt", "b"))
    repo.shell_prompt("left.md", _commit_file("left.txt", "l"), front="depends_on: [base]")
    repo.shell_prompt("right.md", _commit_file("right.txt", "r"), front="depends_on: [base]")
    repo.shell_prompt(
        "top.md",
        "test -f base.txt && test -f left.txt && test -f right.txt\n"
        + _commit_file("top.txt", "t"),
        front="depends_on: [left, right]",
    )
    repo.commit()
    code, result = _run(repo, "top", "right", "left", "base")
    assert code == 0, result["error_summary"]
    spans = _spans(result)
    assert spans["top"][0] >= max(spans["left"][1], spans["right"][1])
    assert min(spans["left"][0], spans["right"][0]) >= spans["base"][1]


def test_a_merge_conflict_between_dependencies_fails_naming_branches_and_files(repo: Repo) -> None:
    repo.shell_prompt("one.md", _commit_file("shared.txt", "one"))
    repo.shell_prompt("two.md", _commit_file("shared.txt", "two"))
    repo.shell_prompt("both.md", "true", front="depends_on: [one, two]")
    repo.commit()
    code, result = _run(repo, "one", "two", "both")
    assert code == 1
    tasks = {t["task_id"]: t for t in result["tasks"]}
    assert tasks["one"]["status"] == tasks["two"]["status"] == "completed"
    assert tasks["both"]["status"] == "failed"
    message = tasks["both"]["error_message"]
    assert tasks["two"]["branch"] in message and "shared.txt" in message


@pytest.mark.slow
def test_conflicting_tasks_never_overlap(repo: Repo) -> None:
    (repo.root / "src").mkdir()
    (repo.root / "src/shared.py").write_text("X = 1\n")
    for name in ("first", "second", "third"):
        repo.prompt(
            f"{name}.md",
            "# Edit the shared module\n\nChange `src/shared.py`.\n\n```sh\nsleep 0.6\n```\n",
        )
    repo.shell_prompt("apart.md", "sleep 0.6")
    repo.commit()
    plan = json.loads(
        run_cli(["plan", "--json", "first", "second", "third", "apart"], repo.root).stdout
    )
    conflicts = {t["task_id"]: t["conflicts_with"] for t in plan["tasks"]}
    assert conflicts["first"] == ["second", "third"] and conflicts["apart"] == []
    code, result = _run(repo, "--max-parallel", "4", "first", "second", "third", "apart")
    assert code == 0
    spans = _spans(result)
    ordered = sorted(spans[t] for t in ("first", "second", "third"))
    for (_, end), (start, _) in itertools.pairwise(ordered):
        assert start >= end
    # The independent task did overlap one of them: conflicts serialise only what they must.
    assert spans["apart"][0] < spans["first"][1]


def test_a_failure_cancels_every_dependent_and_spares_the_rest(repo: Repo) -> None:
    repo.shell_prompt("root.md", "exit 4")
    repo.shell_prompt("child.md", "true", front="depends_on: [root]")
    repo.shell_prompt("grandchild.md", "true", front="depends_on: [child]")
    repo.shell_prompt("bystander.md", "true")
    repo.commit()
    code, result = _run(repo, "root", "child", "grandchild", "bystander")
    assert code == 1
    tasks = {t["task_id"]: t for t in result["tasks"]}
    assert tasks["root"]["status"] == "failed"
    for name in ("child", "grandchild"):
        assert tasks[name]["status"] == "cancelled"
        assert "root" in tasks[name]["error_message"]
        assert tasks[name]["started_at"] is None
    assert tasks["bystander"]["status"] == "completed"


def test_higher_priority_starts_first(repo: Repo) -> None:
    repo.shell_prompt("low.md", "true")
    repo.shell_prompt("high.md", "true", front="priority: 5")
    repo.shell_prompt("mid.md", "true", front="priority: 1")
    repo.commit()
    code, result = _run(repo, "--max-parallel", "1", "low", "high", "mid")
    assert code == 0
    spans = _spans(result)
    assert sorted(spans, key=lambda t: spans[t][0]) == ["high", "mid", "low"]


@pytest.mark.parametrize(
    ("fronts", "expect"),
    [
        ({"a": "depends_on: [b]", "b": "depends_on: [a]"}, "cycle"),
        ({"a": "depends_on: [ghost.md]"}, "ghost"),
        ({"a": "depends_on: [a]"}, "cycle"),
    ],
)
def test_cycles_and_unknown_dependencies_exit_2_and_change_nothing(
    repo: Repo, fronts: dict[str, str], expect: str
) -> None:
    for name in ("a", "b"):
        repo.shell_prompt(f"{name}.md", "true", front=fronts.get(name))
    repo.commit()
    before = repo.snapshot()
    for command in ("run", "plan"):
        proc = run_cli([command, "--agent", "shell", "a", "b"], repo.root)
        assert proc.returncode == 2, proc.stderr
        assert expect in proc.stderr
    assert repo.snapshot() == before


def test_plan_prints_waves_and_json_runs_nothing(repo: Repo) -> None:
    repo.shell_prompt("a.md", "true")
    repo.shell_prompt("b.md", "true", front="depends_on: [a]")
    repo.commit()
    before = repo.snapshot()
    text = run_cli(["plan", "a", "b"], repo.root)
    assert text.returncode == 0
    assert "wave" in text.stdout.lower() and "critical path" in text.stdout.lower()
    data = json.loads(
        run_cli(["plan", "--json", "--max-parallel", "3", "a", "b"], repo.root).stdout
    )
    assert data["max_parallel"] == 3
    assert data["waves"] == [["a"], ["b"]] and data["critical_path"] == ["a", "b"]
    assert {
        "estimated_sequential_minutes",
        "estimated_parallel_minutes",
        "estimated_speedup",
    } <= set(data)
    assert repo.snapshot() == before


def test_analysis_failure_falls_back_to_one_at_a_time(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> gadugi.planning.plan.Plan:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a prompt the analyser chokes on")

    monkeypatch.setattr(gadugi.planning.plan, "analyze", broken)
    for name in ("x", "y", "z"):
        repo.shell_prompt(f"{name}.md", "sleep 0.2")
    repo.commit()
    config = OrchestrationConfig(agent="shell", max_parallel_tasks=3)
    result = OrchestratorCoordinator(config, project_root=repo.root).orchestrate(["x", "y", "z"])
    assert result.fallback_used and result.successful_tasks == 3
    spans = sorted((t.started_at or "", t.completed_at or "") for t in result.tasks)
    assert [t.task_id for t in result.tasks] == ["x", "y", "z"]
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end
    strict = OrchestrationConfig(agent="shell", fallback_to_sequential=False)
    with pytest.raises(PlanError, match="analysis failed"):
        OrchestratorCoordinator(strict, project_root=repo.root).orchestrate(["x"])


@pytest.mark.slow
def test_worktrees_are_prepared_ahead_while_every_slot_is_busy(repo: Repo, tmp_path: Path) -> None:
    gate = tmp_path / "gate"
    wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
    for name in ("one", "two", "three", "four", "five"):
        repo.shell_prompt(f"{name}.md", wait)
    repo.commit()
    run = start_cli(
        [
            "run",
            "--agent",
            "shell",
            "--max-parallel",
            "2",
            "--json",
            "one",
            "two",
            "three",
            "four",
            "five",
        ],
        repo.root,
    )
    try:
        deadline = time.monotonic() + 30
        ready: list[str] = []
        while time.monotonic() < deadline and len(ready) < 2:
            time.sleep(0.1)
            status = run_cli(["status", "--json"], repo.root)
            if status.returncode != 0:
                continue
            tasks = json.loads(status.stdout)["tasks"]
            ready = [t["task_id"] for t in tasks if t["status"] == "queued" and t["branch"]]
        # Two slots busy: the next two tasks (no more than the slots) have their worktrees.
        assert ready == ["three", "four"]
        prepared = repo.root / ".worktrees"
        assert sorted(p.name.rsplit("-", 1)[0] for p in prepared.iterdir()) == [
            "four",
            "one",
            "three",
            "two",
        ]
        assert run_cli(["cancel", "four"], repo.root).returncode == 0
        gate.touch()
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err  # four was cancelled
    result = {t["task_id"]: t for t in json.loads(out)["tasks"]}
    assert all(result[t]["status"] == "completed" for t in ("one", "two", "three", "five"))
    assert result["four"]["status"] == "cancelled"
    assert result["four"]["worktree"] is None  # made ahead, nothing ran in it: removed
    assert repo.worktrees() == [str(repo.root)]


def test_the_sequential_fallback_runs_each_task_from_the_base_on_its_own(
    repo: Repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: object, **__: object) -> gadugi.planning.plan.Plan:
        raise UnicodeDecodeError("utf-8", b"\xff", 0, 1, "a prompt the analyser chokes on")

    monkeypatch.setattr(gadugi.planning.plan, "analyze", broken)
    repo.shell_prompt("x.md", _commit_file("x.txt", "x"))
    repo.shell_prompt("y.md", "exit 1")
    repo.shell_prompt("z.md", _commit_file("z.txt", "z"))
    repo.commit()
    base = git(repo.root, "rev-parse", "HEAD").strip()
    warnings: list[str] = []
    config = OrchestrationConfig(agent="shell", max_parallel_tasks=3)
    coordinator = OrchestratorCoordinator(config, project_root=repo.root, warn=warnings.append)
    result = coordinator.orchestrate(["x", "y", "z"])
    assert result.fallback_used
    assert {t.task_id: t.status for t in result.tasks} == {
        "x": "completed",
        "y": "failed",
        "z": "completed",
    }
    for task in result.tasks:
        assert task.branch is not None
        assert git(repo.root, "rev-parse", f"{task.branch}~{task.commits}").strip() == base
    files = git(repo.root, "ls-tree", "--name-only", result.tasks[2].branch or "").split()
    assert "z.txt" in files and "x.txt" not in files
    spans = sorted((t.started_at or "", t.completed_at or "") for t in result.tasks)
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end
    assert warnings and not any(w.startswith("skipped") for w in warnings)

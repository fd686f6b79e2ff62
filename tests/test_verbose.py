"""`run --verbose`: what gadugi decided and did, on stderr; a normal run says none of it."""

from __future__ import annotations

from conftest import Repo, run_cli


def _prompts(repo: Repo) -> None:
    repo.shell_prompt("first.md", "echo a > shared.txt", front="touches: [shared.txt]")
    repo.shell_prompt("second.md", "echo b > shared.txt", front="touches: [shared.txt]")
    repo.shell_prompt("after.md", "true", front="depends_on: [first.md]")
    repo.commit()


def test_verbose_logs_the_plan_git_spawns_state_changes_and_admission(repo: Repo) -> None:
    _prompts(repo)
    proc = run_cli(["run", "--agent", "shell", "--verbose", "first", "second", "after"], repo.root)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "plan: first: footprint from touches: shared.txt" in err
    assert "plan: first and second conflict: both touch shared.txt" in err
    assert "plan: after depends on first" in err
    assert "plan: wave 1: first" in err
    assert "git worktree add" in err and "exit 0 in " in err  # each git command, timed
    assert "spawn first attempt 1: bash" in err  # each spawn with its command line
    assert "first: queued -> running" in err and "first: running -> completed" in err
    assert "admission: starting first" in err


def test_a_normal_run_logs_none_of_it(repo: Repo) -> None:
    _prompts(repo)
    proc = run_cli(["run", "--agent", "shell", "first", "second", "after"], repo.root)
    assert proc.returncode == 0, proc.stderr
    for marker in ("plan:", "git worktree", "spawn ", "->", "admission:"):
        assert marker not in proc.stderr

"""An attempt's phases beside its agent, with real git and real processes: the setup
command before the agent, the verification after it, each a supervised child with its
own log, and a red verification handed back to the agent as a follow-up."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, git, run_cli, run_then_kill_9


def _task(proc: Any) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = json.loads(proc.stdout)["tasks"]
    assert len(tasks) == 1
    return tasks[0]


def test_a_red_verification_fails_the_task_with_the_command_and_its_output(repo: Repo) -> None:
    repo.shell_prompt("work.md", "echo change > work.txt", front="retries: 0")
    repo.commit()
    proc = run_cli(
        [
            "run",
            "--agent",
            "shell",
            "--json",
            "--verify",
            "echo checking; echo 'E: 1 broken' >&2; exit 4",
            "work",
        ],
        repo.root,
    )
    assert proc.returncode == 1, proc.stderr
    task = _task(proc)
    assert task["status"] == "failed" and task["attempts"] == 1
    assert "verification failed: `echo checking;" in task["error_message"]
    assert "exited with code 4" in task["error_message"]
    assert "E: 1 broken" in task["error_message"]
    verification = task["verification"]
    assert verification["passed"] is False and verification["exit_code"] == 4
    assert verification["command"].startswith("echo checking")
    assert verification["duration_seconds"] >= 0
    log = Path(verification["log_file"])
    assert log.name == "work.verify.log" and "E: 1 broken" in log.read_text()
    # The agent's work was committed before the verification, so none of it is lost.
    assert git(repo.root, "show", f"{task['branch']}:work.txt") == "change\n"
    show = run_cli(["show", "work"], repo.root)
    assert "verified:   FAILED: `echo checking;" in show.stdout
    assert "(exit 4, " in show.stdout and "work.verify.log" in show.stdout
    assert json.loads(run_cli(["show", "work", "--json"], repo.root).stdout)["verification"] == (
        verification
    )


def test_a_green_verification_completes_the_task_and_front_matter_wins(repo: Repo) -> None:
    repo.shell_prompt("own.md", "echo a > a.txt", front="verify: test -s a.txt")
    repo.shell_prompt("flag.md", "echo b > b.txt")
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "shell", "--json", "--verify", "test -s b.txt", "own", "flag"],
        repo.root,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    tasks = {t["task_id"]: t for t in json.loads(proc.stdout)["tasks"]}
    assert tasks["own"]["verification"]["command"] == "test -s a.txt"
    assert tasks["flag"]["verification"]["command"] == "test -s b.txt"
    for task in tasks.values():
        assert task["status"] == "completed"
        assert task["verification"]["passed"] is True
        assert task["verification"]["exit_code"] == 0
    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    for row in status["tasks"]:
        assert row["verification"] == tasks[row["task_id"]]["verification"]
        assert (row["phase"], row["changed_files"], row["insertions"]) == ("verify", 1, 1)
    exported = repo.root / "export.json"
    assert run_cli(["export", "--output", str(exported)], repo.root).returncode == 0
    rows = json.loads(exported.read_text())["orchestrations"][0]["tasks"]
    assert {r["task_id"]: r["verification"]["passed"] for r in rows} == {"own": True, "flag": True}


def test_no_verification_gives_a_null_verification(repo: Repo) -> None:
    repo.shell_prompt("plain.md", "true")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "plain"], repo.root)
    assert proc.returncode == 0
    task = _task(proc)
    assert task["verification"] is None and task["verdict"] is None


def test_a_failing_setup_fails_the_task_before_its_agent_starts(repo: Repo, tmp_path: Path) -> None:
    ran = tmp_path / "agent-ran"
    repo.shell_prompt("env.md", f"touch {ran}")
    (repo.root / "gadugi.toml").write_text(
        "setup_command = \"echo installing; echo 'no such package: frob' >&2; exit 9\"\n"
    )
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "env"], repo.root)
    assert proc.returncode == 1
    task = _task(proc)
    assert task["status"] == "failed"
    assert "setup failed: `echo installing;" in task["error_message"]
    assert "exited with code 9" in task["error_message"]
    assert "no such package: frob" in task["error_message"]
    assert not ran.exists()
    log = Path(task["log_file"]).with_name("env.setup.log")
    assert "no such package: frob" in log.read_text()


def test_setup_runs_in_the_worktree_before_the_agent(repo: Repo) -> None:
    repo.shell_prompt(
        "env.md", "test -f .env-ready && echo used > used.txt", front="setup: touch .env-ready"
    )
    (repo.root / "gadugi.toml").write_text('setup_command = "exit 1"\n')  # front matter wins
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "env"], repo.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task = _task(proc)
    assert task["status"] == "completed"
    assert git(repo.root, "show", f"{task['branch']}:used.txt") == "used\n"


def test_a_red_verification_is_handed_back_to_the_agent_and_fixed_in_attempt_2(
    repo: Repo,
) -> None:
    # An agent without sessions: the follow-up comes as its prompt with a heading added.
    agent = (
        'bash -c \'if grep -q "Follow-up from gadugi" "$GADUGI_PROMPT_FILE" && '
        'grep -q "E: still broken" "$GADUGI_PROMPT_FILE"; then echo good > state.txt; '
        "else echo bad > state.txt; fi'"
    )
    repo.prompt("fix.md", "# Fix it\n", front="retries: 1")
    repo.commit()
    verify = "grep -q good state.txt || { echo 'E: still broken' >&2; exit 1; }"
    proc = run_cli(["run", "--agent-cmd", agent, "--json", "--verify", verify, "fix"], repo.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task = _task(proc)
    assert task["status"] == "completed" and task["attempts"] == 2
    assert task["verification"]["passed"] is True
    log = git(repo.root, "log", "--format=%s", task["branch"]).splitlines()
    assert sum("work left uncommitted by task fix" in line for line in log) == 2
    show = run_cli(["show", "fix", "--json"], repo.root)
    attempts = json.loads(show.stdout)["attempts"]
    assert [a["status"] for a in attempts] == ["follow-up", "completed"]
    assert "verification failed" in attempts[0]["error"]


def test_kill_9_during_verification_then_resume_verifies_once(repo: Repo, tmp_path: Path) -> None:
    started, gate, runs = tmp_path / "verifying", tmp_path / "gate", tmp_path / "runs"
    verify = f"echo run >> {runs}; touch {started}; while [ ! -e {gate} ]; do sleep 0.05; done"
    repo.shell_prompt("slow.md", "echo x > x.txt", front=f"verify: {json.dumps(verify)}")
    repo.commit()
    orch_id = run_then_kill_9(repo, started, "slow")
    gate.touch()
    resumed = run_cli(["resume", orch_id, "--json"], repo.root)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    task = _task(resumed)
    assert task["status"] == "completed" and task["attempts"] == 1
    assert task["verification"]["passed"] is True
    assert runs.read_text() == "run\n"  # adopted, not run again


@pytest.mark.parametrize(
    ("toml", "front", "said"),
    [
        ("verify_timeout_minutes = 0\n", None, "verify_timeout_minutes"),
        ('setup_command = "  "\n', None, "setup_command"),
        ("autocommit = 3\n", None, "autocommit"),
        ("", 'verify: ""', "verify: must be a non-empty shell command"),
        ("", "setup: [1]", "setup: must be a non-empty shell command"),
    ],
)
def test_bad_phase_settings_exit_2_and_change_nothing(
    repo: Repo, toml: str, front: str | None, said: str
) -> None:
    repo.shell_prompt("t.md", "true", front=front)
    (repo.root / "gadugi.toml").write_text(toml)
    repo.commit()
    before = repo.snapshot()
    proc = run_cli(["run", "--agent", "shell", "t"], repo.root)
    assert proc.returncode == 2 and said in proc.stderr, proc.stderr
    assert repo.snapshot() == before


def test_a_task_failed_by_its_verification_can_be_retried(repo: Repo, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    repo.shell_prompt("work.md", "echo x >> x.txt", front=f"retries: 0\nverify: test -e {ready}")
    repo.commit()
    first = run_cli(["run", "--agent", "shell", "--json", "work"], repo.root)
    assert first.returncode == 1 and _task(first)["verification"]["passed"] is False
    ready.touch()
    again = run_cli(["retry", "work", "--json"], repo.root)
    assert again.returncode == 0, again.stdout + again.stderr
    task = _task(again)
    assert (task["status"], task["attempts"], task["error_message"]) == ("completed", 2, None)
    assert task["verification"]["passed"] is True
    forced = run_cli(["retry", "work", "--force", "--json"], repo.root)
    assert forced.returncode == 0 and _task(forced)["attempts"] == 3


def test_a_follow_up_that_changes_nothing_is_not_asked_again(repo: Repo) -> None:
    # The agent cannot fix it: each attempt writes the same file, so the tree it leaves
    # is the one that already failed. Asking a third time would spend an agent run on a
    # verification whose answer is known.
    repo.shell_prompt("stuck.md", "echo same > same.txt", front="retries: 3")
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "shell", "--json", "--verify", "echo 'E: red' >&2; exit 3", "stuck"],
        repo.root,
    )
    assert proc.returncode == 1, proc.stderr
    task = _task(proc)
    assert task["status"] == "failed" and task["attempts"] == 2
    assert "the follow-up changed nothing" in task["error_message"]
    assert "E: red" in task["error_message"]
    show = json.loads(run_cli(["show", "stuck", "--json"], repo.root).stdout)
    assert [a["status"] for a in show["attempts"]] == ["follow-up", "failed"]


def test_an_attempt_knows_its_number_and_whether_it_follows_up(repo: Repo) -> None:
    seen = repo.root.parent / "seen.txt"
    repo.shell_prompt(
        "env.md",
        f'echo "$GADUGI_ATTEMPT ${{GADUGI_FOLLOW_UP:-none}}" >> {seen}\n'
        'echo "$GADUGI_ATTEMPT" > attempt.txt',
        front="retries: 1",
    )
    repo.commit()
    verify = "grep -qx 2 attempt.txt"
    proc = run_cli(["run", "--agent", "shell", "--json", "--verify", verify, "env"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert seen.read_text().splitlines() == ["1 none", "2 1"]


UNITTEST_TASK = """mkdir -p pkg
echo 'def add(a, b): return a + b' > pkg/__init__.py
cat > test_pkg.py <<'EOF'
import unittest
import pkg


class T(unittest.TestCase):
    def test_add(self):
        self.assertEqual(pkg.add(1, 2), 3)
EOF"""


def test_what_a_green_verification_leaves_untracked_does_not_keep_the_worktree(
    repo: Repo,
) -> None:
    # No .gitignore: `python -m unittest` leaves __pycache__ folders, which are the
    # verification's output, not the agent's work.
    repo.shell_prompt("mod.md", UNITTEST_TASK)
    repo.commit()
    verify = "PYTHONDONTWRITEBYTECODE= python3 -m unittest -q && test -d pkg/__pycache__"
    proc = run_cli(["run", "--agent", "shell", "--json", "--verify", verify, "mod"], repo.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task = _task(proc)
    assert (task["status"], task["error_message"]) == ("completed", None)
    assert task["verification"]["passed"] is True
    assert task["worktree"] is None and repo.worktrees() == [str(repo.root)]
    files = git(repo.root, "ls-tree", "-r", "--name-only", task["branch"]).split()
    assert sorted(files) == ["README.md", "pkg/__init__.py", "prompts/mod.md", "test_pkg.py"]


def test_a_red_verification_s_leftovers_are_not_committed_by_the_follow_up(repo: Repo) -> None:
    agent = (
        'bash -c \'if grep -q "Follow-up from gadugi" "$GADUGI_PROMPT_FILE"; '
        "then echo good > state.txt; else echo bad > state.txt; fi'"
    )
    repo.prompt("fix.md", "# Fix it\n", front="retries: 1")
    repo.commit()
    verify = "date > verify-report.txt; grep -q good state.txt"
    proc = run_cli(["run", "--agent-cmd", agent, "--json", "--verify", verify, "fix"], repo.root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    task = _task(proc)
    assert task["status"] == "completed" and task["attempts"] == 2
    assert task["worktree"] is None
    files = git(repo.root, "log", "--format=", "--name-only", task["branch"]).split()
    assert "state.txt" in files and "verify-report.txt" not in files


def test_the_agent_s_untracked_work_stays_and_no_verification_s_output_does(
    repo: Repo,
) -> None:
    repo.shell_prompt("keep.md", "echo mine > agent.txt", front="retries: 0")
    repo.shell_prompt(
        "red.md", "echo mine > agent.txt", front="retries: 0\nverify: touch seen; exit 1"
    )
    (repo.root / "gadugi.toml").write_text('autocommit = false\nverify_command = "touch seen"\n')
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "keep", "red"], repo.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tasks = {t["task_id"]: t for t in json.loads(proc.stdout)["tasks"]}
    kept, red = Path(tasks["keep"]["worktree"]), Path(tasks["red"]["worktree"])
    assert tasks["keep"]["status"] == "completed"
    assert "worktree kept: it has uncommitted changes" in tasks["keep"]["error_message"]
    assert (kept / "agent.txt").read_text() == "mine\n" and not (kept / "seen").exists()
    assert tasks["red"]["status"] == "failed"
    assert (red / "agent.txt").read_text() == "mine\n" and not (red / "seen").exists()


FAKE_CLAUDE = """#!/bin/bash
# Claude Code as far as gadugi reads it: its prompt is the last argument.
printf '%s\\n@@ end of call @@\\n' "${@: -1}" >> "$CALLS"
date +%N > work.txt
echo '{"type":"system","subtype":"init","session_id":"s1","model":"m"}'
echo '{"type":"result","subtype":"success","is_error":false,"result":"ok","session_id":"s1",\
"num_turns":1,"structured_output":{"outcome":"done","summary":"did it"}}'
"""


def test_a_red_verification_printing_nul_bytes_is_followed_up_not_a_crash(
    repo: Repo, tmp_path: Path
) -> None:
    # Its output's tail goes into the follow-up, which Claude Code takes as an argument:
    # a NUL byte there cannot reach a child, and stopped the orchestrator with a traceback.
    fake, calls, runs = tmp_path / "claude", tmp_path / "calls", tmp_path / "runs"
    fake.write_text(FAKE_CLAUDE)
    fake.chmod(0o755)
    verify = f"echo x >> {runs}; [ $(wc -l < {runs}) -ge 2 ] || {{ printf 'E\\0F\\n'; exit 1; }}"
    (repo.root / "gadugi.toml").write_text(
        f"claude_executable = {json.dumps(str(fake))}\nverify_command = {json.dumps(verify)}\n"
    )
    repo.prompt("t.md", "# Do it\n", front="retries: 1")
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "claude", "--json", "t"], repo.root, env={"CALLS": str(calls)}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    task = _task(proc)
    assert (task["status"], task["attempts"]) == ("completed", 2)
    follow_up = calls.read_text().split("\n@@ end of call @@\n")[1]
    assert "E\N{REPLACEMENT CHARACTER}F" in follow_up and "\0" not in follow_up


def test_a_command_that_starts_with_a_dash_runs_as_a_command_not_as_bash_options(
    repo: Repo,
) -> None:
    # `bash -c --version` would print bash's version and pass the verification.
    repo.shell_prompt("v.md", "echo x > x.txt", front="retries: 0\nverify: --version")
    repo.shell_prompt("s.md", "echo x > x.txt", front="retries: 0\nsetup: --version")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "v", "s"], repo.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    tasks = {t["task_id"]: t for t in json.loads(proc.stdout)["tasks"]}
    assert tasks["v"]["status"] == "failed" and tasks["v"]["verification"]["passed"] is False
    assert "--version: command not found" in tasks["v"]["error_message"]
    assert tasks["s"]["status"] == "failed"
    assert tasks["s"]["error_message"].startswith("setup failed: `--version` exited with code 127")


def test_a_command_of_several_lines_is_not_taken_for_its_own_output(repo: Repo) -> None:
    repo.shell_prompt("t.md", "echo x > x.txt", front="retries: 0\nverify: |\n  true\n  exit 3")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "t"], repo.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    error = _task(proc)["error_message"]
    assert error == "verification failed: `true\nexit 3` exited with code 3 (no output)"


def test_an_agent_that_removes_its_worktree_fails_its_verification_saying_so(repo: Repo) -> None:
    repo.shell_prompt("t.md", 'rm -rf "$GADUGI_WORKTREE"', front="retries: 0\nverify: 'true'")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "t"], repo.root)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    task = _task(proc)
    assert task["status"] == "failed"
    assert task["error_message"] == (
        f"cannot start the verification `true`: the worktree {task['worktree']} is gone"
    )

"""End-to-end runs through the CLI: real git worktrees, real agent processes."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import Repo, git, run_cli, start_cli


def _times(task: dict[str, Any]) -> tuple[float, float]:
    return (
        datetime.fromisoformat(task["started_at"]).timestamp(),
        datetime.fromisoformat(task["completed_at"]).timestamp(),
    )


def _by_id(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["task_id"]: t for t in result["tasks"]}


def _gone(pid: int) -> bool:
    """Dead, or a zombie waiting for an init that may never reap it."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


@pytest.mark.slow
def test_four_sleeping_tasks_overlap_at_max_parallel_four(repo: Repo) -> None:
    for n in range(4):
        repo.shell_prompt(
            f"t{n}.md",
            f"sleep 2\necho done {n} > out{n}.txt\ngit add out{n}.txt\ngit commit -qm 'task {n}'",
        )
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "shell", "--max-parallel", "4", "--json", "t0", "t1", "t2", "t3"],
        repo.root,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["total_tasks"] == 4 and result["successful_tasks"] == 4
    spans = [_times(t) for t in result["tasks"]]
    # All four were running at one instant: the latest start precedes the earliest end.
    assert max(s for s, _ in spans) < min(e for _, e in spans)
    for task in result["tasks"]:
        assert task["commits"] == 1
        assert task["worktree"] is None  # all work committed, so the worktree is gone
        assert task["branch"] in repo.branches()
        assert git(repo.root, "show", f"{task['branch']}:out{task['task_id'][1]}.txt").strip()
    assert repo.worktrees() == [str(repo.root)]


@pytest.mark.slow
def test_max_parallel_one_runs_tasks_one_after_another(repo: Repo) -> None:
    for n in range(3):
        repo.shell_prompt(f"s{n}.md", "sleep 0.3")
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "shell", "--max-parallel", "1", "--json", "s0", "s1", "s2"], repo.root
    )
    assert proc.returncode == 0, proc.stderr
    spans = sorted(_times(t) for t in json.loads(proc.stdout)["tasks"])
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end


@pytest.mark.slow
def test_hanging_task_is_stopped_at_its_timeout_with_its_children(
    repo: Repo, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    repo.shell_prompt(
        "hang.md",
        f"sleep 300 &\necho $! >> {pids}\n"
        f"setsid sleep 301 &\necho $! >> {pids}\necho $$ >> {pids}\nwait",
        front="timeout_minutes: 0.05",
    )
    repo.shell_prompt("quick.md", "echo fine")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "hang", "quick"], repo.root)
    assert proc.returncode == 1
    tasks = _by_id(json.loads(proc.stdout))
    assert tasks["hang"]["status"] == "timeout"
    assert "timed out" in tasks["hang"]["error_message"]
    assert tasks["quick"]["status"] == "completed"
    recorded = [int(p) for p in pids.read_text().split()]
    assert len(recorded) == 3
    assert all(_gone(pid) for pid in recorded)
    # A timed-out task's worktree is kept: nothing an agent wrote is deleted.
    assert Path(tasks["hang"]["worktree"]).is_dir()


@pytest.mark.slow
def test_cancel_from_another_process_ends_the_task_group(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    child_pid = tmp_path / "child"
    repo.shell_prompt("long.md", f"sleep 200 &\necho $! > {child_pid}\ntouch {marker}\nwait")
    repo.shell_prompt("other.md", "sleep 1")
    repo.commit()
    run = start_cli(["run", "--agent", "shell", "--json", "long", "other"], repo.root)
    try:
        _wait_for(marker.exists)
        cancel = run_cli(["cancel", "long"], repo.root)
        assert cancel.returncode == 0, cancel.stderr
        assert "cancelled" in cancel.stdout
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 1, err
    tasks = _by_id(json.loads(out))
    assert tasks["long"]["status"] == "cancelled"
    assert "gadugi cancel" in tasks["long"]["error_message"]
    assert tasks["other"]["status"] == "completed"
    assert _gone(int(child_pid.read_text()))


@pytest.mark.slow
def test_ctrl_c_cancels_running_tasks_and_exits_130(repo: Repo, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    repo.shell_prompt("a.md", f"touch {marker}\nsleep 200")
    repo.shell_prompt("b.md", "sleep 200")
    repo.shell_prompt("c.md", "sleep 200")
    repo.commit()
    run = start_cli(
        ["run", "--agent", "shell", "--max-parallel", "2", "--json", "a", "b", "c"], repo.root
    )
    try:
        _wait_for(marker.exists)
        pids = [p.pid for p in psutil.Process(run.pid).children(recursive=True)]
        run.send_signal(signal.SIGINT)
        out, err = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    statuses = {t["task_id"]: t["status"] for t in json.loads(out)["tasks"]}
    assert statuses == {"a": "cancelled", "b": "cancelled", "c": "cancelled"}
    assert pids and not [
        p
        for p in pids
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    status = run_cli(["status", "--json"], repo.root)
    assert json.loads(status.stdout)["state"] == "interrupted"


def test_uncommitted_work_is_committed_as_the_user_and_failed_tasks_keep_their_worktrees(
    repo: Repo,
) -> None:
    repo.shell_prompt("dirty.md", "echo draft > notes.txt")
    repo.shell_prompt("broken.md", "echo partial > half.txt\nexit 3")
    repo.shell_prompt("clean.md", "echo ok")
    repo.commit()
    # The user's identity as git resolves it: here from the environment.
    env = {
        f"GIT_{r}_{k}": v
        for r in ("AUTHOR", "COMMITTER")
        for k, v in (("NAME", "Ada Lovelace"), ("EMAIL", "ada@example.invalid"))
    }
    proc = run_cli(
        ["run", "--agent", "shell", "--json", "dirty", "broken", "clean"], repo.root, env=env
    )
    assert proc.returncode == 1
    tasks = _by_id(json.loads(proc.stdout))
    dirty = tasks["dirty"]
    assert dirty["status"] == "completed" and dirty["error_message"] is None
    assert dirty["worktree"] is None and dirty["commits"] == 1
    assert git(repo.root, "show", f"{dirty['branch']}:notes.txt") == "draft\n"
    log = git(repo.root, "log", "-1", "--format=%an <%ae>|%cn <%ce>|%s", dirty["branch"])
    orch = json.loads(proc.stdout)["orchestration_id"]
    assert log.strip() == (
        "Ada Lovelace <ada@example.invalid>|Ada Lovelace <ada@example.invalid>|"
        f"gadugi: work left uncommitted by task dirty ({orch})"
    )
    assert (dirty["changed_files"], dirty["insertions"], dirty["deletions"]) == (1, 1, 0)
    assert tasks["broken"]["status"] == "failed" and tasks["broken"]["exit_code"] == 3
    assert "exited with code 3" in tasks["broken"]["error_message"]
    assert (Path(tasks["broken"]["worktree"]) / "half.txt").exists()
    assert tasks["clean"]["worktree"] is None
    assert (tasks["clean"]["commits"], tasks["clean"]["changed_files"]) == (0, 0)
    assert "broken" in proc.stdout


def test_with_autocommit_off_uncommitted_work_keeps_its_worktree(repo: Repo) -> None:
    repo.shell_prompt("dirty.md", "echo draft > notes.txt")
    (repo.root / "gadugi.toml").write_text("autocommit = false\n")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "dirty"], repo.root)
    assert proc.returncode == 0, proc.stderr
    dirty = _by_id(json.loads(proc.stdout))["dirty"]
    assert dirty["status"] == "completed" and dirty["commits"] == 0
    assert (Path(dirty["worktree"]) / "notes.txt").read_text() == "draft\n"
    assert "uncommitted" in dirty["error_message"]


def test_a_worktree_that_cannot_be_created_fails_only_its_task(repo: Repo) -> None:
    hook = repo.root / ".git/hooks/post-checkout"
    hook.write_text(
        '#!/bin/sh\ncase "$PWD" in *doomed*) echo "hook refuses $PWD" >&2; exit 1;; esac\n'
    )
    hook.chmod(0o755)
    repo.shell_prompt("doomed.md", "echo never")
    repo.shell_prompt("fine.md", "echo fine")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "doomed", "fine"], repo.root)
    assert proc.returncode == 1
    tasks = _by_id(json.loads(proc.stdout))
    assert tasks["doomed"]["status"] == "failed"
    assert "worktree add failed" in tasks["doomed"]["error_message"]
    assert "hook refuses" in tasks["doomed"]["error_message"]
    assert tasks["fine"]["status"] == "completed"


def test_command_agent_gets_placeholders_as_single_arguments_and_the_environment(
    repo: Repo, tmp_path: Path
) -> None:
    out = tmp_path / "seen.json"
    script = tmp_path / "agent.py"
    script.write_text(
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'cwd': os.getcwd(), 'env': {{k: v for k, v in "
        f"os.environ.items() if k.startswith('GADUGI_')}}}}, open({str(out)!r}, 'w'))\n"
    )
    repo.prompt("odd name; $(x).md", "# Odd\n\nDo something.\n")
    repo.commit()
    template = f"python3 {script} {{task_id}} --prompt={{prompt_file}} {{source_prompt}} {{branch}}"
    proc = run_cli(["run", "--agent-cmd", template, "--json", "--", "odd name; $(x).md"], repo.root)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(out.read_text())
    task = json.loads(proc.stdout)["tasks"][0]
    assert seen["argv"][0] == task["task_id"] == "odd-name-x"
    assert seen["argv"][1].startswith("--prompt=") and "/.gadugi/" in seen["argv"][1]
    assert seen["argv"][2] == str(repo.root / "prompts" / "odd name; $(x).md")
    assert seen["argv"][3] == task["branch"] and task["branch"].startswith("gadugi/")
    env = seen["env"]
    inherited = {k for k in os.environ if k.startswith("GADUGI_")}  # the caller's own
    assert set(env) - inherited == {
        "GADUGI_ORCHESTRATION_ID",
        "GADUGI_TASK_ID",
        "GADUGI_WORKTREE",
        "GADUGI_BRANCH",
        "GADUGI_PROMPT_FILE",
        "GADUGI_SOURCE_PROMPT",
        "GADUGI_PROJECT_ROOT",
        "GADUGI_ATTEMPT",  # a first attempt: no GADUGI_FOLLOW_UP
    }
    assert env["GADUGI_ATTEMPT"] == "1"
    assert env["GADUGI_WORKTREE"] == seen["cwd"]
    assert env["GADUGI_PROJECT_ROOT"] == str(repo.root)
    generated = Path(env["GADUGI_PROMPT_FILE"])
    assert generated.is_relative_to(repo.root / ".gadugi")
    assert "Do something." in generated.read_text()


def test_exit_75_is_retried_within_the_budget(repo: Repo, tmp_path: Path) -> None:
    counter = tmp_path / "count"
    repo.shell_prompt("flaky.md", f"echo x >> {counter}\n[ $(wc -l < {counter}) -ge 2 ] || exit 75")
    repo.shell_prompt("hopeless.md", "exit 75")
    repo.commit()
    (repo.root / "gadugi.toml").write_text("retry_base_delay_seconds = 0.01\n")
    proc = run_cli(
        ["run", "--agent", "shell", "--retries", "1", "--json", "flaky", "hopeless"], repo.root
    )
    tasks = _by_id(json.loads(proc.stdout))
    assert tasks["flaky"]["status"] == "completed" and tasks["flaky"]["attempts"] == 2
    assert tasks["hopeless"]["status"] == "failed" and tasks["hopeless"]["attempts"] == 2
    assert "exit 75" in tasks["hopeless"]["error_message"]


def test_status_export_and_monitoring_files_describe_the_run(repo: Repo, tmp_path: Path) -> None:
    repo.shell_prompt("one.md", "echo first line\necho last line")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "one"], repo.root)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert set(result) == {
        "orchestration_id",
        "started_at",
        "finished_at",
        "total_tasks",
        "successful_tasks",
        "failed_tasks",
        "execution_time_seconds",
        "parallel_speedup",
        "fallback_used",
        "error_summary",
        "tasks",
        "agent_totals",
        "landing",
        "plan_accuracy",
        "waited_seconds",
        "budget_usd",
        "spent_usd",
        "segments",
    }
    assert set(result["tasks"][0]) == {
        "task_id",
        "task_name",
        "prompt_file",
        "status",
        "exit_code",
        "attempts",
        "started_at",
        "completed_at",
        "duration_seconds",
        "branch",
        "worktree",
        "log_file",
        "commits",
        "error_message",
        "agent",
        "verdict",
        "summary",
        "verification",
        "changed_files",
        "insertions",
        "deletions",
        "commits_after_cancel",
        "landing",
    }
    assert datetime.fromisoformat(result["started_at"]).utcoffset() is not None
    log = Path(result["tasks"][0]["log_file"])
    assert log.read_text() == "first line\nlast line\n"
    assert repo.final() == result
    monitoring = repo.root / ".gadugi/monitoring"
    registry = json.loads((monitoring / "process_registry.json").read_text())
    assert isinstance(registry["processes"], list)
    assert registry["processes"][0]["status"] == "completed"
    stats = json.loads((monitoring / "registry_stats.json").read_text())
    assert stats["completed_count"] == 1 and stats["total_processes"] == 1
    status_file = json.loads((monitoring / f"{result['orchestration_id']}_status.json").read_text())
    assert status_file["state"] == "finished" and status_file["status_breakdown"] == {
        "completed": 1
    }
    status = run_cli(["status", "--json"], repo.root)
    assert json.loads(status.stdout)["tasks"][0]["last_line"] == "last line"
    assert "one" in run_cli(["status"], repo.root).stdout
    export = tmp_path / "export.json"
    assert run_cli(["export", "--output", str(export)], repo.root).returncode == 0
    exported = json.loads(export.read_text())
    assert exported["orchestrations"][0]["tasks"][0]["task_id"] == "one"
    exclude = (repo.root / ".git/info/exclude").read_text()
    assert "/.worktrees/" in exclude and "/.gadugi/" in exclude
    assert git(repo.root, "status", "--porcelain") == ""


@pytest.mark.slow
def test_monitoring_files_are_never_read_half_written(repo: Repo) -> None:
    for n in range(24):
        repo.shell_prompt(f"q{n}.md", f"echo {n}")
    repo.commit()
    run = start_cli(
        ["run", "--agent", "shell", "--max-parallel", "8", "--quiet"]
        + [f"q{n}" for n in range(24)],
        repo.root,
    )
    monitoring = repo.root / ".gadugi/monitoring"
    reads = 0
    try:
        while run.poll() is None:
            for path in monitoring.glob("*.json") if monitoring.exists() else []:
                try:
                    text = path.read_text()
                except FileNotFoundError:
                    continue
                json.loads(text)  # raises on a partial file
                reads += 1
    finally:
        run.wait(timeout=60)
    assert run.returncode == 0
    assert reads > 10


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["missing"], "not found"),
        (["notes.txt"], "not a Markdown"),
        (["../outside.md"], "outside the project"),
        (["prompts/../../outside.md"], "outside the project"),
        ([], "no prompts named"),
    ],
)
def test_bad_requests_exit_2_and_change_nothing(repo: Repo, args: list[str], expect: str) -> None:
    (repo.root / "prompts/notes.txt").write_text("not markdown")
    (repo.root.parent / "outside.md").write_text("# outside\n```sh\necho hi\n```\n")
    repo.commit()
    before = repo.snapshot()
    proc = run_cli(["run", "--agent", "shell", *args], repo.root)
    assert proc.returncode == 2
    assert expect in proc.stderr
    assert repo.snapshot() == before


def test_empty_stdin_request_exits_2(repo: Repo) -> None:
    before = repo.snapshot()
    proc = run_cli(["run", "--agent", "shell", "--stdin"], repo.root, input="Execute these:\n")
    assert proc.returncode == 2 and "no prompts named" in proc.stderr
    assert repo.snapshot() == before


def test_invalid_front_matter_exits_2_naming_file_and_key(repo: Repo) -> None:
    repo.shell_prompt("bad.md", "echo", front="priority: high")
    repo.commit()
    before = repo.snapshot()
    proc = run_cli(["run", "--agent", "shell", "bad"], repo.root)
    assert proc.returncode == 2
    assert "prompts/bad.md" in proc.stderr and "priority" in proc.stderr
    assert repo.snapshot() == before


def test_skipped_names_are_reported_and_the_rest_run(repo: Repo) -> None:
    repo.shell_prompt("real.md", "echo ran")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "real", "ghost"], repo.root)
    assert proc.returncode == 0
    assert "ghost" in proc.stderr and "not found" in proc.stderr
    assert [t["task_id"] for t in json.loads(proc.stdout)["tasks"]] == ["real"]


@pytest.mark.parametrize(
    "request_text",
    [
        "Execute these specific prompts in parallel:\n- alpha.md\n- beta.md\n",
        "Execute these prompt files:\n1. alpha.md\n2. beta.md\n",
        "Execute these prompts: alpha.md, beta.md\n",
        "* `alpha`\n+ prompts/beta.md\n",
    ],
)
def test_stdin_requests_in_every_format(repo: Repo, request_text: str) -> None:
    repo.shell_prompt("alpha.md", "echo a")
    repo.shell_prompt("beta.md", "echo b")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--stdin", "--json"], repo.root, input=request_text)
    assert proc.returncode == 0, proc.stderr
    assert [t["task_id"] for t in json.loads(proc.stdout)["tasks"]] == ["alpha", "beta"]


def test_interactive_reads_names_until_a_blank_line(repo: Repo) -> None:
    repo.shell_prompt("alpha.md", "echo a")
    repo.commit()
    proc = run_cli(
        ["run", "--agent", "shell", "--interactive", "--json"],
        repo.root,
        input="alpha\n\nignored.md\n",
    )
    assert proc.returncode == 0, proc.stderr
    assert [t["task_id"] for t in json.loads(proc.stdout)["tasks"]] == ["alpha"]


def test_shell_agent_without_a_script_fails_its_task(repo: Repo) -> None:
    repo.prompt("prose.md", "# Just words\n\n```python\nprint('not shell')\n```\n")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "prose"], repo.root)
    assert proc.returncode == 1
    task = json.loads(proc.stdout)["tasks"][0]
    assert task["status"] == "failed" and "no ```sh" in task["error_message"]


def test_base_ref_and_unknown_base(repo: Repo) -> None:
    git(repo.root, "checkout", "-q", "-b", "feature")
    (repo.root / "feature.txt").write_text("feature\n")
    repo.shell_prompt("look.md", "test -f feature.txt")
    repo.commit("feature work")
    git(repo.root, "checkout", "-q", "main")
    (repo.root / "prompts").mkdir(exist_ok=True)
    repo.shell_prompt("look.md", "test -f feature.txt")
    proc = run_cli(["run", "--agent", "shell", "--base", "feature", "--json", "look"], repo.root)
    assert proc.returncode == 0, proc.stderr
    bad = run_cli(["run", "--agent", "shell", "--base", "no-such-ref", "look"], repo.root)
    assert bad.returncode == 2 and "no-such-ref" in bad.stderr


def test_not_a_repository_and_no_commits_exit_2(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    (plain / "prompts").mkdir(parents=True)
    (plain / "prompts/a.md").write_text("# a\n")
    proc = run_cli(["run", "--agent", "shell", "a"], plain)
    assert proc.returncode == 2 and "not inside a git repository" in proc.stderr
    git(plain, "init", "-q")
    proc = run_cli(["run", "--agent", "shell", "a"], plain)
    assert proc.returncode == 2 and "no commits" in proc.stderr
    assert not (plain / ".gadugi").exists()


def test_invalid_configuration_exits_2_naming_the_key(repo: Repo) -> None:
    repo.shell_prompt("a.md", "echo")
    (repo.root / "gadugi.toml").write_text("max_parallel_tasks = 0\n")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "a"], repo.root)
    assert proc.returncode == 2
    assert "gadugi.toml" in proc.stderr and "max_parallel_tasks" in proc.stderr
    proc = run_cli(["run", "--agent", "shell", "a"], repo.root, env={"GADUGI_MAX_PARALLEL": "two"})
    assert proc.returncode == 2 and "GADUGI_MAX_PARALLEL" in proc.stderr


def test_plain_progress_lines_when_stdout_is_not_a_terminal(repo: Repo) -> None:
    repo.shell_prompt("a.md", "echo hello")
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "a"], repo.root)
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert any(
        line.endswith("a running (attempt 1, branch " + line.split("branch ")[-1])
        for line in lines
        if " running " in line
    )
    assert any(line.split()[1:3] == ["a", "completed"] for line in lines if line.strip())
    assert "1/1 completed" in proc.stdout
    quiet = run_cli(["run", "--agent", "shell", "--quiet", "a"], repo.root)
    assert quiet.returncode == 0 and quiet.stdout == ""


def test_run_orchestrator_script_runs_gadugi(repo: Repo) -> None:
    script = Path(__file__).resolve().parents[1] / "run_orchestrator.sh"
    repo.shell_prompt("a.md", "echo via script")
    repo.commit()
    env = {**os.environ}
    proc = subprocess.run(
        [str(script), "--agent", "shell", "--json", "a"],
        cwd=repo.root,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["successful_tasks"] == 1


def test_a_daemon_an_agent_leaves_behind_does_not_outlive_the_run(
    repo: Repo, tmp_path: Path
) -> None:
    pid_file = tmp_path / "daemon"
    repo.shell_prompt(
        "leaky.md", f"setsid sleep 300 > /dev/null 2>&1 < /dev/null &\necho $! > {pid_file}"
    )
    repo.commit()
    proc = run_cli(["run", "--agent", "shell", "--json", "leaky"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert _gone(int(pid_file.read_text()))
    assert "left behind by task leaky" in proc.stderr


def test_transient_failures_are_retried_by_default_and_retries_0_turns_it_off(
    repo: Repo, tmp_path: Path
) -> None:
    """The seed's promise of automatic recovery from transient failures, by default."""
    marker = tmp_path / "once"
    repo.shell_prompt("flaky.md", f"if [ ! -e {marker} ]; then touch {marker}; exit 75; fi")
    repo.commit()
    (repo.root / "gadugi.toml").write_text("retry_base_delay_seconds = 0.05\n")
    done = run_cli(["run", "--agent", "shell", "--json", "flaky"], repo.root)
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)["tasks"][0]
    assert (task["status"], task["attempts"]) == ("completed", 2)
    marker.unlink()
    off = run_cli(["run", "--agent", "shell", "--retries", "0", "--json", "flaky"], repo.root)
    assert off.returncode == 1
    task = json.loads(off.stdout)["tasks"][0]
    assert (task["status"], task["attempts"]) == ("failed", 1)

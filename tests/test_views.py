"""The read-only views through the CLI: `logs`, `show` and `list` over real runs of the shell
agent (real git worktrees, real processes, the real registry), `run --all`, and what
`export` and the monitoring files look like on disk."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, git, run_cli

FLAKY = """
echo x >> {counter}
n=$(wc -l < {counter})
echo "output of try $n"
[ "$n" -ge 2 ] || exit 75
"""


def _flaky(repo: Repo, tmp_path: Path) -> None:
    repo.shell_prompt("flaky.md", FLAKY.format(counter=tmp_path / "count"))
    repo.commit()
    (repo.root / "gadugi.toml").write_text("retry_base_delay_seconds = 0.01\n")
    done = run_cli(["run", "--agent", "shell", "--retries", "1", "--quiet", "flaky"], repo.root)
    assert done.returncode == 0, done.stderr


def _sections(text: str) -> list[list[str]]:
    """The transcript's attempts: each from its `=== attempt N,` header to its footer."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        if line.startswith("=== attempt ") and ", started " in line:
            sections.append([])
        assert sections, f"text before the first attempt header: {line!r}"
        sections[-1].append(line)
    return sections


def test_logs_shows_each_attempt_of_a_shell_task(repo: Repo, tmp_path: Path) -> None:
    _flaky(repo, tmp_path)

    done = run_cli(["logs", "flaky"], repo.root)

    assert done.returncode == 0, done.stderr
    first, second = _sections(done.stdout)
    assert first[0].startswith("=== attempt 1, started ")
    assert datetime.fromisoformat(first[0].split("started ")[1]).utcoffset() is not None
    assert first[1:-1] == ["output of try 1"]
    assert first[-1].startswith("=== attempt 1 retrying (exit 75,")
    assert second[0].startswith("=== attempt 2, started ")
    assert second[1:-1] == ["output of try 2"]
    assert second[-1].startswith("=== attempt 2 completed (exit 0,")

    only = run_cli(["logs", "flaky", "--attempt", "2"], repo.root)
    assert only.returncode == 0 and _sections(only.stdout) == [second]
    raw = run_cli(["logs", "flaky", "--raw"], repo.root)
    log = json.loads(run_cli(["show", "flaky", "--json"], repo.root).stdout)["log_file"]
    assert raw.stdout == Path(log).read_text()
    raw_second = run_cli(["logs", "flaky", "--raw", "--attempt", "2"], repo.root)
    assert raw_second.stdout == "output of try 2\n"


@pytest.mark.parametrize(
    ("args", "expect"),
    [
        (["logs", "flaky", "--attempt", "3"], "flaky has 2 attempts"),
        (["logs", "ghost"], "no task 'ghost'"),
        (["logs", "flaky", "--orchestration", "orch-nope"], "no task 'flaky' in orchestration"),
        (["show", "ghost"], "no task 'ghost'"),
    ],
)
def test_views_of_what_does_not_exist_exit_2(
    repo: Repo, tmp_path: Path, args: list[str], expect: str
) -> None:
    _flaky(repo, tmp_path)
    done = run_cli(args, repo.root)
    assert done.returncode == 2 and expect in done.stderr, done.stderr


def test_views_before_any_run_say_so(repo: Repo) -> None:
    for args in (["logs", "a"], ["show", "a"], ["list"]):
        done = run_cli(args, repo.root)
        assert done.returncode == 2 and "no orchestrations yet" in done.stderr
    assert not (repo.root / ".gadugi").exists()


def test_the_summary_points_at_gadugi_logs(repo: Repo) -> None:
    repo.shell_prompt("bad.md", "echo about to fail\nexit 3")
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "bad"], repo.root)
    assert done.returncode == 1
    assert any(
        line.split() == ["log:", "gadugi", "logs", "bad"] for line in done.stdout.splitlines()
    )
    shown = run_cli(["logs", "bad"], repo.root).stdout
    assert "about to fail" in shown and "=== attempt 1 failed (exit 3," in shown


CHANGES = """
printf 'one\\ntwo\\nthree\\n' > a.txt
echo b > b.txt
echo '# renamed project' > README.md
git add -A && git commit -qm 'three files'
"""


def test_show_gives_status_attempts_diffstat_and_how_to_review(repo: Repo) -> None:
    repo.shell_prompt("change.md", CHANGES)
    repo.shell_prompt("broken.md", "echo nope >&2\nexit 4")
    repo.commit()
    base = git(repo.root, "rev-parse", "HEAD").strip()
    assert run_cli(["run", "--agent", "shell", "--quiet", "change", "broken"], repo.root).returncode

    done = run_cli(["show", "change", "--json"], repo.root)

    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["task_id"] == "change" and task["status"] == "completed"
    assert task["base_commit"] == base and task["branch"].startswith("gadugi/change-")
    assert (task["commits"], task["changed_files"], task["insertions"], task["deletions"]) == (
        1,
        3,
        5,
        1,
    )
    assert {f["path"]: (f["insertions"], f["deletions"]) for f in task["files"]} == {
        "README.md": (1, 1),
        "a.txt": (3, 0),
        "b.txt": (1, 0),
    }
    [attempt] = task["attempts"]
    assert attempt["number"] == 1 and attempt["status"] == "completed"
    assert attempt["exit_code"] == 0 and attempt["duration_seconds"] >= 0
    assert datetime.fromisoformat(attempt["started_at"]) <= datetime.fromisoformat(
        attempt["ended_at"]
    )
    assert f"git diff {base}...{task['branch']}" in task["review"]
    assert task["logs"] == f"gadugi logs change --orchestration {task['orchestration_id']}"
    assert Path(task["log_file"]).is_file()
    # What this version does not record yet is null, never made up.
    assert all(task[k] is None for k in ("verdict", "summary", "verification", "landing"))

    text = run_cli(["show", "change"], repo.root).stdout
    assert "completed" in text and "3 files changed, 5 insertions(+), 1 deletion(-)" in text
    assert f"git diff {base}...{task['branch']}" in text

    broken = json.loads(run_cli(["show", "broken", "--json"], repo.root).stdout)
    assert broken["status"] == "failed" and "4" in broken["why"]
    assert broken["attempts"][0]["exit_code"] == 4
    assert (broken["changed_files"], broken["insertions"], broken["deletions"]) == (0, 0, 0)
    assert "why" in run_cli(["show", "broken"], repo.root).stdout


def test_list_shows_past_orchestrations_newest_first(repo: Repo) -> None:
    repo.shell_prompt("ok.md", "echo fine")
    repo.shell_prompt("bad.md", "exit 1")
    repo.commit()
    ids = []
    for names in (["ok"], ["ok", "bad"], ["bad"]):
        done = run_cli(["run", "--agent", "shell", "--json", *names], repo.root)
        ids.append(json.loads(done.stdout)["orchestration_id"])

    listed = json.loads(run_cli(["list", "--json"], repo.root).stdout)

    assert [o["orchestration_id"] for o in listed["orchestrations"]] == ids[::-1]
    assert listed["total"] == 3
    newest, middle, oldest = listed["orchestrations"]
    assert newest["tasks_by_status"] == {"failed": 1}
    assert middle["tasks_by_status"] == {"completed": 1, "failed": 1}
    assert oldest["tasks_by_status"] == {"completed": 1} and oldest["total_tasks"] == 1
    for orch in listed["orchestrations"]:
        assert orch["state"] == "finished" and orch["cost_usd"] is None
        assert datetime.fromisoformat(orch["started_at"]).utcoffset() is not None
        assert orch["duration_seconds"] >= 0
    two = json.loads(run_cli(["list", "--json", "--limit", "2"], repo.root).stdout)
    assert [o["orchestration_id"] for o in two["orchestrations"]] == ids[:0:-1]
    text = run_cli(["list", "--limit", "2"], repo.root).stdout
    assert text.index(ids[2]) < text.index(ids[1]) and ids[0] not in text
    assert "1 completed, 1 failed" in text and "1 more" in text


def _registry_bytes(repo: Repo) -> dict[str, str]:
    """The registry's data: the database and its write-ahead log. A reader may leave an
    empty log and SQLite's shared-memory index behind; neither holds data."""
    state = repo.root / ".gadugi"
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(state.glob("state.db*"))
        if not p.name.endswith("-shm") and p.stat().st_size
    }


def test_the_views_never_change_the_registry(repo: Repo, tmp_path: Path) -> None:
    _flaky(repo, tmp_path)
    before = _registry_bytes(repo)
    for args in (
        ["logs", "flaky"],
        ["logs", "flaky", "-f"],  # a finished task: prints it all and ends
        ["logs", "flaky", "--raw"],
        ["show", "flaky"],
        ["show", "flaky", "--json"],
        ["list"],
        ["list", "--json"],
    ):
        done = run_cli(args, repo.root, timeout=60)
        assert done.returncode == 0, (args, done.stderr)
    assert _registry_bytes(repo) == before


def test_run_and_plan_all_select_every_prompt(repo: Repo) -> None:
    repo.shell_prompt("beta.md", "echo b")
    repo.shell_prompt("alpha.md", "echo a")
    (repo.root / "prompts" / "notes.txt").write_text("not a prompt")
    repo.commit()

    planned = run_cli(["plan", "--all", "--json"], repo.root)
    assert planned.returncode == 0, planned.stderr
    assert [t["task_id"] for t in json.loads(planned.stdout)["tasks"]] == ["alpha", "beta"]
    ran = run_cli(["run", "--all", "--agent", "shell", "--json"], repo.root)
    assert ran.returncode == 0, ran.stderr
    assert [t["task_id"] for t in json.loads(ran.stdout)["tasks"]] == ["alpha", "beta"]

    both = run_cli(["run", "--all", "--agent", "shell", "alpha"], repo.root)
    assert both.returncode == 2 and "--all" in both.stderr


def test_all_with_no_prompts_exits_2_and_creates_nothing(repo: Repo) -> None:
    before = repo.snapshot()
    done = run_cli(["run", "--all", "--agent", "shell"], repo.root)
    assert done.returncode == 2 and "no prompts in" in done.stderr
    assert repo.snapshot() == before


def test_export_writes_times_as_iso_8601(repo: Repo, tmp_path: Path) -> None:
    _flaky(repo, tmp_path)
    out = tmp_path / "export.json"
    assert run_cli(["export", "--output", str(out)], repo.root).returncode == 0
    [orch] = json.loads(out.read_text())["orchestrations"]
    stamps = [orch["started_at"], orch["finished_at"]]
    for task in orch["tasks"]:
        stamps += [task["created_at"], task["started_at"], task["completed_at"]]
    for attempt in orch["attempts"]:
        stamps += [attempt["started_at"], attempt["ended_at"]]
    assert len(stamps) == 2 + 3 + 4
    for stamp in stamps:
        assert isinstance(stamp, str) and datetime.fromisoformat(stamp).utcoffset() is not None


@pytest.fixture
def umask_027() -> Iterator[None]:
    old = os.umask(0o027)  # inherited by the gadugi the test starts
    try:
        yield
    finally:
        os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_exported_and_monitoring_files_follow_the_umask(
    repo: Repo, tmp_path: Path, umask_027: Any
) -> None:
    repo.shell_prompt("one.md", "echo one")
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "--quiet", "one"], repo.root).returncode == 0
    out = tmp_path / "export.json"
    assert run_cli(["export", "--output", str(out)], repo.root).returncode == 0

    monitoring = sorted((repo.root / ".gadugi" / "monitoring").glob("*.json"))
    assert len(monitoring) == 5
    assert {p.name: _mode(p) for p in [out, *monitoring]} == {
        p.name: 0o640 for p in [out, *monitoring]
    }

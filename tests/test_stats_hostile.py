"""`gadugi stats`, `show`, `list` and `report` over rows no sane run writes: costs of nan,
inf or below zero, attempts that end before they start (a clock stepped back), and
timestamps no calendar holds."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, run_cli

FAST = "max_load_per_cpu = 0\nmin_available_memory_mb = 0\n"


def _strict(text: str) -> Any:
    def refuse(name: str) -> None:
        raise AssertionError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def mangled(repo: Repo) -> Repo:
    (repo.root / "gadugi.toml").write_text(FAST)
    for name in ("a", "b", "c"):
        repo.shell_prompt(f"{name}.md", f"echo {name}")
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root).returncode == 0
    db = sqlite3.connect(repo.root / ".gadugi" / "state.db")
    with db:
        for task, cost in (("a", "NaN"), ("b", "-1e308"), ("c", "1e999")):
            db.execute(
                "UPDATE tasks SET agent = ? WHERE task_id = ?", (f'{{"cost_usd": {cost}}}', task)
            )
        # a's clock stepped back 100 s while it ran; c ended in no year a calendar holds.
        db.execute("UPDATE attempts SET ended_at = started_at - 100 WHERE task_id = 'a'")
        db.execute("UPDATE attempts SET ended_at = -1e12 WHERE task_id = 'c'")
    db.close()
    return repo


def test_stats_stay_json_and_never_negative(mangled: Repo) -> None:
    done = run_cli(["stats", "--json"], mangled.root)
    assert done.returncode == 0, done.stderr
    shell = _strict(done.stdout)["by_agent"]["shell"]
    assert shell["cost_usd"] == 0.0  # none of the three is an amount
    assert shell["median_duration_seconds"] >= 0 and shell["mean_duration_seconds"] >= 0
    text = run_cli(["stats"], mangled.root)
    assert text.returncode == 0 and "nan" not in text.stdout and "$0.0000" in text.stdout


def test_show_list_export_and_report_read_them_without_a_traceback(
    mangled: Repo, tmp_path: Path
) -> None:
    for args in (["show", "c", "--json"], ["show", "c"], ["show", "a"], ["list"]):
        done = run_cli(args, mangled.root)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    shown = _strict(run_cli(["show", "c", "--json"], mangled.root).stdout)
    assert shown["attempts"][0]["ended_at"] is None  # no date to give
    listed = run_cli(["list", "--json"], mangled.root)
    assert listed.returncode == 0 and "e+307" not in listed.stdout
    _strict(listed.stdout)
    export = run_cli(["export", "--output", "-"], mangled.root)
    assert export.returncode == 0, export.stderr
    _strict(export.stdout)
    report = run_cli(["report", "--output", str(tmp_path / "r.html")], mangled.root)
    assert report.returncode == 0, report.stderr
    assert "nan" not in (tmp_path / "r.html").read_text().lower().replace("nano", "")

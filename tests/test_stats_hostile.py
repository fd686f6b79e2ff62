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
from dashboard_fixtures import start_dashboard

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
        # a's clock stepped back 100 s while it ran; b and c ended in no year a calendar
        # holds (and their spans would overflow a sum).
        db.execute("UPDATE attempts SET ended_at = started_at - 100 WHERE task_id = 'a'")
        db.execute("UPDATE attempts SET ended_at = 1e308 WHERE task_id IN ('b', 'c')")
        db.execute("UPDATE orchestrations SET started_at = -1e300")  # and so did the run
    db.close()
    return repo


def test_stats_stay_json_and_never_negative(mangled: Repo) -> None:
    done = run_cli(["stats", "--json"], mangled.root)
    assert done.returncode == 0, done.stderr
    doc = _strict(done.stdout)
    assert list(doc["by_day"]) == ["unknown"]
    shell = doc["by_agent"]["shell"]
    assert shell["cost_usd"] == 0.0  # none of the three is an amount
    for key in ("median_duration_seconds", "mean_duration_seconds"):
        assert 0 <= shell[key] < 1e9, key
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


def test_the_dashboard_shows_them_without_an_error(mangled: Repo) -> None:
    board = start_dashboard(mangled)
    try:
        orch = _strict(run_cli(["list", "--json"], mangled.root).stdout)["orchestrations"][0]
        pages = ["/", "/stats", "/metrics", f"/orchestrations/{orch['orchestration_id']}"]
        pages += [f"/orchestrations/{orch['orchestration_id']}/tasks/{t}" for t in "abc"]
        for page in pages:
            code, body = board.get(f"{page}?token={board.token}&fragment=1")
            assert code == 200, (page, body[-300:])
        _, metrics = board.get(f"/metrics?token={board.token}")
        assert "gadugi_cost_usd_total 0.000000" in metrics
    finally:
        board.stop()
    assert "Traceback" not in board.stderr.read_text()

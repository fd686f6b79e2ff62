"""The dashboard and the report in a real headless Chromium (Debian's, through Playwright).

Skipped, with a message saying how to enable them, where there is no Chromium.
"""

from __future__ import annotations

import json
import signal
import time
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from conftest import Repo, run_cli, start_cli
from dashboard_fixtures import Dashboard, screenshot_dir, start_dashboard

pytestmark = pytest.mark.slow
FAST = "max_load_per_cpu = 0\nmin_available_memory_mb = 0\nretry_base_delay_seconds = 0.1\n"


def _prompts(repo: Repo, tmp: Path) -> Path:
    gate = tmp / "gate"
    (repo.root / "gadugi.toml").write_text(FAST)
    repo.shell_prompt("slow.md", f'while [ ! -f "{gate}" ]; do sleep 0.05; done\necho slow done')
    repo.shell_prompt("stuck.md", "sleep 600")
    repo.shell_prompt("broken.md", "echo 'no such module' >&2\nexit 3")
    mark = tmp / "flaky-once"
    repo.shell_prompt(
        "flaky.md",
        f'if [ ! -f "{mark}" ]; then touch "{mark}"; exit 75; fi\necho ok > flaky.txt\n'
        "git add flaky.txt && git commit -qm flaky",
        front="retries: 1",
    )
    repo.commit()
    return gate


def _hosts(urls: list[str]) -> set[str]:
    return {urlsplit(u).hostname or "" for u in urls if not u.startswith(("data:", "about:"))}


def _task(page: Any, task_id: str, status: str) -> None:
    page.wait_for_selector(f'tr.task[data-task="{task_id}"][data-status="{status}"]', timeout=60000)


def test_a_running_orchestration_shows_live_and_cancels_from_the_page(
    repo: Repo, dashboard: Dashboard, browser: Any, tmp_path: Path
) -> None:
    gate = _prompts(repo, tmp_path)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(dashboard.url)
    page.wait_for_selector("#live.on")
    assert page.locator("tr.orch").count() == 0

    run = start_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    try:
        # Started after the page loaded: it appears without a reload.
        page.wait_for_selector("tr.orch a", timeout=30000)
        page.click("tr.orch a")
        _task(page, "slow", "running")
        _task(page, "stuck", "running")
        _task(page, "flaky", "completed")
        shots = screenshot_dir()
        if shots:
            page.screenshot(path=str(shots / "dashboard-orchestration.png"))
        page.click('tr.task[data-task="stuck"] button[data-action="cancel"]')
        _task(page, "stuck", "cancelled")
        gate.write_text("go")
        _task(page, "slow", "completed")
        seen_at = time.time()
        assert run.wait(timeout=60) == 1, run.communicate()
    finally:
        if run.poll() is None:
            run.kill()

    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    by_id = {t["task_id"]: t for t in status["tasks"]}
    assert by_id["stuck"]["status"] == "cancelled"
    assert "gadugi cancel" in by_id["stuck"]["error_message"]
    # One bar per attempt: flaky ran twice (a transient failure, then its retry).
    page.reload()
    _task(page, "slow", "completed")
    attempts = {
        t: json.loads(run_cli(["show", t, "--json"], repo.root).stdout)["attempts"]
        for t in ("slow", "stuck", "flaky", "broken")
    }
    assert len(attempts["flaky"]) == 2
    ended = datetime.fromisoformat(attempts["slow"][-1]["ended_at"]).timestamp()
    print(f"the page showed slow's end {seen_at - ended:.2f}s after its agent exited")
    assert seen_at - ended < 30  # generous: the machine is shared; about 0.5 s when quiet
    for task_id, rows in attempts.items():
        bars = page.locator(f'svg.timeline rect.attempt[data-task="{task_id}"]')
        assert bars.count() == len(rows), task_id
    assert page.locator("svg.graph g.node").count() == 4
    page.click('tr.task[data-task="flaky"] a')
    page.wait_for_selector("pre.diff")
    assert "flaky.txt" in page.inner_text("pre.diff")
    assert "=== attempt 2" in page.inner_text("pre.transcript")
    if shots:
        page.screenshot(path=str(shots / "dashboard-task.png"))
        page.goto(dashboard.base + "/")
        page.wait_for_selector("#attention tr.k-failed")
        page.screenshot(path=str(shots / "dashboard-overview.png"))
    assert _hosts(requests) == {"127.0.0.1"}, requests


def test_shutdown_with_an_open_event_stream_ends(repo: Repo, browser: Any) -> None:
    board = start_dashboard(repo)
    try:
        page = browser.new_page()
        page.goto(board.url)
        page.wait_for_selector("#live.on")
        started = time.monotonic()
        board.proc.send_signal(signal.SIGINT)
        board.proc.wait(timeout=30)  # generous: the machine is shared
        took = time.monotonic() - started
        print(f"dashboard shutdown with an open event stream: {took:.2f}s")
        assert board.proc.returncode is not None
    finally:
        board.stop()


def test_the_report_opens_from_a_file_with_no_network(
    repo: Repo, browser: Any, tmp_path: Path
) -> None:
    (repo.root / "gadugi.toml").write_text(FAST)
    for name in ("one", "two", "three"):
        repo.shell_prompt(
            f"{name}.md", f"echo {name} > {name}.txt\ngit add -A\ngit commit -qm {name}"
        )
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root).returncode == 0
    out = tmp_path / "report.html"
    done = run_cli(["report", "--output", str(out)], repo.root)
    assert done.returncode == 0, done.stderr

    context = browser.new_context()
    asked: list[str] = []

    def only_the_file(route: Any) -> None:
        asked.append(route.request.url)
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    page.goto(out.as_uri())
    for name in ("one", "two", "three"):
        section = page.locator(f'section.task-detail[data-task="{name}"]')
        assert section.is_visible()
        assert f"{name}.txt" in section.inner_text()
    assert page.locator("svg.timeline rect.attempt").count() == 3
    assert all(url.startswith("file:") for url in asked), asked
    shots = screenshot_dir()
    if shots:
        page.screenshot(path=str(shots / "report.png"))
    context.close()

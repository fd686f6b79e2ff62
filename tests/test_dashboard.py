"""The dashboard server over plain HTTP, the report file, `gadugi stats`, and notifications."""

from __future__ import annotations

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import psutil

from conftest import Repo, git, run_cli, run_then_kill_9, wait_until
from dashboard_fixtures import Dashboard, request

FAST = "max_load_per_cpu = 0\nmin_available_memory_mb = 0\n"


def _two_tasks(repo: Repo, extra: str = "") -> None:
    (repo.root / "gadugi.toml").write_text(FAST + extra)
    repo.shell_prompt("good.md", "echo good > good.txt\ngit add -A\ngit commit -qm good")
    repo.shell_prompt("bad.md", "echo failing >&2\nexit 3")
    repo.commit()


def test_every_request_without_the_token_is_refused(repo: Repo, dashboard: Dashboard) -> None:
    token = dashboard.token
    for path in ("/", "/metrics", "/events", "/static/dashboard.js", "/stats"):
        assert dashboard.get(path)[0] == 403, path
        assert dashboard.get(f"{path}?token=wrong")[0] == 403, path
    code, body = dashboard.get(f"/?token={token}")
    assert code == 200 and "No orchestrations yet" in body
    # The cookie set from the token is enough for reading.
    assert dashboard.get("/metrics", {"Cookie": f"gadugi_token={token}"})[0] == 200
    # Another name for the server (DNS rebinding) is refused, token or not.
    assert dashboard.get(f"/?token={token}", {"Host": "evil.example:80"})[0] == 403


def test_actions_need_the_header_and_the_same_site(repo: Repo, dashboard: Dashboard) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    orch = json.loads(run_cli(["status", "--json"], repo.root).stdout)["orchestration_id"]
    url = f"{dashboard.base}/api/orchestrations/{orch}/tasks/bad/retry"
    token = dashboard.token
    cookie = {"Cookie": f"gadugi_token={token}"}
    assert request(url, "POST", cookie)[0] == 403  # a cross-site form carries only the cookie
    header = {"X-Gadugi-Token": token}
    assert request(url, "POST", header | {"Origin": "http://evil.example"})[0] == 403
    assert request(url, "POST", header | {"Sec-Fetch-Site": "cross-site"})[0] == 403
    missing = f"{dashboard.base}/api/orchestrations/{orch}/tasks/nope/cancel"
    assert request(missing, "POST", header)[0] == 404
    land = f"{dashboard.base}/api/orchestrations/{orch}/land"
    assert request(land, "POST", cookie)[0] == 403
    assert request(f"{dashboard.base}/api/orchestrations/nope/land", "POST", header)[0] == 400
    # Cancelling a finished task is what `gadugi cancel` says about it.
    done = f"{dashboard.base}/api/orchestrations/{orch}/tasks/good/cancel"
    code, body = request(done, "POST", header)
    assert code == 200 and "nothing to cancel" in json.loads(body)["message"]


def test_metrics_count_tasks_by_state(repo: Repo, dashboard: Dashboard) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    code, text = dashboard.get(f"/metrics?token={dashboard.token}")
    assert code == 200
    assert 'gadugi_tasks{state="completed"} 1' in text
    assert 'gadugi_tasks{state="failed"} 1' in text
    assert "gadugi_running_agents 0" in text
    assert 'gadugi_orchestrations{state="finished"} 1' in text
    assert "gadugi_landing_queue_length 0" in text
    code, page = dashboard.get(f"/stats?token={dashboard.token}&fragment=1")
    assert code == 200 and "By agent" in page and "<td>shell</td><td>2</td><td>50%" in page
    for missing in ("/orchestrations/orch-20000101-000000-0000", "/orchestrations/x/tasks/y"):
        assert dashboard.get(f"{missing}?token={dashboard.token}")[0] == 404


def test_the_inbox_lists_the_failure_first(repo: Repo, dashboard: Dashboard) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    code, body = dashboard.get(f"/?token={dashboard.token}&fragment=1")
    inbox = body.split('id="orchestrations"')[0]
    assert code == 200 and "k-failed" in inbox and ">bad</a>" in inbox and "good" not in inbox


def test_a_port_in_use_exits_2(repo: Repo) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_cli(["dashboard", "--no-open", "--port", str(port)], repo.root)
    assert done.returncode == 2 and f"127.0.0.1:{port}" in done.stderr


def test_the_report_is_one_file_with_every_task(repo: Repo, tmp_path: Path) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    out = tmp_path / "r.html"
    done = run_cli(["report", "--output", str(out)], repo.root)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    for task in ("good", "bad"):
        assert f'data-task="{task}"' in html
    assert "<script" not in html and "src=" not in html
    # The one URL in it is SVG's namespace name, which no browser fetches.
    bare = html.replace('xmlns="http://www.w3.org/2000/svg"', "")
    assert "http://" not in bare and "https://" not in bare
    assert "default-src 'none'" in html and "good.txt" in html and "failing" in html


def test_a_report_that_cannot_be_written_exits_2(repo: Repo, tmp_path: Path) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    done = run_cli(["report", "--output", str(tmp_path / "no" / "r.html")], repo.root)
    assert done.returncode == 2 and "does not exist" in done.stderr
    assert not (tmp_path / "no").exists()
    unknown = run_cli(["report", "orch-nope", "--output", str(tmp_path / "r.html")], repo.root)
    assert unknown.returncode == 2 and "orch-nope" in unknown.stderr
    assert not (tmp_path / "r.html").exists()


def test_stats_group_by_type_and_agent(repo: Repo) -> None:
    _two_tasks(repo)
    repo.shell_prompt("fix-bug.md", "echo fixed", title="Fix the crash bug")
    repo.commit()
    for _ in range(2):
        run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    doc = json.loads(run_cli(["stats", "--json"], repo.root).stdout)
    assert doc["tasks"] == 6
    shell = doc["by_agent"]["shell"]
    assert shell["tasks"] == 6 and shell["completed"] == 4
    assert shell["success_rate"] == round(4 / 6, 4) and shell["reruns"] == 0
    assert doc["by_type"]["bug fix"]["tasks"] == 2
    assert shell["median_duration_seconds"] is not None
    text = run_cli(["stats"], repo.root).stdout
    assert "by agent:" in text and "shell" in text


class _Hook(BaseHTTPRequestHandler):
    got: ClassVar[list[dict[str, Any]]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        _Hook.got.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_notify_runs_the_command_and_posts_the_webhook(repo: Repo, tmp_path: Path) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.got = []
    seen = tmp_path / "events.jsonl"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\n{{ cat; echo " $GADUGI_EVENT_EVENT"; }} >> "{seen}"\n')
    script.chmod(0o755)
    hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
    _two_tasks(repo, f'[notify]\ncommand = "{script}"\nwebhook = "{hook}"\n')
    try:
        done = run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    finally:
        server.shutdown()
    assert done.returncode == 1
    lines = seen.read_text().splitlines()
    events = [json.loads(line.rsplit(" ", 1)[0]) for line in lines]
    assert [line.rsplit(" ", 1)[1] for line in lines] == [e["event"] for e in events]
    ends = {e["task_id"]: e["status"] for e in events if e["event"] == "task_end"}
    assert ends == {"good": "completed", "bad": "failed"}
    assert events[-1]["event"] == "orchestration_end" and events[-1]["failed_tasks"] == 1
    assert [e["event"] for e in _Hook.got] == [e["event"] for e in events]


def test_a_failing_notifier_never_stops_a_run(repo: Repo) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    _two_tasks(repo, f'[notify]\ncommand = ["false"]\nwebhook = "http://127.0.0.1:{port}/"\n')
    done = run_cli(["run", "--agent", "shell", "--all"], repo.root)
    assert done.returncode == 1  # bad.md fails; the notifiers' failures change nothing
    assert "notify command false exited 1" in done.stderr
    assert "notify webhook" in done.stderr
    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    assert {t["task_id"]: t["status"] for t in status["tasks"]} == {
        "good": "completed",
        "bad": "failed",
    }


def test_a_bad_notify_table_exits_2_naming_the_key(repo: Repo) -> None:
    for table, key in (
        ('notify = "x"', "notify"),
        ('[notify]\nwebhook = "ftp://x"', "notify.webhook"),
        ("[notify]\ncommand = 3", "notify.command"),
        ('[notify]\nsms = "x"', "notify.sms"),
        ('[notify]\ncommand = "   "', "notify.command"),
        ('[notify]\nwebhook = ""', "notify.webhook"),
    ):
        (repo.root / "gadugi.toml").write_text(table + "\n")
        repo.shell_prompt("a.md", "echo a")
        before = repo.snapshot()
        done = run_cli(["run", "--agent", "shell", "--quiet", "a.md"], repo.root)
        assert done.returncode == 2 and key in done.stderr, (table, done.stderr)
        assert repo.snapshot() == before


def test_plan_learns_estimates_from_history_and_says_so(repo: Repo) -> None:
    (repo.root / "gadugi.toml").write_text(FAST)
    repo.shell_prompt("docs-a.md", "echo a", title="Update the docs")
    repo.shell_prompt("docs-b.md", "echo b", title="Document the README")
    repo.shell_prompt("own.md", "echo c", front="estimate_minutes: 7")
    repo.commit()
    before = json.loads(run_cli(["plan", "--json", "--all"], repo.root).stdout)
    assert {t["estimate_source"] for t in before["tasks"]} == {"prompt"}
    assert run_cli(["run", "--agent", "shell", "--quiet", "docs-a.md"], repo.root).returncode == 0
    after = json.loads(run_cli(["plan", "--json", "--all"], repo.root).stdout)
    by_id = {t["task_id"]: t for t in after["tasks"]}
    # The same prompt, and another of its type, take the measured time; a declared one stays.
    assert by_id["docs-a"]["estimate_source"] == "history"
    assert by_id["docs-a"]["estimate_minutes"] == 0.1  # seconds of work, never 0
    assert by_id["docs-b"]["estimate_source"] == "history"
    assert by_id["own"]["estimate_source"] == "prompt" and by_id["own"]["estimate_minutes"] == 7
    assert after["estimated_sequential_minutes"] < before["estimated_sequential_minutes"]
    text = run_cli(["plan", "--all"], repo.root).stdout
    assert "0.1m*" in text and "estimated from this project's history" in text


def test_a_hanging_notifier_is_stopped_when_the_run_ends(repo: Repo, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    script = tmp_path / "hang.sh"
    script.write_text(f'#!/bin/sh\necho $$ >> "{pids}"\nexec sleep 600\n')
    script.chmod(0o755)
    (repo.root / "gadugi.toml").write_text(FAST + f'[notify]\ncommand = "{script}"\n')
    repo.shell_prompt("a.md", "echo a")
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    assert done.returncode == 0 and "notify command still running" in done.stderr
    for pid in pids.read_text().split():
        assert not psutil.pid_exists(int(pid)) or psutil.Process(int(pid)).status() == "zombie"


def test_retry_from_the_dashboard_runs_gadugi_retry(
    repo: Repo, dashboard: Dashboard, tmp_path: Path
) -> None:
    mark = tmp_path / "failed-once"
    (repo.root / "gadugi.toml").write_text(FAST)
    repo.shell_prompt("once.md", f'if [ ! -f "{mark}" ]; then touch "{mark}"; exit 3; fi\necho ok')
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "--quiet", "once.md"], repo.root).returncode == 1
    orch = json.loads(run_cli(["status", "--json"], repo.root).stdout)["orchestration_id"]
    url = f"{dashboard.base}/api/orchestrations/{orch}/tasks/once/retry"
    code, body = request(url, "POST", {"X-Gadugi-Token": dashboard.token})
    assert code == 200, body

    def task() -> dict[str, Any]:
        shown: dict[str, Any] = json.loads(run_cli(["show", "once", "--json"], repo.root).stdout)
        return shown

    wait_until(lambda: task()["status"] == "completed")
    assert [a["status"] for a in task()["attempts"]] == ["failed", "completed"]
    # A second retry of a completed task is refused as `gadugi retry` refuses it.
    code, body = request(url, "POST", {"X-Gadugi-Token": dashboard.token})
    assert code == 409 and "--force" in json.loads(body)["message"]


def test_the_inbox_names_an_orchestrator_that_is_gone(
    repo: Repo, dashboard: Dashboard, tmp_path: Path
) -> None:
    started, gate = tmp_path / "started", tmp_path / "gate"
    (repo.root / "gadugi.toml").write_text(FAST)
    repo.shell_prompt("held.md", f'touch "{started}"\nwhile [ ! -f "{gate}" ]; do sleep 0.05; done')
    repo.commit()
    orch = run_then_kill_9(repo, started, "held.md")
    try:
        code, body = dashboard.get(f"/?token={dashboard.token}&fragment=1")
        inbox = body.split('id="orchestrations"')[0]
        assert code == 200 and "k-orchestrator-gone" in inbox and f"gadugi resume {orch}" in inbox
        _, text = dashboard.get(f"/metrics?token={dashboard.token}")
        assert "gadugi_orchestrators_gone 1" in text
    finally:
        gate.write_text("go")
        assert run_cli(["resume", orch, "--quiet"], repo.root).returncode == 0


def test_land_from_the_dashboard_runs_gadugi_land(repo: Repo, dashboard: Dashboard) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    orch = json.loads(run_cli(["status", "--json"], repo.root).stdout)["orchestration_id"]
    page = f"/orchestrations/{orch}?token={dashboard.token}&fragment=1"
    assert 'data-action="land"' in dashboard.get(page)[1]
    url = f"{dashboard.base}/api/orchestrations/{orch}/land"
    code, body = request(url, "POST", {"X-Gadugi-Token": dashboard.token})
    assert code == 200, body

    def landing() -> Any:
        return json.loads(run_cli(["show", "good", "--json"], repo.root).stdout)["landing"]

    wait_until(lambda: (landing() or {}).get("status") == "landed")
    assert f"gadugi/land/{orch}" in git(repo.root, "branch", "--list", "gadugi/land/*")
    wait_until(lambda: 'data-landing="landed"' in dashboard.get(page)[1])


def test_a_damaged_registry_is_a_503_on_every_endpoint(repo: Repo, dashboard: Dashboard) -> None:
    state = repo.root / ".gadugi" / "state.db"
    state.parent.mkdir(exist_ok=True)
    state.write_bytes(b"not a database at all" * 100)
    token = {"X-Gadugi-Token": dashboard.token}
    orch = "orch-20000101-000000-0000"
    for path in ("/", "/metrics", "/stats", f"/orchestrations/{orch}"):
        code, body = dashboard.get(f"{path}?token={dashboard.token}")
        assert code == 503 and "not an SQLite database" in body, path
    for action in ("tasks/x/cancel", "tasks/x/retry", "land"):
        code, body = request(f"{dashboard.base}/api/orchestrations/{orch}/{action}", "POST", token)
        assert code == 503 and "not an SQLite database" in json.loads(body)["message"], action
    assert "Traceback" not in dashboard.stderr.read_text()
    assert state.read_bytes() == b"not a database at all" * 100


def test_an_action_that_cannot_start_answers_503_with_why(repo: Repo, dashboard: Dashboard) -> None:
    _two_tasks(repo)
    run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root)
    orch = json.loads(run_cli(["status", "--json"], repo.root).stdout)["orchestration_id"]
    # Where the retry's output would go is taken by a folder: it cannot be opened.
    (repo.root / ".gadugi" / "logs" / orch / "dashboard-retry-bad.log").mkdir()
    url = f"{dashboard.base}/api/orchestrations/{orch}/tasks/bad/retry"
    code, body = request(url, "POST", {"X-Gadugi-Token": dashboard.token})
    assert code == 503 and "dashboard-retry-bad.log" in json.loads(body)["message"]
    assert "Traceback" not in dashboard.stderr.read_text()
    assert json.loads(run_cli(["show", "bad", "--json"], repo.root).stdout)["status"] == "failed"

"""Notifiers that misbehave: flood their output, leave daemons, never answer, answer 500,
or are named by a URL that cannot be one. None of them may stop, hang or outlive a run."""

from __future__ import annotations

import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import Repo, run_cli

FAST = "max_load_per_cpu = 0\nmin_available_memory_mb = 0\n"


def _one_task(repo: Repo, notify: str) -> None:
    (repo.root / "gadugi.toml").write_text(FAST + "[notify]\n" + notify)
    repo.shell_prompt("a.md", "echo a")
    repo.commit()


def _script(tmp_path: Path, name: str, body: str) -> Path:
    script = tmp_path / name
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return script


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_flood_on_stderr_is_cut_to_a_short_warning(repo: Repo, tmp_path: Path) -> None:
    flood = _script(
        tmp_path,
        "flood.sh",
        "head -c 20000000 /dev/zero | tr '\\0' x\n"
        "head -c 20000000 /dev/zero | tr '\\0' y >&2\n"
        "echo >&2\necho last words >&2\nexit 4\n",
    )
    _one_task(repo, f'command = "{flood}"\n')
    done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    assert done.returncode == 0
    warnings = [line for line in done.stderr.splitlines() if "notify command" in line]
    assert warnings and all("exited 4: last words" in line for line in warnings), warnings
    assert len(done.stderr) < 10_000


def test_a_daemon_a_notifier_leaves_is_stopped_with_the_run(repo: Repo, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    leaver = _script(
        tmp_path,
        "leave.sh",
        f"setsid sh -c 'echo $$ >> \"{pids}\"; exec sleep 300' </dev/null >/dev/null 2>&1 &\n"
        f"sh -c 'echo $$ >> \"{pids}\"; exec sleep 300' </dev/null >/dev/null 2>&1 &\n"
        "exit 0\n",
    )
    _one_task(repo, f'command = "{leaver}"\n')
    done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    assert done.returncode == 0, done.stderr
    started = [int(pid) for pid in pids.read_text().split()]
    assert len(started) == 4  # two per event: task_end and orchestration_end
    assert all(_gone(pid) for pid in started), [p for p in started if not _gone(p)]


@pytest.mark.parametrize("url", ["http://[::1", "https://exa mple.com/", "http:///path"])
def test_a_webhook_that_is_no_url_exits_2(repo: Repo, url: str) -> None:
    _one_task(repo, f'webhook = "{url}"\n')
    before = repo.snapshot()
    done = run_cli(["run", "--agent", "shell", "--quiet", "a.md"], repo.root)
    assert done.returncode == 2 and "notify.webhook" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert repo.snapshot() == before


class _Fails(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_a_webhook_answering_500_is_a_warning(repo: Repo) -> None:
    server = HTTPServer(("127.0.0.1", 0), _Fails)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _one_task(repo, f'webhook = "http://127.0.0.1:{server.server_address[1]}/"\n')
        done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    finally:
        server.shutdown()
    assert done.returncode == 0
    assert "notify webhook" in done.stderr and "500" in done.stderr


def test_a_webhook_that_never_answers_times_out(repo: Repo) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)  # accepts connections (the kernel does), never answers
        _one_task(repo, f'webhook = "http://127.0.0.1:{silent.getsockname()[1]}/"\n')
        done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    assert done.returncode == 0
    assert "notify webhook" in done.stderr and "timed out" in done.stderr


def test_a_nul_in_a_message_still_reaches_the_command(repo: Repo, tmp_path: Path) -> None:
    seen = tmp_path / "seen"
    record = _script(tmp_path, "record.sh", f'echo "$GADUGI_EVENT_EVENT" >> "{seen}"\n')
    (repo.root / "gadugi.toml").write_text(FAST + f'[notify]\ncommand = "{record}"\n')
    repo.shell_prompt("nul.md", 'printf "bad\\000byte\\n" >&2\nexit 3')
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "nul.md"], repo.root)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert seen.read_text().split() == ["task_end", "orchestration_end"]


def test_a_webhook_failure_never_shows_the_secret_in_its_url(repo: Repo) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    _one_task(repo, f'webhook = "http://127.0.0.1:{port}/services/T0/B0/s3cretTOKEN?k=s3cret"\n')
    done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    assert done.returncode == 0
    assert f"notify webhook http://127.0.0.1:{port}/... failed" in done.stderr, done.stderr
    assert "s3cret" not in done.stderr


def test_a_daemon_holding_the_commands_stderr_does_not_stall_it(repo: Repo, tmp_path: Path) -> None:
    """Its stderr is a file, not a pipe: a daemon that keeps it open cannot make gadugi
    wait for an end of file that never comes (until the 30 s timeout, per event)."""
    pids = tmp_path / "pids"
    holder = _script(
        tmp_path, "hold.sh", f"setsid sh -c 'echo $$ >> \"{pids}\"; exec sleep 300' &\nexit 0\n"
    )
    _one_task(repo, f'command = "{holder}"\n')
    done = run_cli(["run", "--agent", "shell", "a.md"], repo.root)
    assert done.returncode == 0, done.stderr
    assert "took over" not in done.stderr and "still running" not in done.stderr
    assert all(_gone(int(pid)) for pid in pids.read_text().split())

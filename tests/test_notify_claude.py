"""Notifications that only a real agent can cause: Claude Code meeting a usage limit,
saying it is blocked, and spending a budget."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from claude_fixtures import gadugi
from conftest import wait_until
from gadugi.tasks import iso
from modelserver import Failure, Reply, Text, Turn, verdict

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig


def test_a_usage_limit_park_is_notified(
    make_claude_rig: Callable[..., ClaudeRig], tmp_path: Path
) -> None:
    reset = int(time.time()) + 5 * 3600

    def usage_limit(turn: Turn) -> Failure:
        headers = (
            ("anthropic-ratelimit-unified-status", "rejected"),
            ("anthropic-ratelimit-unified-reset", str(reset)),
            ("anthropic-ratelimit-unified-representative-claim", "five_hour"),
        )
        return Failure(429, "rate_limit_error", "usage limit reached", headers)

    rig = make_claude_rig(script={"usage_limit": usage_limit})
    seen = tmp_path / "events.jsonl"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\ncat >> "{seen}"\necho >> "{seen}"\n')
    script.chmod(0o755)
    (rig.repo / "gadugi.toml").write_text(
        f'max_load_per_cpu = 0\nmin_available_memory_mb = 0\n[notify]\ncommand = "{script}"\n'
    )
    prompt = rig.repo / "prompts" / "limited.md"
    prompt.parent.mkdir(exist_ok=True)
    prompt.write_text("# limited\n\nDo something.\n\n[[scenario:usage_limit]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")
    env = {k: v for k, v in rig.env.items() if k != "ANTHROPIC_API_KEY"}
    env["CLAUDE_CODE_OAUTH_TOKEN"] = "sk-ant-oat01-test-not-real"
    run = subprocess.Popen(
        [sys.executable, "-m", "gadugi", "run", "--agent", "claude", "--quiet", "limited.md"],
        cwd=rig.repo,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: seen.exists() and "usage_limit" in seen.read_text(), timeout=120)
        os.kill(run.pid, signal.SIGINT)  # the park lasts hours: stop the run here
        run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    events = [json.loads(line) for line in seen.read_text().splitlines() if line.strip()]
    parked = [e for e in events if e["event"] == "usage_limit"]
    assert len(parked) == 1 and parked[0]["task_id"] == "limited"
    assert parked[0]["status"] == "queued"
    assert parked[0]["until"] == iso(float(reset))
    assert events[-1]["event"] == "orchestration_end"


def test_a_blocked_verdict_and_a_spent_budget_are_notified(
    make_claude_rig: Callable[..., ClaudeRig], tmp_path: Path
) -> None:
    def blocked(turn: Turn) -> Reply:
        return Reply((Text("I could not finish."),), verdict=verdict("blocked", "No database."))

    rig = make_claude_rig(script={"blocked": blocked})
    seen = tmp_path / "events.jsonl"
    script = tmp_path / "notify.sh"
    script.write_text(f'#!/bin/sh\ncat >> "{seen}"\necho >> "{seen}"\n')
    script.chmod(0o755)
    (rig.repo / "gadugi.toml").write_text(
        'claude_model = "claude-sonnet-4-5"\nretries = 0\nmax_load_per_cpu = 0\n'
        f'min_available_memory_mb = 0\n[notify]\ncommand = "{script}"\n'
    )
    for name, scenario in (("stuck", "blocked"), ("later", "write_commit")):
        prompt = rig.repo / "prompts" / f"{name}.md"
        prompt.parent.mkdir(exist_ok=True)
        prompt.write_text(f"# {name}\n\nDo the work.\n\n[[scenario:{scenario}]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")
    # One task at a time, and a budget the first task's cost already reaches.
    done = gadugi(
        rig, "run", "--agent", "claude", "--quiet", "--max-parallel", "1",
        "--budget-usd", "0.000001", "stuck.md", "later.md",
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    events = [json.loads(line) for line in seen.read_text().splitlines() if line.strip()]
    kinds = [e["event"] for e in events]
    person = [e for e in events if e["event"] == "needs_person"]
    assert len(person) == 1 and person[0]["task_id"] == "stuck"
    assert person[0]["reason"] == "blocked" and "No database" in person[0]["message"]
    budget = [e for e in events if e["event"] == "budget"]
    assert len(budget) == 1 and budget[0]["budget_usd"] == 0.000001
    assert budget[0]["spent_usd"] > 0.000001
    ends = {e["task_id"]: e["status"] for e in events if e["event"] == "task_end"}
    assert ends == {"stuck": "failed", "later": "cancelled"}
    assert kinds[-1] == "orchestration_end"

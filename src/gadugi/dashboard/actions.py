"""The dashboard's actions run the command line's own commands, as children.

So a cancel from the page is exactly `gadugi cancel` (the request row, the orphan case
with its lease, the wait for the task to stop), a retry is exactly `gadugi retry`,
which drives the orchestration until the task ends and so outlives the request: it is
started in a session of its own with its output in the orchestration's log folder, like
``run --detach``; and landing is `gadugi land --detach`. The server never changes the
registry itself.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry

CANCEL_WAIT_S = 10.0
# Until the retry has taken the task up (a new attempt) or exited (refused: not retryable,
# owned by another process), the request waits; at most this long.
RETRY_SETTLE_S = 30.0
SAFE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,200}")
ORCH_ID = re.compile(r"orch-[0-9]{8}-[0-9]{6}-[0-9a-f]{4,}")


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


def _gadugi(*args: str) -> list[str]:
    return [sys.executable, "-m", "gadugi", *args]


def cancel(root: Path, orch_id: str, task_id: str) -> Outcome:
    argv = _gadugi(
        "cancel", "--orchestration", orch_id, "--project-root", str(root),
        "--wait", f"{CANCEL_WAIT_S:g}", "--", task_id,
    )  # fmt: skip
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=CANCEL_WAIT_S + 30,
        check=False,
    )
    said = (done.stdout + done.stderr).strip()
    return Outcome(done.returncode == 0, said or f"gadugi cancel exited {done.returncode}")


def retry(root: Path, orch_id: str, task_id: str) -> Outcome:
    logs = root / ".gadugi" / "logs" / orch_id
    logs.mkdir(parents=True, exist_ok=True)
    log_file = logs / f"dashboard-retry-{task_id}.log"
    argv = _gadugi(
        "retry", "--orchestration", orch_id, "--project-root", str(root), "--quiet",
        "--", task_id,
    )  # fmt: skip
    before = _attempts(root, orch_id, task_id)
    with log_file.open("ab") as out:
        child = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    deadline = time.monotonic() + RETRY_SETTLE_S
    while (code := child.poll()) is None:
        if _taken_up(root, orch_id, task_id, before) or time.monotonic() > deadline:
            # Reaped when it ends, so it never lingers as a zombie of the server.
            threading.Thread(target=child.wait, daemon=True).start()
            return Outcome(True, f"retrying {task_id} (gadugi retry, pid {child.pid}; {log_file})")
        time.sleep(0.05)
    said = log_file.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    return Outcome(code == 0, said[-1] if said else f"gadugi retry exited {code}")


def _attempts(root: Path, orch_id: str, task_id: str) -> tuple[str, int]:
    registry = Registry(root / ".gadugi" / "state.db", readonly=True)
    try:
        task = registry.find_task(task_id, orch_id)
    finally:
        registry.close()
    return task["status"], task["attempts"]


def _taken_up(root: Path, orch_id: str, task_id: str, before: tuple[str, int]) -> bool:
    """Whether the retry owns the task now: its status changed, or it ran again."""
    return _attempts(root, orch_id, task_id) != before


LAND_START_S = 120.0


def land(root: Path, orch_id: str) -> Outcome:
    """`gadugi land ORCH --detach`: the lander checks everything, then goes on alone (its
    verification may take long) and the page follows it through the registry."""
    argv = _gadugi("land", "--project-root", str(root), "--detach", "--", orch_id)
    done = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=LAND_START_S,
        check=False,
    )
    said = (done.stdout + done.stderr).strip()
    if done.returncode == 0:
        return Outcome(True, f"landing {orch_id} in the background (gadugi land --detach)")
    return Outcome(False, said or f"gadugi land exited {done.returncode}")

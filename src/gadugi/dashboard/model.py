"""What the dashboard and the report show, read from the registry into plain dicts.

Nothing here writes: callers open the registry read-only, and git is only asked
questions (``--no-optional-locks``). Fields this version does not record in the registry
(verdict, verification, landing) come from the orchestration's recorded result, as in
``views.task_view``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..holds import amount
from ..landing import orchestration_landing, task_landing
from ..lifecycle import parse_status
from ..registry import Registry
from ..tasks import TaskStatus
from ..views import Git, Transcript, _recorded, orchestration_list, task_view, waiting_reason
from ..worktrees import run_git

Alive = Callable[[dict[str, Any]], bool]
DEFAULT_STALL_S = 15 * 60.0  # OrchestrationConfig.stall_timeout_minutes' default
ATTENTION_ORCHESTRATIONS = 10  # the inbox looks at this many of the newest orchestrations
MAX_DIFF_CHARS = 400_000  # a diff beyond this is cut, with a note saying how to see it all
# The order of the inbox: what needs a person before what only waits.
ATTENTION_ORDER = ("needs a person", "orchestrator gone", "failed", "blocked", "stalled", "waiting")


def overview(registry: Registry, now: float, alive: Alive, limit: int = 50) -> dict[str, Any]:
    """The front page: the attention inbox, then orchestrations newest first."""
    doc = orchestration_list(registry, limit, now, alive)
    orchs = doc["orchestrations"]
    return {
        "total": doc["total"],
        "orchestrations": orchs,
        "attention": attention(registry, orchs[:ATTENTION_ORCHESTRATIONS], now),
    }


def attention(registry: Registry, orchs: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """What a person should look at first: failures, tasks that need a person, blocked
    verdicts, orchestrators gone, stalled agents, and what waits (and why)."""
    items: list[dict[str, Any]] = []
    for summary in orchs:
        orch = registry.orchestration(summary["orchestration_id"])
        if orch["state"] == "running" and not summary["orchestrator_alive"]:
            items.append(
                _item(
                    "orchestrator gone",
                    orch["id"],
                    None,
                    "running",
                    f"its orchestrator (pid {orch['pid']}) is gone: gadugi resume {orch['id']}",
                )
            )
        for task in registry.tasks(orch["id"]):
            items += _task_items(registry, orch, task, now)
    items.sort(key=lambda i: ATTENTION_ORDER.index(i["kind"]))
    return items


def _task_items(
    registry: Registry, orch: dict[str, Any], task: dict[str, Any], now: float
) -> list[dict[str, Any]]:
    recorded = _recorded(orch, task["task_id"])
    status = task["status"]
    found = []

    def add(kind: str, why: str | None) -> None:
        found.append(_item(kind, orch["id"], task["task_id"], status, why))

    landing = task_landing(task) or recorded.get("landing")
    if isinstance(landing, dict) and landing.get("status") == "needs_person":
        add("needs a person", landing.get("note") or "its landing needs a person")
    if status in (TaskStatus.FAILED, TaskStatus.TIMEOUT):
        add("failed", task["error_message"])
    if recorded.get("verdict") == "blocked":
        add("blocked", recorded.get("summary") or "the agent says it is blocked")
    if status == TaskStatus.RUNNING and task["last_heartbeat"] is not None:
        silent = now - task["last_heartbeat"]
        if silent > stall_limit_s(orch):
            add("stalled", f"no output or agent event for {silent / 60:.0f} min")
    if status == TaskStatus.QUEUED:
        add("waiting", waiting_reason(registry, orch, task, now))
    return found


def stall_limit_s(orch: dict[str, Any]) -> float:
    """The orchestration's own stall timeout (as the runner judges a stall), in seconds."""
    config = orch["config"] if isinstance(orch.get("config"), dict) else {}
    minutes = config.get("stall_timeout_minutes", DEFAULT_STALL_S / 60)
    return float(minutes) * 60 if isinstance(minutes, int | float) else float("inf")


def _item(
    kind: str, orch_id: str, task_id: str | None, status: str, why: str | None
) -> dict[str, Any]:
    return {
        "kind": kind,
        "orchestration_id": orch_id,
        "task_id": task_id,
        "status": status,
        "why": why,
    }


def orchestration_detail(registry: Registry, orch_id: str | None, now: float) -> dict[str, Any]:
    """One orchestration: its tasks (with what the result recorded) and every attempt."""
    orch = registry.orchestration(orch_id)
    tasks = []
    for task in registry.tasks(orch["id"]):
        recorded = _recorded(orch, task["task_id"])
        agent = task["agent"] if isinstance(task["agent"], dict) else {}
        tasks.append(
            task
            | {
                "waiting_reason": waiting_reason(registry, orch, task, now),
                "verdict": recorded.get("verdict"),
                "summary": recorded.get("summary"),
                "landing": task_landing(task) or recorded.get("landing"),
                "cost_usd": amount(agent.get("cost_usd")),
            }
        )
    result = orch["result"] if isinstance(orch.get("result"), dict) else {}
    return {
        "orchestration": orch,
        "tasks": tasks,
        "attempts": registry.attempts(orch["id"]),
        "landing": orchestration_landing(orch, tasks) or result.get("landing"),
        "now": now,
    }


def landing_queue(detail: dict[str, Any]) -> list[dict[str, Any]]:
    """The completed tasks in landing order, each with its landing status (null: the
    orchestration has not been landed)."""
    queue = []
    for task in detail["tasks"]:
        if task["status"] != TaskStatus.COMPLETED:
            continue
        landing = task["landing"] if isinstance(task["landing"], dict) else None
        queue.append(
            {
                "task_id": task["task_id"],
                "branch": task["branch"],
                "status": landing.get("status") if landing else None,
                "commit": landing.get("commit") if landing else None,
                "note": landing.get("note") if landing else None,
            }
        )
    return queue


def task_detail(
    registry: Registry,
    orch_id: str,
    task_id: str,
    now: float,
    alive: Alive,
    git: Git = run_git,
) -> dict[str, Any]:
    """One task as `gadugi show` sees it, with its transcript (as `gadugi logs` prints
    it), the diff of its branch and what the result recorded about its verification."""
    task = registry.find_task(task_id, orch_id)
    view = task_view(registry, task, now, git)
    lines, _ = Transcript(registry, task, alive, follow=False, raw=False, only=None).step()
    root = Path(registry.orchestration(orch_id)["project_root"])
    return {
        "view": view,
        "transcript": lines,
        "diff": branch_diff(root, view["base_commit"], view["branch"], git),
        "finished": parse_status(task_id, task["status"]).finished,
    }


def branch_diff(root: Path, base: str | None, branch: str | None, git: Git = run_git) -> str | None:
    """The branch's changes since its base (three dots: what it did), cut at a size a
    page can show; None when there is no branch (yet, or any more)."""
    if not base or not branch:
        return None
    out = git(["--no-optional-locks", "diff", f"{base}...refs/heads/{branch}"], root)
    if out.returncode != 0:
        return None
    if len(out.stdout) > MAX_DIFF_CHARS:
        return (
            out.stdout[:MAX_DIFF_CHARS]
            + f"\n... cut at {MAX_DIFF_CHARS} characters; git diff {base}...{branch}\n"
        )
    return out.stdout


def metrics(registry: Registry, alive: Alive) -> str:
    """Prometheus' text format: tasks by state, running agents, cost, orchestrations by
    state, and the landing queue (completed tasks whose landing is ``pending``)."""
    by_state = {s.value: 0 for s in TaskStatus}
    cost = 0.0
    orchs: dict[str, int] = {}
    queue = 0
    gone = 0
    for orch in registry.orchestrations():
        orchs[orch["state"]] = orchs.get(orch["state"], 0) + 1
        if orch["state"] == "running" and not alive(orch):
            gone += 1
        for task in registry.tasks(orch["id"]):
            by_state[task["status"]] = by_state.get(task["status"], 0) + 1
            agent = task["agent"] if isinstance(task["agent"], dict) else {}
            cost += amount(agent.get("cost_usd")) or 0.0
            landing = task_landing(task) or _recorded(orch, task["task_id"]).get("landing")
            pending = isinstance(landing, dict) and landing.get("status") == "pending"
            if task["status"] == TaskStatus.COMPLETED and pending:
                queue += 1
    lines = [
        "# HELP gadugi_tasks Tasks in the registry by state.",
        "# TYPE gadugi_tasks gauge",
        *(f'gadugi_tasks{{state="{s}"}} {n}' for s, n in by_state.items()),
        "# HELP gadugi_running_agents Agents running now.",
        "# TYPE gadugi_running_agents gauge",
        f"gadugi_running_agents {by_state.get(TaskStatus.RUNNING.value, 0)}",
        "# HELP gadugi_orchestrations Orchestrations by state.",
        "# TYPE gadugi_orchestrations gauge",
        *(f'gadugi_orchestrations{{state="{s}"}} {n}' for s, n in sorted(orchs.items())),
        "# HELP gadugi_orchestrators_gone Running orchestrations whose orchestrator died.",
        "# TYPE gadugi_orchestrators_gone gauge",
        f"gadugi_orchestrators_gone {gone}",
        "# HELP gadugi_cost_usd_total What the agents reported spending, in US dollars.",
        "# TYPE gadugi_cost_usd_total counter",
        f"gadugi_cost_usd_total {cost:.6f}",
        "# HELP gadugi_landing_queue_length Completed tasks waiting to land.",
        "# TYPE gadugi_landing_queue_length gauge",
        f"gadugi_landing_queue_length {queue}",
    ]
    return "\n".join(lines) + "\n"


def verification_log(detail: dict[str, Any], limit: int = 20_000) -> str | None:
    """The end of the verification's log, where the result names one."""
    verification = detail["view"].get("verification")
    path = verification.get("log_file") if isinstance(verification, dict) else None
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    return text[-limit:]

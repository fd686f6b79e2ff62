"""Read-only views of the registry for a person: one task (`show`), past orchestrations
(`list`), where a task's transcript stands (`logs`), and the registry as exported.

Nothing here writes: the registry is opened read-only by the caller, and git is asked only
questions (``diff --numstat``, ``rev-list --count``) with ``--no-optional-locks``, so a
view never even refreshes an index. A task's verdict, summary and verification come from
its row (older registries: the orchestration's recorded result); fields this version does
not record (landing) come from the recorded result when it carries them, else null.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .holds import amount
from .landing import task_landing
from .lifecycle import parse_status
from .registry import Registry
from .tasks import TaskStatus, iso
from .transcript import TaskLog
from .worktrees import GitResult, run_git

Git = Callable[[Sequence[str], Path], GitResult]
# Row fields that hold epoch seconds; exports carry them as ISO 8601 like every JSON output.
TIME_FIELDS = frozenset(
    {
        "started_at",
        "finished_at",
        "created_at",
        "completed_at",
        "ended_at",
        "last_heartbeat",
        "not_before",
        "pid_start_time",
    }
)
NOT_RECORDED = ("landing",)
VERDICT_FIELDS = ("verdict", "summary", "verification")  # the task row's, since they exist


def export_document(data: dict[str, Any]) -> dict[str, Any]:
    """``Registry.export()`` with the rows' times as ISO 8601 with a UTC offset."""

    def dated(row: dict[str, Any]) -> dict[str, Any]:
        return {
            k: iso(v) if k in TIME_FIELDS and isinstance(v, int | float) else v
            for k, v in row.items()
        }

    return {
        **data,
        "orchestrations": [
            dated(orch)
            | {
                "tasks": [dated(t) for t in orch["tasks"]],
                "attempts": [dated(a) for a in orch["attempts"]],
            }
            for orch in data["orchestrations"]
        ],
    }


# -- one task's attempts, for `logs` -----------------------------------------------------


@dataclass(frozen=True)
class Progress:
    attempts: dict[int, dict[str, Any]]
    status: str
    ended: bool  # nothing more will be written for this task (by a live orchestrator)
    note: str | None = None  # why following stopped although the task did not finish


def progress(
    registry: Registry, orch_id: str, task_id: str, alive: Callable[[dict[str, Any]], bool]
) -> Progress:
    task = registry.find_task(task_id, orch_id)
    rows = {
        a["number"]: a
        for a in registry.attempts(orch_id)
        if a["task_id"] == task_id  # the registry keeps every task's attempts together
    }
    if parse_status(task_id, task["status"]).finished:
        return Progress(rows, task["status"], True)
    orch = registry.orchestration(orch_id)
    if orch["state"] != "running":
        return Progress(rows, task["status"], True, f"its orchestration is {orch['state']}")
    if not alive(orch):
        return Progress(
            rows,
            task["status"],
            True,
            f"its orchestrator (pid {orch['pid']}) is gone; gadugi resume {orch_id}",
        )
    return Progress(rows, task["status"], False)


class Transcript:
    """One task's transcript as `gadugi logs` prints it, a step at a time (see
    ``transcript.follow``): without ``follow``, the first step is the last."""

    def __init__(
        self,
        registry: Registry,
        task: dict[str, Any],
        alive: Callable[[dict[str, Any]], bool],
        *,
        follow: bool,
        raw: bool,
        only: int | None,
    ) -> None:
        self.registry, self.alive = registry, alive
        self.orch_id, self.task_id = task["orchestration_id"], task["task_id"]
        self.follow, self.raw, self.only = follow, raw, only
        self.files = TaskLog(_path(task["events_file"]), _path(task["log_file"]))
        self.progress = progress(registry, self.orch_id, self.task_id, alive)

    def step(self) -> tuple[list[str], bool]:
        # The end is learnt before the files are read, so that their last lines are included.
        self.progress = progress(self.registry, self.orch_id, self.task_id, self.alive)
        last = self.progress.ended or not self.follow
        lines = self.files.lines(
            self.progress.attempts,
            ended=self.progress.ended,
            flush=last,
            raw=self.raw,
            only=self.only,
        )
        return lines, last


def _path(value: str | None) -> Path | None:
    return Path(value) if value else None


# -- one task, for `show` ---------------------------------------------------------------------


def task_view(
    registry: Registry, task: dict[str, Any], now: float, git: Git = run_git
) -> dict[str, Any]:
    """Everything `gadugi show` says about one task, JSON-ready."""
    orch = registry.orchestration(task["orchestration_id"])
    root = Path(orch["project_root"])
    agent = task["agent"] if isinstance(task["agent"], dict) else {}
    branch, base = task["branch"], task["base_commit"]
    stat = diffstat(root, base, branch, git) if branch and base else None
    worktree = None if task["worktree_removed"] else task["worktree"]
    recorded = _recorded(orch, task["task_id"])
    logs = f"gadugi logs {task['task_id']} --orchestration {orch['id']}"
    review = [f"git diff {base}...{branch}", f"git log --oneline {base}..{branch}"]
    if worktree and Path(worktree).is_dir():
        review.append(f"cd {worktree}")
    files = stat.files if stat else None
    return {
        "orchestration_id": orch["id"],
        "task_id": task["task_id"],
        "task_name": task["name"],
        "prompt_file": task["prompt_file"],
        "status": task["status"],
        "why": task["error_message"],
        "waiting_reason": waiting_reason(registry, orch, task, now),
        **{key: task.get(key, recorded.get(key)) for key in VERDICT_FIELDS},
        **{key: recorded.get(key) for key in NOT_RECORDED},
        "landing": task_landing(task) or recorded.get("landing"),
        "attempts": [
            _attempt(a) for a in registry.attempts(orch["id"]) if a["task_id"] == task["task_id"]
        ],
        "started_at": iso(task["started_at"]),
        "completed_at": iso(task["completed_at"]),
        "branch": branch,
        "base_commit": base,
        "worktree": worktree,
        "commits": stat.commits if stat else task["commits"],
        "changed_files": len(files) if files is not None else task.get("changed_files"),
        "insertions": (
            sum(f["insertions"] or 0 for f in files)
            if files is not None
            else task.get("insertions")
        ),
        "deletions": (
            sum(f["deletions"] or 0 for f in files) if files is not None else task.get("deletions")
        ),
        "files": files,
        "cost_usd": amount(agent.get("cost_usd")),
        "input_tokens": agent.get("input_tokens"),
        "output_tokens": agent.get("output_tokens"),
        "num_turns": agent.get("num_turns"),
        "agent": agent,
        "log_file": task["log_file"],
        "events_file": task["events_file"],
        "logs": logs,
        "review": review if branch and base else [],
    }


def _attempt(row: dict[str, Any]) -> dict[str, Any]:
    start, end = row["started_at"], row["ended_at"]
    return {
        "number": row["number"],
        "status": row["status"],
        "started_at": iso(start),
        "ended_at": iso(end),
        "duration_seconds": round(end - start, 3) if end is not None else None,
        "exit_code": row["exit_code"],
        "error": row["error"],
    }


def _recorded(orch: dict[str, Any], task_id: str) -> dict[str, Any]:
    result = orch.get("result")
    tasks = result.get("tasks") if isinstance(result, dict) else None
    for task in tasks if isinstance(tasks, list) else ():
        if isinstance(task, dict) and task.get("task_id") == task_id:
            return task
    return {}


def waiting_reason(
    registry: Registry, orch: dict[str, Any], task: dict[str, Any], now: float
) -> str | None:
    """Why a queued task has not started; None for any other task.

    The loop records the reason when it changes (``schedule.waiting_reasons``); a
    registry from before that column, or a task the loop has not looked at yet, gets
    the reason worked out here from what the registry holds.
    """
    if task["status"] != TaskStatus.QUEUED:
        return None
    if orch["state"] != "running":
        return f"its orchestration is {orch['state']}"
    if task.get("waiting_reason"):
        return str(task["waiting_reason"])
    status = {t["task_id"]: t["status"] for t in registry.tasks(orch["id"], ("task_id", "status"))}
    reasons = []
    deps = [d for d in task["depends_on"] or () if status.get(d) != TaskStatus.COMPLETED]
    if deps:
        reasons.append(f"waiting for {', '.join(deps)} to complete")
    if task["not_before"] is not None and task["not_before"] > now:
        reasons.append(f"not before {iso(task['not_before'])}")
    if orch.get("note"):
        reasons.append(orch["note"])
    return "; ".join(reasons) or "waiting for a free slot"


@dataclass(frozen=True)
class Diffstat:
    commits: int
    files: list[dict[str, Any]]  # {"path", "insertions", "deletions"}; counts None if binary


def diffstat(root: Path, base: str, branch: str, git: Git = run_git) -> Diffstat | None:
    """The branch's commits and changed files since ``base``; None once the branch is gone."""
    ref = f"refs/heads/{branch}"
    count = git(["--no-optional-locks", "rev-list", "--count", f"{base}..{ref}"], root)
    if count.returncode != 0:
        return None
    numstat = git(["--no-optional-locks", "diff", "--numstat", "-z", f"{base}...{ref}"], root)
    if numstat.returncode != 0:
        return None
    return Diffstat(int(count.stdout.strip() or 0), parse_numstat(numstat.stdout))


def parse_numstat(out: str) -> list[dict[str, Any]]:
    """``git diff --numstat -z``: ``ins\\tdel\\tpath\\0``, or for a rename
    ``ins\\tdel\\t\\0old\\0new\\0``; ``-`` counts for binary files."""
    files = []
    fields = iter(out.split("\0"))
    for entry in fields:
        if not entry:
            continue
        added, deleted, path = entry.split("\t", 2)
        if not path:
            path = f"{next(fields, '')} => {next(fields, '')}"
        files.append(
            {
                "path": path,
                "insertions": None if added == "-" else int(added),
                "deletions": None if deleted == "-" else int(deleted),
            }
        )
    return files


def landing_line(landing: dict[str, Any]) -> str:
    commit = f" as {str(landing['commit'])[:12]}" if landing.get("commit") else ""
    note = f": {landing['note']}" if landing.get("note") else ""
    return f"{landing['status']}{commit} ({_plural(landing['attempts'], 'candidate')}){note}"


def render_task(view: dict[str, Any]) -> list[str]:
    lines = [f"{view['task_id']} ({view['orchestration_id']}): {view['status']}"]

    def add(label: str, value: Any) -> None:
        if value is not None and value != "":
            lines.append(f"  {label + ':':<11} {value}")

    add("title", view["task_name"])
    add("prompt", view["prompt_file"])
    add("why", view["why"])
    add("waiting", view["waiting_reason"])
    add("verdict", view["verdict"])
    add("summary", view["summary"])
    add("verified", verification_line(view["verification"]))
    for key in NOT_RECORDED:
        add(key, landing_line(view[key]) if key == "landing" and view[key] else view[key])
    if view["branch"]:
        ahead = (
            f", {_plural(view['commits'] or 0, 'commit')} ahead of {str(view['base_commit'])[:12]}"
        )
        add("branch", view["branch"] + ahead)
    if view["files"] is not None:
        add("changes", changes_line(view))
        width = max((len(f["path"]) for f in view["files"]), default=0)
        for f in view["files"]:
            counts = (
                "binary" if f["insertions"] is None else f"+{f['insertions']} -{f['deletions']}"
            )
            lines.append(f"  {'':<11} {f['path']:<{width}}  {counts}")
    elif view["branch"]:
        add("changes", "unknown: the branch no longer exists")
    add("worktree", view["worktree"] and f"kept at {view['worktree']}")
    add("agent", agent_line(view))
    lines.append("  attempts:")
    for a in view["attempts"]:
        took = f"{a['duration_seconds']:.1f}s" if a["duration_seconds"] is not None else "running"
        code = f"exit {a['exit_code']}" if a["exit_code"] is not None else ""
        lines.append(
            f"    {a['number']:>2}  {a['status'] or '-':<10} {a['started_at']}  {took:>8}  {code}"
        )
        if a["error"]:
            lines.append(f"        {a['error']}")
    if not view["attempts"]:
        lines.append("    none yet")
    add("log", view["log_file"])
    add("events", view["events_file"] if Path(view["events_file"] or "").is_file() else None)
    add("transcript", view["logs"])
    if view["review"]:
        lines.append("  review:")
        lines += [f"    {command}" for command in view["review"]]
    return lines


def verification_line(verification: Any) -> str | None:
    """``passed: `make test` (exit 0, 3.2s); log ...`` for a person, or None."""
    if not isinstance(verification, dict):
        return None
    verdict = "passed" if verification.get("passed") else "FAILED"
    code = verification.get("exit_code")
    took = verification.get("duration_seconds")
    how = ", ".join(
        p
        for p in (
            f"exit {code}" if code is not None else "killed",
            f"{took:.1f}s" if isinstance(took, int | float) else "",
        )
        if p
    )
    return f"{verdict}: `{verification.get('command')}` ({how}); log {verification.get('log_file')}"


def changes_line(view: dict[str, Any]) -> str:
    return (
        f"{_plural(view['changed_files'], 'file')} changed, "
        f"{_plural(view['insertions'], 'insertion')}(+), "
        f"{_plural(view['deletions'], 'deletion')}(-)"
    )


def agent_line(view: dict[str, Any]) -> str | None:
    parts = []
    if isinstance(view["num_turns"], int):
        parts.append(_plural(view["num_turns"], "turn"))
    if isinstance(view["cost_usd"], int | float):
        parts.append(f"${view['cost_usd']:.4f}")
    if isinstance(view["input_tokens"], int):
        parts.append(f"{view['input_tokens']} input and {view['output_tokens'] or 0} output tokens")
    session = view["agent"].get("session_id")
    if session:
        parts.append(f"session {session}")
    return ", ".join(parts) or None


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- past orchestrations, for `list` ----------------------------------------------------------


def orchestration_list(
    registry: Registry, limit: int, now: float, alive: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    total, rows = registry.history(limit)
    items = []
    for row in rows:
        running = row["state"] == "running"
        if running:
            seconds = now - row["started_at"]
        elif row["execution_time_seconds"] is not None:
            seconds = row["execution_time_seconds"]  # as the orchestration's result defines it
        else:
            seconds = (row["finished_at"] or now) - row["started_at"]
        counts = row["tasks_by_status"]
        items.append(
            {
                "orchestration_id": row["id"],
                "state": row["state"],
                "orchestrator_alive": running and alive(row),
                "started_at": iso(row["started_at"]),
                "finished_at": iso(row["finished_at"]),
                "duration_seconds": round(seconds, 3),
                "total_tasks": sum(counts.values()),
                "tasks_by_status": {s.value: counts[s] for s in TaskStatus if s in counts},
                "cost_usd": None if row["cost_usd"] is None else round(row["cost_usd"], 6),
                "plan_accuracy": _stored_object(row.get("plan_accuracy")),
            }
        )
    return {"total": total, "orchestrations": items}


def render_list(doc: dict[str, Any]) -> list[str]:
    lines = []
    for o in doc["orchestrations"]:
        state = o["state"]
        if state == "running" and not o["orchestrator_alive"]:
            state = "running (orchestrator gone)"
        started = (
            datetime.fromisoformat(o["started_at"]).astimezone().strftime("%Y-%m-%d %H:%M:%S")
            if o["started_at"]
            else "(no start time)"
        )
        breakdown = ", ".join(f"{n} {s}" for s, n in o["tasks_by_status"].items()) or "no tasks"
        cost = f"  ${o['cost_usd']:.4f}" if o["cost_usd"] is not None else ""
        lines.append(
            f"{o['orchestration_id']}  {state:<9}  {started}  "
            f"{duration(o['duration_seconds']):>7}  {breakdown}{cost}"
        )
        accuracy = accuracy_line(o.get("plan_accuracy"))
        if accuracy:
            lines.append(f"  {accuracy}")
    more = doc["total"] - len(doc["orchestrations"])
    if more > 0:
        lines.append(f"({more} more; --limit {doc['total']} lists them all)")
    if not lines:
        lines.append("no orchestrations yet")
    return lines


def accuracy_line(accuracy: dict[str, Any] | None) -> str | None:
    """The plan's accuracy in a line: "plan: 2 conflicting pairs predicted, 1 real
    (1 predicted); precision 0.50, recall 1.00"; None when there is none."""
    if not isinstance(accuracy, dict):
        return None
    predicted, actual = accuracy.get("predicted_pairs") or [], accuracy.get("actual_pairs") or []
    hits = sum(p in predicted for p in actual)

    def share(key: str) -> str:
        value = accuracy.get(key)
        return f"{value:.2f}" if isinstance(value, int | float) else "n/a"

    return (
        f"plan: {_plural(len(predicted), 'conflicting pair')} predicted, "
        f"{len(actual)} real ({hits} of them predicted); "
        f"precision {share('precision')}, recall {share('recall')}"
    )


def _stored_object(text: Any) -> dict[str, Any] | None:
    """A JSON object SQLite's json_extract handed back as text, or None."""
    if not isinstance(text, str):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"

"""HTML and inline SVG for the dashboard's pages and the report, from ``model``'s dicts.

Every value from the registry, a prompt, an agent or git is escaped here, once, where it
enters the markup. Links are made by a function the caller passes (``Link``): the live
dashboard links to its own pages, the report to anchors inside its one file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any

from ..tasks import TaskStatus
from ..views import agent_line, changes_line, duration
from .model import landing_queue

Link = Callable[[str, str | None], str]  # (orchestration id, task id or None) -> href
TIMELINE_WIDTH = 960
LABEL_W = 170
ROW_H = 24
NODE_W, NODE_H, COL_W, ROW_GAP = 160, 30, 200, 46
CANCELLABLE = (TaskStatus.QUEUED, TaskStatus.RUNNING)
RETRYABLE = (TaskStatus.FAILED, TaskStatus.TIMEOUT, TaskStatus.CANCELLED)


def e(value: Any) -> str:
    return escape("" if value is None else str(value), quote=True)


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    except (ValueError, OverflowError, OSError):
        return "-"  # a damaged row's time that no calendar holds


def state_class(status: str | None) -> str:
    """``s-<status>``, one CSS class even for an attempt's ``not started``."""
    return "s-" + e((status or "none").replace(" ", "-"))


def status_badge(status: str | None) -> str:
    return f'<span class="badge {state_class(status)}">{e(status or "-")}</span>'


# -- the front page --------------------------------------------------------------------


def overview_body(doc: dict[str, Any], link: Link) -> str:
    parts = ['<section id="attention"><h2>Needs attention</h2>']
    if doc["attention"]:
        parts.append('<table class="list"><tr><th></th><th>task</th><th>why</th></tr>')
        for item in doc["attention"]:
            target = link(item["orchestration_id"], item["task_id"])
            name = item["task_id"] or item["orchestration_id"]
            parts.append(
                f'<tr class="attention k-{e(item["kind"].replace(" ", "-"))}">'
                f'<td><span class="kind">{e(item["kind"])}</span></td>'
                f'<td><a href="{e(target)}">{e(name)}</a> {status_badge(item["status"])}'
                f'<div class="sub">{e(item["orchestration_id"])}</div></td>'
                f"<td>{e(item['why'])}</td></tr>"
            )
        parts.append("</table>")
    else:
        parts.append('<p class="quiet">Nothing needs you.</p>')
    parts.append('</section><section id="orchestrations"><h2>Orchestrations</h2>')
    if not doc["orchestrations"]:
        parts.append('<p class="quiet">No orchestrations yet.</p>')
    else:
        parts.append(
            '<table class="list"><tr><th>orchestration</th><th>state</th><th>started</th>'
            "<th>took</th><th>tasks</th><th>cost</th></tr>"
        )
        for o in doc["orchestrations"]:
            state = o["state"]
            if state == "running" and not o["orchestrator_alive"]:
                state = "orchestrator gone"
            counts = " ".join(
                f'{status_badge(s)}<span class="n">{n}</span>'
                for s, n in o["tasks_by_status"].items()
            )
            cost = f"${o['cost_usd']:.4f}" if o["cost_usd"] is not None else ""
            parts.append(
                f'<tr class="orch" data-orchestration="{e(o["orchestration_id"])}">'
                f'<td><a href="{e(link(o["orchestration_id"], None))}">'
                f"{e(o['orchestration_id'])}</a></td><td>{e(state)}</td>"
                f"<td>{e(o['started_at'])}</td><td>{e(duration(o['duration_seconds']))}</td>"
                f"<td>{counts}</td><td>{e(cost)}</td></tr>"
            )
        parts.append("</table>")
        more = doc["total"] - len(doc["orchestrations"])
        if more > 0:
            parts.append(f'<p class="quiet">{more} older (gadugi list --limit N)</p>')
    parts.append("</section>")
    return "".join(parts)


# -- one orchestration -----------------------------------------------------------------


def orchestration_body(detail: dict[str, Any], link: Link, *, actions: bool) -> str:
    orch = detail["orchestration"]
    result = orch["result"] if isinstance(orch.get("result"), dict) else {}
    counts: dict[str, int] = {}
    for t in detail["tasks"]:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    facts = [
        ("state", e(orch["state"])),
        ("started", e(when(orch["started_at"]))),
        ("finished", e(when(orch["finished_at"]))),
        ("tasks", " ".join(f"{status_badge(s)} {n}" for s, n in counts.items())),
    ]
    if result.get("parallel_speedup") is not None:
        facts.append(("speedup", e(f"{result['parallel_speedup']}x")))
    if result.get("execution_time_seconds") is not None:
        facts.append(("took", e(duration(float(result["execution_time_seconds"])))))
    if orch.get("note"):
        facts.append(("note", e(orch["note"])))
    parts = [
        f'<section class="orchestration" id="orch-{e(orch["id"])}">'
        f"<h2>{e(orch['id'])}</h2>{_facts(facts)}",
        "<h3>Timeline</h3>",
        timeline_svg(detail),
        "<h3>Plan</h3>",
        graph_svg(detail),
        "<h3>Tasks</h3>",
        _task_table(detail, link, actions=actions),
        "<h3>Landing</h3>",
        _landing(detail, actions=actions),
        "</section>",
    ]
    return "".join(parts)


def _task_table(detail: dict[str, Any], link: Link, *, actions: bool) -> str:
    orch_id = detail["orchestration"]["id"]
    rows = [
        '<table class="list tasks"><tr><th>task</th><th>status</th><th>attempts</th>'
        "<th>why / waiting</th><th>verdict</th><th>cost</th>"
        + ("<th></th>" if actions else "")
        + "</tr>"
    ]
    for t in detail["tasks"]:
        why = t["error_message"] or t["waiting_reason"] or t["last_line"] or ""
        cost = f"${t['cost_usd']:.4f}" if isinstance(t["cost_usd"], int | float) else ""
        rows.append(
            f'<tr class="task" data-task="{e(t["task_id"])}" data-status="{e(t["status"])}">'
            f'<td><a href="{e(link(orch_id, t["task_id"]))}">{e(t["task_id"])}</a>'
            f'<div class="sub">{e(t["name"])}</div></td>'
            f'<td class="status">{status_badge(t["status"])}</td><td>{t["attempts"]}</td>'
            f"<td>{e(why)}</td><td>{e(t['verdict'] or '')}</td><td>{e(cost)}</td>"
            + (f"<td>{action_buttons(orch_id, t['task_id'], t['status'])}</td>" if actions else "")
            + "</tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def action_buttons(orch_id: str, task_id: str, status: str) -> str:
    data = f'data-orchestration="{e(orch_id)}" data-task="{e(task_id)}"'
    out = []
    if status in CANCELLABLE:
        out.append(f'<button class="action" data-action="cancel" {data}>cancel</button>')
    if status in RETRYABLE:
        out.append(f'<button class="action" data-action="retry" {data}>retry</button>')
    return " ".join(out)


def _landing(detail: dict[str, Any], *, actions: bool) -> str:
    queue = landing_queue(detail)
    head = detail["landing"]
    out = []
    if actions and queue:
        orch_id = e(detail["orchestration"]["id"])
        out.append(
            f'<p><button class="action" data-action="land" data-orchestration="{orch_id}">'
            "land the completed tasks</button> (gadugi land)</p>"
        )
    if isinstance(head, dict):
        out.append(
            _facts(
                [
                    ("branch", e(head.get("branch"))),
                    ("head", e(head.get("head"))),
                    ("into", e(head.get("into"))),
                    ("landed", e(head.get("landed"))),
                    ("verified", e(head.get("verified"))),
                ]
            )
        )
    if not queue:
        out.append('<p class="quiet">No completed task to land.</p>')
        return "".join(out)
    out.append('<table class="list landing"><tr><th>task</th><th>branch</th><th>landing</th></tr>')
    for item in queue:
        out.append(
            f'<tr class="landing" data-task="{e(item["task_id"])}" '
            f'data-landing="{e(item["status"] or "none")}"><td>{e(item["task_id"])}</td>'
            f"<td>{e(item['branch'])}</td><td>{status_badge(item['status'] or 'not landed')}"
            f"{' ' + e(item['note']) if item.get('note') else ''}</td></tr>"
        )
    out.append("</table>")
    return "".join(out)


def timeline_svg(detail: dict[str, Any]) -> str:
    """A Gantt chart: one row per task, one bar per attempt, and a thin line for each
    wait (before the first attempt, and between a retry and the attempt before it)."""
    orch, tasks = detail["orchestration"], detail["tasks"]
    by_task: dict[str, list[dict[str, Any]]] = {}
    for a in detail["attempts"]:
        by_task.setdefault(a["task_id"], []).append(a)
    start = float(orch["started_at"])
    ends = [a["ended_at"] or detail["now"] for a in detail["attempts"]]
    end = float(max([orch["finished_at"] or detail["now"], *ends, start + 1.0]))
    span = end - start
    width = TIMELINE_WIDTH - LABEL_W - 10

    def x(ts: float) -> float:
        return LABEL_W + max(0.0, min(1.0, (ts - start) / span)) * width

    height = ROW_H * len(tasks) + 24
    out = [
        f'<svg class="timeline" xmlns="http://www.w3.org/2000/svg" width="{TIMELINE_WIDTH}" '
        f'height="{height}" viewBox="0 0 {TIMELINE_WIDTH} {height}">'
    ]
    for i, task in enumerate(tasks):
        y = i * ROW_H + 4
        mid = y + ROW_H / 2 - 2
        out.append(f'<text class="label" x="4" y="{mid + 4:.1f}">{e(task["task_id"][:24])}</text>')
        attempts = by_task.get(task["task_id"], [])
        waited_from = task["created_at"]
        for a in attempts:
            if a["started_at"] > waited_from:
                out.append(_wait(x(waited_from), x(a["started_at"]), mid))
            finish = a["ended_at"] or detail["now"]
            status = a["status"] or "running"
            took = duration(finish - a["started_at"])
            out.append(
                f'<rect class="attempt {state_class(status)}" data-task="{e(task["task_id"])}" '
                f'data-attempt="{a["number"]}" x="{x(a["started_at"]):.1f}" y="{y + 2}" '
                f'width="{max(2.0, x(finish) - x(a["started_at"])):.1f}" height="{ROW_H - 8}" '
                f'rx="3"><title>{e(task["task_id"])} attempt {a["number"]}: {e(status)}, '
                f"{e(took)}{': ' + e(a['error']) if a['error'] else ''}</title></rect>"
            )
            waited_from = finish
        if task["status"] == TaskStatus.QUEUED and orch["state"] == "running":
            out.append(_wait(x(waited_from), x(detail["now"]), mid))
    axis_y = ROW_H * len(tasks) + 18
    out.append(
        f'<text class="axis" x="{LABEL_W}" y="{axis_y}">{e(when(start))}</text>'
        f'<text class="axis" x="{TIMELINE_WIDTH - 10}" y="{axis_y}" text-anchor="end">'
        f"+{e(duration(span))}</text></svg>"
    )
    return "".join(out)


def _wait(x1: float, x2: float, y: float) -> str:
    if x2 - x1 < 1:
        return ""
    return f'<line class="wait" x1="{x1:.1f}" x2="{x2:.1f}" y1="{y:.1f}" y2="{y:.1f}"/>'


def graph_svg(detail: dict[str, Any]) -> str:
    """The plan as a graph: a column per dependency depth, arrows for dependencies,
    dashed lines for conflicts, nodes coloured by state."""
    tasks = {t["task_id"]: t for t in detail["tasks"]}
    depth: dict[str, int] = {}

    def level(task_id: str, seen: frozenset[str] = frozenset()) -> int:
        if task_id not in depth:
            deps = [d for d in tasks[task_id]["depends_on"] or () if d in tasks and d not in seen]
            depth[task_id] = 1 + max((level(d, seen | {task_id}) for d in deps), default=-1)
        return depth[task_id]

    rows: dict[int, int] = {}
    where: dict[str, tuple[float, float]] = {}
    for task_id in tasks:
        col = level(task_id)
        row = rows.get(col, 0)
        rows[col] = row + 1
        where[task_id] = (10 + col * COL_W, 10 + row * ROW_GAP)
    width = 20 + (max(depth.values(), default=0) + 1) * COL_W
    height = 20 + max(rows.values(), default=1) * ROW_GAP
    out = [
        f'<svg class="graph" xmlns="http://www.w3.org/2000/svg" width="{width}" '
        f'height="{height}" viewBox="0 0 {width} {height}"><defs><marker id="arrow" '
        'viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6" '
        'orient="auto"><path d="M0,0L10,5L0,10z"/></marker></defs>'
    ]
    drawn: set[frozenset[str]] = set()
    for task_id, task in tasks.items():
        tx, ty = where[task_id]
        for dep in task["depends_on"] or ():
            if dep in where:
                dx, dy = where[dep]
                out.append(
                    f'<line class="dep" x1="{dx + NODE_W}" y1="{dy + NODE_H / 2}" x2="{tx}" '
                    f'y2="{ty + NODE_H / 2}" marker-end="url(#arrow)"/>'
                )
        for other in task["conflicts_with"] or ():
            pair = frozenset((task_id, other))
            if other in where and pair not in drawn:
                drawn.add(pair)
                ox, oy = where[other]
                out.append(
                    f'<line class="conflict" x1="{tx + NODE_W / 2}" y1="{ty + NODE_H / 2}" '
                    f'x2="{ox + NODE_W / 2}" y2="{oy + NODE_H / 2}"><title>'
                    f"{e(task_id)} conflicts with {e(other)}</title></line>"
                )
    for task_id, task in tasks.items():
        tx, ty = where[task_id]
        out.append(
            f'<g class="node {state_class(task["status"])}" data-task="{e(task_id)}">'
            f'<rect x="{tx}" y="{ty}" width="{NODE_W}" height="{NODE_H}" rx="5"/>'
            f'<text x="{tx + 8}" y="{ty + 19}">{e(task_id[:22])}</text>'
            f"<title>{e(task_id)}: {e(task['status'])}</title></g>"
        )
    out.append("</svg>")
    return "".join(out)


# -- one task --------------------------------------------------------------------------


def task_body(td: dict[str, Any], *, actions: bool, verification_log: str | None) -> str:
    v = td["view"]
    verification = v["verification"] if isinstance(v["verification"], dict) else None
    facts = [
        ("status", status_badge(v["status"])),
        ("title", e(v["task_name"])),
        ("prompt", e(v["prompt_file"])),
        ("why", e(v["why"])),
        ("waiting", e(v["waiting_reason"])),
        ("verdict", e(v["verdict"])),
        ("summary", e(v["summary"])),
        ("branch", e(v["branch"])),
        ("commits", e(v["commits"])),
        ("changes", e(changes_line(v)) if v["files"] is not None else ""),
        ("agent", e(agent_line(v))),
        ("worktree", e(v["worktree"])),
    ]
    if verification:
        passed = "passed" if verification.get("passed") else "failed"
        facts.append(
            ("verification", e(f"{verification.get('command')}: {passed}")),
        )
    buttons = action_buttons(v["orchestration_id"], v["task_id"], v["status"]) if actions else ""
    parts = [
        f'<section class="task-detail" id="task-{e(v["orchestration_id"])}-{e(v["task_id"])}"'
        f' data-task="{e(v["task_id"])}" data-status="{e(v["status"])}">'
        f"<h2>{e(v['task_id'])} {buttons}</h2>{_facts(facts)}",
        "<h3>Attempts</h3>",
        _attempts(v["attempts"]),
    ]
    if v["files"]:
        parts.append("<h3>Changed files</h3><table class='list files'>")
        for f in v["files"]:
            counts = (
                "binary" if f["insertions"] is None else f"+{f['insertions']} -{f['deletions']}"
            )
            parts.append(f"<tr><td>{e(f['path'])}</td><td>{e(counts)}</td></tr>")
        parts.append("</table>")
    if td["diff"]:
        parts.append(f"<h3>Diff</h3>{diff_html(td['diff'])}")
    if verification_log:
        parts.append(f'<h3>Verification output</h3><pre class="log">{e(verification_log)}</pre>')
    parts.append(
        '<h3>Transcript</h3><pre class="transcript">'
        + e("\n".join(td["transcript"]) or "(nothing yet)")
        + "</pre></section>"
    )
    return "".join(parts)


def _attempts(attempts: Sequence[dict[str, Any]]) -> str:
    if not attempts:
        return '<p class="quiet">No attempt has started.</p>'
    rows = [
        '<table class="list attempts"><tr><th>#</th><th>status</th><th>started</th>'
        "<th>took</th><th>exit</th><th>error</th></tr>"
    ]
    for a in attempts:
        took = duration(a["duration_seconds"]) if a["duration_seconds"] is not None else "running"
        rows.append(
            f"<tr><td>{a['number']}</td><td>{status_badge(a['status'] or 'running')}</td>"
            f"<td>{e(a['started_at'])}</td><td>{e(took)}</td><td>{e(a['exit_code'])}</td>"
            f"<td>{e(a['error'])}</td></tr>"
        )
    rows.append("</table>")
    return "".join(rows)


def diff_html(diff: str) -> str:
    lines = []
    for line in diff.splitlines():
        kind = ""
        if line.startswith(("+++", "---", "diff ", "index ")):
            kind = "meta"
        elif line.startswith("+"):
            kind = "add"
        elif line.startswith("-"):
            kind = "del"
        elif line.startswith("@@"):
            kind = "hunk"
        lines.append(f'<span class="{kind}">{e(line)}</span>' if kind else e(line))
    return '<pre class="diff">' + "\n".join(lines) + "</pre>"


def _facts(facts: Sequence[tuple[str, str]]) -> str:
    rows = "".join(f"<tr><th>{e(k)}</th><td>{v}</td></tr>" for k, v in facts if v not in ("", "-"))
    return f'<table class="facts">{rows}</table>'


# -- trends ----------------------------------------------------------------------------


def stats_body(doc: dict[str, Any]) -> str:
    parts = ["<section id='stats'><h2>Trends across runs</h2>"]
    for title, key in (("By task type", "by_type"), ("By agent", "by_agent"), ("By day", "by_day")):
        groups = doc[key]
        parts.append(f"<h3>{e(title)}</h3>")
        if not groups:
            parts.append('<p class="quiet">No finished task yet.</p>')
            continue
        parts.append(
            '<table class="list stats"><tr><th></th><th>tasks</th><th>success</th>'
            "<th>median</th><th>mean</th><th>re-runs</th><th>cost</th></tr>"
        )
        for name, g in groups.items():
            parts.append(
                f"<tr><td>{e(name)}</td><td>{g['tasks']}</td>"
                f"<td>{g['success_rate'] * 100:.0f}%</td>"
                f"<td>{e(_secs(g['median_duration_seconds']))}</td>"
                f"<td>{e(_secs(g['mean_duration_seconds']))}</td><td>{g['reruns']}</td>"
                f"<td>${g['cost_usd']:.4f}</td></tr>"
            )
        parts.append("</table>")
    parts.append("</section>")
    return "".join(parts)


def _secs(value: float | None) -> str:
    return "-" if value is None else duration(value)


# -- whole pages -----------------------------------------------------------------------


def asset(name: str) -> str:
    """A stylesheet or script shipped in the package (``dashboard/static``)."""
    from importlib.resources import files

    return files("gadugi.dashboard").joinpath("static", name).read_text(encoding="utf-8")


def live_page(title: str, body: str, token: str) -> str:
    """A dashboard page: its assets from this server, its token for the actions."""
    head = (
        f'<meta name="gadugi-token" content="{e(token)}">'
        '<link rel="stylesheet" href="/static/dashboard.css">'
        '<script src="/static/dashboard.js" defer></script>'
    )
    nav = (
        '<header><a class="brand" href="/">gadugi</a><a href="/">overview</a>'
        '<a href="/stats">trends</a><span id="live" class="live">connecting</span></header>'
    )
    return _document(
        title, head, nav + f'<main><div id="flash"></div><div id="content">{body}</div></main>'
    )


def report_page(title: str, body: str) -> str:
    """One self-contained file: the stylesheet inline, no script, nothing fetched."""
    # The policy forbids every fetch: a report opened anywhere cannot reach the network.
    head = (
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'\">"
        f"<style>{asset('dashboard.css')}</style>"
    )
    nav = f'<header><span class="brand">gadugi report</span><span>{e(title)}</span></header>'
    return _document(title, head, f"{nav}<main>{body}</main>")


def _document(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title>{head}</head><body>{body}</body></html>"
    )

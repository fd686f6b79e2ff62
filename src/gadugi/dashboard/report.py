"""`gadugi report`: one orchestration as one self-contained HTML file.

The same markup as the dashboard's pages (``render``), with the stylesheet inline, no
script, and a Content-Security-Policy that forbids every fetch, so the file shows the same
offline, attached to a pull request, or opened from ``file://``.
"""

from __future__ import annotations

from typing import Any

from ..procs import same_process
from ..registry import Registry
from . import model, render


def _alive(orch: dict[str, Any]) -> bool:
    return same_process(orch["pid"] or 0, orch["pid_start_time"])


def build_report(registry: Registry, orch_id: str | None, now: float) -> tuple[str, str]:
    """The orchestration's id and its report: summary, timeline, graph, every task."""
    detail = model.orchestration_detail(registry, orch_id, now)
    orch_id = detail["orchestration"]["id"]

    def link(orch: str, task_id: str | None) -> str:
        return f"#task-{orch}-{task_id}" if task_id else f"#orch-{orch}"

    parts = [render.orchestration_body(detail, link, actions=False), "<h2>Task details</h2>"]
    for task in detail["tasks"]:
        td = model.task_detail(registry, orch_id, task["task_id"], now, _alive)
        parts.append(
            render.task_body(td, actions=False, verification_log=model.verification_log(td))
        )
    return orch_id, render.report_page(f"gadugi report {orch_id}", "".join(parts))

"""Commands that show the registry as pages: dashboard, report, stats."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from ..errors import NotFoundError, RequestError
from ..registry import Registry
from .main import _json, _root, main
from .output import output_target, write_output
from .query import _registry, _state_db


@main.command()
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    help="Listen on this port of 127.0.0.1 (default: a free one).",
)
@click.option("--no-open", is_flag=True, help="Print the URL only; open no browser.")
def dashboard(project_root: str | None, port: int, no_open: bool) -> None:
    """The local web dashboard: 127.0.0.1 only, a random token in its URL."""
    import secrets

    from ..dashboard.server import listen, serve

    root = _root(project_root)
    try:
        sock = listen(port)
    except OSError as exc:
        raise RequestError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
    token = secrets.token_urlsafe(24)
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/?token={token}"
    click.echo(f"gadugi dashboard for {root}: {url}")
    click.echo("(Ctrl-C stops it)")
    sys.stdout.flush()
    # Without a display, webbrowser would pick a text browser and take over the terminal.
    if not no_open and (
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform == "darwin"
    ):
        import webbrowser

        webbrowser.open(url)
    serve(root, sock, token)


@main.command()
@click.argument("orchestration_id", required=False)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
@click.option("--project-root", type=click.Path(file_okay=False))
def report(orchestration_id: str | None, output: str, project_root: str | None) -> None:
    """One self-contained HTML file: summary, timeline, plan graph and every task."""
    from ..dashboard.report import build_report

    state_db = _state_db(project_root)
    target = output_target(output, registry=state_db)
    registry = Registry(state_db, readonly=True)
    try:
        orch_id, html = build_report(registry, orchestration_id, time.time())
    finally:
        registry.close()
    write_output(target, html)
    click.echo(f"wrote the report of {orch_id} to {output}", err=target.to_stdout)


@main.command()
@click.option("--project-root", type=click.Path(file_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
def stats(project_root: str | None, as_json: bool) -> None:
    """Trends across runs: durations, success, cost and re-runs by task type and agent."""
    from ..stats import trends

    try:
        registry = _registry(project_root)
    except NotFoundError:
        doc = trends_of_nothing()
    else:
        try:
            doc = trends(registry)
        finally:
            registry.close()
    if as_json:
        click.echo(_json(doc))
        return
    if not doc["tasks"]:
        click.echo("no finished task yet")
        return
    for title, key in (("by task type", "by_type"), ("by agent", "by_agent"), ("by day", "by_day")):
        click.echo(f"{title}:")
        for name, g in doc[key].items():
            median = g["median_duration_seconds"]
            shown = f"{median:.1f}s" if median is not None else "-"
            click.echo(
                f"  {name:<14} {g['tasks']:>4} tasks  {g['success_rate'] * 100:>4.0f}% ok  "
                f"median {shown:>8}  {g['reruns']:>3} re-runs  ${g['cost_usd']:.4f}"
            )


def trends_of_nothing() -> dict[str, Any]:
    return {"tasks": 0, "by_type": {}, "by_agent": {}, "by_day": {}}

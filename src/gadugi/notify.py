"""Notifications: a command and/or a webhook told about what a person may want to know.

Events: ``task_end`` (a task reached a finished status), ``orchestration_end``, and
``needs_person``, ``budget`` and ``usage_limit``, which the parts that decide those emit
through ``Notifier.emit``. An event is one JSON object: ``{"event", "time",
"orchestration_id", ...}``.

The command (``notify.command``, an argv list or a string split like a shell line) gets the
event as JSON on stdin and each of its top-level values as ``GADUGI_EVENT_<KEY>``; the
webhook (``notify.webhook``) gets it as a JSON POST. Both run on one worker thread, so the
loop never waits for a slow receiver, and in order. A notifier that fails, hangs past its
timeout or cannot be reached is logged and forgotten: it never stops a run; of what it
writes on stderr only the last line is kept (cut short), whatever its size. ``close``
waits a bounded time for what is queued, a command still running then is killed, and so
is whatever the commands left running (a daemon, ``setsid`` or not: each command's
environment carries ``GADUGI_NOTIFIER``, this notifier's mark), so no notifier outlives
gadugi.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import queue
import secrets
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

from . import procs
from .errors import SpawnError
from .holds import Budget, reset_time
from .tasks import TaskStatus, iso

if TYPE_CHECKING:
    from .runner import Listener, TaskRun

COMMAND_TIMEOUT_S = 30.0
WEBHOOK_TIMEOUT_S = 5.0
CLOSE_WAIT_S = 10.0
STRAY_GRACE_S = 2.0  # what the commands left running gets this long after TERM
STDERR_TAIL_BYTES = 4096  # what is read back of a command's stderr, from its end
SHOWN_CHARS = 300  # of that, at most this much of the last line goes into the warning
MARK = "GADUGI_NOTIFIER"
EVENTS = ("task_end", "orchestration_end", "needs_person", "budget", "usage_limit")
log = logging.getLogger(__name__)


class Notifier:
    def __init__(
        self, command: Sequence[str], webhook: str | None, budget: Budget | None = None
    ) -> None:
        self.command = tuple(command)
        self.budget = budget  # the run's budget, to say when it is reached
        self.webhook = webhook
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.child: subprocess.Popen[bytes] | None = None
        self.abandoned = threading.Event()
        self.lock = threading.Lock()
        self.mark = secrets.token_hex(8)  # in each command's environment (see the module)
        self.thread = threading.Thread(target=self._work, name="gadugi-notify", daemon=True)
        self.thread.start()

    def emit(self, kind: str, orchestration_id: str, **fields: Any) -> None:
        event = {"event": kind, "time": iso(time.time()), "orchestration_id": orchestration_id}
        self.queue.put(event | fields)

    def listener(self, orchestration_id: str, inner: Listener | None) -> NotifyingListener:
        return NotifyingListener(self, orchestration_id, inner, self.budget)

    def emit_result(self, state: str, result: dict[str, Any]) -> None:
        """``orchestration_end``: the result's summary fields (not every task's detail)."""
        keep = (
            "started_at", "finished_at", "total_tasks", "successful_tasks", "failed_tasks",
            "execution_time_seconds", "parallel_speedup", "error_summary",
        )  # fmt: skip
        self.emit(
            "orchestration_end",
            result["orchestration_id"],
            state=state,
            **{k: result.get(k) for k in keep},
        )

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        try:
            self._drain(wait_s)
        finally:
            self._stop_strays()

    def _drain(self, wait_s: float) -> None:
        self.queue.put(None)
        self.thread.join(wait_s)
        if not self.thread.is_alive():
            return
        with self.lock:  # no command starts after this
            self.abandoned.set()  # what is still queued is dropped
            child = self.child
        if child is not None:
            log.warning("notify command still running after %.0fs; stopped", wait_s)
            _kill(child)
        self.thread.join(1.0)

    def _stop_strays(self) -> None:
        if not self.command:
            return
        for pid in procs.stop_marked(MARK, self.mark, STRAY_GRACE_S):
            log.warning("stopped pid %d, left running by notify command %s", pid, self.command[0])

    def _work(self) -> None:
        while (event := self.queue.get()) is not None and not self.abandoned.is_set():
            # A notifier never stops the run, nor the events after this one.
            try:
                body = json.dumps(event).encode()
                if self.command:
                    self._run_command(event, body)
                if self.webhook:
                    self._post(body)
            except Exception as exc:
                log.warning("notifying %s failed: %s", event.get("event"), exc)

    def _run_command(self, event: dict[str, Any], body: bytes) -> None:
        # No NUL in an environment: a message quoting an agent's binary output may hold one.
        env = os.environ | {
            f"GADUGI_EVENT_{key.upper()}": "" if value is None else str(value).replace("\0", "")
            for key, value in event.items()
            if value is None or isinstance(value, str | int | float | bool)
        }
        env[MARK] = self.mark
        # stderr goes to a file, not a pipe: a command may write gigabytes there.
        with tempfile.TemporaryFile() as err_file:
            self._run_command_to(env, body, err_file)

    def _run_command_to(self, env: dict[str, str], body: bytes, err_file: Any) -> None:
        try:
            with self.lock:
                if self.abandoned.is_set():
                    return
                # Started through procs: the end-of-run sweep knows it for ours, no stray.
                self.child = procs.start(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL,
                    stderr=err_file,
                    env=env,
                    start_new_session=True,
                )
            self.child.communicate(body, timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            assert self.child is not None
            _kill(self.child)
            self.child.wait()
            log.warning(
                "notify command %s took over %.0fs; stopped", self.command[0], COMMAND_TIMEOUT_S
            )
            return
        except (OSError, SpawnError) as exc:
            log.warning("notify command %s could not run: %s", self.command[0], exc)
            return
        finally:
            child, self.child = self.child, None
            if child is not None:
                procs.forget(child.pid)
        if child is not None and child.returncode != 0:
            last = _last_line(err_file)
            log.warning(
                "notify command %s exited %s%s",
                self.command[0],
                child.returncode,
                f": {last}" if last else "",
            )

    def _post(self, body: bytes) -> None:
        assert self.webhook is not None
        try:
            request = urllib.request.Request(  # noqa: S310  (the scheme is checked in config)
                self.webhook,
                data=body,
                headers={"Content-Type": "application/json", "User-Agent": "gadugi"},
                method="POST",
            )
            with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT_S) as answer:  # noqa: S310
                answer.read(1024)
        except (OSError, ValueError, http.client.HTTPException) as exc:
            log.warning("notify webhook %s failed: %s", _shown(self.webhook), exc)


class NotifyingListener:
    """The loop's listener, passed through, that also emits what a person may want to
    know, each once: ``task_end``, ``needs_person`` (a blocked verdict), ``usage_limit`` (a
    task parked until its agent's limit resets) and ``budget`` (the budget reached)."""

    def __init__(
        self,
        notifier: Notifier,
        orchestration_id: str,
        inner: Listener | None,
        budget: Budget | None = None,
    ):
        self.notifier, self.orchestration_id, self.inner = notifier, orchestration_id, inner
        self.budget = budget
        self.told: set[tuple[str, int, str]] = set()

    def changed(self, task: TaskRun) -> None:
        self._usage_limit(task)
        if task.status.finished and self._first(task, task.status.value):
            self.notifier.emit(
                "task_end",
                self.orchestration_id,
                task_id=task.task_id,
                status=task.status.value,
                exit_code=task.exit_code,
                attempts=task.attempt,
                branch=task.branch,
                verdict=task.verdict,
                message=task.error,
            )
            if task.verdict == "blocked":
                self.notifier.emit(
                    "needs_person",
                    self.orchestration_id,
                    task_id=task.task_id,
                    reason="blocked",
                    message=task.error,
                )
        if self.inner:
            self.inner.changed(task)

    def _first(self, task: TaskRun, what: str) -> bool:
        key = (task.task_id, task.attempt, what)
        if key in self.told:
            return False
        self.told.add(key)
        return True

    def _usage_limit(self, task: TaskRun) -> None:
        """A queued task held until its agent's reported reset time (or later: the runner
        adds a margin) that is still to come; a stale reset time from an earlier attempt is
        in the past."""
        until = reset_time(task.agent_info.get("retry_after"), time.time())
        if task.status is not TaskStatus.QUEUED or until is None:
            return
        if until <= time.time() or task.hold_until < until:
            return
        if self._first(task, "usage_limit"):
            self.notifier.emit(
                "usage_limit",
                self.orchestration_id,
                task_id=task.task_id,
                status=task.status.value,
                until=iso(float(until)),
                message=task.error,
            )

    def ticked(self, runs: Sequence[TaskRun], now: float, note: str | None) -> None:
        if self.budget is not None and ("", 0, "budget") not in self.told:
            spent = sum(r.spent_usd + r.attempt_cost for r in runs)
            if self.budget.spent_out(spent):
                self.told.add(("", 0, "budget"))
                self.notifier.emit(
                    "budget",
                    self.orchestration_id,
                    budget_usd=self.budget.limit_usd,
                    spent_usd=round(spent, 6),
                    hard=self.budget.hard,
                    message=self.budget.waiting(spent),
                )
        if self.inner:
            self.inner.ticked(runs, now, note)


def _shown(url: str) -> str:
    """The webhook as a warning may show it: its scheme, host and port. A webhook's path
    and query often are its secret (Slack's, Discord's), and logs are kept and shared."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    rest = "/..." if (parts.path.strip("/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{rest}"


def _last_line(err_file: Any) -> str:
    """The last non-empty line of what a command wrote on stderr, its end kept when long."""
    size = err_file.seek(0, os.SEEK_END)
    err_file.seek(max(0, size - STDERR_TAIL_BYTES))
    lines = err_file.read().decode(errors="replace").strip().splitlines()
    last = lines[-1].strip() if lines else ""
    return last if len(last) <= SHOWN_CHARS else "..." + last[-SHOWN_CHARS:]


def _kill(child: subprocess.Popen[bytes]) -> None:
    """The command's whole process group (it leads one: a session of its own)."""
    with suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)


def from_config(config: Any) -> Notifier | None:
    """A notifier for ``OrchestrationConfig``'s ``notify`` settings; None without any."""
    if not (config.notify_command or config.notify_webhook):
        return None
    budget = Budget(config.budget_usd, config.budget_hard) if config.budget_usd else None
    return Notifier(config.notify_command, config.notify_webhook, budget)

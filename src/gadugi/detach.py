"""Detaching: an orchestrator that outlives the process that started it.

``start(body)`` forks twice. The middle process calls ``setsid`` and exits at once, so the
orchestrator is in a session and process group of its own, is no session leader (it can
never acquire a controlling terminal), and is reparented away from its caller: a hangup
of the caller's terminal, a ``kill`` of the caller's whole process group, or the caller's
own death reaches none of it. Its standard input is ``/dev/null``.

The caller waits only until the orchestration is recorded in the registry: ``body`` calls
its ``ready`` argument then, which points the orchestrator's stdout and stderr at its log
and tells the caller, over a pipe, where to find it. A body that fails before that (a bad
request, a refused overlap) sends its message and exit code over the same pipe instead, so
the caller reports it as if it had run the orchestration itself, and nothing was left
running. Until ``ready``, the orchestrator's own output goes to ``/dev/null``: nothing of the
orchestration exists yet to hold a log.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from .errors import GadugiError

Ready = Callable[[str, Path], None]  # (orchestration id, log file)


@dataclass(frozen=True)
class Started:
    orchestration_id: str
    pid: int
    log_file: Path


class DetachedFailed(GadugiError):
    """The detached orchestrator stopped before its orchestration was recorded."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def start(body: Callable[[Ready], int]) -> Started:
    """Run ``body`` in a detached process; return once it has called ``ready``."""
    read_fd, write_fd = os.pipe()  # not inheritable: git and agents never hold it open
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # or the children would print what the caller already buffered
    middle = os.fork()
    if middle == 0:
        try:
            os.close(read_fd)
            os.setsid()
            if os.fork() == 0:
                _orchestrate(body, write_fd)
        finally:
            os._exit(0)
    os.close(write_fd)
    os.waitpid(middle, 0)
    with os.fdopen(read_fd, "rb") as pipe:
        message = pipe.read()
    try:
        data = json.loads(message.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        data = None
    if not isinstance(data, dict):
        raise DetachedFailed("the detached orchestrator died before it recorded anything", 1)
    if "error" in data:
        raise DetachedFailed(str(data["error"]), int(data.get("exit_code", 1)))
    return Started(str(data["orchestration_id"]), int(data["pid"]), Path(data["log_file"]))


def _orchestrate(body: Callable[[Ready], int], pipe_fd: int) -> NoReturn:
    """The detached process: run ``body`` to its end, then exit without returning."""
    told = False

    def tell(data: dict[str, object]) -> None:
        nonlocal told
        if told:
            return
        told = True
        try:
            with suppress(OSError):  # the caller is gone; the log and the registry say all
                os.write(pipe_fd, json.dumps(data).encode("utf-8"))
        finally:
            os.close(pipe_fd)

    def ready(orchestration_id: str, log_file: Path) -> None:
        _point_output_at(log_file)
        tell({"orchestration_id": orchestration_id, "pid": os.getpid(), "log_file": str(log_file)})

    code = 1
    try:
        _point_input_and_output_at_null()
        code = body(ready)
    except GadugiError as exc:
        code = exc.exit_code
        tell({"error": str(exc), "exit_code": code})
        print(f"gadugi: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        code = 130
        tell({"error": "interrupted", "exit_code": code})
        print("gadugi: interrupted", file=sys.stderr)
    except BaseException as exc:
        tell({"error": f"the detached orchestrator failed: {exc!r}", "exit_code": 1})
        traceback.print_exc()
    finally:
        tell({"error": "the detached orchestrator ended before it recorded anything"})
        for stream in (sys.stdout, sys.stderr):
            with suppress(OSError, ValueError):
                stream.flush()
        os._exit(code)


def _point_input_and_output_at_null() -> None:
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)


def _point_output_at(log_file: Path) -> None:
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    for target in (1, 2):
        os.dup2(fd, target)
    os.close(fd)

"""A task's transcript for a person, attempt by attempt, from what its agent left on disk.

Agents with structured output (claude, codex, gemini) are rendered from their events file
(see ``renderers.py``); the others (shell, command, aider) are shown from their log, which
holds their output as it came. ``raw`` gives the events file (or the log) as it is.

Attempts: before attempt N > 1 the runner writes ``--- gadugi: attempt N ---`` into the log,
so a log splits exactly. An events file splits where the agent opens a session (Claude's
``system/init``, Codex's ``thread.started``, gemini's ``init``), or after the event that
closed the last one; an attempt whose agent wrote no event at all leaves no trace there, so
the events file's attempts are numbered in order.

Rendering is a function of the files and the attempt records alone, and it only ever
appends: files that grew since, and records that gained an end, render to lines that start
with the earlier ones. So following a running task (``follow``) prints the lines beyond those
it printed already, and ends with exactly what a later ``gadugi logs`` prints.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .agents.base import ATTEMPT_MARK
from .renderers import Renderer, closes_attempt, dialect_of, opens_attempt, renderer_for

# The line the runner writes into a log before each attempt after the first.
MARKER = re.compile(rf"^{re.escape(ATTEMPT_MARK)}(\d+) ---$")
STDERR_TAIL = 10  # lines of stderr shown for an attempt that ended without a result
POLL_S = 0.25


class Tail:
    """A file read as it grows: its complete lines so far, and the unfinished last one."""

    def __init__(self, path: Path | None, *, parse: bool = False) -> None:
        self.path = path
        self.parse = parse
        self.offset = 0
        self.lines: list[str] = []
        self.events: list[dict[str, Any] | None] = []  # each line parsed, when ``parse``
        self.rest = b""

    def read(self) -> None:
        if self.path is None:
            return
        try:
            with self.path.open("rb") as fh:
                if fh.seek(0, os.SEEK_END) < self.offset:  # replaced or truncated: start over
                    self.offset, self.lines, self.events, self.rest = 0, [], [], b""
                fh.seek(self.offset)
                data = fh.read()
        except OSError:
            return  # not written yet
        self.offset += len(data)
        *done, self.rest = (self.rest + data).split(b"\n")
        for raw in done:
            line = raw.decode("utf-8", "replace")
            self.lines.append(line)
            if self.parse:
                self.events.append(_parse(line))

    def complete(self, ended: bool) -> tuple[list[str], list[dict[str, Any] | None]]:
        """The lines, with the unfinished last one only once nothing more will come."""
        if not (ended and self.rest):
            return self.lines, self.events
        last = self.rest.decode("utf-8", "replace")
        return [*self.lines, last], [*self.events, _parse(last) if self.parse else None]


class LastOutput:
    """The last assistant text or tool call in a running agent's events (the live view's
    "last output"): read as the file grows, rendered as ``gadugi logs`` would render it."""

    # Rendered lines that say nothing of what the agent is doing: tool results, session
    # notes and the closing outcome.
    QUIET = ("│", "✗", "·", "=")

    def __init__(self, path: Path) -> None:
        self.tail = Tail(path, parse=True)
        self.renderer: Renderer | None = None
        self.line = ""

    def read(self) -> str:
        self.tail.read()
        for event in self.tail.events:
            if event is None:
                continue
            if self.renderer is None:
                kind = dialect_of(event)
                if kind is None:
                    continue
                self.renderer = renderer_for(kind)
            for line in self.renderer.feed(event):
                said = line.strip()
                if said and not said.startswith(self.QUIET):
                    self.line = said
        # Consumed: only the latest line is kept, however long the agent runs.
        self.tail.lines, self.tail.events = [], []
        return self.line


def _parse(line: str) -> dict[str, Any] | None:
    try:
        event = json.loads(line)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


@dataclass
class Segment:
    """One attempt's part of a file."""

    number: int
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    closed: bool = False  # the agent's closing event (its result) is among ``events``


def split_log(lines: list[str]) -> list[Segment]:
    segments = [Segment(1)]
    for line in lines:
        found = MARKER.match(line)
        if found is None:
            segments[-1].lines.append(line)
            continue
        if segments[-1].lines and segments[-1].lines[-1] == "":
            segments[-1].lines.pop()  # the marker's own leading newline
        segments.append(Segment(int(found.group(1))))
    return segments


def split_events(
    lines: list[str], events: list[dict[str, Any] | None], dialect: str
) -> list[Segment]:
    segments: list[Segment] = []
    for line, event in zip(lines, events, strict=True):
        current = segments[-1] if segments else None
        if current is None or (
            event is not None
            and current.events
            and (current.closed or opens_attempt(dialect, event))
        ):
            current = Segment(len(segments) + 1)
            segments.append(current)
        current.lines.append(line)
        if event is not None:
            current.events.append(event)
            current.closed = current.closed or closes_attempt(dialect, event)
    return segments


def dialect(events: list[dict[str, Any] | None]) -> str | None:
    """Whose events these are; None when there are none gadugi can render (use the log)."""
    for event in events:
        found = dialect_of(event) if event is not None else None
        if found is not None:
            return found
    return None


class TaskLog:
    """One task's events file and log, read as they grow and rendered on demand."""

    def __init__(self, events_file: Path | None, log_file: Path | None) -> None:
        self.events = Tail(events_file, parse=True)
        self.log = Tail(log_file)

    def lines(
        self,
        attempts: Mapping[int, Mapping[str, Any]],
        *,
        ended: bool,
        flush: bool = True,
        raw: bool = False,
        only: int | None = None,
    ) -> list[str]:
        """The transcript as the files stand now.

        ``attempts`` are the registry's attempt rows by number; ``ended``: the task will
        write no more; ``flush``: also show text the agent is still streaming (a rendering
        that nothing will extend); ``only``: one attempt.
        """
        self.events.read()
        self.log.read()
        return render(self.events, self.log, attempts, ended=ended, flush=flush, raw=raw, only=only)


def render(
    events_tail: Tail,
    log_tail: Tail,
    attempts: Mapping[int, Mapping[str, Any]],
    *,
    ended: bool,
    flush: bool,
    raw: bool,
    only: int | None,
) -> list[str]:
    event_lines, events = events_tail.complete(ended)
    log_lines, _ = log_tail.complete(ended)
    kind = dialect(events)
    if raw and only is None:
        return event_lines if kind else log_lines
    stderr = {s.number: s.lines for s in split_log(log_lines)}
    segments = split_log(log_lines) if kind is None else split_events(event_lines, events, kind)
    out: list[str] = []
    for i, segment in enumerate(segments):
        row = attempts.get(segment.number)
        if row is None and not ended:
            break  # its record is not written yet; it will be, before anything else
        if row is None and not segment.lines:
            continue  # no attempt, no output: nothing to show
        if only is not None and segment.number != only:
            continue
        if raw:
            out += segment.lines
            continue
        closed = ended or i < len(segments) - 1
        out += _attempt(segment, row, kind, stderr.get(segment.number, []), closed, flush)
    return out


def _attempt(
    segment: Segment,
    row: Mapping[str, Any] | None,
    kind: str | None,
    stderr: list[str],
    closed: bool,
    flush: bool,
) -> list[str]:
    started = _stamp(row.get("started_at")) if row else "-"
    out = [f"=== attempt {segment.number}, started {started}"]
    if kind is None:
        out += segment.lines
    else:
        renderer = renderer_for(kind)
        for event in segment.events:
            out += renderer.feed(event)
        if closed or flush:
            out += renderer.flush()
        shown = [line for line in stderr if line.strip()][-STDERR_TAIL:]
        if closed and not segment.closed and shown:
            # No result from the agent: what it said on stderr is the best account of why.
            out += ["! no result; the end of its stderr:"] + [f"  {line}" for line in shown]
    if closed and row and row.get("ended_at") is not None:
        out.append(_footer(segment.number, row))
    return out


def _footer(number: int, row: Mapping[str, Any]) -> str:
    facts = [] if row.get("exit_code") is None else [f"exit {row['exit_code']}"]
    if row.get("started_at") is not None:
        facts.append(f"{float(row['ended_at']) - float(row['started_at']):.1f}s")
    why = f": {row['error']}" if row.get("error") else ""
    return f"=== attempt {number} {row.get('status') or 'ended'} ({', '.join(facts)}){why}"


def _stamp(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def follow(
    step: Callable[[], tuple[list[str], bool]],
    emit: Callable[[list[str]], None],
    *,
    poll_s: float = POLL_S,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Print a growing transcript until its task ends.

    ``step`` returns the transcript as it stands and whether the task has ended; it must
    learn that the task ended before it reads the files, so their last lines are included.
    """
    printed = 0
    while True:
        lines, ended = step()
        if len(lines) > printed:
            emit(lines[printed:])
            printed = len(lines)
        if ended:
            return
        sleep(poll_s)

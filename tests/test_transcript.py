"""The transcript renderer on crafted events and logs: what each event kind becomes, how a
file splits into attempts, and that a growing file's rendering only ever appends (what
`gadugi logs -f` relies on). The real CLIs' events are covered in test_views_agents.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gadugi.transcript import LastOutput, TaskLog, follow, split_log

SESSION = "11111111-2222-3333-4444-555555555555"


def _write(path: Path, *events: dict[str, Any] | str) -> None:
    with path.open("a", encoding="utf-8") as fh:
        for event in events:
            fh.write(event if isinstance(event, str) else json.dumps(event) + "\n")


def _row(number: int, status: str = "completed", code: int | None = 0) -> dict[str, Any]:
    start = 1_800_000_000.0 + 100 * number
    return {
        "number": number,
        "started_at": start,
        "ended_at": start + 2.5,
        "status": status,
        "exit_code": code,
        "error": None if status == "completed" else "it went wrong",
    }


def _assistant(*blocks: dict[str, Any], parent: str | None = None, **extra: Any) -> dict[str, Any]:
    return {
        "type": "assistant",
        "parent_tool_use_id": parent,
        "message": {"id": "m", "role": "assistant", "content": list(blocks)},
        **extra,
    }


def _results(*blocks: dict[str, Any], parent: str | None = None) -> dict[str, Any]:
    return {"type": "user", "parent_tool_use_id": parent, "message": {"content": list(blocks)}}


CLAUDE: list[dict[str, Any]] = [
    {"type": "system", "subtype": "init", "session_id": SESSION, "model": "claude-x"},
    {
        "type": "system",
        "subtype": "api_retry",
        "attempt": 1,
        "max_retries": 10,
        "retry_delay_ms": 1500,
        "error_status": 529,
        "error": "overloaded",
    },
    _assistant({"type": "thinking", "thinking": "hmm"}, {"type": "text", "text": "Looking.\nNow."}),
    _assistant({"type": "tool_use", "id": "t1", "name": "Task", "input": {"description": "x"}}),
    _assistant(
        {"type": "tool_use", "id": "t2", "name": "Read", "input": {"file_path": "/a.py"}},
        parent="t1",
    ),
    _results({"type": "tool_result", "tool_use_id": "t2", "content": "one"}, parent="t1"),
    _results(
        {
            "type": "tool_result",
            "tool_use_id": "t1",
            "content": [{"type": "text", "text": "\n".join(f"line {n}" for n in range(6))}],
        }
    ),
    _assistant({"type": "tool_use", "id": "t3", "name": "Write", "input": {}}),
    _results({"type": "tool_result", "tool_use_id": "t3", "content": "no", "is_error": True}),
    {"type": "rate_limit_event", "rate_limit_info": {"status": "allowed"}},
    {
        "type": "rate_limit_event",
        "rate_limit_info": {
            "status": "rejected",
            "resetsAt": 1900000000,
            "rateLimitType": "five_hour",
        },
    },
    _assistant({"type": "text", "text": "API Error: 429 limit"}, error="rate_limit"),
    {
        "type": "result",
        "subtype": "success",
        "is_error": True,
        "api_error_status": 429,
        "num_turns": 1,
        "result": "API Error: 429 limit",
        "total_cost_usd": 0.25,
        "usage": {"input_tokens": 10, "output_tokens": 5},
        "permission_denials": [{"tool_name": "WebFetch", "tool_input": {"url": "http://x/"}}],
    },
]


def test_claude_events_become_text_calls_results_errors_and_the_outcome(tmp_path: Path) -> None:
    events = tmp_path / "t.events.jsonl"
    _write(events, *CLAUDE)

    lines = TaskLog(events, tmp_path / "t.log").lines({1: _row(1, "failed", 1)}, ended=True)

    assert lines == [
        "=== attempt 1, started 2027-01-15T08:01:40+00:00",
        f"· claude-x, session {SESSION}",
        "! API error (HTTP 529, overloaded): Claude Code retries (1 of 10) in 1.5s",
        "Looking.",
        "Now.",
        '→ Task: {"description": "x"}',
        "    → Read: /a.py",
        "      │ one",
        "  │ line 0",
        "  │ line 1",
        "  │ line 2",
        "  │ line 3",
        "  │ … 2 more lines",
        "→ Write",
        "  ✗ no",
        "! usage limit reached (five_hour); resets at 2030-03-17T17:46:40+00:00",
        "! API error (rate_limit): API Error: 429 limit",
        "! permission denied: WebFetch: http://x/",
        "= error (HTTP 429) · 1 turn · $0.2500 · 10 in / 5 out tokens",
        "=== attempt 1 failed (exit 1, 2.5s): it went wrong",
    ]


def test_codex_items_are_shown_once_and_an_error_is_not_repeated(tmp_path: Path) -> None:
    events = tmp_path / "t.events.jsonl"
    command = {"id": "i1", "type": "command_execution", "command": "ls\nmore", "exit_code": None}
    _write(
        events,
        {"type": "thread.started", "thread_id": "th-1"},
        {"type": "turn.started"},
        {"type": "item.completed", "item": {"id": "r", "type": "reasoning", "text": "think"}},
        {"type": "item.started", "item": command},
        {
            "type": "item.completed",
            "item": {**command, "exit_code": 2, "aggregated_output": "ls: nope\n"},
        },
        {
            "type": "item.completed",
            "item": {
                "id": "i2",
                "type": "file_change",
                "status": "completed",
                "changes": [{"path": "a.py", "kind": "update"}, {"path": "b.py", "kind": "add"}],
            },
        },
        {"type": "error", "message": "stream lost"},
        {"type": "turn.failed", "error": {"message": "stream lost"}},
    )

    lines = TaskLog(events, None).lines({1: _row(1, "failed", 1)}, ended=True)

    assert lines[1:-1] == [
        "· codex, thread th-1",
        "→ shell: ls …",
        "  ✗ exit 2",
        "  ✗ ls: nope",
        "→ apply_patch: update a.py, add b.py",
        "! stream lost",
        "= error",
    ]


def test_gemini_text_streamed_in_pieces_is_one_text(tmp_path: Path) -> None:
    events = tmp_path / "t.events.jsonl"
    say = {"type": "message", "role": "assistant", "delta": True}
    _write(
        events,
        {"type": "init", "session_id": SESSION, "model": "gemini-x"},
        {"type": "message", "role": "user", "content": "the prompt"},
        {**say, "content": "Hel"},
        {**say, "content": "lo."},
        {"type": "tool_use", "tool_name": "read_file", "parameters": {"absolute_path": "/a"}},
        {"type": "tool_result", "status": "error", "error": {"message": "no such file"}},
        {**say, "content": "Still streaming"},
    )
    log = TaskLog(events, None)

    running = log.lines({1: _row(1)}, ended=False, flush=False)
    assert running[1:] == [
        f"· gemini-x, session {SESSION}",
        "Hello.",
        "→ read_file: /a",
        "  ✗ no such file",
    ]
    assert log.lines({1: _row(1)}, ended=False)[-1] == "Still streaming"


def test_a_log_splits_at_the_runners_markers_only() -> None:
    text = "partial\n--- gadugi: attempt 2 ---\ntwo\n\n\n--- gadugi: attempt 3 ---\n"
    segments = split_log(text.split("\n")[:-1])
    assert [(s.number, s.lines) for s in segments] == [(1, ["partial"]), (2, ["two", ""]), (3, [])]


def test_an_attempt_without_a_result_shows_the_end_of_its_stderr(tmp_path: Path) -> None:
    events, log = tmp_path / "t.events.jsonl", tmp_path / "t.log"
    _write(events, CLAUDE[0], CLAUDE[0], CLAUDE[-1])
    log.write_text("".join(f"noise {n}\n" for n in range(12)) + "\n--- gadugi: attempt 2 ---\n")
    rows = {1: _row(1, "retrying", -9), 2: _row(2, "failed", 1)}

    lines = TaskLog(events, log).lines(rows, ended=True)

    first = lines[: lines.index("=== attempt 1 retrying (exit -9, 2.5s): it went wrong") + 1]
    assert first[2:-1] == ["! no result; the end of its stderr:"] + [
        f"  noise {n}" for n in range(2, 12)
    ]
    assert "! no result" not in "\n".join(lines[len(first) :])


def test_the_rendering_of_a_growing_file_only_appends(tmp_path: Path) -> None:
    """Line by line, with each attempt's record written as it starts (a moment after its
    agent may have written) and completed at its end, every rendering is the beginning of
    the final one."""
    second: list[dict[str, Any]] = [
        {"type": "init", "session_id": "s2", "model": "gemini-x"},
        {"type": "message", "role": "assistant", "delta": True, "content": "A"},
        {"type": "message", "role": "assistant", "delta": True, "content": "B"},
        {"type": "tool_use", "tool_name": "t", "parameters": {"command": "c"}},
        {"type": "tool_result", "status": "success", "output": "out"},
        {"type": "message", "role": "assistant", "delta": True, "content": "done"},
        {"type": "result", "status": "success", "stats": {"input_tokens": 1}},
    ]
    first: list[dict[str, Any] | str] = [
        {**second[0], "session_id": "s1"},
        second[1],
        '{"type": "message", "role": "assistant", "delta": true, "content": "x',  # half a line
        '"}\n',
    ]
    events, log = tmp_path / "t.events.jsonl", tmp_path / "t.log"
    growing = TaskLog(events, log)
    seen: list[list[str]] = []
    rows: dict[int, dict[str, Any]] = {}
    for n, piece in enumerate([*first, *second]):
        if n == 0:
            rows[1] = {**_row(1), "ended_at": None}
        if n == len(first):  # attempt 1 ends
            rows[1] = _row(1, "retrying", 1)
        if n == len(first) + 1:  # attempt 2's record lands just after its agent's first event
            rows[2] = {**_row(2), "ended_at": None}
        _write(events, piece)
        seen.append(growing.lines(rows, ended=False, flush=False))
    rows[2] = _row(2)
    final = TaskLog(events, log).lines(rows, ended=True)

    assert final[-1] == "=== attempt 2 completed (exit 0, 2.5s)"
    assert "Ax" in final and "AB" in final and "done" in final
    for lines in seen:
        assert final[: len(lines)] == lines
    assert seen[-1] != final  # the end added the last text and the footer


def test_follow_prints_each_line_once_and_stops_at_the_end() -> None:
    states = iter(
        [(["a"], False), (["a"], False), (["a", "b", "c"], False), (["a", "b", "c", "d"], True)]
    )
    printed: list[list[str]] = []
    naps: list[float] = []

    follow(lambda: next(states), printed.append, poll_s=0.5, sleep=naps.append)

    assert printed == [["a"], ["b", "c"], ["d"]]
    assert naps == [0.5, 0.5, 0.5]


def test_the_last_output_is_the_latest_text_or_tool_call_as_the_file_grows(
    tmp_path: Path,
) -> None:
    events = tmp_path / "t.events.jsonl"
    last = LastOutput(events)
    assert last.read() == ""  # nothing written yet
    _write(events, *CLAUDE[:3])
    assert last.read() == "Now."
    _write(events, *CLAUDE[3:7])
    assert last.read() == "→ Read: /a.py"  # a tool call; its results say nothing new
    _write(events, json.dumps(CLAUDE[7])[:20])  # half a line: not read yet
    assert last.read() == "→ Read: /a.py"
    _write(events, json.dumps(CLAUDE[7])[20:] + "\n")
    assert last.read() == "→ Write"


def test_a_structured_verdict_reads_as_its_outcome_and_summary_not_as_json() -> None:
    from gadugi.renderers import text_lines

    said = '{"outcome": "blocked", "summary": "The tests need a database.\\nNone is running."}'
    assert text_lines(said) == [
        "⚑ verdict: blocked",
        "The tests need a database.",
        "None is running.",
    ]
    # Other JSON, or an outcome the schema does not know, is text like any other.
    assert text_lines('{"outcome": "maybe", "summary": "x"}') == [
        '{"outcome": "maybe", "summary": "x"}'
    ]
    assert text_lines('{"a": 1}') == ['{"a": 1}']

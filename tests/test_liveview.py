"""What a person at a terminal sees: the live table and the summary, in a real
pseudo-terminal of 80 columns (rich's live view only draws on a terminal)."""

from __future__ import annotations

import fcntl
import itertools
import os
import re
import struct
import subprocess
import sys
import termios
from pathlib import Path
from typing import TYPE_CHECKING

from claude_fixtures import gadugi
from conftest import GIT_ENV, Repo
from gadugi.cli.liveview import fit

if TYPE_CHECKING:
    from claude_fixtures import ClaudeRig

WORDS = (
    "the migration could not finish because the database refused every connection "
    "while the schema lock was held by another deployment process"
)
# Colour sequences, and the cursor movements and erasures of a redraw, as rich writes them.
COLOUR = re.compile(r"\x1b\[[0-9;]*m")
MOVE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def _in_terminal(
    args: list[str], cwd: Path, columns: int, env: dict[str, str] | None = None
) -> str:
    """Run the CLI with a pty of ``columns`` as its terminal; everything it drew."""
    leader, follower = os.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    base = env or {**os.environ, **GIT_ENV}
    base = {k: v for k, v in base.items() if k not in ("COLUMNS", "LINES")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gadugi", *args],
        cwd=cwd,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={**base, "TERM": "xterm-256color"},
        start_new_session=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not data:
            break
        chunks.append(data)
    os.close(leader)
    proc.wait(timeout=120)
    return b"".join(chunks).decode("utf-8", "replace")


def _screen_lines(drawn: str) -> list[str]:
    """Each line as the terminal shows it (redraws split at carriage returns)."""
    text = MOVE.sub("\n", COLOUR.sub("", drawn))
    return [part for line in text.split("\n") for part in line.split("\r") if part.strip()]


def test_the_live_view_has_a_header_and_a_hint_and_fits_80_columns(repo: Repo) -> None:
    repo.shell_prompt(
        "explain-the-database-migration-failure-in-detail.md", f"echo {WORDS}\nexit 3"
    )
    repo.shell_prompt("quick.md", "sleep 0.5")
    repo.commit()
    drawn = _in_terminal(
        ["run", "--agent", "shell", "explain-the-database-migration-failure-in-detail", "quick"],
        repo.root,
        80,
    )
    lines = _screen_lines(drawn)
    assert lines, drawn
    too_wide = [line for line in lines if len(line) > 80]
    assert too_wide == [], too_wide
    orch = re.search(r"orch-\d{8}-\d{6}-[0-9a-f]{4}", drawn)
    assert orch is not None
    header = [line for line in lines if line.startswith(f"{orch.group()} · ")]
    assert header and "1 done" in header[-1] and "1 failed" in header[-1]
    assert any("gadugi status" in line and "Ctrl-C stops every task" in line for line in lines)
    # Lines were broken between words, or a word cut with an ellipsis: never inside one,
    # which would leave a word's start at one line's end and its rest at the next's start.
    known = {*WORDS.split(), "explain-the-database-migration-failure-in-detail"}
    for before, after in itertools.pairwise(lines):
        joined = before.split()[-1] + after.split()[0]
        assert joined not in known, (before, after)
    summary = "\n".join(line for line in lines if "the schema lock" in line or "refused" in line)
    assert "refused" in summary


def test_fit_wraps_between_words_and_cuts_a_word_too_long_for_a_line() -> None:
    assert fit("short", 80) == ["short"]
    assert fit("one two three four", 9, indent="  ") == ["one two", "  three", "  four"]
    long = "x" * 30
    assert fit(f"see {long} here", 12) == ["see", "xxxxxxxxxxx…", "here"]
    assert fit("a" * 100, None) == ["a" * 100]  # not a terminal: as it is


def test_claude_s_last_text_is_its_last_output_and_status_shows_branch_and_cost(
    claude_rig: ClaudeRig,
) -> None:
    (claude_rig.repo / "gadugi.toml").write_text('claude_model = "claude-sonnet-4-5"\n')
    prompt = claude_rig.repo / "prompts" / "alpha.md"
    prompt.parent.mkdir(exist_ok=True)
    prompt.write_text("# alpha\n\nCreate and commit a file.\n\n[[scenario:write_commit]]\n")
    claude_rig.git("add", "-A")
    claude_rig.git("commit", "-q", "-m", "prompts")
    drawn = _in_terminal(["run", "--agent", "claude", "alpha"], claude_rig.repo, 80, claude_rig.env)
    lines = _screen_lines(drawn)
    assert [line for line in lines if len(line) > 80] == []
    # The agent's events, not its empty .log: its last words are the row's last output.
    row = [line for line in lines if line.startswith("alpha ") and "completed" in line]
    assert row and "Done: committed hello.txt." in row[-1], lines
    header = [line for line in lines if line.startswith("orch-")]
    assert header and re.search(r" · 0 running, 1 done · \$0\.\d{3}$", header[-1]), header

    status = gadugi(claude_rig, "status")
    assert status.returncode == 0, status.stderr
    task = next(line for line in status.stdout.splitlines() if line.startswith("  alpha "))
    assert "branch gadugi/alpha-" in task and re.search(r"\$0\.\d{4}", task), status.stdout
    assert re.search(r"\$0\.\d{4} spent", status.stdout.splitlines()[0])

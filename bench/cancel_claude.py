"""Cancel during a tool call, with the real Claude Code CLI and an instant scripted model.

Runs ``tests/test_claude_control.py::test_cancel_during_a_tool_call_lets_no_commit_through``
``--tries`` times in a row (one orchestration per try, each cancelled while its agent's Bash
call waits on a gate; the script's next turn would commit) and prints how many tries let a
commit through or let the agent ask for another turn, and how long ``gadugi cancel`` took.
``--src DIR`` runs another gadugi source tree instead (e.g. an older checkout's ``src``), for
a before/after comparison. Needs what the test needs: npm (the pinned CLI is installed on
first use) and the test extra.

    .venv/bin/python bench/cancel_claude.py [--tries 20] [--src /path/to/src]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
TEST = "tests/test_claude_control.py::test_cancel_during_a_tool_call_lets_no_commit_through"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    parser.add_argument("--src", help="the gadugi source tree the runs use")
    args = parser.parse_args()
    env = {**os.environ, "GADUGI_CANCEL_TRIES": str(args.tries)}
    if args.src:
        env["GADUGI_CANCEL_SRC"] = str(Path(args.src).resolve())
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", TEST],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("CANCEL-FIGURES ")), None)
    if line is None:
        print(done.stdout[-3000:], done.stderr[-2000:], sep="\n")
        return 1
    figures = json.loads(line.split(" ", 1)[1])
    seconds = figures["cancel_seconds"]
    print(f"tries: {figures['tries']}")
    print(f"a commit after the cancel: {figures['committed']} of {figures['tries']}")
    print(f"the agent asked for another turn: {figures['asked_for_another_turn']}")
    print(
        f"gadugi cancel returned after: median {statistics.median(seconds):.2f} s, "
        f"max {max(seconds):.2f} s"
    )
    print("test:", "passed" if done.returncode == 0 else "FAILED")
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())

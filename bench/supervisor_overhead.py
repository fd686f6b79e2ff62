"""What the Python supervisor costs per agent, beside the /bin/sh one it replaced.

gadugi runs each agent under a supervisor that records how it ended. A shell cannot tell a
death by signal N from an exit with code 128+N, so the supervisor is a few lines of Python
(``procs.SUPERVISOR``). For ``--agents`` trivial agents (``true``), one after another:

1. the time ``procs.spawn`` holds the caller (the loop) for, per agent;
2. the time from spawn until the result file is there, per agent;
3. the resident memory of one supervisor while its agent runs;

each for the Python supervisor and for the shell one (the old script, inlined here).
    .venv/bin/python bench/supervisor_overhead.py [--agents 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import psutil

from gadugi import procs

SHELL = (
    'result=$1; shift; "$@"; code=$?; '
    'printf \'{"exit_code": %d, "ended_at": %s}\\n\' "$code" "$(date +%s.%N)" > "$result.tmp" '
    '&& mv -f "$result.tmp" "$result"; exit "$code"'
)


def python_spawn(work: Path, n: int, argv: list[str]) -> procs.Child:
    log = work / "log"
    return procs.spawn(argv, work, dict(os.environ), log, log, work / f"{n}.json")


def shell_spawn(work: Path, n: int, argv: list[str]) -> procs.Child:
    result = work / f"{n}.json"
    with (work / "log").open("ab") as log:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", SHELL, "gadugi-supervisor", str(result), *argv],
            cwd=work,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    return procs.Child(popen.pid, time.time(), result, popen=popen)


def measure(kind: str, work: Path, agents: int) -> dict[str, float]:
    spawn = python_spawn if kind == "python" else shell_spawn
    held, total = [], []
    for n in range(agents):
        begun = time.perf_counter()
        child = spawn(work, n, ["true"])
        held.append(time.perf_counter() - begun)
        while not child.result_file.exists():
            time.sleep(0.0005)
        total.append(time.perf_counter() - begun)
        child.wait()
    child = spawn(work, agents, ["sleep", "2"])
    time.sleep(0.5)
    rss_mb = psutil.Process(child.pid).memory_info().rss / 2**20
    procs.terminate([child], 1)
    return {
        "spawn_call_ms": 1000 * statistics.median(held),
        "spawn_to_result_ms": 1000 * statistics.median(total),
        "supervisor_rss_mb": rss_mb,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="gadugi-bench-supervisor-") as name:
        rows = {kind: measure(kind, Path(name), args.agents) for kind in ("shell", "python")}
    print(f"{'median of ' + str(args.agents):>18}  {'shell':>8}  {'python':>8}")
    for key in rows["shell"]:
        print(f"{key:>18}  {rows['shell'][key]:8.1f}  {rows['python'][key]:8.1f}")
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

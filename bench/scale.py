"""Benchmark 4: 1,000 tasks at max_parallel 32: the orchestrator's memory, CPU, status.

``gadugi run`` with N tasks of d seconds each (the shell agent runs ``sleep d``). While
it runs, a thread polls the orchestrator process with psutil every 0.1 s for its
resident memory (the peak is reported) and CPU time (its own, not its children's;
git, bash and the agents are reported separately from wait4's rusage), and the main
thread times ``gadugi status`` (and ``gadugi status --json``) several times mid-run,
each a fresh process, as a user in another terminal would.

Targets (issue): orchestrator peak RSS <= 150 MB; ``gadugi status`` < 100 ms.

Needs: gadugi in the venv running this script (with psutil), git, bash.
Default (the issue's sizes; a few minutes, bounded by --timeout):
    .venv/bin/python bench/scale.py
Smoke run (< 20 s):  .venv/bin/python bench/scale.py --tasks 40 --parallel 8 --duration 0.5
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import benchkit as bk

TARGET_RSS_MB, TARGET_STATUS_MS = 150.0, 100.0


@dataclass
class Poll:
    pid: int
    peak_rss: int = 0
    cpu_s: float = 0.0
    samples: int = 0
    rss_trace: list[tuple[float, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        import psutil

        try:
            proc = psutil.Process(self.pid)
        except psutil.Error:
            return
        t0 = time.monotonic()
        last_trace = -10.0
        while not self.stop.is_set():
            try:
                with proc.oneshot():
                    rss = proc.memory_info().rss
                    times = proc.cpu_times()
            except psutil.Error:
                return
            self.samples += 1
            self.peak_rss = max(self.peak_rss, rss)
            self.cpu_s = times.user + times.system
            now = time.monotonic() - t0
            if now - last_trace >= 5:
                self.rss_trace.append((round(now, 1), round(rss / 2**20, 1)))
                last_trace = now
            self.stop.wait(0.1)


def time_status(exe: Path, repo: Path, as_json: bool) -> float | None:
    argv = [str(exe), "status", "--project-root", str(repo)] + (["--json"] if as_json else [])
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=60, check=False, env=bk.gadugi_env()
    )
    wall = time.perf_counter() - t0
    return wall if proc.returncode == 0 else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1000, help="tasks (default 1000)")
    parser.add_argument("--parallel", type=int, default=32, help="max_parallel (default 32)")
    parser.add_argument("--duration", type=float, default=1.0, help="sleep per task (1 s)")
    parser.add_argument("--status-every", type=float, default=3.0, help="seconds (default 3)")
    parser.add_argument("--timeout", type=float, default=900, help="stop gadugi after (s)")
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    exe = bk.require_gadugi()
    n, p, d = args.tasks, args.parallel, args.duration
    ideal = bk.ceil_div(n, p) * d

    with bk.workdir(args.workdir, args.keep, "gadugi-bench-scale-") as work:
        repo = work / "repo"
        names = bk.make_repo(repo, n, f"sleep {d:g}")
        db = repo / ".gadugi" / "state.db"
        bk.log(f"{n} tasks of {d:g}s at P={p} (ideal {ideal:.1f}s); timeout {args.timeout:g}s")
        argv_run = [str(exe), "run", "--project-root", str(repo), "--agent", "shell"]
        argv_run += ["--max-parallel", str(p), "--json", "--quiet", "--", *names]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            argv_run,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=bk.gadugi_env(),
        )
        poll = Poll(proc.pid)
        poller = threading.Thread(target=poll.run, daemon=True)
        poller.start()
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True)  # type: ignore[union-attr]
        reader.start()
        status_text: list[float] = []
        status_json: list[float] = []
        timed_out = False
        usage = None
        next_status = time.perf_counter() + args.status_every
        while True:
            # Reap it ourselves, for the rusage of everything it ran (git, bash, agents).
            pid, code, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                proc.returncode = os.waitstatus_to_exitcode(code)
                break
            usage = None
            now = time.perf_counter()
            if now - t0 > args.timeout:
                timed_out = True
                bk.log("timeout: stopping gadugi (SIGTERM)")
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                break
            if now >= next_status and db.exists():
                as_json = len(status_json) < len(status_text)
                took = time_status(exe, repo, as_json)
                if took is not None and not timed_out:
                    (status_json if as_json else status_text).append(took)
                next_status = time.perf_counter() + args.status_every
            time.sleep(0.05)
        wall = time.perf_counter() - t0
        poll.stop.set()
        poller.join()
        reader.join(10)
        result: dict[str, Any] = {}
        if not timed_out and out and out[0].strip():
            import json

            result = json.loads(out[0])
    peak_mb = poll.peak_rss / 2**20
    figures: dict[str, Any] = {
        "tasks": n,
        "max_parallel": p,
        "duration_s": d,
        "ideal_s": ideal,
        "wall_s": wall,
        "timed_out": timed_out,
        "execution_time_s": result.get("execution_time_seconds"),
        "successful_tasks": result.get("successful_tasks"),
        "parallel_speedup": result.get("parallel_speedup"),
        "efficiency": ideal / wall,
        "peak_rss_mb": peak_mb,
        "rss_trace_mb": poll.rss_trace,
        "orchestrator_cpu_s": poll.cpu_s,
        "children_cpu_s": (usage.ru_utime + usage.ru_stime - poll.cpu_s) if usage else None,
        "status_ms": [1000 * s for s in status_text],
        "status_json_ms": [1000 * s for s in status_json],
    }

    def stats(xs: list[float]) -> str:
        if not xs:
            return "no samples"
        return (
            f"median {1000 * statistics.median(xs):.0f} ms, max {1000 * max(xs):.0f} ms "
            f"({len(xs)} samples)"
        )

    print(f"## {n} tasks of {d:g}s at max_parallel {p}\n")
    done = f"{result.get('successful_tasks', '?')}/{n} completed"
    print(
        bk.markdown_table(
            ["figure", "value"],
            [
                ["wall (ideal)", f"{wall:.1f} s ({ideal:.1f} s){' TIMED OUT' * timed_out}"],
                ["tasks", done],
                ["efficiency (ideal / wall)", f"{ideal / wall:.3f}"],
                ["parallel_speedup (gadugi's)", f"{result.get('parallel_speedup', '?')}"],
                ["orchestrator peak RSS", f"{peak_mb:.1f} MB"],
                ["orchestrator CPU time (user+sys)", f"{poll.cpu_s:.1f} s "
                 f"({100 * poll.cpu_s / wall:.0f}% of one core)"],
                ["children's CPU time (git, bash, agents)",
                 f"{figures['children_cpu_s']:.1f} s" if usage else "?"],
                ["gadugi status", stats(status_text)],
                ["gadugi status --json", stats(status_json)],
            ],
        )
    )  # fmt: skip
    all_status = status_text + status_json
    rss_ok = peak_mb <= TARGET_RSS_MB
    status_ok = bool(all_status) and max(all_status) * 1000 < TARGET_STATUS_MS
    med_ok = bool(all_status) and statistics.median(all_status) * 1000 < TARGET_STATUS_MS
    figures["target"] = {"rss_met": rss_ok, "status_max_met": status_ok, "status_median": med_ok}
    print(f"\ntarget peak RSS <= {TARGET_RSS_MB:g} MB: {bk.verdict(rss_ok)}")
    print(f"target status < {TARGET_STATUS_MS:g} ms (every sample): {bk.verdict(status_ok)}")
    bk.emit("scale", figures, args.json_out)
    return 1 if timed_out else 0


if __name__ == "__main__":
    sys.exit(main())

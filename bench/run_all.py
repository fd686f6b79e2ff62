"""Run every benchmark in ``bench/`` one after another and summarise the targets.

Each benchmark's full report is printed as it finishes, and its figures go to
``<out>/<name>.json``; the summary at the end puts the issue's targets side by side.
``--quick`` uses small sizes (about a minute in all) to check that everything runs.

Needs: what each benchmark needs (see their docstrings): gadugi in the venv running
this script, git, bash, and for ``vs_gnu_parallel`` GNU parallel and flock.
    .venv/bin/python bench/run_all.py [--quick] [--out DIR] [--only NAME,...]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import benchkit as bk

FULL: dict[str, list[str]] = {
    "parallel_efficiency": [],
    "per_task_overhead": [],
    "vs_gnu_parallel": [],
    "scale": [],
    "repo_size": [],
    "monitor_write": [],
}
QUICK: dict[str, list[str]] = {
    "parallel_efficiency": ["--tasks", "4", "--duration", "0.5", "--parallel", "1,4"],
    "per_task_overhead": ["--tasks", "20"],
    "vs_gnu_parallel": ["--tasks", "20", "--rounds", "2"],
    "scale": ["--tasks", "40", "--parallel", "8", "--duration", "0.5", "--status-every", "1"],
    "repo_size": ["--files", "250,2000", "--tasks", "4"],
    "monitor_write": ["--repeat", "20"],
}


def summary(out: Path) -> list[list[object]]:
    def load(name: str) -> dict[str, Any] | None:
        path = out / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    rows: list[list[object]] = []
    if (eff := load("parallel_efficiency")) and "target" in eff:
        rows.append(
            [
                "efficiency, 16 x 2 s at P=8",
                ">= 0.97",
                f"{eff['target']['efficiency']:.3f}",
                bk.verdict(eff["target"]["met"]),
            ]
        )
    elif eff:
        last = eff["rows"][-1]
        what = f"{last['tasks']} x {last['duration_s']:g} s at P={last['max_parallel']}"
        rows.append([f"efficiency, {what}", "-", f"{last['efficiency']:.3f}", "-"])
    if task := load("per_task_overhead"):
        rows.append(
            [
                f"fixed cost per task ({task['tasks']} trivial tasks)",
                f"raw git {task['raw_git']['total_ms_mean']:.0f} ms",
                f"{task['cli_ms_per_task']:.0f} ms",
                "-",
            ]
        )
    if par := load("vs_gnu_parallel"):
        rows.append(
            [
                f"gadugi / GNU parallel ({par['tasks']} tasks)",
                "<= 1.2x",
                f"{par['ratio']:.2f}x",
                bk.verdict(par["target"]["met"]),
            ]
        )
    if sc := load("scale"):
        rows.append(
            [
                f"peak RSS ({sc['tasks']} tasks, P={sc['max_parallel']})",
                "<= 150 MB",
                f"{sc['peak_rss_mb']:.0f} MB",
                bk.verdict(sc["target"]["rss_met"]),
            ]
        )
        every = sc["status_ms"] + sc["status_json_ms"]
        rows.append(
            [
                "gadugi status during that run",
                "< 100 ms",
                f"max {max(every):.0f} ms" if every else "no samples",
                bk.verdict(sc["target"]["status_max_met"]),
            ]
        )
    if size := load("repo_size"):
        for r in size["rows"]:
            rows.append(
                [
                    f"worktree add+remove, {r['files']} files",
                    f"raw git {r['raw_add_ms'] + r['raw_remove_ms']:.0f} ms",
                    f"{r['gadugi_add_ms'] + r['gadugi_remove_ms']:.0f} ms",
                    "-",
                ]
            )
    if (mon := load("monitor_write")) and len(mon["rows"]) >= 2:
        few, many = mon["rows"][0], mon["rows"][-1]
        rows.append(
            [
                f"monitoring write, {many['past_orchestrations']} vs "
                f"{few['past_orchestrations']} past orchestrations (CPU)",
                "no growth",
                f"{many['cpu_median_ms']:.1f} vs {few['cpu_median_ms']:.1f} ms",
                "-",
            ]
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, ~1 minute")
    parser.add_argument("--out", type=Path, default=Path("bench-results"), help="JSON here")
    parser.add_argument("--only", help="comma-separated benchmark names")
    parser.add_argument("--workdir", type=Path, help="passed to every benchmark")
    args = parser.parse_args(argv)
    plans = QUICK if args.quick else FULL
    names = args.only.split(",") if args.only else list(plans)
    unknown = [n for n in names if n not in plans]
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(unknown)} (known: {', '.join(plans)})")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        extra = [*plans[name], "--json-out", str(args.out / f"{name}.json")]
        if args.workdir:
            extra += ["--workdir", str(args.workdir)]
        print(f"\n# {name}\n", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, str(bk.HERE / f"{name}.py"), *extra])
        bk.log(f"{name}: exit {code} after {time.perf_counter() - t0:.0f}s")
        if code != 0:
            failed.append(name)
    print("\n# summary\n")
    print(bk.markdown_table(["figure", "target", "measured", ""], summary(args.out)))
    if failed:
        print(f"\nfailed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""Shared helpers for the benchmarks in ``bench/``: repositories, timing, reporting.

Every benchmark makes its own throwaway git repositories under a temporary directory
(``--workdir`` to choose where; removed afterwards unless ``--keep``), so it never
touches the repository it is run from.

Needs: Linux, ``git``, ``bash``, and gadugi installed in the Python that runs the
script (``.venv/bin/python bench/<script>.py``). Scripts that need more say so and
check for it (see ``require_tools`` and ``require_modules``).
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import json
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

LOAD_AT_START = os.getloadavg()
HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C"}


# -- requirements ---------------------------------------------------------------------


def require_tools(*tools: str, hint: str = "") -> None:
    """Exit 2 with a clear message when a command-line tool is missing."""
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        extra = f"\n  {hint}" if hint else ""
        sys.exit(f"this benchmark needs {', '.join(missing)} on PATH{extra}")


def require_modules(*modules: str, hint: str = "") -> None:
    """Exit 2 with a clear message when a Python module is missing."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        extra = f"\n  {hint}" if hint else ""
        sys.exit(
            f"this benchmark needs the Python module(s) {', '.join(missing)} "
            f"in {sys.executable}{extra}"
        )


def gadugi_env() -> dict[str, str]:
    """The environment for ``gadugi`` processes: a warm bytecode cache, as installed.

    Some environments set PYTHONDONTWRITEBYTECODE, which makes every ``gadugi`` start
    compile its modules again (~45 ms here). The benchmarks keep Python's bytecode
    cache under ``~/.cache/gadugi-bench/pycache`` instead (PYTHONPYCACHEPREFIX), so no
    file is written next to the sources; set GADUGI_BENCH_COLD=1 to leave it all off.
    """
    env = dict(os.environ)
    if env.get("GADUGI_BENCH_COLD") == "1":
        return env
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    cache = Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "gadugi-bench/pycache"
    env.setdefault("PYTHONPYCACHEPREFIX", str(cache))
    return env


def require_gadugi() -> Path:
    """The ``gadugi`` executable next to this Python (the venv), checked to run."""
    cores = os.cpu_count() or 1
    if LOAD_AT_START[0] > 0.5 * cores:
        log(
            f"note: load average {LOAD_AT_START[0]:.1f} on {cores} cores; other work on this "
            "machine will make the figures noisy"
        )
    require_modules(
        "gadugi",
        "psutil",
        hint="run the script with the project's venv: .venv/bin/python bench/<script>.py",
    )
    exe = Path(sys.executable).parent / "gadugi"
    if not exe.exists():
        found = shutil.which("gadugi")
        if found is None:
            sys.exit(f"no gadugi executable next to {sys.executable} or on PATH")
        exe = Path(found)
    require_tools("git", "bash")
    # Warm the bytecode cache (the command line imports every module).
    warm = subprocess.run(
        [str(exe), "--version"], env=gadugi_env(), capture_output=True, check=False
    )
    if warm.returncode != 0:
        sys.exit(f"{exe} --version failed: {warm.stderr.decode(errors='replace')[-500:]}")
    return exe


# -- arguments ------------------------------------------------------------------------


def common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", type=Path, help="where to make the temporary repositories")
    parser.add_argument("--keep", action="store_true", help="keep the repositories afterwards")
    parser.add_argument("--json-out", type=Path, help="also write the figures to this JSON file")


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


FS_PROBE: dict[str, Any] = {}


def probe_filesystem(directory: Path, count: int = 300) -> None:
    """Time creating and deleting small files where the repositories live.

    A worktree add writes every tracked file, so this bounds what git can do here.
    """
    probe = directory / ".fs-probe"
    probe.mkdir()
    t0 = time.perf_counter()
    for i in range(count):
        (probe / f"f{i}").write_bytes(b"x" * 200)
    t1 = time.perf_counter()
    shutil.rmtree(probe)
    t2 = time.perf_counter()
    FS_PROBE.update(
        {
            "directory": str(directory),
            "create_ms_per_file": round(1000 * (t1 - t0) / count, 3),
            "delete_ms_per_file": round(1000 * (t2 - t1) / count, 3),
        }
    )


@contextmanager
def workdir(base: Path | None, keep: bool, prefix: str) -> Iterator[Path]:
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=base)).resolve()
    probe_filesystem(path)
    try:
        yield path
    finally:
        if keep:
            print(f"kept {path}", file=sys.stderr)
        else:
            shutil.rmtree(path, ignore_errors=True)


# -- repositories ---------------------------------------------------------------------


def git(args: Sequence[str], cwd: Path) -> str:
    """Run git the way gadugi does (no shell, no terminal, captured output)."""
    proc = subprocess.run(
        ["git", *args],
        cwd=cwd,
        env={**os.environ, **GIT_ENV},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {proc.stderr.strip()}")
    return proc.stdout


def shell_prompt(task: int, script: str) -> str:
    return f"# Task {task}\n\nA benchmark task for the shell agent.\n\n```sh\n{script}\n```\n"


def make_repo(
    path: Path,
    tasks: int,
    script: str,
    *,
    extra_files: int = 0,
    file_bytes: int = 200,
) -> list[str]:
    """A fresh repository with ``tasks`` shell-agent prompts (and ``extra_files`` files).

    The prompts are left untracked, so every task's worktree holds the same few files
    however many tasks there are (``repo_size.py`` varies the repository's size on
    purpose). Returns the prompt file names, in order, as ``gadugi run`` takes them.
    """
    path.mkdir(parents=True)
    prompts = path / "prompts"
    prompts.mkdir()
    width = max(4, len(str(tasks)))
    names = []
    for n in range(1, tasks + 1):
        name = f"t{n:0{width}d}.md"
        (prompts / name).write_text(shell_prompt(n, script), encoding="utf-8")
        names.append(name)
    (path / "README.md").write_text("# benchmark repository\n", encoding="utf-8")
    if extra_files:
        per_dir = 100
        line = "x = 1  # generated file for the repository-size benchmark\n"
        body = (line * (file_bytes // len(line) + 1))[:file_bytes]
        for i in range(extra_files):
            d = path / "src" / f"pkg{i // per_dir:04d}"
            if i % per_dir == 0:
                d.mkdir(parents=True)
            (d / f"mod{i % per_dir:03d}.py").write_text(body, encoding="utf-8")
    git(["init", "--quiet", "-b", "main"], path)
    git(["config", "user.name", "bench"], path)
    git(["config", "user.email", "bench@localhost"], path)
    (path / ".gitignore").write_text("*.pyc\n", encoding="utf-8")
    git(["add", "-A", "--", ":!prompts"], path)
    git(["commit", "--quiet", "-m", "benchmark repository"], path)
    return names


def raw_git_worktree_cost(
    repo: Path, count: int, tag: str = "raw", batch: int = 1
) -> dict[str, float]:
    """``git worktree add -b`` then ``git worktree remove`` per task, one at a time.

    What a minimal tool must pay per task; mean and median milliseconds of each. With
    ``batch`` > 1, ``batch`` worktrees are added, then removed (as P slots would).
    """
    adds, removes = [], []
    wt_dir = repo / ".worktrees-raw"
    wt_dir.mkdir(exist_ok=True)
    for first in range(0, count, batch):
        paths = [wt_dir / f"{tag}-{i}" for i in range(first, min(count, first + batch))]
        for i, path in enumerate(paths, first):
            t0 = time.perf_counter()
            git(["worktree", "add", "--quiet", "-b", f"{tag}/{i}", str(path), "HEAD"], repo)
            adds.append(time.perf_counter() - t0)
        for path in paths:
            t0 = time.perf_counter()
            git(["worktree", "remove", str(path)], repo)
            removes.append(time.perf_counter() - t0)
    return {
        "count": count,
        "add_ms_mean": 1000 * statistics.fmean(adds),
        "add_ms_median": 1000 * statistics.median(adds),
        "remove_ms_mean": 1000 * statistics.fmean(removes),
        "remove_ms_median": 1000 * statistics.median(removes),
        "total_ms_mean": 1000 * (statistics.fmean(adds) + statistics.fmean(removes)),
    }


def write_shell_prompt(
    repo: Path,
    name: str,
    script: str,
    *,
    touches: str | None = None,
    depends_on: str | None = None,
    text: str = "",
) -> str:
    """``prompts/<name>.md`` for the shell agent: front matter, ``text``, then ``script``
    as its sh block. Returns the file's name."""
    front = [f"touches: [{touches}]"] if touches else []
    front += [f"depends_on: [{depends_on}]"] if depends_on else []
    head = f"---\n{chr(10).join(front)}\n---\n" if front else ""
    body = f"# {name}\n\n{text}\n\n```sh\n{script.rstrip()}\n```\n"
    (repo / "prompts" / f"{name}.md").write_text(head + body, encoding="utf-8")
    return f"{name}.md"


# -- running gadugi -------------------------------------------------------------------


@dataclass
class GadugiRun:
    wall_s: float  # the whole `gadugi run` process, start to exit
    exit_code: int
    result: dict[str, Any]


def run_gadugi_cli(
    exe: Path,
    repo: Path,
    names: Sequence[str],
    max_parallel: int,
    *,
    timeout_s: float,
    extra: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    all_must_complete: bool = True,
) -> GadugiRun:
    """``gadugi run --agent shell --json --quiet``, timed from spawn to exit; ``env`` is
    added to gadugi's environment. Raises unless every task completed, where asked."""
    argv = [
        str(exe),
        "run",
        "--project-root",
        str(repo),
        "--agent",
        "shell",
        "--max-parallel",
        str(max_parallel),
        "--json",
        "--quiet",
        *extra,
        "--",
        *names,
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        env={**gadugi_env(), **(env or {})},
    )
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"gadugi run exited {proc.returncode}: {proc.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(proc.stdout)
    if all_must_complete and result["successful_tasks"] != result["total_tasks"]:
        raise RuntimeError(f"not every task completed: {result['error_summary'][:5]}")
    return GadugiRun(wall, proc.returncode, result)


# -- the phase split ------------------------------------------------------------------

# (file, function) pairs inside gadugi whose cumulative time makes one phase. Time in a
# phase function is counted once, from its callers outside every phase (so registry
# reads made by the monitor count as monitoring, not as registry).
PHASES: dict[str, set[tuple[str, str]]] = {
    "planning (read prompts, plan)": {("coordinator.py", "prepare")},
    "worktree add (git)": {("worktrees.py", "create")},
    "worktree remove (git)": {("worktrees.py", "remove")},
    "other git calls": {
        ("worktrees.py", n)
        for n in ("branch_exists", "commits_ahead", "is_clean", "merge", "resolve_commit")
    },
    "prompt and script files": {("runner.py", "_prepare_attempt")},
    "spawn agent": {("procs.py", "spawn")},
    "exit checks (poll, process group)": {
        ("procs.py", n) for n in ("stopped", "terminate", "signal_tree")
    }
    | {("subprocess.py", "poll")},
    "registry (SQLite)": {
        ("registry.py", n)
        for n in (
            "create_orchestration",
            "finish_orchestration",
            "orchestration",
            "add_tasks",
            "update_task",
            "update_tasks",
            "tasks",
            "cancel_requests",
            "start_attempt",
            "end_attempt",
            "__init__",
            "close",
        )
    },
    "monitoring files": {
        ("monitoring.py", "write"),
        ("monitoring.py", "maybe_write"),
        ("monitoring.py", "write_json_atomic"),
    },
    "observe (heartbeat, psutil)": {("runner.py", "observe")},
    "scheduling": {("schedule.py", "next_to_start"), ("schedule.py", "doomed")},
    "idle (sleep between ticks)": {("~", "<built-in method time.sleep>")},
}
_NOT_A_CALLER = {("monitoring.py", ""), ("registry.py", ""), ("coordinator.py", "<lambda>")}


def _key(func: tuple[str, int, str]) -> tuple[str, str]:
    filename, _, name = func
    return (Path(filename).name if filename != "~" else "~", name)


def phase_split(stats: pstats.Stats, total_s: float) -> dict[str, float]:
    """Seconds per phase (plus "other") from a cProfile run of an orchestration."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    member = {fn: phase for phase, fns in PHASES.items() for fn in fns}
    out = dict.fromkeys(PHASES, 0.0)
    for func, (_, _, _, _, callers) in table.items():
        phase = member.get(_key(func))
        if phase is None:
            continue
        for caller, (_, _, _, ct) in callers.items():
            ckey = _key(caller)
            if ckey in member or (ckey[0], "") in _NOT_A_CALLER or ckey in _NOT_A_CALLER:
                continue
            if phase.startswith("idle") and ckey != ("runner.py", "run"):
                continue  # only the loop's own sleeps are idle time
            out[phase] += ct
    out["other (loop, Python)"] = max(0.0, total_s - sum(out.values()))
    return out


@dataclass
class ProfiledRun:
    wall_s: float
    phases_s: dict[str, float]
    result: Any
    stats: pstats.Stats | None = None
    top: list[tuple[str, float, float, int]] = field(default_factory=list)
    git_calls: int = 0  # git processes gadugi started (worktrees.run_git)


def orchestrate_in_process(
    repo: Path, names: Sequence[str], max_parallel: int, *, profile: bool
) -> ProfiledRun:
    """Run through the Python API; with ``profile``, under cProfile, split by phase."""
    from gadugi import OrchestrationConfig, OrchestratorCoordinator

    config = OrchestrationConfig(agent="shell", max_parallel_tasks=max_parallel)
    coordinator = OrchestratorCoordinator(config, project_root=repo)
    profiler = cProfile.Profile() if profile else None
    t0 = time.perf_counter()
    if profiler is not None:
        profiler.enable()
    try:
        result = coordinator.orchestrate(list(names))
    finally:
        if profiler is not None:
            profiler.disable()
    wall = time.perf_counter() - t0
    if result.successful_tasks != result.total_tasks:
        raise RuntimeError(f"not every task completed: {result.error_summary[:5]}")
    if profiler is None:
        return ProfiledRun(wall, {}, result)
    stats = pstats.Stats(profiler)
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    git_calls = sum(
        v[1] for k, v in table.items() if k[2] == "run_git" and k[0].endswith("worktrees.py")
    )
    return ProfiledRun(
        wall, phase_split(stats, wall), result, stats, top_functions(stats), git_calls
    )


def top_functions(stats: pstats.Stats, limit: int = 25) -> list[tuple[str, float, float, int]]:
    """gadugi's own functions by cumulative time: (name, cumulative s, own s, calls)."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    rows = []
    for (filename, line, name), (_, nc, tt, ct, _) in table.items():
        if "/gadugi/" in filename or "sqlite3" in name or name.startswith("<built-in"):
            where = f"{Path(filename).name}:{line}:{name}" if filename != "~" else name
            rows.append((where, ct, tt, nc))
    rows.sort(key=lambda r: -r[1])
    return rows[:limit]


# -- machine and reporting ------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    git_version = git(["--version"], Path.cwd()).strip()
    try:
        import gadugi

        gadugi_version = gadugi.__version__
    except ImportError:
        gadugi_version = "?"
    commit = "?"
    try:
        commit = git(["rev-parse", "--short", "HEAD"], PROJECT).strip()
        dirty = git(["--no-optional-locks", "status", "--porcelain", "--", "src"], PROJECT)
        if dirty.strip():
            commit += " + uncommitted changes in src/"
    except (RuntimeError, OSError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_gib, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "git": git_version,
        "gadugi": gadugi_version,
        "gadugi_commit": commit,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "filesystem": FS_PROBE,
        "load_average_at_start": [round(x, 2) for x in LOAD_AT_START],
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
    }


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    def cell(v: object) -> str:
        if isinstance(v, float):
            return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def emit(name: str, figures: dict[str, Any], json_out: Path | None) -> None:
    doc = {"benchmark": name, "machine": machine(), **figures}
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"figures written to {json_out}", file=sys.stderr)


def verdict(ok: bool) -> str:
    return "met" if ok else "NOT met"


def ceil_div(a: int, b: int) -> int:
    return math.ceil(a / b)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)

"""Time ``gadugi.planning.plan.analyze``: 1,000 prompts against a 20,000-file repository.

Run: ``.venv/bin/python bench/plan_bench.py`` (``--help`` for sizes, ``--profile``).

The repository is generated in a temporary folder (no git: the file list is passed in,
as the coordinator passes ``git ls-files``): a src-layout package of modules importing
one another absolutely and relatively, tests importing those modules, Markdown docs,
data files and CI configuration. The prompts mention modules, tests, docs and directories,
declare globs, and depend on earlier prompts in front matter or ``Depends on:`` lines.
Every repetition builds its own index, so each parses the Python it needs afresh; the
operating system's file cache is warm after the first. Prints a Markdown table row.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import random
import resource
import statistics
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from gadugi.planning.plan import Plan, analyze
from gadugi.planning.prompts import read_prompt
from gadugi.tasks import Prompt

PACKAGES, SUBPACKAGES = 40, 10
_PROSE = (
    "the a of to and in that is for it with as on be this by from are we should when "
    "user form request handler value cache retry timeout session token page layout "
    "improve make sure keep behaviour existing callers error message logging output"
)
WORDS = _PROSE.split()


def generate_repository(root: Path, n_files: int, rng: random.Random) -> list[str]:
    """Write the files; returns their repo-relative paths."""
    modules_per_sub = max(1, int(n_files * 0.4) // (PACKAGES * SUBPACKAGES))
    modules = [
        (p, s, m)
        for p in range(PACKAGES)
        for s in range(SUBPACKAGES)
        for m in range(modules_per_sub)
    ]
    files: dict[str, str] = {"src/proj/__init__.py": ""}
    for p in range(PACKAGES):
        files[f"src/proj/pkg{p}/__init__.py"] = ""
        for s in range(SUBPACKAGES):
            files[f"src/proj/pkg{p}/sub{s}/__init__.py"] = f'"""Subpackage {s}."""\n'
    for p, s, m in modules:
        files[f"src/proj/pkg{p}/sub{s}/mod{m}.py"] = _module_source(p, s, m, modules, rng)
    n_tests = int(n_files * 0.2)
    for i in range(n_tests):
        targets = rng.sample(modules, 2)
        lines = [f"from proj.pkg{p}.sub{s} import mod{m}" for p, s, m in targets]
        body = "\n".join(lines) + "\n\n\ndef test_it() -> None:\n    assert True\n"
        files[f"tests/pkg{i % PACKAGES}/test_case{i}.py"] = body
    files[".github/workflows/ci.yml"] = "on: [push]\n"
    files["pyproject.toml"] = "[project]\nname = 'proj'\n"
    files["README.md"] = "# proj\n"
    i = 0
    while len(files) < n_files:
        if i % 2 == 0:
            files[f"docs/pkg{i % PACKAGES}/page-{i}.md"] = f"# Page {i}\n"
        else:
            files[f"assets/data-{i % 50}/file.{i}.json"] = "{}\n"
        i += 1
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(files)


def _module_source(
    p: int, s: int, m: int, modules: list[tuple[int, int, int]], rng: random.Random
) -> str:
    # Like real code, most imports stay near home: a sibling, a module of the same
    # package, one of a few shared core modules, and now and then another package.
    per_sub = len(modules) // (PACKAGES * SUBPACKAGES)
    lines = ["import os", "import json", "from typing import Any"]
    if m:
        lines.append(f"from . import mod{rng.randrange(m)}")
    lines.append(f"from ..sub{(s + 1) % SUBPACKAGES} import mod{rng.randrange(per_sub)}")
    lines.append(f"from proj.pkg{p % 4}.sub0 import mod{rng.randrange(min(per_sub, 3))}")
    if rng.random() < 0.3:
        q, t, n = rng.choice(modules)
        lines.append(f"import proj.pkg{q}.sub{t}.mod{n}")
    for k in range(20):
        lines += [
            "",
            "",
            f"def function_{k}(value: Any) -> Any:",
            f'    """Step {k} of module {p}.{s}.{m}."""',
            "    if value is None:",
            "        return os.environ.get('X')",
            "    return json.dumps({'v': value})",
        ]
    return "\n".join(lines) + "\n"


def generate_prompts(
    root: Path, files: list[str], n_prompts: int, rng: random.Random
) -> list[Prompt]:
    modules = [f for f in files if f.startswith("src/") and "/mod" in f]
    tests = [f for f in files if f.startswith("tests/")]
    docs = [f for f in files if f.startswith("docs/")]
    prompt_dir = root / "prompts"
    prompt_dir.mkdir()
    prompts = []
    for i in range(n_prompts):
        meta: dict[str, object] = {}
        if rng.random() < 0.3:
            p, s = rng.randrange(PACKAGES), rng.randrange(SUBPACKAGES)
            meta["touches"] = [rng.choice([f"src/proj/pkg{p}/sub{s}/**", f"docs/pkg{p}/*.md"])]
        if i and rng.random() < 0.2:
            meta["depends_on"] = [f"task-{j}.md" for j in rng.sample(range(i), min(i, 2))]
        mentions = rng.sample(modules, 2) + rng.sample(tests, 1) + rng.sample(docs, 1)
        words = [rng.choice(WORDS) for _ in range(rng.randrange(100, 400))]
        for k, path in enumerate(mentions):
            form = ("`{}`", "{}.", "({})", "{}")[k % 4]
            words.insert(rng.randrange(len(words)), form.format(path))
        if rng.random() < 0.05:
            words.append(".github/workflows/ci.yml")
        kind = rng.choice(["Add", "Fix", "Refactor", "Document", "Test"])
        text = f"# {kind} part {i}\n\n" + " ".join(words) + "\n"
        if i and rng.random() < 0.1:
            text += f"\nDepends on: task-{rng.randrange(i)}.md\n"
        front = f"---\n{json.dumps(meta)}\n---\n" if meta else ""
        prompt_file = prompt_dir / f"task-{i}.md"
        prompt_file.write_text(front + text, encoding="utf-8")
        prompts.append(read_prompt(prompt_file, root))
    return prompts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=1000)
    parser.add_argument("--files", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--max-parallel", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="print the top of a cProfile")
    args = parser.parse_args()
    load_at_start = os.getloadavg()  # a busy machine explains a slow figure
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="gadugi-bench-") as tmp:
        root = Path(tmp)
        files = generate_repository(root, args.files, rng)
        prompts = generate_prompts(root, files, args.prompts, rng)
        times = []
        plan: Plan | None = None
        for _ in range(args.repeat):
            start = time.perf_counter()
            plan = analyze(prompts, root, files, args.max_parallel)
            times.append(time.perf_counter() - start)
        tracemalloc.start()
        analyze(prompts, root, files, args.max_parallel)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(analyze, prompts, root, files, args.max_parallel)
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    assert plan is not None
    load = ", ".join(f"{x:.1f}" for x in load_at_start)
    print(
        f"machine: {platform.machine()} {platform.system()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, load average at start {load}"
    )
    pairs = sum(len(t.conflicts_with) for t in plan.tasks) // 2
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "| prompts | files | median s | min s | max s | peak traced MiB | max RSS MiB "
        "| conflicting pairs | waves | est. speedup |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(
        f"| {len(prompts)} | {len(files)} | {statistics.median(times):.2f} | {min(times):.2f} "
        f"| {max(times):.2f} | {peak / 2**20:.1f} | {rss_mib:.0f} | {pairs} | {len(plan.waves)} "
        f"| {plan.estimated_speedup:g} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Benchmark: the setup cache, 8 worktrees of a small real Python project and a Node one.

For each project, N worktrees get their environment three ways: the setup command run in
each one (the download cache warm after the first), and through ``python -m
gadugi.envsetup`` with ``setup_cache_key`` (the first worktree builds, the others restore
a copy; for Node also a symlink). Each way is measured one worktree after another (time per
worktree) and with all N at once (wall time), and the disk the environments take is summed
from ``st_blocks`` over every file (a file counted once per inode), never ``du`` alone.
Whether this filesystem can clone files (FICLONE, as ``cp --reflink=auto`` uses) is probed
and printed: without reflinks a restored copy takes its full size again. For Python, each
worktree then edits its package and runs its own ``.venv/bin/pytest``, which must import
that worktree's code.

Needs: network access to PyPI and the npm registry (the first install of each), python3
with ``venv``, ``npm`` for the Node project (skipped without it).
Default:  .venv/bin/python bench/setup_cache.py         (about 5 minutes here)
Smoke:    .venv/bin/python bench/setup_cache.py --worktrees 2 --no-concurrent
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import benchkit as bk
from gadugi.config import OrchestrationConfig
from gadugi.envsetup import CACHE_DIR, reflinks_supported, setup_argv

PYPROJECT = """[build-system]
requires = ["setuptools>=64"]
build-backend = "setuptools.build_meta"

[project]
name = "mini"
version = "0.1"
dependencies = ["attrs"]

[project.optional-dependencies]
test = ["pytest"]
"""
TEST = """import os
import mini

def test_own_code():
    assert mini.VALUE == os.environ["EXPECTED"], mini.__file__
"""
PACKAGE_JSON = {"name": "mini", "version": "1.0.0", "dependencies": {"chalk": "4.1.2"}}
PYTHON_SETUP = "python3 -m venv .venv && .venv/bin/pip install -q -e '.[test]'"
NODE_SETUP = "npm ci --no-audit --no-fund --loglevel=error"


def make_python(repo: Path) -> None:
    (repo / "src" / "mini").mkdir(parents=True)
    (repo / "src" / "mini" / "__init__.py").write_text('VALUE = "main"\n')
    (repo / "tests").mkdir()
    (repo / "tests" / "test_own.py").write_text(TEST)
    (repo / "pyproject.toml").write_text(PYPROJECT)


def make_node(repo: Path, env: dict[str, str]) -> None:
    (repo / "index.js").write_text("module.exports = require('chalk');\n")
    (repo / "package.json").write_text(json.dumps(PACKAGE_JSON, indent=2) + "\n")
    subprocess.run(
        ["npm", "install", "--package-lock-only", "--no-audit", "--no-fund"],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
    )


def new_repo(path: Path, fill: Any) -> Path:
    path.mkdir(parents=True)
    bk.git(["init", "-q", "-b", "main"], path)
    fill(path)
    bk.git(["add", "-A"], path)
    bk.git(["-c", "user.name=b", "-c", "user.email=b@e.invalid", "commit", "-qm", "x"], path)
    return path


def worktrees(repo: Path, label: str, n: int) -> list[Path]:
    made = []
    for i in range(n):
        path = repo / ".worktrees" / f"{label}-{i}"
        bk.git(["worktree", "add", "-q", "-b", f"{label}-{i}", str(path)], repo)
        made.append(path)
    return made


def run_setup(argv: list[str], where: Path, env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(argv, cwd=where, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"setup failed in {where}:\n{done.stdout}\n{done.stderr}")
    return took


def blocks(paths: Iterable[Path]) -> int:
    """Bytes allocated under ``paths`` (st_blocks), each inode once, symlinks not followed."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for top in paths:
        if not os.path.lexists(top):
            continue
        for folder, _dirs, files in os.walk(top):
            for name in [*files, "."]:
                info = os.lstat(os.path.join(folder, name))
                if (info.st_dev, info.st_ino) not in seen:
                    seen.add((info.st_dev, info.st_ino))
                    total += info.st_blocks * 512
    return total


def scenario(
    repo: Path,
    label: str,
    command: str,
    paths: tuple[str, ...],
    keys: tuple[str, ...],
    n: int,
    concurrent: bool,
    env: dict[str, str],
    cached: bool,
    link: bool = False,
) -> dict[str, Any]:
    cfg = OrchestrationConfig(
        setup_cache_key=keys if cached else (),
        setup_cache_paths=paths if cached else (),
        setup_cache_link=link,
    )
    shutil.rmtree(repo / CACHE_DIR, ignore_errors=True)
    trees = worktrees(repo, label, n)
    times = [run_setup(setup_argv(command, w, repo, cfg), w, env) for w in trees]
    disk = blocks([w / p for w in trees for p in paths] + [repo / CACHE_DIR])
    row: dict[str, Any] = {
        "how": label,
        "first_s": times[0],
        "others_median_s": statistics.median(times[1:]) if n > 1 else float("nan"),
        "sequential_total_s": sum(times),
        "disk_mib": disk / 2**20,
        "per_worktree_mib": disk / 2**20 / n,
        "trees": trees,
    }
    if concurrent:
        shutil.rmtree(repo / CACHE_DIR, ignore_errors=True)
        more = worktrees(repo, f"{label}-at-once", n)
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=n) as pool:
            list(pool.map(lambda w: run_setup(setup_argv(command, w, repo, cfg), w, env), more))
        row["concurrent_wall_s"] = time.perf_counter() - t0
    return row


def own_code_imported(trees: list[Path]) -> int:
    """How many worktrees' own pytest imports their own edit of the package."""
    good = 0
    for w in trees:
        (w / "src" / "mini" / "__init__.py").write_text(f'VALUE = "{w.name}"\n')
        done = subprocess.run(
            [".venv/bin/pytest", "-q", "-p", "no:cacheprovider"],
            cwd=w,
            env={**os.environ, "EXPECTED": w.name, "PYTHONPATH": ""},
            capture_output=True,
            check=False,
        )
        good += done.returncode == 0
    return good


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worktrees", type=int, default=8, help="worktrees (default 8)")
    parser.add_argument("--no-concurrent", action="store_true", help="skip the all-at-once runs")
    parser.add_argument("--no-node", action="store_true", help="skip the Node project")
    bk.common_arguments(parser)
    args = parser.parse_args(argv)
    n, concurrent = args.worktrees, not args.no_concurrent
    results: dict[str, Any] = {"worktrees": n}
    with bk.workdir(args.workdir, args.keep, "gadugi-bench-setup-") as work:
        results["reflinks"] = reflinks_supported(work)
        bk.log(f"reflinks (FICLONE) in {work}: {results['reflinks']}")
        env = {
            **os.environ,
            "PIP_CACHE_DIR": str(work / "pip-cache"),
            "npm_config_cache": str(work / "npm-cache"),
        }
        env.pop("PYTHONPATH", None)
        env["PYTHONPATH"] = str(bk.PROJECT / "src")  # gadugi.envsetup itself, not the project

        py = new_repo(work / "python", make_python)
        bk.log("python: a cold download cache, one install")
        cold = run_setup(setup_argv(PYTHON_SETUP, py, py, OrchestrationConfig()), py, env)
        shutil.rmtree(py / ".venv")
        rows = []
        for label, cached in (("command-each", False), ("cache-copy", True)):
            bk.log(f"python: {label}")
            rows.append(
                scenario(
                    py,
                    label,
                    PYTHON_SETUP,
                    (".venv",),
                    ("pyproject.toml",),
                    n,
                    concurrent,
                    env,
                    cached,
                )
            )
        for row in rows:
            row["own_code_ok"] = own_code_imported(row.pop("trees"))
        results["python"] = {"cold_first_install_s": cold, "rows": rows}

        if not args.no_node and shutil.which("npm"):
            node = new_repo(work / "node", lambda r: make_node(r, env))
            bk.log("node: a cold download cache, one npm ci")
            cold = run_setup(setup_argv(NODE_SETUP, node, node, OrchestrationConfig()), node, env)
            shutil.rmtree(node / "node_modules")
            rows = []
            for label, cached, link in (
                ("command-each", False, False),
                ("cache-copy", True, False),
                ("cache-symlink", True, True),
            ):
                bk.log(f"node: {label}")
                row = scenario(
                    node,
                    label,
                    NODE_SETUP,
                    ("node_modules",),
                    ("package-lock.json",),
                    n,
                    concurrent,
                    env,
                    cached,
                    link,
                )
                row.pop("trees")
                rows.append(row)
            results["node"] = {"cold_first_install_s": cold, "rows": rows}

    header = [
        "how",
        "first s",
        "others median s",
        "sequential total s",
        "all at once wall s",
        "disk MiB (all)",
        "MiB per worktree",
    ]
    for kind in ("python", "node"):
        if kind not in results:
            continue
        data = results[kind]
        extra = ["own code imported"] if kind == "python" else []
        print(
            f"\n## {kind}: {n} worktrees (first install with a cold download cache: "
            f"{data['cold_first_install_s']:.1f} s)\n"
        )
        print(
            bk.markdown_table(
                header + extra,
                [
                    [
                        r["how"],
                        r["first_s"],
                        r["others_median_s"],
                        r["sequential_total_s"],
                        r.get("concurrent_wall_s", "-"),
                        r["disk_mib"],
                        r["per_worktree_mib"],
                    ]
                    + ([f"{r['own_code_ok']}/{n}"] if kind == "python" else [])
                    for r in data["rows"]
                ],
            )
        )
    print(
        f"\nreflinks on this filesystem: {'yes' if results['reflinks'] else 'no'}; "
        f"load average at start {bk.LOAD_AT_START[0]:.1f}"
    )
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

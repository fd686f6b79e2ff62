"""Many readers during a busy run, and two orchestrations in one repository."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from conftest import Repo, run_cli, start_cli


@pytest.mark.slow
def test_32_status_calls_and_file_readers_during_a_busy_run(repo: Repo) -> None:
    names = [f"busy{n}" for n in range(40)]
    for name in names:
        repo.shell_prompt(f"{name}.md", f"echo {name}\nsleep 0.8")
    repo.commit()
    run = start_cli(
        ["run", "--agent", "shell", "--max-parallel", "8", "--quiet", *names], repo.root
    )
    monitoring = repo.root / ".gadugi/monitoring"
    stop = threading.Event()
    torn: list[str] = []
    reads = [0]

    def read_files() -> None:
        while not stop.is_set():
            for path in list(monitoring.glob("*.json")) if monitoring.exists() else []:
                try:
                    json.loads(path.read_text())
                    reads[0] += 1
                except FileNotFoundError:
                    continue
                except json.JSONDecodeError as exc:
                    torn.append(f"{path.name}: {exc}")

    def status(_: int) -> tuple[int, str, str]:
        proc = run_cli(["status", "--json"], repo.root, timeout=60)
        return proc.returncode, proc.stdout, proc.stderr

    reader = threading.Thread(target=read_files)
    reader.start()
    try:
        deadline = time.monotonic() + 30
        while not (repo.root / ".gadugi/state.db").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        with ThreadPoolExecutor(max_workers=32) as pool:
            results = list(pool.map(status, range(32)))
        assert run.wait(timeout=120) == 0
    finally:
        stop.set()
        reader.join()
        if run.poll() is None:
            run.kill()
    failures = [(code, err) for code, _, err in results if code != 0]
    assert failures == []
    assert not any("locked" in err for _, _, err in results)
    docs = [json.loads(out) for _, out, _ in results]
    assert all(d["total_tasks"] == 40 for d in docs)
    assert torn == [] and reads[0] > 20


@pytest.mark.slow
def test_two_orchestrations_in_one_repository(repo: Repo) -> None:
    for group in ("left", "right"):
        for n in range(4):
            repo.shell_prompt(
                f"{group}{n}.md",
                f"sleep 0.5\necho {group}{n} > {group}{n}.txt\n"
                f"git add .\ngit commit -qm {group}{n}",
            )
    repo.commit()
    runs = {
        group: start_cli(
            ["run", "--agent", "shell", "--json", *[f"{group}{n}" for n in range(4)]], repo.root
        )
        for group in ("left", "right")
    }
    results: dict[str, dict[str, Any]] = {}
    for group, proc in runs.items():
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results[group] = json.loads(out)
    assert results["left"]["orchestration_id"] != results["right"]["orchestration_id"]
    branches = set(repo.branches())
    for result in results.values():
        assert result["successful_tasks"] == 4
        for task in result["tasks"]:
            assert task["branch"] in branches and task["commits"] == 1
    assert repo.worktrees() == [str(repo.root)]
    registry = json.loads((repo.root / ".gadugi/monitoring/process_registry.json").read_text())
    assert isinstance(registry["processes"], list)
    for result in results.values():
        final = repo.root / f".gadugi/monitoring/{result['orchestration_id']}_final.json"
        assert json.loads(Path(final).read_text())["successful_tasks"] == 4

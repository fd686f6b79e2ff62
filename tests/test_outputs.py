"""`gadugi report` and `gadugi export` writing to every kind of --output a user can name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from conftest import GIT_ENV, Repo, run_cli

FAST = "max_load_per_cpu = 0\nmin_available_memory_mb = 0\n"
WRITERS = (["report"], ["export"])


@pytest.fixture
def ran(repo: Repo) -> Repo:
    (repo.root / "gadugi.toml").write_text(FAST)
    repo.shell_prompt("a.md", "echo a > a.txt\ngit add -A\ngit commit -qm a")
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "--quiet", "a.md"], repo.root).returncode == 0
    return repo


def _is_report(text: str) -> bool:
    return text.startswith("<!doctype html>") and 'data-task="a"' in text


def _is_export(text: str) -> bool:
    return len(json.loads(text)["orchestrations"]) == 1


@pytest.mark.parametrize("command", WRITERS)
def test_dash_writes_to_stdout_and_says_so_on_stderr(ran: Repo, command: list[str]) -> None:
    done = run_cli([*command, "--output", "-"], ran.root)
    assert done.returncode == 0, done.stderr
    check = _is_report if command == ["report"] else _is_export
    assert check(done.stdout) and "wrote" in done.stderr
    assert not (ran.root / "-").exists()


@pytest.mark.parametrize("command", WRITERS)
def test_an_empty_output_exits_2(ran: Repo, command: list[str]) -> None:
    done = run_cli([*command, "--output", ""], ran.root)
    assert done.returncode == 2 and "--output" in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", WRITERS)
def test_a_fifo_gets_the_text_and_stays_a_fifo(
    ran: Repo, tmp_path: Path, command: list[str]
) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_text()), daemon=True)
    reader.start()
    done = run_cli([*command, "--output", str(fifo)], ran.root)
    reader.join(30)
    assert done.returncode == 0, done.stderr
    check = _is_report if command == ["report"] else _is_export
    assert got and check(got[0])
    assert fifo.is_fifo()


def test_a_fifo_nobody_reads_exits_2_at_once(ran: Repo, tmp_path: Path) -> None:
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    done = run_cli(["report", "--output", str(fifo)], ran.root, timeout=60)
    assert done.returncode == 2 and "nothing reads" in done.stderr
    assert fifo.is_fifo()


def test_a_symlink_is_written_through_and_kept(ran: Repo, tmp_path: Path) -> None:
    target = tmp_path / "real.json"
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    done = run_cli(["export", "--output", str(link)], ran.root)
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and _is_export(target.read_text())


def test_a_symlink_loop_exits_2_and_is_left_alone(ran: Repo, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    one.symlink_to(two)
    two.symlink_to(one)
    for command in WRITERS:
        done = run_cli([*command, "--output", str(one)], ran.root)
        assert done.returncode == 2 and "symbolic links" in done.stderr, done.stderr
        assert one.is_symlink() and os.readlink(one) == str(two)


def _mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


def _umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


def test_a_full_disk_and_a_read_only_one_exit_2_leaving_nothing(ran: Repo, tmp_path: Path) -> None:
    full, readonly = tmp_path / "full", tmp_path / "ro"
    if not _mount_tmpfs(full, "size=8k"):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        assert _mount_tmpfs(readonly, "ro,size=8k")
        (full / "filler").write_bytes(b"x" * 6000)
        for folder, why in ((full, "No space left"), (readonly, "Read-only")):
            for command in WRITERS:
                done = run_cli([*command, "--output", str(folder / "out")], ran.root)
                assert done.returncode == 2, done.stderr
                assert why in done.stderr and "Traceback" not in done.stderr
        assert sorted(p.name for p in full.iterdir()) == ["filler"]
        assert list(readonly.iterdir()) == []
    finally:
        _umount(full)
        _umount(readonly)


def test_a_character_device_is_written_to_not_replaced(ran: Repo) -> None:
    """`--output /dev/null` (or /dev/stdout) writes to the device; it never replaces it."""
    done = subprocess.run(
        [sys.executable, "-m", "gadugi", "export", "--output", "/dev/null"],
        cwd=ran.root,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, **GIT_ENV},
    )
    assert done.returncode == 0, done.stderr
    assert Path("/dev/null").is_char_device()


def _cli_with_stdout(ran: Repo, stdout: int | None, *args: str) -> subprocess.CompletedProcess[str]:
    script = 'exec "$@" >&-' if stdout is None else 'exec "$@"'
    return subprocess.run(
        ["sh", "-c", script, "sh", sys.executable, "-m", "gadugi", *args],
        cwd=ran.root,
        stdout=stdout,
        stderr=subprocess.PIPE,
        text=True,
        check=False,
        env={**os.environ, **GIT_ENV},
    )


@pytest.mark.parametrize("command", WRITERS)
def test_a_closed_or_broken_stdout_exits_2_with_one_line(ran: Repo, command: list[str]) -> None:
    closed = _cli_with_stdout(ran, None, *command, "--output", "-")
    assert closed.returncode == 2 and "standard output" in closed.stderr, closed.stderr
    assert "Traceback" not in closed.stderr
    read_end, write_end = os.pipe()
    os.close(read_end)  # nothing will ever read: every write is EPIPE
    try:
        broken = _cli_with_stdout(ran, write_end, *command, "--output", "-")
    finally:
        os.close(write_end)
    assert broken.returncode == 2 and "Broken pipe" in broken.stderr, broken.stderr
    assert "Traceback" not in broken.stderr and "Exception ignored" not in broken.stderr


def test_stats_and_list_into_a_broken_pipe_exit_2_with_one_line(ran: Repo) -> None:
    for args in (["stats", "--json"], ["list", "--json"], ["stats"]):
        read_end, write_end = os.pipe()
        os.close(read_end)
        try:
            done = _cli_with_stdout(ran, write_end, *args)
        finally:
            os.close(write_end)
        assert done.returncode == 2, (args, done.stderr)
        assert done.stderr.strip() == "gadugi: cannot write the output: Broken pipe", done.stderr


@pytest.mark.parametrize("name", ["state.db", "state.db-wal", "state.db-shm"])
@pytest.mark.parametrize("command", WRITERS)
def test_the_registry_itself_is_never_overwritten(
    ran: Repo, tmp_path: Path, command: list[str], name: str
) -> None:
    state = ran.root / ".gadugi" / "state.db"
    before = state.read_bytes()
    link = tmp_path / "innocent.json"
    link.symlink_to(state.parent / name)
    for output in (str(state.parent / name), f".gadugi/../.gadugi/{name}", str(link)):
        done = run_cli([*command, "--output", output], ran.root)
        assert done.returncode == 2 and "registry" in done.stderr, (output, done.stderr)
    assert state.read_bytes() == before
    assert run_cli(["status", "--json"], ran.root).returncode == 0


def test_a_run_whose_stdout_breaks_still_does_its_work_and_does_not_exit_2(repo: Repo) -> None:
    # 2 says "bad request, nothing changed": a run that did its work and then could not
    # print its result is not that.
    repo.shell_prompt("work.md", "echo done > done.txt")
    repo.commit()
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = _cli_with_stdout(repo, write_end, "run", "--agent", "shell", "--json", "work")
    finally:
        os.close(write_end)
    assert done.returncode == 1, done.stderr
    assert "cannot write the output: Broken pipe" in done.stderr
    assert "gadugi status" in done.stderr and "Traceback" not in done.stderr
    status = json.loads(run_cli(["status", "--json"], repo.root).stdout)
    assert [t["status"] for t in status["tasks"]] == ["completed"]

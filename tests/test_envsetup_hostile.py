"""The setup cache against what a hostile project, or a command, can put in its way: key
files that are not plain files or are huge, environments that are FIFOs or symlinks to the
root, a cache path reached through a symlink out of the worktree. Real worktrees, the setup
child run as gadugi runs it."""

from __future__ import annotations

import os
import resource
import subprocess
from pathlib import Path

from conftest import Repo, run_cli
from gadugi.config import OrchestrationConfig
from gadugi.envsetup import CACHE_DIR, setup_argv
from test_envsetup import config, entries, worktree

# Far below the 1 GiB key file below: hashing must stream it, or not read it at all.
MEMORY_CAP = 512 * 2**20
HANG_GUARD_S = 120  # a setup that reads a FIFO would never end; the test fails instead


def capped_setup(
    where: Path, repo: Repo, command: str, cfg: OrchestrationConfig
) -> subprocess.CompletedProcess[str]:
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))

    return subprocess.run(
        setup_argv(command, where, repo.root, cfg),
        cwd=where,
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        check=False,
        stdin=subprocess.DEVNULL,
        preexec_fn=cap,
    )


def test_key_files_that_are_no_plain_files_are_skipped_and_a_huge_one_means_no_cache(
    repo: Repo,
) -> None:
    cfg = config(("*.lock", "**/*.txt"), ("deps",))
    one = worktree(repo, "one")
    os.mkfifo(one / "pipe.lock")
    (one / "loop").symlink_to("loop")
    (one / "sub").mkdir()
    (one / "sub" / "up").symlink_to("..")  # a loop for **
    (one / "sub" / "a.txt").write_text("a\n")
    built = capped_setup(one, repo, "mkdir deps && echo ok > deps/f", cfg)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "built and stored" in built.stdout
    assert len(entries(repo)) == 1

    two = worktree(repo, "two")
    with (two / "big.lock").open("wb") as fh:
        fh.truncate(2**30)  # sparse: no disk, but 1 GiB to read
    done = capped_setup(two, repo, "mkdir deps && echo ok > deps/f", cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "big.lock" in done.stdout and "without the cache" in done.stdout
    assert "64 MiB" in done.stdout
    assert (two / "deps" / "f").read_text() == "ok\n"
    assert len(entries(repo)) == 1  # nothing stored for a key it could not make


def test_an_environment_holding_a_fifo_or_a_symlink_to_the_root_is_stored_without_reading_it(
    repo: Repo, tmp_path: Path
) -> None:
    cfg = config(("*.lock",), ("deps", ".venv"))
    one = worktree(repo, "one")
    command = "mkdir deps && mkfifo deps/pipe && echo ok > deps/f && ln -s / .venv"
    built = capped_setup(one, repo, command, cfg)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "built and stored" in built.stdout

    two = worktree(repo, "two")
    done = capped_setup(two, repo, command, cfg)
    assert done.returncode == 0 and "restored" in done.stdout, done.stdout + done.stderr
    assert (two / "deps" / "f").read_text() == "ok\n"
    assert os.readlink(two / ".venv") == "/"


def test_a_cache_path_reached_through_a_symlink_out_of_the_worktree_is_not_cached(
    repo: Repo, tmp_path: Path
) -> None:
    outside, runs = tmp_path / "outside", tmp_path / "runs"
    outside.mkdir()
    (repo.root / "shared").symlink_to(outside)
    repo.commit("a tracked symlink out of the project")
    cfg = config(("*.lock",), ("shared/env",))
    command = f"echo run >> {runs} && mkdir shared/env && echo made > shared/env/made.txt"
    for name in ("one", "two"):
        where = worktree(repo, name)
        done = capped_setup(where, repo, command, cfg)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "shared/env" in done.stdout and "without the cache" in done.stdout
        assert sorted(p.name for p in outside.iterdir()) == ["env"]  # nothing beside it
        (outside / "env" / "made.txt").unlink()
        (outside / "env").rmdir()
    assert entries(repo) == []  # nothing from outside the worktree was stored, or restored
    assert runs.read_text() == "run\nrun\n"


def test_cleanup_keeps_every_cached_environment_when_the_current_key_cannot_be_made(
    repo: Repo,
) -> None:
    (repo.root / "gadugi.toml").write_text(
        'setup_command = "mkdir deps"\nsetup_cache_key = ["*.lock"]\nsetup_cache_paths = ["deps"]\n'
    )
    repo.shell_prompt("t.md", "true")
    repo.commit("a setup")
    ran = run_cli(["run", "--agent", "shell", "t"], repo.root)
    assert ran.returncode == 0, ran.stderr
    [built] = entries(repo)
    with (repo.root / "huge.lock").open("wb") as fh:
        fh.truncate(2**30)  # in the main checkout only: the key cleanup compares with

    done = run_cli(["cleanup", "--older-than", "0"], repo.root)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert "cached environments: all kept, the current key is not known" in done.stdout
    assert "huge.lock" in done.stdout and entries(repo) == [built]


def test_cleanup_removes_what_a_builder_killed_while_storing_left(repo: Repo) -> None:
    (repo.root / "gadugi.toml").write_text(
        'setup_command = "mkdir deps"\nsetup_cache_key = ["*.lock"]\nsetup_cache_paths = ["deps"]\n'
    )
    repo.shell_prompt("t.md", "true")
    repo.commit("a setup")
    ran = run_cli(["run", "--agent", "shell", "t"], repo.root)
    assert ran.returncode == 0, ran.stderr
    [built] = entries(repo)
    # As store() leaves it when killed half-way: a key no setup builds again.
    half = repo.root / CACHE_DIR / f".tmp-{'0' * 32}-4242"
    (half / "tree" / "deps").mkdir(parents=True)

    done = run_cli(["cleanup"], repo.root)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed cached environment {half}" in done.stdout
    assert not half.exists() and entries(repo) == [built]


def test_what_a_setup_cut_short_left_in_the_worktree_is_built_again_not_built_upon(
    repo: Repo,
) -> None:
    # As a setup killed half-way (a crash, then resume) leaves it: the environment's
    # path, untracked, half made. Running the command over it would build on the half.
    cfg = config(("*.lock",), ("deps",))
    one = worktree(repo, "one")
    (one / "deps").mkdir()
    (one / "deps" / "half").write_text("cut short\n")
    done = capped_setup(one, repo, "mkdir deps && echo whole > deps/f", cfg)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "deps left by a setup that did not finish: removed" in done.stdout
    assert "built and stored" in done.stdout
    assert sorted(p.name for p in (one / "deps").iterdir()) == ["f"]
    [key] = entries(repo)
    assert sorted(p.name for p in (repo.root / CACHE_DIR / key / "tree" / "deps").iterdir()) == [
        "f"
    ]


def test_a_cache_path_the_repository_tracks_is_refused_before_anything_starts(
    repo: Repo,
) -> None:
    # Excluded in .git/info/exclude, it would hide the agent's new files under it from the
    # autocommit, and the finished worktree would go with them.
    (repo.root / "src").mkdir()
    (repo.root / "src" / "a.py").write_text("a = 1\n")
    (repo.root / "gadugi.toml").write_text(
        'setup_command = "true"\nsetup_cache_key = ["*.lock"]\nsetup_cache_paths = ["src"]\n'
    )
    repo.shell_prompt("t.md", "echo precious > src/new.py")
    repo.commit()
    before = repo.snapshot()
    for command in ("plan", "run"):
        proc = run_cli([command, "--agent", "shell", "t"], repo.root)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert "setup_cache_paths" in proc.stderr and "'src' is tracked" in proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert repo.snapshot() == before


def test_a_state_folder_the_repository_tracks_is_refused_too(repo: Repo) -> None:
    (repo.root / "src").mkdir()
    (repo.root / "src" / "a.py").write_text("a = 1\n")
    repo.shell_prompt("t.md", "echo precious > src/new.py")
    repo.commit()
    before = repo.snapshot()
    for key in ("monitoring_dir", "worktrees_dir"):
        (repo.root / "gadugi.toml").write_text(f'{key} = "src/"\n')
        proc = run_cli(["run", "--agent", "shell", "t"], repo.root)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert f"{key}: 'src' is tracked" in proc.stderr
    (repo.root / "gadugi.toml").unlink()
    assert repo.snapshot() == before

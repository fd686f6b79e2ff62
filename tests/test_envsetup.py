"""The setup cache: real worktrees of a real repository, the setup child run as gadugi runs it
(``setup_argv``), and a real virtual environment whose tests must import the worktree's code."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Repo, git, run_cli, wait_until
from gadugi.config import OrchestrationConfig, load_config
from gadugi.envsetup import CACHE_DIR, Interpreter, command_python, project_packages, setup_argv
from gadugi.errors import ConfigError

PYPROJECT = """[build-system]
requires = ["setuptools>=61"]
build-backend = "setuptools.build_meta"

[project]
name = "mini"
version = "0.1"
"""
TEST = """import os
import mini

def test_the_worktree_code_is_imported():
    assert mini.VALUE == os.environ["EXPECTED"], mini.__file__
"""
# A worktree-local environment made offline, from the interpreter's own pip and setuptools
# (without `wheel`, which pip's editable builds need, setuptools' `develop` installs it).
VENV = (
    f"{shlex.quote(sys.executable)} -m venv --without-pip --system-site-packages .venv && "
    ".venv/bin/python setup.py -q develop"
)


def worktree(repo: Repo, name: str) -> Path:
    path = repo.root / ".worktrees" / name
    git(repo.root, "worktree", "add", "-q", "-b", f"t/{name}", str(path))
    return path


def config(
    keys: tuple[str, ...], paths: tuple[str, ...], link: bool = False
) -> OrchestrationConfig:
    return OrchestrationConfig(setup_cache_key=keys, setup_cache_paths=paths, setup_cache_link=link)


def setup(
    where: Path, repo: Repo, command: str, cfg: OrchestrationConfig
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        setup_argv(command, where, repo.root, cfg),
        cwd=where,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def entries(repo: Repo) -> list[str]:
    cache = repo.root / CACHE_DIR
    return sorted(p.name for p in cache.iterdir() if p.is_dir()) if cache.exists() else []


@pytest.fixture
def package(repo: Repo) -> Repo:
    (repo.root / "pyproject.toml").write_text(PYPROJECT)
    (repo.root / "setup.py").write_text("from setuptools import setup\n\nsetup()\n")
    (repo.root / "src" / "mini").mkdir(parents=True)
    (repo.root / "src" / "mini" / "__init__.py").write_text('VALUE = "main"\n')
    (repo.root / "tests").mkdir()
    (repo.root / "tests" / "test_value.py").write_text(TEST)
    (repo.root / ".gitignore").write_text("*.egg-info/\n")
    git(repo.root, "add", "-A")
    git(repo.root, "commit", "-q", "-m", "a src-layout package")
    return repo


def test_without_a_cache_the_setup_child_is_the_command_alone(tmp_path: Path) -> None:
    argv = setup_argv("make env", tmp_path / "w", tmp_path, OrchestrationConfig())
    assert argv == ["bash", "-c", "--", "make env"]


def test_a_venv_from_the_cache_runs_and_imports_its_own_worktree(package: Repo) -> None:
    cfg = config(("pyproject.toml",), (".venv",))
    first = worktree(package, "first")
    built = setup(first, package, VENV, cfg)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "built and stored .venv" in built.stdout
    git(package.root, "worktree", "remove", "--force", str(first))  # nothing may point there

    second = worktree(package, "second")
    (second / "src" / "mini" / "__init__.py").write_text('VALUE = "second"\n')
    restored = setup(second, package, VENV, cfg)

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert "restored .venv (copy" in restored.stdout
    assert not (second / ".venv").is_symlink()
    tests = subprocess.run(
        [".venv/bin/python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
        cwd=second,
        env={**os.environ, "EXPECTED": "second", "PYTHONPATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert str(first) not in (second / ".venv" / "pyvenv.cfg").read_text()
    assert len(entries(package)) == 1

    (second / "pyproject.toml").write_text(PYPROJECT.replace('"0.1"', '"0.2"'))
    third = worktree(package, "third")
    (third / "pyproject.toml").write_text(PYPROJECT.replace('"0.1"', '"0.2"'))
    rebuilt = setup(third, package, VENV, cfg)
    assert "built and stored" in rebuilt.stdout, rebuilt.stdout + rebuilt.stderr
    assert len(entries(package)) == 2  # another dependency set, another environment


FAKE_INSTALL = (
    'echo build >> "$BUILDS" && mkdir -p node_modules/.bin gen && '
    "echo 'module.exports = 1' > node_modules/left-pad.js && "
    'ln -s ../left-pad.js node_modules/.bin/left-pad && echo "$PWD/src" > gen/paths.pth'
)


def test_a_tree_that_names_no_worktree_may_be_a_symlink_and_one_that_does_is_moved(
    repo: Repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = tmp_path / "builds"
    monkeypatch.setenv("BUILDS", str(builds))
    (repo.root / "package-lock.json").write_text("{}\n")
    repo.commit("lock")
    cfg = config(("package-lock.json",), ("node_modules", "gen"), link=True)
    one, two = worktree(repo, "one"), worktree(repo, "two")

    assert setup(one, repo, FAKE_INSTALL, cfg).returncode == 0
    done = setup(two, repo, FAKE_INSTALL, cfg)

    assert done.returncode == 0, done.stdout + done.stderr
    assert builds.read_text() == "build\n"
    assert (two / "node_modules").is_symlink()
    assert (two / "node_modules" / ".bin" / "left-pad").read_text() == "module.exports = 1\n"
    assert not (two / "gen").is_symlink()
    assert (two / "gen" / "paths.pth").read_text() == f"{two}/src\n"
    assert (one / "gen" / "paths.pth").read_text() == f"{one}/src\n"


def test_two_worktrees_setting_up_one_key_at_once_build_it_once(repo: Repo, tmp_path: Path) -> None:
    gate, builds = tmp_path / "gate", tmp_path / "builds"
    command = (
        f"echo build >> {builds} && while [ ! -e {gate} ]; do sleep 0.02; done && "
        "mkdir -p deps && echo ok > deps/lib.txt"
    )
    cfg = config(("*.lock",), ("deps",))
    one, two = worktree(repo, "one"), worktree(repo, "two")
    first = subprocess.Popen(setup_argv(command, one, repo.root, cfg), cwd=one, text=True)
    wait_until(builds.exists)
    second = subprocess.Popen(setup_argv(command, two, repo.root, cfg), cwd=two, text=True)
    try:
        # The second one is queued on the key's lock while the first still builds.
        lock = next((repo.root / CACHE_DIR).glob("*.lock"))
        wait_until(lambda: blocked_on(lock))
        gate.touch()
        assert first.wait(timeout=120) == 0 and second.wait(timeout=120) == 0
    finally:
        for proc in (first, second):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert builds.read_text() == "build\n"
    assert (two / "deps" / "lib.txt").read_text() == "ok\n"
    assert not list((repo.root / CACHE_DIR).glob(".tmp-*"))
    assert len(entries(repo)) == 1


def blocked_on(lock: Path) -> bool:
    """Whether some process waits for the flock on ``lock`` (``/proc/locks``, '->' lines)."""
    inode = f":{lock.stat().st_ino} "
    lines = Path("/proc/locks").read_text().splitlines()
    return any("->" in line and inode in line for line in lines)


def test_a_builder_killed_half_way_leaves_nothing_to_reuse(repo: Repo, tmp_path: Path) -> None:
    builds = tmp_path / "builds"
    command = f"mkdir -p deps && echo part > deps/a && echo build >> {builds} && sleep 600"
    cfg = config(("*.lock",), ("deps",))
    one = worktree(repo, "one")
    proc = subprocess.Popen(
        setup_argv(command, one, repo.root, cfg), cwd=one, start_new_session=True
    )
    try:
        wait_until(builds.exists)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    two = worktree(repo, "two")
    done = setup(two, repo, "mkdir -p deps && echo whole > deps/a", cfg)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "built and stored" in done.stdout
    assert (two / "deps" / "a").read_text() == "whole\n"


def test_a_failing_command_stores_nothing_and_an_existing_path_is_not_overwritten(
    repo: Repo,
) -> None:
    cfg = config(("*.lock",), ("deps",))
    one = worktree(repo, "one")
    failed = setup(one, repo, "mkdir deps && echo half > deps/a && exit 7", cfg)
    assert failed.returncode == 7
    assert entries(repo) == []

    (repo.root / "deps").mkdir()
    (repo.root / "deps" / "tracked").write_text("mine\n")
    repo.commit("deps is tracked here")
    two = worktree(repo, "two")
    done = setup(two, repo, "echo more > deps/b", cfg)
    assert done.returncode == 0
    assert "already in the worktree" in done.stdout
    assert (two / "deps" / "tracked").read_text() == "mine\n"
    assert entries(repo) == []


def test_a_corrupt_manifest_is_built_again(repo: Repo) -> None:
    cfg = config(("*.lock",), ("deps",))
    one = worktree(repo, "one")
    command = "mkdir deps && basename $PWD > deps/a"
    assert setup(one, repo, command, cfg).returncode == 0
    [key] = entries(repo)
    manifest = repo.root / CACHE_DIR / key / "manifest.json"
    assert json.loads(manifest.read_text())["origin"] == str(one)
    manifest.write_text("{not json")

    two = worktree(repo, "two")
    done = setup(two, repo, command, cfg)
    assert "built and stored" in done.stdout, done.stdout + done.stderr
    assert (two / "deps" / "a").read_text() == "two\n"
    assert json.loads(manifest.read_text())["origin"] == str(two)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("setup_cache_key = ['uv.lock']", "setup_cache_paths"),
        ("setup_cache_paths = ['.venv']", "setup_cache_key"),
        ("setup_cache_key = ['../x.lock']\nsetup_cache_paths = ['.venv']", "setup_cache_key"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['/opt/venv']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['.']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['.git/x']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['a', 'a/b']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = [1]", "setup_cache_paths"),
        # Each path becomes a line of .git/info/exclude: a pattern there would hide work.
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['*']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['env[12]']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['a\\\\b']", "setup_cache_paths"),
        ("setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['venv ']", "setup_cache_paths"),
        (
            "setup_cache_key = ['uv.lock']\nsetup_cache_paths = ['a']\nsetup_cache_link = 3",
            "setup_cache_link",
        ),
    ],
)
def test_bad_cache_settings_name_the_key(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "gadugi.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {}, {})
    assert err.value.key == key and "gadugi.toml" in str(err.value)


def test_which_python_a_verify_command_runs(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    python = bin_dir / "python3"
    python.symlink_to(sys.executable)
    for name, first in (
        ("pytest", f"#!{python}"),
        ("tox", "#!/bin/sh"),
        ("ward", "#!/usr/bin/env python3"),
    ):
        (bin_dir / name).write_text(f"{first}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": str(bin_dir)}

    assert command_python(".venv/bin/pytest -q", env) == Interpreter(local=".venv/bin/pytest")
    assert command_python("uv run pytest", env) == Interpreter(local="uv run")
    assert command_python("CI=1 env X=2 pytest -x", env) == Interpreter(path=str(python))
    assert command_python("python3 -m pytest", env) == Interpreter(path=str(python))
    assert command_python("ward", env) == Interpreter(path=str(python))
    assert command_python("tox -e py", env) == Interpreter()
    assert command_python("make test", env) == Interpreter()
    assert command_python("pytest 'unclosed", env) == Interpreter()


def test_the_project_packages_are_its_src_and_top_level_ones(tmp_path: Path) -> None:
    tracked = [
        "src/alpha/__init__.py",
        "beta/__init__.py",
        "tests/__init__.py",
        "a/b/c/__init__.py",
    ]
    assert project_packages(tmp_path, tracked) == []  # not a Python project
    (tmp_path / "pyproject.toml").write_text("")
    assert project_packages(tmp_path, tracked) == ["alpha", "beta"]


def test_a_restore_that_fails_half_way_is_undone_and_the_command_runs(
    repo: Repo, tmp_path: Path
) -> None:
    builds = tmp_path / "builds"
    command = f"echo build >> {builds} && mkdir a b && basename $PWD > a/f && echo 1 > b/f"
    cfg = config(("*.lock",), ("a", "b"))
    assert setup(worktree(repo, "one"), repo, command, cfg).returncode == 0
    [key] = entries(repo)
    shutil.rmtree(repo.root / CACHE_DIR / key / "tree" / "b")  # the second copy will fail

    two = worktree(repo, "two")
    done = setup(two, repo, command, cfg)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "could not restore" in done.stdout
    assert builds.read_text() == "build\nbuild\n"
    assert (two / "a" / "f").read_text() == "two\n"


OWN_CODE_TEST = """from pathlib import Path
import mini

def test_the_worktree_code_is_imported():
    assert mini.VALUE == Path("expected.txt").read_text().strip(), mini.__file__
"""


def test_a_run_sets_up_every_worktree_from_one_build_and_verifies_its_own_code(
    package: Repo,
) -> None:
    (package.root / "tests" / "test_value.py").write_text(OWN_CODE_TEST)
    (package.root / "gadugi.toml").write_text(
        f"setup_command = {json.dumps(VENV)}\n"
        'verify_command = ".venv/bin/python -m pytest -q -p no:cacheprovider tests"\n'
        'setup_cache_key = ["pyproject.toml"]\n'
        'setup_cache_paths = [".venv"]\n'
    )
    for name in ("a", "b", "c"):
        package.shell_prompt(
            f"{name}.md",
            f"echo 'VALUE = \"{name}\"' > src/mini/__init__.py && echo {name} > expected.txt",
        )
    package.commit("prompts and a setup")

    ran = run_cli(
        ["run", "--agent", "shell", "--json", "--max-parallel", "3", "a", "b", "c"], package.root
    )

    assert ran.returncode == 0, ran.stdout + ran.stderr
    result = json.loads(ran.stdout)
    logs = package.root / ".gadugi" / "logs" / result["orchestration_id"]
    said = [(logs / f"{t}.setup.log").read_text() for t in ("a", "b", "c")]
    assert sum("built and stored .venv" in text for text in said) == 1, said
    assert sum("restored .venv (copy" in text for text in said) == 2, said
    for task in result["tasks"]:
        assert task["status"] == "completed", task
        assert task["verification"]["passed"] is True
        files = git(package.root, "ls-tree", "-r", "--name-only", task["branch"]).split()
        assert not [f for f in files if f.startswith(".venv")]  # never autocommitted
        assert task["worktree"] is None  # the environment left it clean, so it was removed


def test_a_restore_killed_half_way_leaves_no_half_environment(repo: Repo) -> None:
    cfg = config(("*.lock",), ("deps",))
    assert setup(worktree(repo, "one"), repo, "mkdir deps && echo 1 > deps/a", cfg).returncode == 0
    two = worktree(repo, "two")
    half = two / ".deps.gadugi-restore"  # what a SIGKILL during the copy leaves
    half.mkdir()
    (half / "partial").write_text("")

    done = setup(two, repo, "mkdir deps && echo 1 > deps/a", cfg)

    assert "restored deps (copy" in done.stdout, done.stdout + done.stderr
    assert sorted(p.name for p in (two / "deps").iterdir()) == ["a"]
    assert not half.exists()


def test_cleanup_removes_cached_environments_no_setup_would_use(repo: Repo) -> None:
    command = "mkdir deps && cat deps.lock > deps/v"
    (repo.root / "gadugi.toml").write_text(
        f"setup_command = {json.dumps(command)}\n"
        'setup_cache_key = ["**/deps.lock"]\n'
        'setup_cache_paths = ["deps"]\nsetup_cache_link = true\n'
    )
    (repo.root / "deps.lock").write_text("v1\n")
    repo.shell_prompt("t.md", "true")
    repo.commit("a setup")
    # '**': in the main checkout the key must not see the worktrees' copies of the file.
    cfg = config(("**/deps.lock",), ("deps",), link=True)
    assert setup(worktree(repo, "one"), repo, command, cfg).returncode == 0
    two = worktree(repo, "two")
    assert setup(two, repo, command, cfg).returncode == 0
    assert (two / "deps").is_symlink()
    [old] = entries(repo)
    (repo.root / "deps.lock").write_text("v2\n")
    repo.commit("new dependencies")
    ran = run_cli(["run", "--agent", "shell", "t"], repo.root)  # its setup stores v2
    assert ran.returncode == 0, ran.stderr
    [new] = [e for e in entries(repo) if e != old]

    dry = run_cli(["cleanup", "--dry-run"], repo.root)
    assert f"kept cached environment {old}: a worktree links to it" in dry.stdout
    assert f"kept cached environment {new}: the current setup uses it" in dry.stdout
    git(repo.root, "worktree", "remove", "--force", str(two))
    dry = run_cli(["cleanup", "--dry-run"], repo.root)
    assert f"would remove cached environment {repo.root / CACHE_DIR / old}" in dry.stdout
    assert entries(repo) == sorted([old, new])

    done = run_cli(["cleanup"], repo.root)

    assert done.returncode == 0, done.stdout + done.stderr
    assert f"removed cached environment {repo.root / CACHE_DIR / old}" in done.stdout
    assert entries(repo) == [new]


def test_a_project_folder_named_gadugi_does_not_stand_in_for_the_setup_child(repo: Repo) -> None:
    (repo.root / "gadugi").mkdir()
    (repo.root / "gadugi" / "__init__.py").write_text("")
    (repo.root / "gadugi" / "envsetup.py").write_text("raise SystemExit('impostor')\n")
    repo.commit("a package of the same name")
    one = worktree(repo, "one")

    done = setup(one, repo, "mkdir deps", config(("*.lock",), ("deps",)))

    assert done.returncode == 0, done.stdout + done.stderr
    assert "built and stored deps" in done.stdout

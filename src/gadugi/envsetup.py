"""A working environment for each worktree, built once per dependency set and then reused.

The setup phase runs ``setup_command`` in each new worktree before its agent starts. With
``setup_cache_key`` (globs of the files that decide the environment: ``uv.lock``,
``package-lock.json``, ...) and ``setup_cache_paths`` (what the command makes: ``.venv``,
``node_modules``), the child the runner spawns is ``python -m gadugi.envsetup``: it hashes
those files, and under a lock on that hash either restores the paths from
``.gadugi/cache/<hash>/`` or runs the command and stores what it made there.

Restoring is a copy (``cp --reflink=auto``: a clone sharing blocks where the filesystem
offers one), then the absolute path of the worktree the environment was built in is
rewritten to this worktree's in the few text files that name it. That is what makes a
Python virtual environment usable elsewhere: its scripts' shebangs, ``pyvenv.cfg`` and an
editable install's ``.pth`` all name the worktree it was made in, so a plain copy would
run, and import, another worktree's code. A tree that names no worktree (``node_modules``)
may be a symlink into the cache instead (``setup_cache_link``). Measured on a small
src-layout project (docs/benchmarks.md): copy and rewrite 0.35 s, a fresh ``venv`` and
``pip install -e .`` from a warm download cache 11 to 13 s, copy then the command again 6.7 s.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import OrchestrationConfig

CACHE_DIR = ".gadugi/cache"
FORMAT = 1  # part of every key: a new layout of the cache never reads an old one
MANIFEST = "manifest.json"
FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)
# A byte that may follow a path inside a file without making it a longer path.
_PATH_END = rb"(?![A-Za-z0-9._\-])"
# What the key files may hold in all: lock files and manifests, not data. More is keyed
# on nothing: the command runs without the cache rather than read a 1 GiB file.
MAX_KEY_BYTES = 64 * 2**20
CHUNK_BYTES = 2**20


class KeyFileError(Exception):
    """The key files cannot give a key (too large, unreadable): the cache is not used."""


@dataclass(frozen=True)
class CacheSpec:
    key_globs: tuple[str, ...]
    paths: tuple[str, ...]
    link: bool = False


def shell_argv(command: str) -> list[str]:
    """A setup or verification command line, run by bash as written: after ``--``, a
    command starting with '-' (``--version``) is never read as bash's own options."""
    return ["bash", "-c", "--", command]


def setup_argv(
    command: str, worktree: Path, project_root: Path, config: OrchestrationConfig
) -> list[str]:
    """The setup child's command line: the user's command alone, or through the cache."""
    if not (config.setup_cache_key and config.setup_cache_paths):
        return shell_argv(command)
    # -P: the worktree (the cwd) is not put on sys.path, so a project folder named gadugi
    # cannot stand in for this package.
    argv = [sys.executable, "-P", "-m", "gadugi.envsetup"]
    argv += ["--worktree", str(worktree), "--project-root", str(project_root)]
    # One word each (``--key=GLOB``): a value starting with '-' is never read as an option.
    argv += [f"--key={glob}" for glob in config.setup_cache_key]
    argv += [f"--path={path}" for path in config.setup_cache_paths]
    if config.setup_cache_link:
        argv.append("--link")
    return [*argv, "--", command]


def key_files(worktree: Path, globs: Iterable[str], skip: Iterable[str] = ()) -> list[str]:
    """The files (relative, sorted) that decide the environment.

    Never one inside ``skip`` (the environment's own paths: ``**/package.json`` must not
    find node_modules' files; in the main checkout, the worktrees and ``.gadugi``) or .git.
    """
    skipped = [Path(p).parts for p in (".git", *skip)]
    found: set[str] = set()
    for pattern in globs:
        for path in worktree.glob(pattern):
            rel = path.relative_to(worktree)
            if path.is_file() and not any(rel.parts[: len(s)] == s for s in skipped):
                found.add(rel.as_posix())
    return sorted(found)


def cache_key(worktree: Path, command: str, spec: CacheSpec, skip: Iterable[str] = ()) -> str:
    """The hash of what decides the environment: the key files, the command and the paths.

    Raises KeyFileError when the key files hold more than MAX_KEY_BYTES or one of them
    cannot be read as a plain file."""
    digest = hashlib.sha256()
    header = [FORMAT, sys.platform, platform.machine(), command, list(spec.paths)]
    digest.update(json.dumps(header).encode())
    left = MAX_KEY_BYTES
    for rel in key_files(worktree, spec.key_globs, (*spec.paths, *skip)):
        digest.update(b"\0" + os.fsencode(rel) + b"\0")
        file_digest, size = _file_digest(worktree / rel, rel, left)
        digest.update(file_digest)
        left -= size
    return digest.hexdigest()[:32]


def _file_digest(path: Path, rel: str, left: int) -> tuple[bytes, int]:
    """One key file's hash and size, read in chunks and never past ``left`` bytes."""
    try:
        # Non-blocking: a FIFO put in the file's place since the glob saw it cannot hang us.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise KeyFileError(f"cannot read the key file {rel} ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise KeyFileError(f"the key file {rel} is not a plain file")
        digest, size = hashlib.sha256(), 0
        while chunk := fh.read(min(CHUNK_BYTES, left - size + 1)):
            size += len(chunk)
            if size > left:
                raise KeyFileError(
                    f"the key files ({rel} among them) hold more than the "
                    f"{MAX_KEY_BYTES // 2**20} MiB a key is made of"
                )
            digest.update(chunk)
    return digest.digest(), size


@contextmanager
def locked(path: Path, shared: bool = False) -> Iterator[None]:
    """Restores share the key's lock; a builder holds it alone, so the worktrees that
    come while it builds wait for it and then reuse what it made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor drops the flock


def reflinks_supported(folder: Path) -> bool:
    """Whether files in ``folder`` can be cloned (FICLONE), sharing their blocks."""
    folder.mkdir(parents=True, exist_ok=True)
    src, dst = folder / f".probe-{os.getpid()}-a", folder / f".probe-{os.getpid()}-b"
    try:
        src.write_bytes(b"probe")
        with src.open("rb") as a, dst.open("wb") as b:
            fcntl.ioctl(b.fileno(), FICLONE, a.fileno())
        return True
    except OSError:
        return False
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)


def clone_tree(src: Path, dst: Path) -> None:
    """Copy a tree, with reflinks where the filesystem offers them; symlinks stay symlinks."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if shutil.which("cp") and sys.platform.startswith("linux"):
        done = subprocess.run(
            ["cp", "--reflink=auto", "-a", "--", str(src), str(dst)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode == 0:
            return
        shutil.rmtree(dst, ignore_errors=True)
        raise OSError(f"cp {src} {dst}: {done.stderr.strip()}")
    if src.is_dir() and not src.is_symlink():
        shutil.copytree(src, dst, symlinks=True)
    else:
        shutil.copy2(src, dst, follow_symlinks=False)


def naming_files(tree: Path, origin: Path) -> tuple[list[str], list[str]]:
    """Files under ``tree`` that name ``origin``: text ones (rewritable) and binary ones.

    Compiled bytecode is left out: the import system puts the real source path into the
    code it loads from a ``.pyc``, whatever path it was compiled at.
    """
    needle = re.compile(re.escape(os.fsencode(origin)) + _PATH_END)
    text: list[str] = []
    binary: list[str] = []
    if tree.is_symlink():
        return text, binary  # a link names what it names; a link to / is never walked
    paths = [tree] if tree.is_file() else _walk(tree)
    for path in paths:
        found, nul = _scan(path, needle, len(os.fsencode(origin)))
        if found:
            rel = path.relative_to(tree).as_posix() if path != tree else "."
            (binary if nul else text).append(rel)
    return text, binary


def _scan(path: Path, needle: re.Pattern[bytes], length: int) -> tuple[bool, bool]:
    """Whether a plain file holds ``needle`` (``length`` bytes long), and whether it holds a
    NUL byte (binary); read in chunks, so a large file costs no memory, and a FIFO or
    device nothing."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False, False
    found = nul = False
    with os.fdopen(fd, "rb") as fh:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False, False
        carry = b""
        while True:
            chunk = fh.read(CHUNK_BYTES)
            nul = nul or b"\0" in chunk
            buf = carry + chunk
            # A match at the very end of a chunk is only whole once the next byte is seen.
            found = found or any(m.end() < len(buf) or not chunk for m in needle.finditer(buf))
            if not chunk or (found and nul):
                return found, nul
            carry = buf[-(length + 1) :]


def _walk(tree: Path) -> Iterator[Path]:
    for folder, dirs, files in os.walk(tree):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            path = Path(folder, name)
            if not path.is_symlink():
                yield path


def relocate(tree: Path, files: Iterable[str], origin: Path, target: Path) -> None:
    """Rewrite ``origin`` to ``target`` in ``files``, keeping each one's mode and mtime."""
    needle = re.compile(re.escape(os.fsencode(origin)) + _PATH_END)
    new = os.fsencode(target).replace(b"\\", b"\\\\")
    for rel in files:
        path = tree if rel == "." else tree / rel
        info = path.stat()
        data = needle.sub(new, path.read_bytes())
        tmp = path.with_name(f".{path.name}.gadugi-tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, info.st_mode & 0o7777)
        os.utime(tmp, ns=(info.st_atime_ns, info.st_mtime_ns))
        os.replace(tmp, path)  # a new inode: a reflinked copy keeps sharing the rest


@dataclass(frozen=True)
class Entry:
    """One stored environment: ``<hash>/tree/<path>`` and what it needs when restored."""

    folder: Path
    origin: Path
    relocate: dict[str, list[str]]

    @classmethod
    def load(cls, folder: Path) -> Entry | None:
        try:
            data = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
            return cls(folder, Path(data["origin"]), dict(data["relocate"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None


def store(worktree: Path, entry_dir: Path, spec: CacheSpec, command: str) -> Entry:
    """Copy what the command made into the cache: a temporary folder, renamed when complete."""
    for stale in entry_dir.parent.glob(f".tmp-{entry_dir.name}-*"):
        shutil.rmtree(stale, ignore_errors=True)  # a builder killed half-way; we hold the lock
    tmp = entry_dir.parent / f".tmp-{entry_dir.name}-{os.getpid()}"
    try:
        moves: dict[str, list[str]] = {}
        for rel in spec.paths:
            clone_tree(worktree / rel, tmp / "tree" / rel)
            text, binary = naming_files(tmp / "tree" / rel, worktree)
            moves[rel] = text
            if binary:
                say(f"{len(binary)} binary file(s) in {rel} name {worktree}; left as they are")
        manifest = {
            "format": FORMAT,
            "origin": str(worktree),
            "command": command,
            "paths": list(spec.paths),
            "relocate": moves,
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        if entry_dir.exists():
            shutil.rmtree(entry_dir)  # no manifest: a store that never finished
        os.rename(tmp, entry_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Entry(entry_dir, worktree, moves)


def restore(entry: Entry, worktree: Path, spec: CacheSpec) -> list[str]:
    """Put the stored paths into ``worktree``; how each came back, for the log."""
    made: list[Path] = []
    how: list[str] = []
    try:
        for rel in spec.paths:
            src, dst = entry.folder / "tree" / rel, worktree / rel
            # Made beside its place, then renamed into it: a restore killed half-way leaves
            # no half environment where the command or the agent would take it for whole.
            tmp = dst.with_name(f".{dst.name}.gadugi-restore")
            made.append(tmp)
            discard(tmp)
            moves = entry.relocate.get(rel, [])
            if spec.link and not moves:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                os.symlink(src, tmp)
                how.append(f"{rel} (symlink)")
            else:
                clone_tree(src, tmp)
                relocate(tmp, moves, entry.origin, worktree)
                how.append(f"{rel} (copy, {len(moves)} file(s) moved to this worktree)")
            os.rename(tmp, dst)
            made[-1] = dst
    except BaseException:
        for path in made:
            discard(path)
        raise
    return how


def discard(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


def say(message: str) -> None:
    """The setup log is this child's output."""
    print(f"gadugi setup: {message}", flush=True)


def try_restore(entry_dir: Path, worktree: Path, spec: CacheSpec) -> bool:
    """Restore the stored environment, if there is a whole one; whether it was."""
    started = time.monotonic()
    entry = Entry.load(entry_dir)
    if entry is None:
        return False
    try:
        how = restore(entry, worktree, spec)
    except OSError as exc:
        say(f"could not restore from cache {entry_dir.name} ({exc}); running the command instead")
        return False
    with contextlib.suppress(OSError):
        os.utime(entry_dir / MANIFEST)  # when it was last used, for whoever prunes the cache
    took = time.monotonic() - started
    say(f"cache {entry_dir.name}: restored {', '.join(how)} in {took:.2f}s")
    return True


def prepare(command: str, worktree: Path, project_root: Path, spec: CacheSpec) -> int:
    """Restore the environment for this key, or build it with ``command`` and store it."""
    worktree = worktree.resolve()
    cache = project_root.resolve() / CACHE_DIR
    # A folder on the way that is a symlink (a tracked one) would have the cache store,
    # and restore into, a place outside the worktree.
    escaping = [rel for rel in spec.paths if not _inside(worktree, (worktree / rel).parent)]
    if escaping:
        say(
            f"{', '.join(escaping)} (setup_cache_paths) lead out of the worktree through a "
            "symlink: running the command without the cache"
        )
        return run_command(command, worktree)
    files = key_files(worktree, spec.key_globs, spec.paths)
    if not files:
        say(f"no file matches setup_cache_key ({', '.join(spec.key_globs)}); keyed on the command")
    try:
        key = cache_key(worktree, command, spec)
    except KeyFileError as exc:
        say(f"{exc}: running the command without the cache")
        return run_command(command, worktree)
    entry_dir = cache / key
    lock = cache / f"{key}.lock"
    for rel in spec.paths:
        # Setup comes before any agent in a new worktree: an untracked path of its own
        # there is what a setup cut short (a crash) left, never anyone's work.
        if os.path.lexists(worktree / rel) and not _tracked(worktree, rel):
            discard(worktree / rel)
            say(f"{rel} left by a setup that did not finish: removed, to be made whole")
    present = [rel for rel in spec.paths if os.path.lexists(worktree / rel)]
    if present:
        say(f"{', '.join(present)} already in the worktree: running the command, not the cache")
        return run_command(command, worktree)
    with locked(lock, shared=True):
        if try_restore(entry_dir, worktree, spec):
            return 0
    with locked(lock):
        # Another worktree may have built it while this one waited for the lock alone.
        if try_restore(entry_dir, worktree, spec):
            return 0
        code = run_command(command, worktree)
        if code != 0:
            return code
        missing = [rel for rel in spec.paths if not os.path.lexists(worktree / rel)]
        if missing:
            say(f"the command made no {', '.join(missing)} (setup_cache_paths): nothing cached")
            return 0
        try:
            store(worktree, entry_dir, spec, command)
        except OSError as exc:
            say(f"could not store the environment in {entry_dir} ({exc}); the worktree is ready")
            return 0
        say(f"cache {key}: built and stored {', '.join(spec.paths)} in {entry_dir}")
    return 0


def run_command(command: str, worktree: Path) -> int:
    return subprocess.run(shell_argv(command), cwd=worktree, check=False).returncode


def _tracked(worktree: Path, rel: str) -> bool:
    """Whether git tracks ``rel`` (or files under it) in the worktree; True when git cannot
    say, so that nothing is removed on a guess."""
    done = subprocess.run(
        ["git", "ls-files", "--", rel],
        cwd=worktree,
        env={**os.environ, "GIT_CEILING_DIRECTORIES": os.path.realpath(worktree.parent)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        check=False,
    )
    return done.returncode != 0 or bool(done.stdout.strip())


def _inside(worktree: Path, path: Path) -> bool:
    """Whether ``path``, its symlinks followed, is ``worktree`` or inside it."""
    real = Path(os.path.realpath(path))
    return real == worktree or worktree in real.parents


def stale_entries(
    root: Path, config: OrchestrationConfig, unused_since: float, worktrees: Iterable[Path]
) -> tuple[list[Path], list[str]]:
    """Stored environments ``gadugi cleanup`` may remove, and why others stay.

    One stays when the project's setup would use it now (its key files and command as the
    main checkout has them), when it was used after ``unused_since``, or when a worktree
    links to it (``setup_cache_link``).
    """
    cache = root / CACHE_DIR
    if not cache.is_dir():
        return [], []
    # What a builder killed while storing left: never reused, removed unless one builds now.
    stale: list[Path] = sorted(p for p in cache.glob(".tmp-*") if p.is_dir())
    current = None
    if config.setup_command and config.setup_cache_key:
        spec = CacheSpec(config.setup_cache_key, config.setup_cache_paths)
        try:
            current = cache_key(root, config.setup_command, spec, main_checkout_skip(config))
        except KeyFileError as exc:
            # Which one the setup would use is not known: none may go.
            return stale, [f"cached environments: all kept, the current key is not known ({exc})"]
    linked = {
        os.path.realpath(tree / rel)
        for tree in worktrees
        for rel in config.setup_cache_paths
        if (tree / rel).is_symlink()
    }
    kept: list[str] = []
    for folder in sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")):
        trees = {os.path.realpath(folder / "tree" / rel) for rel in config.setup_cache_paths}
        try:
            used = (folder / MANIFEST).stat().st_mtime
        except OSError:
            used = 0.0  # never completed: a store that was cut short
        if folder.name == current:
            kept.append(f"cached environment {folder.name}: the current setup uses it")
        elif trees & linked:
            kept.append(f"cached environment {folder.name}: a worktree links to it")
        elif used > unused_since:
            kept.append(f"cached environment {folder.name}: used since the cut-off")
        else:
            stale.append(folder)
    return stale, kept


def main_checkout_skip(config: OrchestrationConfig) -> tuple[str, ...]:
    """What a key computed in the main checkout must not look into: gadugi's own folders."""
    return (config.worktrees_dir, ".gadugi", *config.setup_cache_paths)


def prune(entry_dir: Path) -> bool:
    """Remove one stored environment (or what a killed builder left of one: ``.tmp-<key>-
    <pid>``), unless a setup holds its key's lock now; False then."""
    key = entry_dir.name
    if key.startswith(".tmp-"):
        key = key.removeprefix(".tmp-").rsplit("-", 1)[0]
    fd = os.open(entry_dir.parent / f"{key}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        shutil.rmtree(entry_dir, ignore_errors=True)
        return True
    finally:
        os.close(fd)


# What ``gadugi doctor`` asks: would the verification import the worktree's code?

NOT_PACKAGES = frozenset({"tests", "test", "docs", "doc", "examples", "scripts", "bench"})
# Runners that make (or find) an environment in the directory they run in: the worktree.
LOCAL_RUNNERS = {("uv", "run"), ("pdm", "run"), ("hatch", "run")}
_PYTHON = re.compile(r"python[0-9.]*$")
_WHERE = """import importlib.util, json, sys
found = {}
for name in sys.argv[1:]:
    try:
        spec = importlib.util.find_spec(name)
    except Exception:
        spec = None
    if spec is None:
        found[name] = None
    elif spec.submodule_search_locations:
        found[name] = list(spec.submodule_search_locations)[0]
    else:
        found[name] = spec.origin
print(json.dumps(found))
"""


def project_packages(root: Path, tracked: Iterable[str]) -> list[str]:
    """The import names of the project's own Python packages (src layout or flat)."""
    if not any((root / name).is_file() for name in ("pyproject.toml", "setup.py", "setup.cfg")):
        return []
    names: set[str] = set()
    for rel in tracked:
        parts = rel.split("/")
        if parts[-1] != "__init__.py":
            continue
        if (len(parts) == 3 and parts[0] == "src") or len(parts) == 2:
            name = parts[-2]
            if name.isidentifier() and name not in NOT_PACKAGES:
                names.add(name)
    return sorted(names)


@dataclass(frozen=True)
class Interpreter:
    """Which Python a command runs: ``path``, or ``local`` (one inside the worktree), or unknown."""

    path: str | None = None
    local: str | None = None


def command_python(command: str, env: Mapping[str, str]) -> Interpreter:
    """The interpreter a shell command would import the project with, as far as can be told."""
    try:
        words = shlex.split(command)
    except ValueError:
        return Interpreter()
    while words and (words[0] == "env" or re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0])):
        words = words[1:]
    if not words:
        return Interpreter()
    if tuple(words[:2]) in LOCAL_RUNNERS:
        return Interpreter(local=" ".join(words[:2]))
    program = words[0]
    if "/" in program and not os.path.isabs(program):
        return Interpreter(local=program)
    found = program if os.path.isabs(program) else shutil.which(program, path=env.get("PATH"))
    if found is None:
        return Interpreter()
    if _PYTHON.match(os.path.basename(program)):
        return Interpreter(path=found)
    try:
        with open(found, "rb") as fh:
            first = fh.readline(512).decode("utf-8", "replace")
    except OSError:
        return Interpreter()
    shebang = first[2:].split() if first.startswith("#!") else []
    if shebang and shebang[0].endswith("/env") and len(shebang) > 1:
        shebang = shebang[1:]
        if _PYTHON.match(shebang[0]) and (which := shutil.which(shebang[0], path=env.get("PATH"))):
            return Interpreter(path=which)
    elif shebang and _PYTHON.match(os.path.basename(shebang[0])):
        return Interpreter(path=shebang[0])
    return Interpreter()


def imported_from(
    python: str, packages: Sequence[str], env: Mapping[str, str]
) -> dict[str, str | None]:
    """Where ``python`` finds each package when run outside any checkout (a fresh folder)."""
    with tempfile.TemporaryDirectory(prefix="gadugi-where-") as neutral:
        done = subprocess.run(
            [python, "-c", _WHERE, *packages],
            cwd=neutral,
            env=dict(env),
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    if done.returncode != 0:
        raise OSError(f"{python} exited {done.returncode}: {done.stderr.strip()[-200:]}")
    found: dict[str, str | None] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gadugi.envsetup")
    parser.add_argument("--worktree", type=Path, required=True)
    parser.add_argument("--project-root", type=Path, required=True)
    parser.add_argument("--key", action="append", default=[])
    parser.add_argument("--path", action="append", default=[], required=True)
    parser.add_argument("--link", action="store_true")
    parser.add_argument("command")
    args = parser.parse_args(argv)
    spec = CacheSpec(tuple(args.key), tuple(args.path), args.link)
    if not args.worktree.is_dir():
        parser.error(f"{args.worktree}: no such directory")
    return prepare(args.command, args.worktree, args.project_root, spec)


if __name__ == "__main__":
    sys.exit(main())

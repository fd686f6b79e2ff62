"""Where ``--output`` writes (``export``, ``report``): a file, a device or pipe, or stdout.

A regular file is replaced atomically (a reader sees the old file or the new one); a
symbolic link is followed, so the link stays and its target gets the text. A named pipe or
a device (``/dev/stdout``, ``/dev/fd/3``) is written to as it is: replacing it would put a
regular file where the user's pipe or device was. ``-`` is standard output.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import RequestError
from ..files import write_text_atomic


@dataclass(frozen=True)
class Output:
    name: str  # as the user gave it, for messages
    path: Path | None  # None: standard output
    through: bool = False  # a pipe or device: written to, never replaced

    @property
    def to_stdout(self) -> bool:
        return self.path is None


REGISTRY_FILES = ("", "-wal", "-shm", "-journal")  # state.db and SQLite's files beside it


def output_target(output: str, registry: Path | None = None) -> Output:
    """Check, before anything is read, that ``output`` can be written; RequestError if not.
    Never the ``registry`` (``state.db``) or SQLite's files beside it: writing there would
    destroy every orchestration's record."""
    if output == "-":
        return Output(output, None)
    if not output:
        raise RequestError("--output needs a file name (or - for standard output)")
    path = Path(output)
    try:
        info: os.stat_result | None = os.stat(path)  # through its symbolic links
    except FileNotFoundError:
        info = None  # a new file, or a link to one
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise RequestError(f"cannot write {output}: its symbolic links form a loop") from None
        raise RequestError(f"cannot write {output}: {exc.strerror}") from None
    if info is not None and stat.S_ISDIR(info.st_mode):
        raise RequestError(f"cannot write {output}: it is a directory")
    if info is not None and not stat.S_ISREG(info.st_mode):
        return Output(output, path, through=True)
    real = path.resolve() if path.is_symlink() else path
    if registry is not None and _is_registry(real, registry):
        raise RequestError(
            f"cannot write {output}: it is gadugi's registry ({registry}); choose another file"
        )
    folder = real.parent
    if not folder.is_dir():
        why = "does not exist" if not folder.exists() else "is not a directory"
        raise RequestError(f"cannot write {output}: {folder} {why}")
    return Output(output, real)


def _is_registry(path: Path, registry: Path) -> bool:
    where = path.resolve()
    return any(where == Path(f"{registry.resolve()}{suffix}") for suffix in REGISTRY_FILES)


def write_output(target: Output, text: str) -> None:
    """Write ``text`` where ``target`` says; an OSError (a full disk, a read-only folder,
    a pipe nobody reads) is a RequestError naming the output, and leaves no file behind."""
    if target.path is None:
        _write_stdout(text)
        return
    try:
        if target.through:
            _write_through(target.path, text)
        else:
            write_text_atomic(target.path, text)
    except OSError as exc:
        if exc.errno == errno.ENXIO and target.through:
            why = "nothing reads it (a named pipe needs its reader first)"
        else:
            why = exc.strerror or str(exc)
        raise RequestError(f"cannot write {target.name}: {why}") from None


def _write_stdout(text: str) -> None:
    if sys.stdout is None:  # started with its standard output closed
        raise RequestError("cannot write to standard output: it is closed")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except OSError as exc:
        discard_stdout()
        raise RequestError(f"cannot write to standard output: {exc.strerror or exc}") from None


def discard_stdout() -> None:
    """Point standard output at /dev/null after a write to it failed: what is still
    buffered would fail again when the interpreter exits, and print "Exception ignored
    ..." after gadugi's one line."""
    if sys.stdout is None:
        return
    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _write_through(path: Path, text: str) -> None:
    # Non-blocking open: a named pipe without a reader fails at once (ENXIO) instead of
    # waiting forever for one; the writes that follow block as usual.
    fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    os.set_blocking(fd, True)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)

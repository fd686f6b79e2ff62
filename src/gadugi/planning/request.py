"""What the user asked for: prompt names parsed out of free text, then resolved to files.

Every format of the seed and PRODUCT.md is accepted: bullets (``-``, ``*``, ``+``),
numbered lists, one name per line, the inline "Execute these prompts: a.md, b.md",
back-ticked names, ``prompts/x.md`` and names without ``.md``. Prose around the names
is ignored rather than mistaken for a name.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

PROMPTS_DIR = "prompts"
_BULLET = re.compile(r"^\s*(?:[-*+]|\d+[.)])\s+")
_BACKTICKED = re.compile(r"`([^`]+)`")
_SPLIT = re.compile(r"[,;\s]+")
_QUOTES = "\"'"


def parse_request(text: str) -> list[str]:
    """The prompt names in a free-text request, in order, without duplicates."""
    names: list[str] = []
    for raw in text.splitlines():
        for name in _names_in_line(raw):
            if name not in names:
                names.append(name)
    return names


def _names_in_line(raw: str) -> list[str]:
    line = raw.strip()
    if not line or line.startswith("#"):
        return []
    line = _BULLET.sub("", line, count=1)
    quoted = _BACKTICKED.findall(line)
    if quoted:
        return [q.strip() for q in quoted if q.strip()]
    # "Execute these prompts: a.md, b.md": the names follow the colon; a header such
    # as "Execute these prompt files:" has nothing after it.
    line = line.rpartition(":")[2]
    tokens = [_clean(t) for t in _SPLIT.split(line.strip())]
    tokens = [t for t in tokens if t]
    if len(tokens) == 1:
        return tokens
    # Several words: keep only those that look like file names, so prose is skipped.
    return [t for t in tokens if t.endswith(".md") or "/" in t]


def _clean(token: str) -> str:
    token = token.strip(_QUOTES)
    return token if token.lower().endswith(".md") else token.rstrip(".")


@dataclass
class Resolution:
    """The prompt files a request names, and why the rest were skipped."""

    paths: list[Path] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def resolve_names(names: list[str], project_root: Path, cwd: Path | None = None) -> Resolution:
    """Map names to prompt files inside the project; report and skip the unusable ones.

    A name resolves inside ``<project>/prompts/``. Absolute paths, and relative paths
    that exist from ``cwd`` (given on the command line), may point anywhere inside the
    project. Symlinks are followed before the containment check.
    """
    root = project_root.resolve()
    out = Resolution()
    for name in names:
        path, problem = _resolve_one(name, root, cwd)
        if problem:
            shown = name if len(name) <= 80 else f"{name[:60]}... ({len(name)} characters)"
            out.problems.append(f"{shown}: {problem}"[:400])
        elif path is not None and path in out.paths:
            out.problems.append(f"{name}: named more than once; running it once")
        elif path is not None:
            out.paths.append(path)
    return out


def _resolve_one(name: str, root: Path, cwd: Path | None) -> tuple[Path | None, str | None]:
    try:
        return _locate(name, root, cwd)
    except OSError as exc:  # e.g. a name longer than the file system allows
        return None, f"cannot be used ({exc.strerror or exc})"


def _locate(name: str, root: Path, cwd: Path | None) -> tuple[Path | None, str | None]:
    if "\x00" in name or len(name) > 4096:
        return None, "is not a usable file name"
    candidates: list[Path] = []
    given = Path(name)
    if given.is_absolute():
        candidates.append(given)
    else:
        if cwd is not None and (cwd / given).exists():
            candidates.append(cwd / given)
        elif ".." in given.parts:
            return None, "leaves the prompts folder with '..'; refusing it"
        rel = given.parts[1:] if given.parts[:1] == (PROMPTS_DIR,) else given.parts
        candidates.append(root.joinpath(PROMPTS_DIR, *rel) if rel else root / PROMPTS_DIR)
    for candidate in candidates:
        path = _with_markdown_suffix(candidate)
        try:
            real = path.resolve(strict=False)
        except (OSError, RuntimeError):
            return None, "cannot be resolved (symlink loop?)"
        if not real.is_relative_to(root):
            return None, "resolves outside the project; refusing it"
        if real.is_dir():
            return None, "is a directory, not a prompt file"
        if real.exists():
            if real.suffix.lower() != ".md":
                return None, "is not a Markdown (.md) file"
            if not real.is_file():
                return None, "is not a regular file (a pipe or device?); refusing it"
            return real, None
    shown = _with_markdown_suffix(candidates[-1])
    try:
        shown_text = shown.resolve().relative_to(root).as_posix()
    except ValueError:
        return None, "resolves outside the project; refusing it"
    return None, f"not found ({shown_text} does not exist)"


def _with_markdown_suffix(path: Path) -> Path:
    if path.suffix.lower() == ".md" or path.exists():
        return path
    return path.with_name(path.name + ".md")

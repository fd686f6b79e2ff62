"""Which repository paths a task may touch, and which tasks' footprints overlap.

A task that declares ``touches`` in its front matter has exactly those globs as its
footprint: what it declares is authoritative, and nothing inferred is added (a
declared plain directory, ``src/auth`` or ``src/auth/``, becomes ``src/auth/**``).

A task that declares nothing has the repository paths its body mentions, back-ticked
or plain. A mention counts only if it exists: a tracked file, a directory holding
tracked files (written with a ``/``, so the word "tests" is not the folder
``tests/``), or a glob with a ``/`` that matches tracked files. Surrounding brackets,
quotes and a sentence's final dot are not part of a path.

For every mentioned Python file, the repository modules it imports are followed
``IMPORT_DEPTH`` levels deep: a task that rewrites ``tests/test_auth.py`` relies on the
modules that test exercises. Imports are read with ``ast``, each file parsed at most
once per ``RepoIndex`` (only its import-like lines, unless those alone fail to parse).
``import a.b``, ``from a import b`` and relative imports are resolved against the
importing file's package root, ``src/`` and the repository root.

The footprint (the *direct* entries) is what the task changes; the imports are what
those changes rely on. Two tasks *conflict* when their footprints meet. The import
graph never makes a conflict by itself: a footprint that meets only another task's
imports makes the two *related*, which the plan reports and the scheduler ignores (a
semantic break between them is what verification after integration catches). Were
imports to conflict, one shared utility module would put every task in conflict with
every other (in the benchmark, 97% of all pairs instead of a few percent).

Globs are fnmatch-style and anchored at the repository root: ``*`` and ``?`` stay within
one path segment, ``**`` spans any number of segments. Entries meet when they are equal
or one matches the other; two globs meet when a tracked file matches both, when one's
sample path matches the other, or when their literal prefixes nest and the one with the
shorter prefix is recursive (``src/**/*.py`` and ``src/auth/**``). The test errs towards
meeting: a false conflict only costs parallelism, a missed one costs a merge conflict.

Nothing here runs a subprocess; the caller passes the tracked files in.
"""

from __future__ import annotations

import ast
import bisect
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

IMPORT_DEPTH = 2  # direct imports and theirs; deeper chains reach most of a repository
MAX_SOURCE_BYTES = 1_000_000  # larger files are generated code, not worth parsing
_GLOB_CHARS = frozenset("*?[")
_TOKEN = re.compile(r"[\w.\-/*]+")
_EDGE = "*."
_IMPORT_START = re.compile(rb"^[ \t]*(?:import[ \t]|from[ \t]+[\w.]+[ \t]+import\b)", re.MULTILINE)
_BLOCKS = ("body", "orelse", "finalbody", "handlers", "cases")  # where statements nest


def is_glob(entry: str) -> bool:
    """Whether a footprint entry is a pattern rather than one path."""
    return not _GLOB_CHARS.isdisjoint(entry)


@lru_cache(maxsize=4096)
def compile_glob(pattern: str) -> re.Pattern[str]:
    """The regular expression for one glob, compiled once."""
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = re.escape(body[1:] if negate else body).replace(r"\-", "-")
            out.append(f"[^/{body}]" if negate else f"[{body}]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out), re.DOTALL)


def literal_prefix(pattern: str) -> str:
    """The part of a glob before its first wildcard."""
    cut = min((pattern.find(c) for c in _GLOB_CHARS if c in pattern), default=len(pattern))
    return pattern[:cut]


def sample_path(pattern: str) -> str:
    """One path the glob matches, used to test whether two globs can match alike."""
    text = pattern.replace("**/", "").replace("**", "x").replace("*", "x").replace("?", "x")
    return re.sub(r"\[!?([^\]])[^\]]*\]", lambda m: "x" if "!" in m.group(0) else m.group(1), text)


class RepoIndex:
    """The tracked files, their directories and their imports, built once per plan."""

    def __init__(self, root: Path, files: Iterable[str]) -> None:
        self.root = root
        self.sorted_files = sorted(set(files))
        self.files = frozenset(self.sorted_files)
        dirs: set[str] = set()
        for path in self.sorted_files:
            cut = path.rfind("/")
            while cut > 0 and path[:cut] not in dirs:
                dirs.add(path[:cut])
                cut = path.rfind("/", 0, cut)
        self.dirs = frozenset(dirs)
        self._matches: dict[str, frozenset[str]] = {}
        self._imports: dict[str, frozenset[str]] = {}
        self._closure: dict[str, frozenset[str]] = {}

    def under(self, prefix: str) -> list[str]:
        """Tracked files whose path starts with ``prefix``."""
        start = bisect.bisect_left(self.sorted_files, prefix)
        end = bisect.bisect_left(self.sorted_files, prefix + "\U0010ffff")
        return self.sorted_files[start:end]

    def matches(self, pattern: str) -> frozenset[str]:
        """Tracked files a glob matches (cached; only files under its literal prefix)."""
        found = self._matches.get(pattern)
        if found is None:
            prefix = literal_prefix(pattern)
            candidates = self.under(prefix)
            if pattern == prefix + "**":
                found = frozenset(candidates)
            else:
                regex = compile_glob(pattern)
                found = frozenset(p for p in candidates if regex.fullmatch(p))
            self._matches[pattern] = found
        return found

    def import_closure(self, path: str) -> frozenset[str]:
        """Repository modules ``path`` imports, ``IMPORT_DEPTH`` levels deep."""
        cached = self._closure.get(path)
        if cached is not None:
            return cached
        found: set[str] = set()
        frontier = {path}
        for _ in range(IMPORT_DEPTH):
            frontier = {m for f in frontier for m in self.imports(f)} - found - {path}
            found |= frontier
        result = self._closure[path] = frozenset(found)
        return result

    def imports(self, path: str) -> frozenset[str]:
        """The tracked modules one Python file imports directly (parsed once)."""
        found = self._imports.get(path)
        if found is None:
            found = self._imports[path] = frozenset(self._resolve_all(path)) - {path}
        return found

    def _resolve_all(self, path: str) -> Iterable[str]:
        try:
            source = (self.root / path).read_bytes()
            if len(source) > MAX_SOURCE_BYTES:
                return
            try:
                tree = ast.parse(_import_lines(source), filename=path)
            except (SyntaxError, ValueError):
                tree = ast.parse(source, filename=path)  # the quick cut misread it
        except (OSError, SyntaxError, ValueError, RecursionError):
            # An unreadable or invalid file imports nothing we can know about.
            return
        roots = self._roots(path)
        for node in _import_statements(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield from self._absolute(alias.name, roots)
            else:
                yield from self._from_import(path, node, roots)

    def _from_import(self, path: str, node: ast.ImportFrom, roots: list[str]) -> Iterable[str]:
        names = [a.name for a in node.names if a.name != "*"]
        if node.level == 0:
            base = node.module or ""
            for name in names:
                yield from self._absolute(f"{base}.{name}", roots)
            if not names:
                yield from self._absolute(base, roots)
            return
        parts = path.split("/")[:-1]
        if node.level - 1 > len(parts):
            return
        package = "/".join(parts[: len(parts) - (node.level - 1)])
        base = f"{package}/{node.module.replace('.', '/')}" if node.module else package
        base = base.lstrip("/")
        for name in names:
            found = self._module_at(f"{base}/{name}".lstrip("/"))
            found = found or self._module_at(base)
            if found:
                yield found
        if not names and (found := self._module_at(base)):
            yield found

    def _absolute(self, dotted: str, roots: list[str]) -> Iterable[str]:
        parts = dotted.split(".")
        for root in roots:
            for end in range(len(parts), 0, -1):
                found = self._module_at(root + "/".join(parts[:end]))
                if found:
                    yield found
                    return

    def _module_at(self, stem: str) -> str | None:
        if not stem:
            return None
        for candidate in (f"{stem}.py", f"{stem}/__init__.py"):
            if candidate in self.files:
                return candidate
        return None

    def _roots(self, path: str) -> list[str]:
        # The importing file's package root is where Python (or pytest's rootdir
        # insertion) would find its siblings: the first ancestor without __init__.py.
        parts = path.split("/")[:-1]
        while parts and "/".join([*parts, "__init__.py"]) in self.files:
            parts.pop()
        own = "/".join(parts) + "/" if parts else ""
        return list(dict.fromkeys([own, "src/", ""]))


def _import_lines(source: bytes) -> bytes:
    """The statements that look like imports, dedented, as one small module.

    Parsing a whole module costs several times more. A line inside a string that reads
    like an import counts as one; one that does not parse sends the caller to the whole.
    """
    found: list[bytes] = []
    for match in _IMPORT_START.finditer(source):
        end = source.find(b"\n", match.start())
        end = len(source) if end == -1 else end
        code = source[match.start() : end].partition(b"#")[0]
        if b"(" in code and b")" not in code:
            close = source.find(b")", end)
            end = len(source) if close == -1 else close + 1
        while source[max(0, end - 2) : end].rstrip(b"\r").endswith(b"\\"):
            following = source.find(b"\n", end + 1)
            end = len(source) if following == -1 else following
        found.append(source[match.start() : end].lstrip(b" \t"))
    return b"\n".join(found)


def _import_statements(tree: ast.Module) -> Iterator[ast.Import | ast.ImportFrom]:
    """Import statements at any depth; expressions never hold one, so they are skipped."""
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        else:
            for block in _BLOCKS:
                todo.extend(getattr(node, block, ()))


@dataclass(frozen=True)
class Footprint:
    direct: frozenset[str]  # declared globs and mentioned paths: what the task changes
    imported: frozenset[str]  # modules the mentioned Python files import, not direct

    @property
    def entries(self) -> tuple[str, ...]:
        """What the task changes, sorted: what ``gadugi plan`` shows as its footprint."""
        return tuple(sorted(self.direct))


def footprint(body: str, touches: Sequence[str], index: RepoIndex) -> Footprint:
    """A task's footprint: its declared globs, or else the paths it mentions that
    exist; with the modules those import beside it."""
    if touches:
        return Footprint(frozenset(_normalize_declared(t, index) for t in touches), frozenset())
    direct: set[str] = set()
    for token in _TOKEN.findall(body):
        entry = _mention(token, index)
        if entry is not None:
            direct.add(entry)
    imported: set[str] = set()
    for entry in direct:
        if entry.endswith(".py") and entry in index.files:
            imported |= index.import_closure(entry)
    return Footprint(frozenset(direct), frozenset(imported - direct))


def _normalize_declared(raw: str, index: RepoIndex) -> str:
    text = raw.strip().removeprefix("./").lstrip("/")
    if not is_glob(text) and (text.endswith("/") or text in index.dirs):
        return text.rstrip("/") + "/**"
    return text


def _mention(token: str, index: RepoIndex) -> str | None:
    if "/" not in token and "." not in token:
        return token if token in index.files else None  # most words: not a path at all
    text = token.lstrip("/")
    while text.startswith("./"):
        text = text[2:]
    for candidate in dict.fromkeys((text.rstrip("."), text.strip(_EDGE))):
        if not candidate:
            continue
        if candidate in index.files:
            return candidate
        bare = candidate.rstrip("/")
        if "/" in candidate and bare in index.dirs:
            return bare + "/**"
    if "/" in text and is_glob(text):
        pattern = text.rstrip(".")
        return pattern if index.matches(pattern) else None
    return None


@dataclass(frozen=True)
class Overlaps:
    """Per footprint, by index: the footprints it conflicts with, and those it is only
    related to (its changes meet their imports, or theirs meet its imports)."""

    conflicts: list[set[int]]
    related: list[set[int]]


def overlaps(footprints: Sequence[Footprint], index: RepoIndex) -> Overlaps:
    """Which footprints meet which, directly (a conflict) or through imports (related)."""
    direct: dict[str, list[int]] = defaultdict(list)
    imported: dict[str, list[int]] = defaultdict(list)
    for i, print_ in enumerate(footprints):
        for entry in print_.direct:
            direct[entry].append(i)
        for entry in print_.imported:
            imported[entry].append(i)
    meeting = _related_entries(sorted(direct.keys() | imported.keys()), index)
    conflicts: list[set[int]] = []
    related: list[set[int]] = []
    for i, print_ in enumerate(footprints):
        changed: set[int] = set()
        relied: set[int] = set()
        for entry in print_.direct:
            for other in (entry, *meeting.get(entry, ())):
                changed.update(direct.get(other, ()))
                relied.update(imported.get(other, ()))
        for entry in print_.imported:
            for other in (entry, *meeting.get(entry, ())):
                relied.update(direct.get(other, ()))
        changed.discard(i)
        conflicts.append(changed)
        related.append(relied - changed - {i})
    return Overlaps(conflicts, related)


def _related_entries(entries: list[str], index: RepoIndex) -> dict[str, set[str]]:
    """Pairs of distinct entries that can name the same path, in both directions."""
    globs = [e for e in entries if is_glob(e)]
    related: dict[str, set[str]] = defaultdict(set)

    def link(a: str, b: str) -> None:
        if a != b:
            related[a].add(b)
            related[b].add(a)

    by_file: dict[str, list[str]] = defaultdict(list)
    for glob in globs:
        for path in index.matches(glob):
            by_file[path].append(glob)
    for entry in entries:
        if not is_glob(entry):
            for glob in by_file.get(entry, ()):
                link(entry, glob)
    for sharing in {tuple(g) for g in by_file.values() if len(g) > 1}:
        for j, a in enumerate(sharing):
            for b in sharing[j + 1 :]:
                link(a, b)
    by_dir = _globs_by_dir(globs)
    for entry in entries:
        if not is_glob(entry) and entry not in index.files:
            for glob in _candidate_globs(entry, by_dir):
                if compile_glob(glob).fullmatch(entry):
                    link(entry, glob)
    for glob in globs:
        sample = sample_path(glob)
        for other in _candidate_globs(sample, by_dir):
            if compile_glob(other).fullmatch(sample):
                link(glob, other)
    # Nested literal prefixes under a recursive glob: src/** against src/auth/*.py.
    ordered = sorted((literal_prefix(g), g) for g in globs)
    prefixes = [p for p, _ in ordered]
    for prefix, glob in ordered:
        if "**" in glob:
            start = bisect.bisect_left(prefixes, prefix)
            end = bisect.bisect_left(prefixes, prefix + "\U0010ffff")
            for _, other in ordered[start:end]:
                link(glob, other)
    return related


def _globs_by_dir(globs: Sequence[str]) -> dict[str, list[str]]:
    by_dir: dict[str, list[str]] = defaultdict(list)
    for glob in globs:
        prefix = literal_prefix(glob)
        by_dir[prefix[: prefix.rfind("/") + 1]].append(glob)
    return by_dir


def _candidate_globs(path: str, by_dir: dict[str, list[str]]) -> Iterable[str]:
    """Globs whose literal directory is an ancestor of ``path``: the only ones that can match."""
    yield from by_dir.get("", ())
    cut = path.find("/")
    while cut != -1:
        yield from by_dir.get(path[: cut + 1], ())
        cut = path.find("/", cut + 1)

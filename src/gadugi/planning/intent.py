"""What a prompt's prose says about its task: its type, an estimate, what it waits for.

* **Type**: front matter ``type``, else keywords counted as whole words (``prefix`` is not
  ``fix``, ``debug`` not ``bug``, ``attestation`` not ``test``), a word in the title or a
  heading counting ``HEADING_WEIGHT`` times one in the prose. Code, paths and identifiers
  are not prose. Ties go to the type naming *what* changes (docs, tests, config) over
  *how* (fix, add); no keyword at all means ``feature``.
* **Estimate** in minutes: front matter ``estimate_minutes``, else
  ``BASE_MINUTES[type] * (1 + words / WORDS_PER_BASE)``, capped at ``MAX_ESTIMATE_FACTOR``
  times the base, rounded to the minute: a 300-word feature is an hour.
* **Dependencies**: front matter ``depends_on`` and explicit body lines ``Depends on: a.md,
  b.md`` (also ``Depends-on:``, any case, bulleted or bold, or followed by a bullet list;
  not inside fenced code). A line must *start* with the phrase and have the colon, so prose
  ("this depends on the weather") never makes a dependency. ``none`` means none. A name is
  a task id, a prompt path (``prompts/a.md``), a file name (``a.md``) or a stem (``a``);
  one that names no task in the request raises ``PlanError``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

from ..errors import PlanError
from ..tasks import Prompt
from .prompts import safe_id

BASE_MINUTES = {"feature": 30, "bug fix": 20, "tests": 20, "docs": 10, "refactor": 25, "config": 10}
WORDS_PER_BASE = 300
MAX_ESTIMATE_FACTOR = 4
HEADING_WEIGHT = 3
# Ties go to the type saying *what* changes (docs, tests, config) over *how* (fix, add).
_TIE_ORDER = ("docs", "tests", "config", "refactor", "bug fix", "feature")
_KEYWORDS = {
    "bug fix": "fix fixes fixed fixing bug bugs bugfix hotfix regression crash crashes broken",
    "tests": "test tests testing tested pytest coverage unittest",
    "docs": "doc docs documentation document documenting readme docstring docstrings changelog"
    " tutorial guide",
    "refactor": "refactor refactors refactoring refactored rename restructure reorganize"
    " reorganise simplify cleanup deduplicate extract",
    "config": "config configuration configure ci settings toml yaml dockerfile lint linting"
    " workflow workflows pipeline",
    "feature": "add adds adding implement implements implementing feature features support"
    " introduce new create build",
}
KEYWORDS = {kind: frozenset(words.split()) for kind, words in _KEYWORDS.items()}
_KIND_OF = {word: kind for kind, words in KEYWORDS.items() for word in words}
_HEADING = re.compile(r"^[ \t]{0,3}#{1,6}[ \t]+(.*)$", re.MULTILINE)
_FENCED = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_PUNCT = "\"'()[]{}<>.,;:!?*_~"
_NOT_PROSE = re.compile(r"[/._\\=@]|\d$")
_DEPENDS_LINE = re.compile(
    r"^[ \t]*(?:[-*+][ \t]+)?(?:\*\*|__)?depends[ \t_-]on(?:\*\*|__)?[ \t]*:(?:\*\*|__)?(.*)$",
    re.IGNORECASE,
)
_FENCE = re.compile(r"^[ \t]*(```|~~~)")
_BULLET_ITEM = re.compile(r"^[ \t]*(?:[-*+]|\d+[.)])[ \t]+(.+)$")
_ITEM_SPLIT = re.compile(r"[,;]|[ \t]+(?:and|&)[ \t]+", re.IGNORECASE)
_NO_DEPENDENCY = frozenset({"none", "nothing", "n/a", "-", "--", "\u2014", "nil"})


def dependencies(prompts: Sequence[Prompt]) -> dict[str, tuple[str, ...]]:
    """Each task's dependencies as task ids in request order; unknown names raise."""
    resolve = resolve_references(prompts)
    order = {p.task_id: i for i, p in enumerate(prompts)}
    result: dict[str, tuple[str, ...]] = {}
    for prompt in prompts:
        ids = {resolve(prompt.task_id, ref) for ref in prompt.depends_on}
        ids |= {resolve(prompt.task_id, ref) for ref in body_dependencies(prompt.body)}
        result[prompt.task_id] = tuple(sorted(ids, key=order.__getitem__))
    return result


def classify(prompt: Prompt) -> str:
    """The task's type: front matter, else whole keywords, headings weighing more."""
    if prompt.type:
        return prompt.type
    body = _INLINE_CODE.sub(" ", _FENCED.sub(" ", prompt.body))
    headings = _HEADING.findall(body)
    if prompt.title not in headings:
        headings.append(prompt.title)
    prose = _HEADING.sub(" ", body)
    scores = dict.fromkeys(_TIE_ORDER, 0)
    for text, weight in ((" ".join(headings), HEADING_WEIGHT), (prose, 1)):
        for kind in _keyword_kinds(text):
            scores[kind] += weight
    best = max(_TIE_ORDER, key=lambda kind: (scores[kind], -_TIE_ORDER.index(kind)))
    return best if scores[best] else "feature"


def estimate(prompt: Prompt, kind: str) -> float:
    """Minutes the task should take: front matter, else the type's base scaled by length."""
    if prompt.estimate_minutes:
        return prompt.estimate_minutes
    words = len(prompt.body.split())
    factor = min(1 + words / WORDS_PER_BASE, MAX_ESTIMATE_FACTOR)
    return float(round(BASE_MINUTES[kind] * factor))


def _keyword_kinds(text: str) -> Iterator[str]:
    """The type each keyword in ``text`` votes for, one vote per whole word."""
    for raw in text.split():
        chunk = raw.strip(_PUNCT).lower()
        # Paths, identifiers and versions are not prose: "test_auth.py" says nothing.
        if _NOT_PROSE.search(chunk) is None:
            for word in chunk.split("-"):
                kind = _KIND_OF.get(word)
                if kind is not None:
                    yield kind


def body_dependencies(body: str) -> list[str]:
    """Names on explicit ``Depends on:`` lines (or the bullets right after one)."""
    names: list[str] = []
    lines = body.splitlines()
    fenced, i = False, 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if _FENCE.match(line):
            fenced = not fenced
        match = None if fenced else _DEPENDS_LINE.match(line)
        if match is None:
            continue
        rest = match.group(1).strip()
        if rest:
            names += _names(rest)
            continue
        while i < len(lines) and not lines[i].strip():
            i += 1
        while i < len(lines) and (item := _BULLET_ITEM.match(lines[i])):
            names += _names(item.group(1))
            i += 1
    return names


def _names(text: str) -> list[str]:
    quoted = re.findall(r"`([^`]+)`", text)
    items = quoted or _ITEM_SPLIT.split(text)
    names: list[str] = []
    for raw in items:
        item = raw.strip().strip("\"'*_").rstrip(".").strip()
        words = item.split()
        if len(words) > 1 and all(w.lower().endswith(".md") for w in words):
            names += words  # "a.md b.md": a list without commas
        elif item and item.lower() not in _NO_DEPENDENCY:
            names.append(item)
    return names


def resolve_references(prompts: Sequence[Prompt]) -> Callable[[str, str], str]:
    """A function from (task id, name as written) to the named task's id."""
    ids = {p.task_id for p in prompts}
    by_path = {p.rel_path: p.task_id for p in prompts}
    by_name: dict[str, list[str]] = {}
    for prompt in prompts:
        stem = prompt.path.stem
        for key in dict.fromkeys((prompt.path.name, stem, safe_id(stem))):
            by_name.setdefault(key, []).append(prompt.task_id)

    def resolve(task_id: str, ref: str) -> str:
        text = ref.strip().strip("`\"'").removeprefix("./")
        for key in (text, safe_id(text)):
            if key in ids:
                return key
        for key in (text, f"{text}.md"):
            if key in by_path:
                return by_path[key]
        base = text.rsplit("/", 1)[-1]
        for key in (base, f"{base}.md", safe_id(base.removesuffix(".md"))):
            found = by_name.get(key, [])
            if len(found) > 1:
                raise PlanError(
                    f"{task_id}: dependency {ref!r} is ambiguous: {', '.join(found)}",
                    [task_id, *found],
                )
            if found:
                return found[0]
        raise PlanError(
            f"{task_id}: unknown dependency {ref!r}: no task in this request has that id "
            "or prompt file",
            [task_id, ref],
        )

    return resolve

"""A throwaway repository whose prompts the shell agent can run offline, for the quick start.

The batch shows the whole path on a small scale: independent tasks, a task that depends
on another, and a pair that edits the same lines of one file (the changelog), so the
plan sees a conflict and stacks the second task on the first. Every task adds a module
and its unit test, and the verification command runs them all.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

VERIFY = "python3 -m unittest -q"
CHANGELOG = "CHANGELOG.md"


@dataclass(frozen=True)
class _Topic:
    slug: str
    title: str
    module: str  # the module the task adds, and the test beside it
    code: str
    test: str
    changelog: bool = False  # whether it also adds a line to the changelog (the conflict)
    depends_on: str | None = None


_TOPICS = [
    _Topic(
        "greeting",
        "Add a greeting module",
        "greeting",
        "def greet(name):\n    return f'Hello, {name}!'\n",
        "self.assertEqual(greeting.greet('Ada'), 'Hello, Ada!')",
    ),
    _Topic(
        "math-helpers",
        "Add arithmetic helpers",
        "math_helpers",
        "def add(a, b):\n    return a + b\n",
        "self.assertEqual(math_helpers.add(2, 3), 5)",
        changelog=True,
    ),
    _Topic(
        "config-defaults",
        "Add default settings",
        "settings",
        "DEBUG = False\nWORKERS = 4\n",
        "self.assertEqual(settings.WORKERS, 4)",
        changelog=True,
    ),
    _Topic(
        "docs-usage",
        "Document the greeting",
        "usage_example",
        "from greeting import greet\n\nEXAMPLE = greet('world')\n",
        "self.assertEqual(usage_example.EXAMPLE, 'Hello, world!')",
        depends_on="greeting",
    ),
]


def _prompt(topic: _Topic, n: int) -> str:
    module, test = f"{topic.module}.py", f"test_{topic.module}.py"
    touches = [module, test] + ([CHANGELOG] if topic.changelog else [])
    front = [f"touches: [{', '.join(repr(t) for t in touches)}]"]
    if topic.depends_on:
        front.append(f"depends_on: [{topic.depends_on}]")
    note = ""
    changelog = ""
    if topic.changelog:
        note = f" It also adds a line to `{CHANGELOG}`, as another task does."
        changelog = f'echo "- {topic.title}" >> {CHANGELOG}\ngit add {CHANGELOG}\n'
    code = topic.code.replace("'", "'\\''")
    test_code = (
        f"import unittest\n\nimport {topic.module}\n\n\n"
        f"class Test{n}(unittest.TestCase):\n    def test_it(self):\n        {topic.test}\n"
    ).replace("'", "'\\''")
    nl = "\n"
    return f"""---
{nl.join(front)}
---
# {topic.title}

A demonstration task for the shell agent: it works for a moment, writes `{module}` and
its test in its own worktree and commits them on its own branch.{note}

```sh
echo "task {n}: working on {module}"
sleep 2
printf '%s' '{code}' > {module}
printf '%s' '{test_code}' > {test}
{changelog}git add {module} {test}
git commit --quiet -m "{topic.title}"
echo "task {n}: committed $(git rev-parse --short HEAD) on $GADUGI_BRANCH"
```
"""


def _topic(n: int) -> _Topic:
    topic = _TOPICS[n % len(_TOPICS)]
    if n < len(_TOPICS):
        return topic
    # Beyond the first four: more independent tasks of the same kinds, each its own module.
    return _Topic(
        f"{topic.slug}-{n}",
        f"{topic.title} ({n})",
        f"{topic.module}_{n}",
        topic.code,
        topic.test.replace(f"{topic.module}.", f"{topic.module}_{n}."),
        depends_on=topic.depends_on,
    )


def make_demo_repository(directory: Path | None, count: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="gadugi-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    (root / "README.md").write_text("# Demo project\n\nCreated by `gadugi demo`.\n")
    (root / CHANGELOG).write_text("# Changelog\n\n")
    (root / "test_readme.py").write_text(
        "import pathlib\nimport unittest\n\n\nclass TestReadme(unittest.TestCase):\n"
        "    def test_readme(self):\n"
        "        self.assertTrue(pathlib.Path('README.md').read_text().startswith('# Demo'))\n"
    )
    for n in range(count):
        topic = _topic(n)
        (root / "prompts" / f"{topic.slug}.md").write_text(_prompt(topic, n + 1))
    for args in (
        ["init", "--quiet", "-b", "main"],
        ["config", "user.name", "gadugi demo"],
        ["config", "user.email", "demo@gadugi.invalid"],
        ["add", "-A"],
        ["commit", "--quiet", "-m", "Demo project with task prompts"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root

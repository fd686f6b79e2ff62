"""A throwaway repository whose prompts the shell agent can run offline, for the quick start."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

_TOPICS = [
    ("greeting", "Add a greeting module", "def greet(name):\n    return f'Hello, {name}!'\n"),
    ("math-helpers", "Add arithmetic helpers", "def add(a, b):\n    return a + b\n"),
    ("docs-usage", "Document usage", "# Usage\\n\\nRun the program.\\n"),
    ("config-defaults", "Add default settings", "DEBUG = False\nWORKERS = 4\n"),
]


def _prompt(slug: str, title: str, content: str, n: int) -> str:
    target = f"docs/{slug}.md" if slug.startswith("docs") else f"src/{slug.replace('-', '_')}.py"
    return f"""---
touches: ["{target}"]
---
# {title}

A demonstration task for the shell agent: it works for a moment, writes
`{target}` in its own worktree and commits it on its own branch.

```sh
echo "task {n}: working on {target}"
sleep 2
mkdir -p "$(dirname {target})"
printf '%s' '{content}' > {target}
git add {target}
git commit --quiet -m "{title}"
echo "task {n}: committed $(git rev-parse --short HEAD) on $GADUGI_BRANCH"
```
"""


def make_demo_repository(directory: Path | None, count: int) -> Path:
    root = Path(tempfile.mkdtemp(prefix="gadugi-demo-")) if directory is None else directory
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompts").mkdir(exist_ok=True)
    (root / "README.md").write_text("# Demo project\n\nCreated by `gadugi demo`.\n")
    for n in range(count):
        slug, title, content = _TOPICS[n % len(_TOPICS)]
        if n >= len(_TOPICS):
            slug, title = f"{slug}-{n}", f"{title} ({n})"
        (root / "prompts" / f"{slug}.md").write_text(_prompt(slug, title, content, n + 1))
    for args in (
        ["init", "--quiet", "-b", "main"],
        ["config", "user.name", "gadugi demo"],
        ["config", "user.email", "demo@gadugi.invalid"],
        ["add", "-A"],
        ["commit", "--quiet", "-m", "Demo project with task prompts"],
    ):
        subprocess.run(["git", *args], cwd=root, check=True, capture_output=True)
    return root

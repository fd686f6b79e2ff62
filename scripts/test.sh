#!/usr/bin/env bash
# The whole test suite, as CI runs it: lint, types, then the tests (real git, real
# processes, the real agent CLIs against our scripted model server on 127.0.0.1).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$here"
"$here/scripts/setup.sh" test
venv="$here/.venv/bin"
# The pinned agent CLIs, installed once here rather than by the first test that needs them.
echo "== agent CLIs" && scripts/install-agent-clis.sh
echo "== ruff" && "$venv/ruff" check src tests bench && "$venv/ruff" format --check src tests bench
echo "== mypy --strict" && "$venv/mypy"
echo "== pytest" && exec "$venv/pytest" -n 2 -q "$@"

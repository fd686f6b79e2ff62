#!/usr/bin/env bash
# Creates .venv beside this repository and installs gadugi into it (with the test tools
# when given "test"). Quick when nothing changed: a stamp records what was installed.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extra="${1:-}"
venv="$here/.venv"
python="${PYTHON:-python3}"
spec="$here"
[ "$extra" = "test" ] && spec="$here[test]"
stamp="$venv/.gadugi-installed${extra:+-$extra}"
want="$(cat "$here/pyproject.toml" | sha256sum | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$venv/bin/gadugi" ]; then
  exit 0
fi
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "gadugi needs Python 3.11 or newer (found: $("$python" --version 2>&1))" >&2
  exit 2
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "setting up $venv (first use) ..." >&2
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$spec" >&2
echo "$want" > "$stamp"

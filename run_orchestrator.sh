#!/usr/bin/env bash
# The seed's entry point: same flags as `gadugi run`. On a fresh clone it first installs
# gadugi into .venv beside this script. `--demo` runs the offline demonstration instead.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/scripts/setup.sh"
if [ "${1:-}" = "--demo" ]; then
  shift
  exec "$here/.venv/bin/gadugi" demo "$@"
fi
exec "$here/.venv/bin/gadugi" run "$@"

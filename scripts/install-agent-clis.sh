#!/usr/bin/env bash
# Install the agent CLIs gadugi's tests drive, at pinned exact versions, into a cache folder.
#
#   scripts/install-agent-clis.sh          # prints the bin dir that holds `claude`
#   GADUGI_CLI_CACHE=/some/dir scripts/install-agent-clis.sh
#
# Idempotent and quick when the pinned version is already there. Only the npm registry is
# contacted: the package's postinstall links its native binary, which itself comes from an
# npm optional dependency (@anthropic-ai/claude-code-linux-x64 and friends).
set -euo pipefail

# 2.1.197 is the newest release whose engines field allows Node 20 (2.1.331 wants >=22).
CLAUDE_CODE_VERSION="${GADUGI_CLAUDE_CODE_VERSION:-2.1.197}"
CACHE="${GADUGI_CLI_CACHE:-${HOME}/.cache/gadugi/agent-clis}"
PREFIX="${CACHE}/claude-code-${CLAUDE_CODE_VERSION}"
BIN="${PREFIX}/node_modules/.bin"

is_installed() {
    [[ -x "${BIN}/claude" ]] &&
        [[ "$("${BIN}/claude" --version 2>/dev/null | awk '{print $1}')" == "${CLAUDE_CODE_VERSION}" ]]
}

if is_installed; then
    echo "${BIN}"
    exit 0
fi

command -v npm >/dev/null || { echo "npm is required to install Claude Code" >&2; exit 127; }
mkdir -p "${CACHE}"

# Parallel test workers may all call this at once: one installs, the others wait for it.
exec 9>"${CACHE}/.install.lock"
flock -w 600 9 || { echo "timed out waiting for ${CACHE}/.install.lock" >&2; exit 1; }
if is_installed; then
    echo "${BIN}"
    exit 0
fi

# Install into a staging folder and rename it into place, so an interrupted install is
# never mistaken for a good one.
STAGING="$(mktemp -d "${CACHE}/.staging-XXXXXX")"
trap 'rm -rf "${STAGING}"' EXIT
chmod 755 "${STAGING}"
npm install --prefix "${STAGING}" --no-audit --no-fund --no-save --loglevel=error \
    "@anthropic-ai/claude-code@${CLAUDE_CODE_VERSION}" >&2
rm -rf "${PREFIX}"
mv -T "${STAGING}" "${PREFIX}"
is_installed || { echo "${BIN}/claude does not report version ${CLAUDE_CODE_VERSION}" >&2; exit 1; }
echo "${BIN}"

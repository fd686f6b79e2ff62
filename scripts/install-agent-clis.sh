#!/usr/bin/env bash
# Install the agent CLIs gadugi's tests drive, at pinned exact versions, into a cache folder.
#
#   scripts/install-agent-clis.sh            # all of them; prints the bin dir that holds `claude`
#   scripts/install-agent-clis.sh codex      # only Codex; prints the bin dir that holds `codex`
#   GADUGI_CLI_CACHE=/some/dir scripts/install-agent-clis.sh gemini
#
# Names: claude, codex, gemini. Idempotent and quick when the pinned version is already
# there. Only the npm registry is contacted: Claude Code and Codex ship their native
# binaries as npm optional dependencies (@anthropic-ai/claude-code-linux-x64,
# @openai/codex-linux-x64, ...); gemini-cli is JavaScript (its node-pty is built locally).
# aider is not installed here: it is a ~700 MB PyPI virtualenv, too heavy for CI.
set -euo pipefail

# 2.1.197 is the newest Claude Code whose engines field allows Node 20 (2.1.331 wants >=22).
CLAUDE_CODE_VERSION="${GADUGI_CLAUDE_CODE_VERSION:-2.1.197}"
CODEX_VERSION="${GADUGI_CODEX_VERSION:-0.169.0}"
GEMINI_CLI_VERSION="${GADUGI_GEMINI_CLI_VERSION:-0.61.0}"
CACHE="${GADUGI_CLI_CACHE:-${HOME}/.cache/gadugi/agent-clis}"

# name -> npm package, version, install folder (the claude folder keeps its old name so an
# existing cache stays valid)
spec() {
    case "$1" in
        claude) echo "@anthropic-ai/claude-code ${CLAUDE_CODE_VERSION} claude-code-${CLAUDE_CODE_VERSION}" ;;
        codex) echo "@openai/codex ${CODEX_VERSION} codex-${CODEX_VERSION}" ;;
        gemini) echo "@google/gemini-cli ${GEMINI_CLI_VERSION} gemini-cli-${GEMINI_CLI_VERSION}" ;;
        *) echo "unknown agent CLI '$1' (known: claude codex gemini)" >&2; return 2 ;;
    esac
}

is_installed() { # name version bin
    [[ -x "$3/$1" ]] && "$3/$1" --version 2>/dev/null | grep -qwF "$2"
}

install_one() { # name; prints its bin dir
    local name="$1" package version folder prefix bin staging
    read -r package version folder <<<"$(spec "${name}")"
    prefix="${CACHE}/${folder}"
    bin="${prefix}/node_modules/.bin"
    if is_installed "${name}" "${version}" "${bin}"; then
        echo "${bin}"
        return 0
    fi
    command -v npm >/dev/null || { echo "npm is required to install ${package}" >&2; exit 127; }
    mkdir -p "${CACHE}"
    # Parallel test workers may all call this at once: one installs, the others wait for it.
    exec 9>"${CACHE}/.install.lock"
    flock -w 600 9 || { echo "timed out waiting for ${CACHE}/.install.lock" >&2; exit 1; }
    if ! is_installed "${name}" "${version}" "${bin}"; then
        # Install into a staging folder and rename it into place, so an interrupted
        # install is never mistaken for a good one.
        staging="$(mktemp -d "${CACHE}/.staging-XXXXXX")"
        trap 'rm -rf "${staging}"' EXIT
        chmod 755 "${staging}"
        npm install --prefix "${staging}" --no-audit --no-fund --no-save --loglevel=error \
            "${package}@${version}" >&2
        rm -rf "${prefix}"
        mv -T "${staging}" "${prefix}"
        trap - EXIT
        is_installed "${name}" "${version}" "${bin}" ||
            { echo "${bin}/${name} does not report version ${version}" >&2; exit 1; }
    fi
    exec 9>&-
    echo "${bin}"
}

if [[ $# -eq 0 ]]; then
    install_one codex >/dev/null
    install_one gemini >/dev/null
    install_one claude
    exit 0
fi
for name in "$@"; do
    spec "${name}" >/dev/null || exit 2
    install_one "${name}"
done

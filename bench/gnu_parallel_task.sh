#!/usr/bin/env bash
# One task the GNU parallel way, for bench/vs_gnu_parallel.py: a fresh worktree on a new
# branch, the prompt's ```sh block run by `bash -e` inside it (as gadugi's shell agent
# does), output to a log file, then the worktree removed (git refuses a dirty one; the
# branch stays). git's worktree bookkeeping races when two `git worktree add`/`remove` run
# at once in one repository, so those two commands hold an flock, as gadugi's do.
#
# usage: gnu_parallel_task.sh REPO PROMPT_FILE TAG
set -euo pipefail
repo=$1 prompt=$2 tag=$3
id=$(basename "$prompt" .md)
wt="$repo/.worktrees/$id-$tag"
lock="$repo/.git/bench-worktree.lock"
mkdir -p "$repo/.logs"
flock "$lock" git -C "$repo" worktree add --quiet -b "par/$id-$tag" "$wt" HEAD
(cd "$wt" && sed -n '/^```sh$/,/^```$/{//!p}' "$prompt" | bash -e) >"$repo/.logs/$id.log" 2>&1
flock "$lock" git -C "$repo" worktree remove "$wt"

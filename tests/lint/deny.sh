#!/usr/bin/env bash
# cargo-deny over the workspace's dependency graph, with the policy in deny.toml: licences,
# banned crates, sources. cargo-deny is installed from crates.io into the tool cache once
# (tests/lint/cargo-tool.sh; about 5 minutes cold).
#   tests/lint/deny.sh               licences, bans, sources (what the test command runs)
#   tests/lint/deny.sh advisories    also RustSec's advisories: needs GitHub (the advisory
#                                    database is a git repository), which the build machines
#                                    here cannot reach
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=cargo-tool.sh
source "$root/tests/lint/cargo-tool.sh"
deny=$(cargo_tool cargo-deny 0.20.2)
checks=(licenses bans sources)
if [ "${1:-}" = advisories ]; then
  checks+=(advisories)
fi
cd "$root"
"$deny" --locked check --hide-inclusion-graph "${checks[@]}"

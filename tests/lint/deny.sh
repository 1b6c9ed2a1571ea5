#!/usr/bin/env bash
# cargo-deny over the workspace's dependency graph, with the policy in deny.toml: licences,
# banned crates, sources. cargo-deny is installed from crates.io into the tool cache once
# ($SHOP_TOOLS_DIR/cargo-deny-<version>, keyed by version; about 5 minutes cold).
#   tests/lint/deny.sh               licences, bans, sources (what the test command runs)
#   tests/lint/deny.sh advisories    also RustSec's advisories: needs GitHub (the advisory
#                                    database is a git repository), which the build machines
#                                    here cannot reach
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
version=0.20.2
tools=${SHOP_TOOLS_DIR:-$HOME/.cache/shop/tools}
dir=$tools/cargo-deny-$version
if [ ! -x "$dir/bin/cargo-deny" ]; then
  echo "deny: installing cargo-deny $version from crates.io into $dir" >&2
  started=$(date +%s)
  # Its own target directory, removed after: nothing of it is worth keeping but the binary.
  build=$(mktemp -d)
  CARGO_TARGET_DIR=$build cargo install --quiet --locked cargo-deny --version "$version" --root "$dir.partial"
  rm -rf "$build" "$dir"
  mv "$dir.partial" "$dir"
  echo "deny: installed in $(($(date +%s) - started)) s" >&2
fi
checks=(licenses bans sources)
if [ "${1:-}" = advisories ]; then
  checks+=(advisories)
fi
cd "$root"
"$dir/bin/cargo-deny" --locked check --hide-inclusion-graph "${checks[@]}"

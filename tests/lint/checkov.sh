#!/usr/bin/env bash
# Runs checkov (pinned, from PyPI, in a venv of its own under ~/.cache/shop) on Kubernetes
# manifests: tests/lint/checkov.sh FILE_OR_DIR...
# The checks skipped, each with its reason, are in tests/lint/checkov.yaml.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
version=3.3.30
venv=$HOME/.cache/shop/venv-checkov-$version
if [ ! -x "$venv/bin/checkov" ]; then
  # Built under a temporary name and renamed, so an interrupted install is never reused
  # (run through the venv's python below, so the rename does not matter).
  rm -rf "$venv.partial"
  python3 -m venv "$venv.partial" >&2
  "$venv.partial/bin/pip" install --quiet "checkov==$version" >&2
  rm -rf "$venv"
  mv "$venv.partial" "$venv"
fi
args=()
for target in "$@"; do
  if [ -d "$target" ]; then args+=(--directory "$target"); else args+=(--file "$target"); fi
done
# --skip-download: no calls home (the machines reach package registries only).
exec "$venv/bin/python3" "$venv/bin/checkov" --config-file "$here/checkov.yaml" \
  --framework kubernetes --skip-download --quiet --compact "${args[@]}"

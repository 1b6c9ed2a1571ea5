#!/usr/bin/env bash
# Runs the end-to-end tests on a kind cluster, for machines with Docker (the build machines
# have no container engine and use tests/cluster/cluster.sh instead; the tests are the same).
#
# Creates a throwaway kind cluster, builds the image from the repository's Dockerfile, loads
# it into the cluster's nodes, installs the operator and the whole shop with the Helm charts
# (the golden path of the README), waits until every ShopService is Ready, runs
# `cargo test -p shop-e2e` against the cluster and deletes it on exit, whether the tests pass
# or not. It cannot run on the build machines (no container engine) and is kept simple for that
# reason: every step is a plain command a user would type.
#
# Needs: docker, kind, helm, kubectl, cargo. Environment: KIND_CLUSTER_NAME (default shop-e2e),
# SHOP_IMAGE (default shop:e2e; a non-latest tag so pods use the loaded image and never
# pull), KIND_NODE_IMAGE (optional kindest/node image, to pin the Kubernetes version).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=${KIND_CLUSTER_NAME:-shop-e2e}
IMAGE=${SHOP_IMAGE:-shop:e2e}

for tool in docker kind helm kubectl cargo; do
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
export KUBECONFIG=$KUBECONFIG_FILE
# The operator in the cluster, every service from the same image (the image holds both).
helm install shop-operator charts/shop-operator --namespace shop-system --create-namespace \
	--set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --wait --timeout 5m
# With the chart's bundled NATS server (its default), so the events (notifications, carts
# emptied after checkout) flow.
helm install shop charts/shop --namespace shop --create-namespace
# kind's default StorageClass provisions the databases' volumes.
kubectl wait --namespace shop --for condition=Ready shopservices --all --timeout 10m
kubectl get shopservices --namespace shop
# The charts' own test pods (templates/tests/; busybox pulled from Docker Hub).
helm test shop-operator --namespace shop-system
helm test shop --namespace shop
# The in-cluster operator watches every namespace; the tests run operators of their own in
# their namespaces, so it goes before them (the shop first, while the operator finishes its
# deletions).
helm uninstall shop --namespace shop --wait
helm uninstall shop-operator --namespace shop-system --wait
# real_node.rs needs the local real node (its images, its network namespace); kind runs the rest.
SHOP_E2E_IMAGE=$IMAGE cargo test -p shop-e2e -- --skip real_node_ "$@"

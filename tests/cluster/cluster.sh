#!/usr/bin/env bash
# A local Kubernetes cluster for the end-to-end tests: a real kube-apiserver, etcd,
# kube-controller-manager and kube-scheduler run as local processes (kwokctl's binary
# runtime), with kwok simulating the nodes. No container engine is needed, and every
# component listens on 127.0.0.1 only.
#
# Usage: tests/cluster/cluster.sh up       build/reuse the tools, start the cluster, wait until ready
#        tests/cluster/cluster.sh up --real-node   the same with one real node instead of kwok's
#        tests/cluster/cluster.sh images   build the shop's images and load them into the real node
#        tests/cluster/cluster.sh exec CMD...      run CMD where the cluster is (the real node's netns)
#        tests/cluster/cluster.sh shell    a shell there, with KUBECONFIG and PATH set
#        tests/cluster/cluster.sh down     stop every process of the cluster and remove its state
#        tests/cluster/cluster.sh env      print export lines: eval "$(tests/cluster/cluster.sh env)"
#        tests/cluster/cluster.sh status   show whether it runs, its nodes and its listening sockets
#
# Environment: SHOP_CLUSTER_DIR (state, default ~/.cache/shop/cluster), SHOP_CLUSTER_NAME
# (default shop-e2e), SHOP_CLUSTER_NODES (default 3), SHOP_CLUSTER_SERVICE_CIDR (the Services'
# address range; the API server's default, a /24, holds 254 Services: the operator benchmark
# needs more), SHOP_TOOLS_DIR (see install.sh).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=install.sh
source "$HERE/install.sh" # the pinned versions and tool paths; builds nothing when sourced

CLUSTER_NAME=${SHOP_CLUSTER_NAME:-shop-e2e}
CLUSTER_DIR=${SHOP_CLUSTER_DIR:-$HOME/.cache/shop/cluster}
NODES=${SHOP_CLUSTER_NODES:-3}
SERVICE_CIDR=${SHOP_CLUSTER_SERVICE_CIDR:-}
KUBECONFIG_PATH=$CLUSTER_DIR/kubeconfig.yaml
KWOKCTL_CONFIG=$CLUSTER_DIR/kwokctl.yaml
EGRESS_CONFIG=$CLUSTER_DIR/egress-selector.yaml
# kubectl's discovery cache is keyed by host:port, and kwokctl reuses ports between
# clusters: keep it with the cluster so a new cluster never sees an old one's APIs.
KUBECTL_CACHE=$CLUSTER_DIR/kubectl-cache
# kwokctl keeps each cluster's processes, pids, logs and certificates under its workdir.
export KWOK_WORKDIR=$CLUSTER_DIR/kwok
KWOK_CLUSTER_DIR=$KWOK_WORKDIR/clusters/$CLUSTER_NAME
READY_TIMEOUT=120s
# Present while the cluster runs with the real node (up --real-node).
REAL_NODE_MARK=$CLUSTER_DIR/real-node
LOCAL_VOLUMES=${SHOP_CLUSTER_LOCAL_VOLUMES:-16}
# The images of the real node: built by image-build.sh, cached by content.
IMAGES_DIR=${SHOP_IMAGES_DIR:-$HOME/.cache/shop/images/out}
PAUSE_IMAGE=localhost/shop/pause:1
COREDNS_IMAGE=localhost/shop/coredns:${COREDNS_VERSION#v}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() {
	printf '[cluster] ERROR: %s\n' "$*" >&2
	exit 1
}

# kwokctl logs JSON lines; they go to a file, shown only when kwokctl fails.
real_node() { [[ -f $REAL_NODE_MARK ]]; }
# With the real node, the cluster lives in its network namespace: so do its clients.
where() { if real_node; then in_netns "$@"; else "$@"; fi; }
kwokctl() {
	if ! where "$SHOP_TOOLS_BIN/kwokctl" --name "$CLUSTER_NAME" "$@" >>"$CLUSTER_DIR/kwokctl.log" 2>&1; then
		tail -n 20 "$CLUSTER_DIR/kwokctl.log" >&2
		return 1
	fi
}
kubectl() { KUBECACHEDIR=$KUBECTL_CACHE where "$SHOP_TOOLS_BIN/kubectl" --kubeconfig "$KUBECONFIG_PATH" "$@"; }
# shellcheck source=node.sh
source "$HERE/node.sh"

# PIDs of the cluster's processes, from the pid files kwokctl writes.
cluster_pids() {
	local f
	for f in "$KWOK_CLUSTER_DIR"/pids/*.pid; do
		[[ -f $f ]] && printf '%s\n' "$(<"$f")" # the files have no trailing newline
	done
	return 0
}

# True while `$1` is a process started from this cluster's folder.
ours() { grep -qF "$KWOK_CLUSTER_DIR/" "/proc/$1/cmdline" 2>/dev/null; }

api_ready() { [[ -f $KUBECONFIG_PATH ]] && kubectl get --raw /readyz >/dev/null 2>&1; }

# Every listening TCP/UDP socket of the cluster's processes must be on loopback; prints
# them and fails otherwise. This is what makes "nothing listens beyond 127.0.0.1" checked,
# not assumed.
check_loopback_only() {
	local pids pattern sockets bad
	pids=$(cluster_pids | paste -sd'|')
	[[ -n $pids ]] || die "no pid files under $KWOK_CLUSTER_DIR/pids"
	pattern="pid=($pids),"
	sockets=$(ss -ltunpH | grep -E "$pattern" || true)
	printf '%s\n' "$sockets" | awk '{ printf "[cluster]   %-4s %-22s %s\n", $1, $5, $7 }' >&2
	bad=$(printf '%s\n' "$sockets" | awk 'NF && $5 !~ /^(127\.[0-9.]+|\[::1\]):[0-9]+$/')
	[[ -z $bad ]] || die "cluster processes listen beyond loopback:
$bad"
	# And a snapshot of their connections: every peer must be on loopback too.
	bad=$(ss -tunpH | grep -E "$pattern" | awk '$6 !~ /^(127\.[0-9.]+|\[::1\]):[0-9]+$/' || true)
	[[ -z $bad ]] || die "cluster processes are connected beyond loopback:
$bad"
	log "every listening socket and connection of the cluster is on loopback"
}

# PodSecurity admission is on by default; make sure nothing switched it off, and that the
# controller manager runs every default controller (garbage collector and HPA included).
check_components() {
	local pid args
	for pid in $(cluster_pids); do
		args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
		case $args in
		*kube-apiserver*)
			[[ $args != *--disable-admission-plugins* && $args != *--admission-control=\ * ]] ||
				die "kube-apiserver runs with admission plugins disabled: $args"
			;;
		*kube-controller-manager*)
			[[ $args != *--controllers=* ]] || die "kube-controller-manager runs a restricted controller list: $args"
			;;
		esac
	done
	# Controllers start right after leader election, a few seconds after the API is ready;
	# these are the lines kube-controller-manager 1.36 logs when they do.
	local kcm_log=$KWOK_CLUSTER_DIR/logs/kube-controller-manager.log started
	for started in '"Starting controller" controller="garbagecollector"' '"Starting HPA controller"'; do
		local tries=0
		until grep -qF "$started" "$kcm_log" 2>/dev/null; do
			((++tries <= 60)) || die "kube-controller-manager did not log $started (see $kcm_log)"
			sleep 0.5
		done
	done
	log "PodSecurity admission enabled; garbage collector and HPA controllers started"
}

# What both kinds of cluster share in kwokctl's configuration: every binary is a local path,
# so kwokctl never downloads anything; bindAddress keeps all components on loopback (kwokctl's
# default is 0.0.0.0); QPS limits are off so scale tests are not throttled to a few objects
# per second.
kwokctl_options() {
	local bin=$SHOP_TOOLS_BIN
	cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
options:
  runtime: binary
  bindAddress: 127.0.0.1
  disableQPSLimits: true
  kubeVersion: $KUBERNETES_VERSION
  etcdVersion: ${ETCD_VERSION#v}
  kwokVersion: $KWOK_VERSION
  kubeApiserverBinary: $bin/kube-apiserver
  kubeControllerManagerBinary: $bin/kube-controller-manager
  kubeSchedulerBinary: $bin/kube-scheduler
  kubectlBinary: $bin/kubectl
  etcdBinary: $bin/etcd
  kwokControllerBinary: $bin/kwok
EOF
}

write_config() {
	# The API server is the only component that would ever dial a node, pod or service
	# address (logs, exec, port-forward, the proxy subresources). kwok's fake addresses are
	# not on this machine (its default node IPs 192.0.2.x can even be the machine's own
	# network), so that "cluster" egress goes to a proxy socket that does not exist: such
	# requests fail at once instead of sending packets off the machine.
	cat >"$EGRESS_CONFIG" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
  - name: cluster
    connection:
      proxyProtocol: HTTPConnect
      transport:
        uds:
          udsName: $CLUSTER_DIR/no-cluster-egress.sock
EOF
	# The API server advertises loopback instead of the machine's address and publishes no
	# endpoints for the `kubernetes` Service (loopback endpoints are invalid, and no pod runs
	# to use them).
	{
		kwokctl_options
		cat <<EOF
componentsPatches:
  - name: kube-apiserver
    extraArgs:
      - key: advertise-address
        value: 127.0.0.1
      - key: endpoint-reconciler-type
        value: none
      - key: egress-selector-config-file
        value: $EGRESS_CONFIG
EOF
	} >"$KWOKCTL_CONFIG"
	if real_node; then
		# The real node: the API server listens on the pod bridge (pods reach it as the
		# `kubernetes` Service), advertises that address, publishes its endpoints, and dials
		# the kubelet for logs, exec and port-forward (no egress selector): all of it inside
		# the node's network namespace. Its certificate names the Service address.
		{
			kwokctl_options
			cat <<EOF
  kubeApiserverCertSANs: [10.96.0.1, $NODE_IP]
  # The port the operator chart's NetworkPolicy allows towards the API server.
  kubeApiserverPort: 6443
componentsPatches:
  - name: kube-apiserver
    extraArgs:
      - key: bind-address
        value: 0.0.0.0
      - key: advertise-address
        value: $NODE_IP
      - key: service-cluster-ip-range
        value: $SERVICE_CIDR_REAL
      # The node's name resolves nowhere (no DNS outside the cluster): dial its address.
      - key: kubelet-preferred-address-types
        value: InternalIP
EOF
		} >"$KWOKCTL_CONFIG"
		return
	fi
	if [[ -n $SERVICE_CIDR ]]; then
		cat >>"$KWOKCTL_CONFIG" <<EOF
      - key: service-cluster-ip-range
        value: $SERVICE_CIDR
EOF
	fi
}

cmd_up() {
	local start=$SECONDS tools_start=$SECONDS want_real=false
	[[ ${1:-} == --real-node ]] && want_real=true
	if $want_real; then
		"$HERE/install.sh" --real-node >/dev/null
	else
		"$HERE/install.sh" >/dev/null
	fi
	local tools_secs=$((SECONDS - tools_start))

	if [[ -d $KWOK_CLUSTER_DIR ]] && [[ $want_real != "$(real_node && echo true || echo false)" ]]; then
		log "cluster $CLUSTER_NAME runs $(real_node && echo with || echo without) the real node: recreating it"
		cmd_down
	fi
	if [[ -d $KWOK_CLUSTER_DIR ]]; then
		if api_ready; then
			log "cluster $CLUSTER_NAME is already up: reusing it"
			wait_ready
			print_summary "$start"
			return
		fi
		log "cluster $CLUSTER_NAME exists but does not answer: recreating it"
		cmd_down
	fi

	mkdir -p "$CLUSTER_DIR"
	local disable=()
	if $want_real; then
		node_preflight
		build_images infra
		touch "$REAL_NODE_MARK"
		node_netns_up
		# No kwok nodes, so no kwok controller (it would take over the real node's status).
		disable=(--disable kwok-controller)
	fi
	write_config
	log "creating cluster $CLUSTER_NAME (state in $CLUSTER_DIR)"
	# --kubeconfig "" keeps kwokctl away from ~/.kube/config; tests get their own file.
	kwokctl --config "$KWOKCTL_CONFIG" create cluster --kubeconfig "" --wait "$READY_TIMEOUT" "${disable[@]}" ||
		die "kwokctl create cluster failed; component logs: $KWOK_CLUSTER_DIR/logs"
	cp "$KWOK_CLUSTER_DIR/kubeconfig.yaml" "$KUBECONFIG_PATH"
	if $want_real; then
		wait_ready 0
		check_components
		node_up
		check_sockets_contained
		print_summary "$start" "$tools_secs"
		return
	fi
	# Node addresses on loopback too, so that no address in the cluster names the machine's
	# network (kwok's default 192.0.2.x is a documentation range that this VM may use).
	# kwok's nodes advertise no local disk by default, and the scheduler fits no pod that asks
	# for ephemeral-storage (the operator's pods do) on a node without it: give them some.
	kwokctl scale node --replicas "$NODES" --param '.nodeIPs=["127.0.0.1"]' \
		--param '.allocatable."ephemeral-storage"="100Gi"' || die "kwokctl scale node failed"
	wait_ready
	check_components
	check_loopback_only
	print_summary "$start" "$tools_secs"
}

wait_ready() {
	local tries=0 NODES=${1:-$NODES}
	until api_ready; do
		((++tries <= 240)) || die "the API server did not become ready"
		sleep 0.5
	done
	# Nodes appear as kwok registers them; wait for all of them, then for Ready.
	tries=0
	until (($(kubectl get nodes --no-headers 2>/dev/null | wc -l) >= NODES)); do
		((++tries <= 240)) || die "fewer than $NODES nodes registered"
		sleep 0.5
	done
	((NODES == 0)) || kubectl wait --for=condition=Ready node --all --timeout="$READY_TIMEOUT" >/dev/null
}

print_summary() {
	local start=$1 tools_secs=${2:-}
	kubectl get nodes >&2
	log "cluster $CLUSTER_NAME ready in $((SECONDS - start))s${tools_secs:+ (tools: ${tools_secs}s of it)}"
	log "kubeconfig: $KUBECONFIG_PATH"
	log "use it with: eval \"\$($HERE/cluster.sh env)\""
}

cmd_down() {
	if [[ ! -d $CLUSTER_DIR ]]; then
		log "cluster $CLUSTER_NAME is not up; nothing to do"
		return
	fi
	local pids
	pids=$(cluster_pids)
	node_stop
	if [[ -d $KWOK_CLUSTER_DIR ]]; then
		log "stopping cluster $CLUSTER_NAME"
		# kwokctl removes the cluster's context from the kubeconfig it is given: give it ours.
		kwokctl delete cluster --kubeconfig "$KUBECONFIG_PATH" || log "kwokctl delete cluster failed"
	fi
	# Make sure every process of the cluster is gone, even if kwokctl failed: only these
	# PIDs, and only while they still run from this cluster's folder (PIDs get reused).
	local pid tries
	for pid in $pids; do
		ours "$pid" || continue
		kill "$pid" 2>/dev/null || true
		for ((tries = 0; tries < 40; tries++)); do
			ours "$pid" || continue 2
			sleep 0.25
		done
		log "process $pid did not stop within 10s of SIGTERM; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	done
	node_cleanup
	rm -rf "$CLUSTER_DIR"
	log "cluster $CLUSTER_NAME removed"
}

cmd_env() {
	printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_PATH"
	printf 'export KUBECACHEDIR=%q\n' "$KUBECTL_CACHE"
	# shellcheck disable=SC2016 # $PATH is expanded by whoever evaluates the line
	printf 'export PATH=%q:"$PATH"\n' "$SHOP_TOOLS_BIN"
	# Tells the tests the pods are real (tests/e2e/tests/real_node.rs).
	if real_node; then
		printf 'export SHOP_REAL_NODE=1 SHOP_IMAGES_DIR=%q SHOP_NODE_LOGS=%q\n' "$IMAGES_DIR" "$NODE_DIR/logs"
	fi
}

cmd_status() {
	if ! [[ -d $KWOK_CLUSTER_DIR ]]; then
		log "cluster $CLUSTER_NAME: down"
		return 1
	fi
	if ! api_ready; then
		log "cluster $CLUSTER_NAME: exists but the API server does not answer (logs: $KWOK_CLUSTER_DIR/logs)"
		return 1
	fi
	log "cluster $CLUSTER_NAME: up$(real_node && echo ' with the real node'); kubeconfig $KUBECONFIG_PATH"
	kubectl version >&2
	kubectl get nodes >&2
	check_components
	if real_node; then
		check_no_route_out
		check_sockets_contained
	else
		check_loopback_only
	fi
}

# Builds the images (image-build.sh, cached by content): `infra` the node's own (pause, CoreDNS,
# busybox), `all` also the shop's (from the binaries in SHOP_BIN_DIR), PostgreSQL and NATS.
build_images() {
	local debs
	debs=$(readlink -f "$SHOP_TOOLS_BIN/busybox")
	SHOP_TOOLS_BIN=$SHOP_TOOLS_BIN SHOP_IMAGE_DEBS_ROOT=${debs%/bin/busybox} \
		"$HERE/image-build.sh" "$IMAGES_DIR" "$1" || die "building the images failed"
}

cmd_images() {
	real_node || die "no real node runs (tests/cluster/cluster.sh up --real-node)"
	local start=$SECONDS
	build_images all
	node_import_images "$IMAGES_DIR/images.txt"
	log "images loaded into $NODE_NAME in $((SECONDS - start))s"
}

cmd_exec() {
	[[ $# -gt 0 ]] || die "usage: cluster.sh exec COMMAND [ARG]..."
	eval "$(cmd_env)"
	if real_node; then
		exec nsenter --net="$NETNS_PATH" -- "$@"
	fi
	exec "$@"
}

case ${1:-} in
up) cmd_up "${@:2}" ;;
down) cmd_down ;;
env) cmd_env ;;
status) cmd_status ;;
images) cmd_images ;;
exec) cmd_exec "${@:2}" ;;
shell) cmd_exec "${SHELL:-bash}" ;;
*)
	sed -n '7,14p' "$0" | sed 's/^# //' >&2
	exit 2
	;;
esac

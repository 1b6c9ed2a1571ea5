# shellcheck shell=bash
# The real node of `cluster.sh up --real-node`: one Kubernetes node whose pods really run
# (kubelet, containerd, runc, the CNI bridge, kube-proxy in iptables mode, kube-router as the
# NetworkPolicy engine, CoreDNS), sourced by cluster.sh.
#
# Containment is the design, not an afterthought: the whole cluster (control plane, node and
# the tests) lives in the network namespace `shop-node`, which holds only `lo` and the pod
# bridge. Nothing inside it has a route to any other address, so no pod and no component can
# send a packet off the machine (checked before the first pod starts and again at the end).
# containerd and the kubelet share one private mount namespace, so their mounts (overlays,
# volumes, pod network namespaces) never appear on the machine and vanish with it.
#
# Everything it makes is recorded under $NODE_DIR and removed by node_down: processes by pid,
# the namespaces, the cgroups under /shop-node, and the global sysctls the kubelet rewrites.

NETNS=shop-node
NETNS_PATH=/run/netns/$NETNS
NODE_NAME=shop-node
NODE_DIR=$CLUSTER_DIR/node
NODE_IP=10.244.0.1
POD_CIDR=10.244.0.0/24
SERVICE_CIDR_REAL=10.96.0.0/16
DNS_IP=10.96.0.10
CGROUP_ROOT=shop-node
# The mount namespace of containerd and the kubelet, kept open by a bind mount on this file
# (inside a folder bind-mounted onto itself with private propagation, as `ip netns` does).
MNTNS_DIR=$NODE_DIR/ns
MNTNS=$MNTNS_DIR/mnt
# Global sysctls: the kubelet sets the first three (setupKernelTunables); we raise inotify
# instances (the kubelet and containerd each need several; the default 128 runs out).
SAVED_SYSCTLS=(vm.overcommit_memory kernel.panic kernel.panic_on_oops fs.inotify.max_user_instances)
NODE_READY_TIMEOUT=120

# Runs a command inside the node's network namespace (the tests, kubectl, helm).
in_netns() { nsenter --net="$NETNS_PATH" -- "$@"; }
# Runs a command inside the node's network and mount namespaces (containerd, the kubelet).
in_node() { nsenter --net="$NETNS_PATH" --mount="$MNTNS" -- "$@"; }

# One line per missing requirement, then fail: better than a daemon's stack trace later.
node_preflight() {
	local missing=() cap c opt config
	((EUID == 0)) || missing+=("root: the real node must run as root (namespaces, mounts, cgroups, iptables)")
	cap=$(awk '/^CapEff/ { print $2 }' /proc/self/status)
	(((16#$cap >> 21) & 1)) || missing+=("capability CAP_SYS_ADMIN (namespaces and mounts)")
	(((16#$cap >> 12) & 1)) || missing+=("capability CAP_NET_ADMIN (network namespace, bridge, iptables)")
	for c in cpu cpuacct cpuset memory pids devices freezer; do
		[[ -d /sys/fs/cgroup/$c ]] || missing+=("cgroup v1 controller $c (not mounted at /sys/fs/cgroup/$c)")
	done
	[[ -f /sys/fs/cgroup/cpu/cpu.cfs_period_us ]] || missing+=("cgroup cpu.cfs_period_us (CFS bandwidth control)")
	[[ -e /dev/kmsg ]] || missing+=("/dev/kmsg (the kubelet's OOM watcher reads it)")
	if [[ -r /proc/config.gz ]]; then
		config=$(zcat /proc/config.gz)
		for opt in NET_NS BRIDGE BRIDGE_NETFILTER VETH OVERLAY_FS IP_SET NETFILTER_XT_SET \
			NETFILTER_XT_MATCH_PHYSDEV NF_NAT NETFILTER_XT_MATCH_COMMENT NETFILTER_XT_MATCH_STATISTIC; do
			grep -qE "^CONFIG_$opt=(y|m)" <<<"$config" || missing+=("kernel feature CONFIG_$opt")
		done
	fi
	for c in ip nsenter unshare iptables ipset conntrack; do
		command -v "$c" >/dev/null || missing+=("command $c")
	done
	for c in bridge host-local loopback; do
		[[ -x /usr/lib/cni/$c ]] || missing+=("CNI plugin /usr/lib/cni/$c (Debian package containernetworking-plugins)")
	done
	for c in containerd containerd-shim-runc-v2 ctr runc kubelet kube-proxy kube-router; do
		[[ -x $SHOP_TOOLS_BIN/$c ]] || missing+=("$SHOP_TOOLS_BIN/$c (tests/cluster/install.sh --real-node builds it)")
	done
	if ((${#missing[@]})); then
		printf '[cluster] preflight: missing %s\n' "${missing[@]}" >&2
		die "the real node cannot start on this machine (${#missing[@]} missing)"
	fi
	# Root here lacks CAP_SYS_RESOURCE: containerd must not lower oom_score_adj (the config
	# says restrict_oom_score_adj); say so, since it explains the setting.
	(((16#$cap >> 24) & 1)) || log "preflight: no CAP_SYS_RESOURCE; containerd runs with restrict_oom_score_adj"
	log "preflight: root, capabilities, cgroup v1 controllers, kernel features and binaries present"
}

# The network namespace: lo and the pod bridge, no route anywhere else.
node_netns_up() {
	mkdir -p "$NODE_DIR"/{pids,logs}
	# The sysctls are saved once, before anything changes them, and restored by node_down.
	[[ -f $NODE_DIR/sysctl.saved ]] || sysctl -e "${SAVED_SYSCTLS[@]}" >"$NODE_DIR/sysctl.saved"
	sysctl -qw fs.inotify.max_user_instances=1024
	[[ -d /run/netns ]] || touch "$NODE_DIR/run-netns-created"
	ip netns add "$NETNS"
	ip -n "$NETNS" link set lo up
	# The CNI bridge plugin adopts this bridge and its gateway address.
	ip -n "$NETNS" link add cni0 type bridge
	ip -n "$NETNS" addr add "$NODE_IP/24" dev cni0
	ip -n "$NETNS" link set cni0 up
	# Service addresses from node processes (the tests, the API server): kube-proxy's OUTPUT
	# rules translate them; without a route the connect fails before they run.
	ip -n "$NETNS" route add "$SERVICE_CIDR_REAL" dev cni0 src "$NODE_IP"
	# Defence in depth: nothing forwarded from a pod may leave the pod range.
	in_netns iptables -w -N SHOP-CONTAIN
	in_netns iptables -w -A SHOP-CONTAIN -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
	in_netns iptables -w -A SHOP-CONTAIN -s "$POD_CIDR" -d "$SERVICE_CIDR_REAL" -j RETURN
	in_netns iptables -w -A SHOP-CONTAIN -s "$POD_CIDR" -j DROP
	in_netns iptables -w -I FORWARD 1 -j SHOP-CONTAIN
	check_no_route_out
}

# No address outside the pod and Service ranges is routable from inside the namespace.
check_no_route_out() {
	local addr out
	for addr in 1.1.1.1 8.8.8.8 10.255.255.53 192.168.0.1 172.16.0.1 169.254.169.254; do
		if out=$(in_netns ip route get "$addr" 2>&1); then
			die "containment: $addr is routable from the node's network namespace: $out"
		fi
	done
	in_netns ip -o addr show | awk '{ print $2, $4 }' | while read -r dev addr; do
		case $dev in lo | cni0 | veth*) ;; *) die "containment: unexpected interface $dev ($addr) in $NETNS" ;; esac
	done
	log "containment: no route out of $NETNS (only lo and the pod bridge)"
}

# Every socket of every process in the namespace has its peer on loopback, the pod range or
# the Service range; no listener is on any other address.
check_sockets_contained() {
	local bad
	bad=$(in_netns ss -tunaH | awk -v pods="${POD_CIDR%.*}." -v svcs="${SERVICE_CIDR_REAL%.*.*}." '
		{ local_ = $5; peer = $6 }
		function ok(a) { return a ~ /^(127\.|\[::1\]|\[::ffff:127\.|0\.0\.0\.0:|\*:|\[::\]:)/ || index(a, pods) == 1 || index(a, svcs) == 1 || index(a, "[::ffff:" pods) == 1 }
		!(ok(local_) && ok(peer)) { print }')
	[[ -z $bad ]] || die "containment: sockets beyond loopback, the pod and the Service ranges:
$bad"
	log "containment: every socket in $NETNS is on loopback, $POD_CIDR or $SERVICE_CIDR_REAL"
}

write_node_config() {
	local d=$NODE_DIR bin=$SHOP_TOOLS_BIN
	mkdir -p "$d"/{containerd/certs.d/_default,cni/conf,cni/ipam,kubelet,volumes}
	# Every registry resolves to a closed port on loopback: an image that was not loaded fails
	# at once (ErrImagePull) instead of reaching for the network.
	cat >"$d/containerd/certs.d/_default/hosts.toml" <<'EOF'
server = "http://127.0.0.1:1"
[host."http://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
	cat >"$d/containerd/config.toml" <<EOF
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"
[grpc]
  address = "$d/containerd/containerd.sock"
[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'
[plugins.'io.containerd.cri.v1.images'.pinned_images]
  sandbox = '$PAUSE_IMAGE'
[plugins.'io.containerd.cri.v1.images'.registry]
  config_path = '$d/containerd/certs.d'
[plugins.'io.containerd.cri.v1.runtime']
  # Root on these machines lacks CAP_SYS_RESOURCE: lowering oom_score_adj would fail.
  restrict_oom_score_adj = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['/usr/lib/cni']
    conf_dir = '$d/cni/conf'
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = 'io.containerd.runc.v2'
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = '$bin/runc'
EOF
	# No masquerade, and no default route in the pods: the pod and Service ranges only.
	cat >"$d/cni/conf/10-shop.conflist" <<EOF
{"cniVersion": "1.0.0", "name": "shop", "plugins": [
  {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "dataDir": "$d/cni/ipam",
            "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
            "routes": [{"dst": "$SERVICE_CIDR_REAL"}]}},
  {"type": "loopback"}]}
EOF
	printf 'search cluster.local\nnameserver 127.0.0.1\n' >"$d/resolv.conf"
	cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 is all these machines have (see README.md); 1.36 still supports it when asked.
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
containerRuntimeEndpoint: unix://$d/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDNS: [$DNS_IP]
clusterDomain: cluster.local
resolvConf: $d/resolv.conf
oomScoreAdj: 0
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 1%}
maxPods: 60
# Faster feedback than the defaults, for tests.
nodeStatusUpdateFrequency: 4s
syncFrequency: 10s
fileCheckFrequency: 5s
EOF
	cat >"$d/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
metricsBindAddress: 127.0.0.1:10249
healthzBindAddress: 127.0.0.1:10256
clientConnection: {kubeconfig: $KUBECONFIG_PATH}
# Leave the machine's global conntrack settings alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
iptables: {syncPeriod: 10s, minSyncPeriod: 0s}
EOF
}

# Starts a daemon inside the node and records its pid (nsenter execs the command itself, so
# `$!` is the daemon's own pid).
start_daemon() {
	local name=$1
	shift
	in_node "$@" >>"$NODE_DIR/logs/$name.log" 2>&1 </dev/null &
	printf '%s' "$!" >"$NODE_DIR/pids/$name.pid"
	disown
}

# True while process $1 exists and has not exited (a zombie has exited: it only waits for
# its parent to reap it).
alive() { [[ -d /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }

daemon_running() {
	local pid
	pid=$(cat "$NODE_DIR/pids/$1.pid" 2>/dev/null) && alive "$pid"
}

fail_with_log() {
	local name=$1
	shift
	tail -n 40 "$NODE_DIR/logs/$name.log" >&2 || true
	die "$* (log: $NODE_DIR/logs/$name.log)"
}

ctr_() { in_node "$SHOP_TOOLS_BIN/ctr" --address "$NODE_DIR/containerd/containerd.sock" --namespace k8s.io "$@"; }

node_mntns_up() {
	mkdir -p "$MNTNS_DIR"
	mount --bind "$MNTNS_DIR" "$MNTNS_DIR"
	mount --make-private "$MNTNS_DIR"
	touch "$MNTNS"
	# A new mount namespace, first cut off from the machine (every mount private, so nothing
	# propagates either way, /run/netns included), then shared inside: the kubelet's volume
	# mounts must propagate to the containers.
	unshare --mount="$MNTNS" --propagation private true
	in_node mount --make-rshared /
	# containerd and the CNI plugins write to these regardless of their configured roots;
	# tmpfs keeps them off the machine's disk and out of its view.
	local dir
	: >"$NODE_DIR/created-dirs"
	for dir in /run/containerd /var/lib/cni /opt/containerd /run/nri /var/run/netns; do
		dir=$(readlink -f "$dir")
		[[ -d $dir ]] || { mkdir -p "$dir" && echo "$dir" >>"$NODE_DIR/created-dirs"; }
		in_node mount -t tmpfs -o mode=755 shop-node "$dir"
	done
}

node_cgroups_up() {
	local h
	for h in /sys/fs/cgroup/*/; do
		[[ -d $h ]] || continue
		case $h in */unified/) continue ;; esac
		mkdir -p "$h$CGROUP_ROOT"
	done
}

# Imports the image archives listed in $1 (images.txt: "<ref> <file>") into containerd.
node_import_images() {
	local list=$1 dir ref file
	dir=$(dirname "$list")
	while read -r ref file; do
		[[ -n $ref ]] || continue
		ctr_ images import "$dir/$file" >/dev/null 2>&1 || die "ctr images import $dir/$file failed"
		# A second tag of the shop image (`<repository>:e2e-rollout`), for a rolling update to
		# "a new image tag" without a second build (tests/e2e/tests/real_node.rs).
		if [[ $file == shop.tar ]]; then
			ctr_ images tag --force "$ref" "${ref%:*}:e2e-rollout" >/dev/null
		fi
	done <"$list"
}

node_up() {
	local start=$SECONDS tries
	write_node_config
	node_mntns_up
	node_cgroups_up

	start_daemon containerd "$SHOP_TOOLS_BIN/containerd" --config "$NODE_DIR/containerd/config.toml"
	tries=0
	until ctr_ version >/dev/null 2>&1; do
		daemon_running containerd || fail_with_log containerd "containerd exited"
		((++tries <= 120)) || fail_with_log containerd "containerd did not answer within 30s"
		sleep 0.25
	done
	grep -q 'failed to load cni' "$NODE_DIR/logs/containerd.log" &&
		fail_with_log containerd "containerd did not load the CNI configuration"
	log "containerd $CONTAINERD_VERSION up"
	node_import_images "$IMAGES_DIR/images.txt"
	log "images imported: $(ctr_ images ls -q | grep -vc '^sha256:')"

	start_daemon kubelet "$SHOP_TOOLS_BIN/kubelet" --config "$NODE_DIR/kubelet.yaml" \
		--kubeconfig "$KUBECONFIG_PATH" --root-dir "$NODE_DIR/kubelet" --node-ip "$NODE_IP" \
		--hostname-override "$NODE_NAME" --v=1
	tries=0
	until kubectl get node "$NODE_NAME" >/dev/null 2>&1; do
		daemon_running kubelet || fail_with_log kubelet "the kubelet exited"
		((++tries <= NODE_READY_TIMEOUT * 2)) || fail_with_log kubelet "the kubelet did not register node $NODE_NAME"
		sleep 0.5
	done
	start_daemon kube-proxy "$SHOP_TOOLS_BIN/kube-proxy" --config "$NODE_DIR/kube-proxy.yaml"
	# Firewall only: routes, the service proxy and the CNI are the bridge's and kube-proxy's.
	start_daemon kube-router "$SHOP_TOOLS_BIN/kube-router" --kubeconfig "$KUBECONFIG_PATH" \
		--hostname-override "$NODE_NAME" --run-firewall=true --run-router=false \
		--run-service-proxy=false --enable-cni=false --enable-pod-egress=false \
		--service-cluster-ip-range "$SERVICE_CIDR_REAL" \
		--health-port 20244 --metrics-port 0 --v=1
	if ! kubectl wait --for=condition=Ready "node/$NODE_NAME" --timeout="${NODE_READY_TIMEOUT}s" >/dev/null; then
		kubectl get node "$NODE_NAME" -o jsonpath='{range .status.conditions[*]}{.type}={.status} {.reason}: {.message}{"\n"}{end}' >&2 || true
		fail_with_log kubelet "node $NODE_NAME did not become Ready"
	fi
	local d
	for d in kube-proxy kube-router; do
		daemon_running "$d" || fail_with_log "$d" "$d exited"
	done
	log "node $NODE_NAME Ready in $((SECONDS - start))s (kubelet, containerd, kube-proxy, kube-router)"
	node_addons
}

# What a cluster installer adds: CoreDNS, and a StorageClass with local PersistentVolumes.
node_addons() {
	local i
	kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: system:coredns}
rules:
  - apiGroups: [""]
    resources: [endpoints, services, pods, namespaces]
    verbs: [list, watch]
  - apiGroups: [discovery.k8s.io]
    resources: [endpointslices]
    verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: system:coredns}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:coredns}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  # No forward plugin: names outside the cluster do not resolve (there is nowhere to go).
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
        }
        cache 30
        loadbalance
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      priorityClassName: system-cluster-critical
      dnsPolicy: Default
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        runAsGroup: 65532
        seccompProfile: {type: RuntimeDefault}
        # Port 53 without any capability: a safe, namespaced sysctl.
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "0"}]
      containers:
        - name: coredns
          image: $COREDNS_IMAGE
          imagePullPolicy: Never
          args: [-conf, /etc/coredns/Corefile]
          ports:
            - {name: dns, containerPort: 53, protocol: UDP}
            - {name: dns-tcp, containerPort: 53, protocol: TCP}
          resources:
            requests: {cpu: 20m, memory: 32Mi}
            limits: {memory: 128Mi}
          securityContext:
            allowPrivilegeEscalation: false
            readOnlyRootFilesystem: true
            capabilities: {drop: [ALL]}
          readinessProbe: {httpGet: {path: /ready, port: 8181}, periodSeconds: 2}
          livenessProbe: {httpGet: {path: /health, port: 8080}, periodSeconds: 10}
          volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $DNS_IP
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, protocol: UDP, targetPort: 53}
    - {name: dns-tcp, port: 53, protocol: TCP, targetPort: 53}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
	# Static local volumes (the kubelet applies fsGroup to `local` volumes, not to hostPath):
	# more than the shop's databases need, so a reinstall and a Delete-policy database that
	# leaves its volume Released still find a free one.
	for ((i = 0; i < LOCAL_VOLUMES; i++)); do
		mkdir -p "$NODE_DIR/volumes/pv-$i"
		cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv-$i}
spec:
  capacity: {storage: 10Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $NODE_DIR/volumes/pv-$i}
  nodeAffinity:
    required:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]}]
EOF
	done | kubectl apply -f - >/dev/null
	if ! kubectl -n kube-system rollout status deployment/coredns --timeout=90s >/dev/null; then
		kubectl -n kube-system get pods -o wide >&2 || true
		kubectl -n kube-system describe pods -l k8s-app=kube-dns | tail -n 30 >&2 || true
		die "CoreDNS did not become ready"
	fi
	log "CoreDNS ready at $DNS_IP; StorageClass local (default) with $LOCAL_VOLUMES volumes"
}

# Stops a daemon by its recorded pid: TERM, then KILL after 10 s.
stop_daemon() {
	local name=$1 pid tries
	pid=$(cat "$NODE_DIR/pids/$name.pid" 2>/dev/null) || return 0
	if alive "$pid"; then
		kill "$pid" 2>/dev/null || true
		for ((tries = 0; tries < 40; tries++)); do
			alive "$pid" || break
			sleep 0.25
		done
		! alive "$pid" || kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$NODE_DIR/pids/$name.pid"
}

# Pids of processes in the node's mount namespace or network namespace: all of them were
# started by us (the daemons, the shims, the containers and the control plane).
node_namespace_pids() {
	local mnt="" net="" p
	[[ -e $MNTNS ]] && mnt=$(stat -L -c %i "$MNTNS" 2>/dev/null || true)
	[[ -e $NETNS_PATH ]] && net=$(stat -L -c %i "$NETNS_PATH" 2>/dev/null || true)
	for p in /proc/[0-9]*; do
		[[ -n $mnt && $(stat -L -c %i "$p/ns/mnt" 2>/dev/null) == "$mnt" ]] && { echo "${p#/proc/}"; continue; }
		[[ -n $net && $(stat -L -c %i "$p/ns/net" 2>/dev/null) == "$net" ]] && echo "${p#/proc/}"
	done
	return 0
}

# The node's daemons and containers; the control plane stops after them (cluster.sh).
node_stop() {
	[[ -d $NODE_DIR/pids ]] || return 0
	log "stopping the real node"
	stop_daemon kubelet
	# The containers: stop every task, so the shims exit, before containerd goes.
	if daemon_running containerd; then
		local task
		for task in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s KILL "$task" >/dev/null 2>&1 || true; done
		sleep 1
	fi
	stop_daemon kube-router
	stop_daemon kube-proxy
	stop_daemon containerd
}

# Everything else the node made: leftover processes in its namespaces, the namespaces,
# mounts, cgroups, and the global sysctls back to what they were.
node_cleanup() {
	[[ -d $NODE_DIR ]] || return 0
	shopt -s globstar nullglob
	# Whatever is left inside our namespaces (shims, containers) is ours; end it. Shims
	# are also found by their command line, which names our containerd's socket.
	local pids p
	pids=$(
		node_namespace_pids | grep -vx "$$" || true
		for p in /proc/[0-9]*; do
			grep -qF -- "$NODE_DIR/containerd/containerd.sock" "$p/cmdline" 2>/dev/null && echo "${p#/proc/}"
		done
		true
	)
	if [[ -n $pids ]]; then
		# shellcheck disable=SC2086 # one pid a word
		kill -KILL $pids 2>/dev/null || true
		sleep 0.5
	fi
	if mountpoint -q "$MNTNS" 2>/dev/null || grep -qF " $MNTNS " /proc/self/mountinfo; then umount "$MNTNS" || umount -l "$MNTNS"; fi
	if grep -qF " $MNTNS_DIR " /proc/self/mountinfo; then umount "$MNTNS_DIR" || umount -l "$MNTNS_DIR"; fi
	[[ -e $NETNS_PATH ]] && ip netns del "$NETNS"
	# `ip netns add` made /run/netns a mount point; undo that when we were the first to.
	if [[ -f $NODE_DIR/run-netns-created ]] && [[ -z $(ls -A /run/netns 2>/dev/null) ]]; then
		umount /run/netns 2>/dev/null || true
		rmdir /run/netns 2>/dev/null || true
	fi
	local dir
	while read -r dir; do rmdir "$dir" 2>/dev/null || true; done <"$NODE_DIR/created-dirs" 2>/dev/null
	if [[ -f $NODE_DIR/sysctl.saved ]]; then
		sysctl -q -p "$NODE_DIR/sysctl.saved" >/dev/null || log "could not restore the sysctls in $NODE_DIR/sysctl.saved"
		log "sysctls restored: $(paste -sd' ' "$NODE_DIR/sysctl.saved" | tr -s ' ')"
	fi
	# Containers outlive a killed shim: every process left in the pod cgroups (which only the
	# kubelet and runc put there) is a container of ours.
	local h tries
	for ((tries = 0; tries < 20; tries++)); do
		pids=$(cat /sys/fs/cgroup/pids/"$CGROUP_ROOT"/**/cgroup.procs /sys/fs/cgroup/pids/"$CGROUP_ROOT"/cgroup.procs 2>/dev/null | sort -u)
		[[ -n $pids ]] || break
		# shellcheck disable=SC2086 # one pid a word
		kill -KILL $pids 2>/dev/null || true
		sleep 0.25
	done
	# Pod cgroups, deepest first, in every hierarchy (runc also creates them in unified).
	for h in /sys/fs/cgroup/*/"$CGROUP_ROOT"; do
		[[ -d $h ]] || continue
		find "$h" -depth -type d -exec rmdir {} \; 2>/dev/null || true
		[[ ! -d $h ]] || log "could not remove cgroup $h (still in use?)"
	done
}

#!/usr/bin/env bash
# Builds the pinned Kubernetes tools the end-to-end tests need, from Go modules
# through the module proxy, into a cache outside the checkout:
#
#   $SHOP_TOOLS_DIR/<component>-<version>/bin/   one folder per component and version
#   $SHOP_TOOLS_DIR/bin/                         symlinks to the pinned versions (put it on PATH)
#
# A component whose folder exists is reused; a build goes to a temporary folder that is
# renamed into place only when complete, so an interrupted run never leaves a folder that
# looks cached. Safe to run twice, and concurrently (a lock serialises runs).
#
# Usage: tests/cluster/install.sh            build what is missing, print the PATH line
#        tests/cluster/install.sh --real-node  also what the real node needs (containerd, ...)
#        source tests/cluster/install.sh     only defines the pinned versions and paths
set -euo pipefail

# --- Pinned versions: the one place to change them. ---------------------------------
# Kubernetes: the newest 1.36 patch whose checksum the Go checksum database verifies (the
# proxy also serves v1.36.5, but the Go checksum database does not know it yet); kwok v0.8.0 is
# built against 1.36.
KUBERNETES_VERSION=v1.36.4
ETCD_VERSION=v3.6.16
KWOK_VERSION=v0.8.0
HELM_VERSION=v3.22.0
# The real node (cluster.sh up --real-node). containerd 2.3 is in the support matrix of
# Kubernetes 1.36 (2.3.0+, 2.2.0+); runc 1.5 is what containerd 2.3's CI tests; kube-router is
# the only NetworkPolicy engine served by the proxy that works on this kernel (docs in
# README.md); CoreDNS and nats-server run as pods of images built by image-build.sh.
CONTAINERD_VERSION=v2.3.7
RUNC_VERSION=v1.5.3
KUBE_ROUTER_VERSION=v2.1.0
COREDNS_VERSION=v1.15.0
NATS_SERVER_VERSION=v2.10.24
# Debian packages the real node needs: the CNI plugins (bridge, host-local, loopback),
# iptables/ipset/conntrack (kube-proxy, kube-router), mmdebstrap (images), libseccomp (runc).
NODE_PACKAGES=(containernetworking-plugins iptables ipset conntrack mmdebstrap libseccomp-dev)
# Debian packages whose files go into images, downloaded (not installed) into the cache.
IMAGE_DEBS=(catatonit busybox-static)
MIN_GO_MINOR=26 # the go.mod files of these releases say `go 1.26.0`

SHOP_TOOLS_DIR=${SHOP_TOOLS_DIR:-$HOME/.cache/shop/tools}
SHOP_TOOLS_BIN=$SHOP_TOOLS_DIR/bin

log() { printf '[install] %s\n' "$*" >&2; }
die() {
	printf '[install] ERROR: %s\n' "$*" >&2
	exit 1
}

find_go() {
	GO=${GO:-$(command -v go || true)}
	if [[ -z $GO && -x /usr/local/go/bin/go ]]; then GO=/usr/local/go/bin/go; fi
	[[ -n $GO && -x $GO ]] || die "Go is not installed (looked for ${GO:-\`go\` on PATH and /usr/local/go/bin/go}).
  The Kubernetes tools are built from source with Go >= 1.$MIN_GO_MINOR; install it
  (https://go.dev/dl/) or point GO=/path/to/go at it, then run this again."
	local version
	version=$(GOTOOLCHAIN=local "$GO" env GOVERSION) || die "\`$GO env GOVERSION\` failed"
	local minor=${version#go1.}
	minor=${minor%%[!0-9]*}
	((minor >= MIN_GO_MINOR)) || die "$GO is $version; these releases need Go >= 1.$MIN_GO_MINOR"
	log "using $GO ($version)"
}

# Environment for every Go build: the installed toolchain only (no silent toolchain
# download), static binaries, module and build caches inside the tools cache (writable
# module cache so `rm -rf` of the cache works), and the proxy only: `direct` would clone
# repositories from their hosts, which these machines cannot reach.
go_env() {
	export GOTOOLCHAIN=local CGO_ENABLED=0
	export GOMODCACHE=$SHOP_TOOLS_DIR/.go/mod GOCACHE=$SHOP_TOOLS_DIR/.go/build
	export GOFLAGS="-modcacherw -buildvcs=false"
	# Go's configured proxy, minus any `direct` fallback.
	local proxy
	proxy=$(GOTOOLCHAIN=local "$GO" env GOPROXY)
	proxy=${proxy%,direct}
	proxy=${proxy%|direct}
	export GOPROXY=${SHOP_GOPROXY:-$proxy}
}

# Downloads (and checksum-verifies) module `$1` and prints the path of its go.mod file.
module_gomod() {
	local json
	json=$(cd "$SHOP_TOOLS_DIR" && "$GO" mod download -json "$1") || die "go mod download $1 failed: $json"
	if grep -q '"Error"' <<<"$json"; then
		die "cannot download $1: $(sed -n 's/^[[:space:]]*"Error": "\(.*\)",$/\1/p' <<<"$json")"
	fi
	sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p' <<<"$json"
}

# Builds one component unless cached. `$1` folder name, `$2` builder function, then the
# binaries the folder must contain. The builder gets the temporary folder as `$1` and
# writes binaries into `$1/bin`.
ensure() {
	local name=$1 builder=$2
	shift 2
	local dest=$SHOP_TOOLS_DIR/$name start=$SECONDS bin
	if [[ -d $dest ]]; then
		for bin in "$@"; do
			if [[ ! -x $dest/bin/$bin ]]; then
				# An older layout of the same version (the Kubernetes folder before it held the
				# kubelet): build it again rather than fail.
				log "$name: cached folder lacks bin/$bin; rebuilding it"
				rm -rf "$dest"
				break
			fi
		done
	fi
	if [[ -d $dest ]]; then
		log "$name: cached (0s)"
	else
		# Go is needed only to build: a filled cache works without it.
		[[ -n ${GO_READY:-} ]] || {
			find_go
			go_env
			GO_READY=1
		}
		log "$name: building (cold; this takes a while) ..."
		BUILD_TMP=$(mktemp -d "$SHOP_TOOLS_DIR/.build-$name.XXXXXX")
		chmod 755 "$BUILD_TMP" # mktemp makes it private; the cache is for everyone
		# The trap removes the half-built folder if the build fails or is interrupted.
		trap 'rm -rf "$BUILD_TMP"' EXIT
		"$builder" "$BUILD_TMP"
		for bin in "$@"; do
			[[ -x $BUILD_TMP/bin/$bin ]] || die "$name: build produced no bin/$bin"
		done
		rm -rf "$BUILD_TMP/src" # the wrapper module is only needed while building
		mv -T "$BUILD_TMP" "$dest"
		trap - EXIT
		BUILT=true
		log "$name: built (cold) in $((SECONDS - start))s"
	fi
	for bin in "$@"; do
		ln -sfn "../$name/bin/$bin" "$SHOP_TOOLS_BIN/$bin"
	done
}

# k8s.io/kubernetes cannot be `go install`ed: its go.mod replaces the staging modules
# (k8s.io/api, k8s.io/client-go, ...) with folders inside its own tree. A wrapper module
# requires it and points each staging module at its published v0.Y.Z release instead
# (the approach from kubernetes/kubernetes#79384). The list is read from the release's
# own go.mod, so new staging modules are picked up without editing this script.
build_kubernetes() {
	local out=$1 src=$1/src
	local staging=v0.${KUBERNETES_VERSION#v1.}
	mkdir -p "$src" "$out/bin"
	local gomod
	gomod=$(module_gomod "k8s.io/kubernetes@$KUBERNETES_VERSION")
	{
		printf 'module shop.local/kubernetes-build\n\ngo 1.%s.0\n\n' "$MIN_GO_MINOR"
		printf 'require k8s.io/kubernetes %s\n\nreplace (\n' "$KUBERNETES_VERSION"
		sed -n "s#^[[:space:]]*\(k8s.io/[^[:space:]]*\) => ./staging/.*#\t\1 => \1 $staging#p" "$gomod"
		printf ')\n'
	} >"$src/go.mod"
	grep -q 'k8s.io/client-go => ' "$src/go.mod" || die "found no staging replacements in $gomod"

	# Version stamping as hack/lib/version.sh does it; without it the API server reports
	# v0.0.0-master and kubeVersion checks (Helm charts) misbehave. A module has no git
	# commit: "archive" is the tree state Kubernetes itself uses for source archives, and
	# the build date is the release's publication time, so the build is reproducible.
	local minor=${KUBERNETES_VERSION#v1.}
	minor=${minor%%.*}
	local date
	date=$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "${gomod%.mod}.info")
	local ldflags="-s -w" pkg key
	for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		for key in gitVersion=$KUBERNETES_VERSION gitMajor=1 gitMinor=$minor gitTreeState=archive buildDate=$date; do
			ldflags+=" -X $pkg.$key"
		done
	done
	(
		cd "$src"
		nice -n 10 "$GO" build -mod=mod -trimpath -ldflags "$ldflags" -o "$out/bin/" \
			k8s.io/kubernetes/cmd/kube-apiserver \
			k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler \
			k8s.io/kubernetes/cmd/kubectl \
			k8s.io/kubernetes/cmd/kubelet \
			k8s.io/kubernetes/cmd/kube-proxy
	)
}

# etcd's server module replaces its sibling modules (api, client, pkg) with relative
# folders too, so it also needs a wrapper; minimal version selection then picks the
# siblings at the versions the server requires (the same release).
build_etcd() {
	local out=$1 src=$1/src
	mkdir -p "$src" "$out/bin"
	printf 'module shop.local/etcd-build\n\ngo 1.%s.0\n\nrequire go.etcd.io/etcd/server/v3 %s\n' \
		"$MIN_GO_MINOR" "$ETCD_VERSION" >"$src/go.mod"
	(
		cd "$src"
		nice -n 10 "$GO" build -mod=mod -trimpath -ldflags "-s -w" -o "$out/bin/etcd" go.etcd.io/etcd/server/v3
	)
}

build_kwok() {
	local out=$1
	# cluster.sh tells kwokctl the Kubernetes version it runs (kubeVersion in its config),
	# so the binaries need no version stamp besides kwok's own.
	local ldflags="-s -w -X sigs.k8s.io/kwok/pkg/consts.Version=${KWOK_VERSION#v}"
	GOBIN=$out/bin nice -n 10 "$GO" install -trimpath -ldflags "$ldflags" \
		"sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
}

build_helm() {
	local out=$1
	# Helm's Makefile stamps its version and the Kubernetes version of its client-go (the
	# default .Capabilities.KubeVersion); we read the latter from Helm's own go.mod.
	local gomod client_go
	gomod=$(module_gomod "helm.sh/helm/v3@$HELM_VERSION")
	client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$gomod")
	local minor=${client_go#v0.}
	minor=${minor%%.*}
	[[ -n $minor ]] || die "could not read the client-go version from $gomod"
	local ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
	ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=archive"
	local pkg
	for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
		ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
	done
	mkdir -p "$out/bin"
	GOBIN=$out/bin nice -n 10 "$GO" install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
}

# containerd, its runc shim and ctr, static (no cgo: PKCS#11 decryption is all that is lost).
build_containerd() {
	local out=$1 mod=github.com/containerd/containerd/v2
	GOBIN=$out/bin nice -n 10 "$GO" install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
		-ldflags "-s -w -X $mod/version.Version=$CONTAINERD_VERSION" \
		"$mod/cmd/containerd@$CONTAINERD_VERSION" "$mod/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
		"$mod/cmd/ctr@$CONTAINERD_VERSION"
}

# runc needs cgo (its nsenter part is C) and libseccomp; without the optional libpathrs tag.
build_runc() {
	local out=$1
	[[ -f /usr/include/seccomp.h ]] || die "runc needs libseccomp-dev (apt-get install libseccomp-dev)"
	GOBIN=$out/bin CGO_ENABLED=1 nice -n 10 "$GO" install -trimpath -tags seccomp \
		-ldflags "-s -w -X main.version=${RUNC_VERSION#v}" "github.com/opencontainers/runc@$RUNC_VERSION"
}

build_kube_router() {
	local out=$1
	GOBIN=$out/bin nice -n 10 "$GO" install -trimpath -ldflags "-s -w" \
		"github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION"
}

# CoreDNS with only the plugins the cluster's Corefile uses, not its ~60: a main package of
# our own links coremain and those plugins (each registers itself in init), which builds in a
# fraction of the time of the full server.
build_coredns() {
	local out=$1 src=$1/src p
	mkdir -p "$src" "$out/bin"
	printf 'module shop.local/coredns-build\n\ngo 1.%s.0\n\nrequire github.com/coredns/coredns %s\n' \
		"$MIN_GO_MINOR" "$COREDNS_VERSION" >"$src/go.mod"
	{
		printf 'package main\n\nimport (\n\t"github.com/coredns/coredns/core/dnsserver"\n'
		printf '\t"github.com/coredns/coredns/coremain"\n'
		for p in errors log health ready kubernetes cache reload loadbalance; do
			printf '\t_ "github.com/coredns/coredns/plugin/%s"\n' "$p"
		done
		printf ')\n\nfunc main() {\n\t_ = dnsserver.Directives\n\tcoremain.Run()\n}\n'
	} >"$src/main.go"
	(
		cd "$src"
		nice -n 10 "$GO" build -mod=mod -trimpath -ldflags "-s -w" -o "$out/bin/coredns" .
	)
}

build_nats_server() {
	local out=$1
	GOBIN=$out/bin nice -n 10 "$GO" install -trimpath -ldflags "-s -w" \
		"github.com/nats-io/nats-server/v2@$NATS_SERVER_VERSION"
}

# The Debian packages of the real node, installed when missing (apt-get, as root).
ensure_node_packages() {
	local missing=() pkg
	for pkg in "${NODE_PACKAGES[@]}"; do
		dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
	done
	((${#missing[@]} == 0)) && return
	((EUID == 0)) || die "the real node needs these Debian packages: ${missing[*]} (run as root, or install them)"
	log "installing Debian packages: ${missing[*]}"
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2 ||
		{ apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >&2; } ||
		die "apt-get install ${missing[*]} failed"
}

# Debian packages whose files the images take (catatonit as the pause process, busybox for
# the test pods), unpacked into the cache, keyed by the package version.
build_image_debs() {
	local out=$1 pkg deb
	mkdir -p "$out/bin" "$out/debs"
	for pkg in "${IMAGE_DEBS[@]}"; do
		(cd "$out/debs" && apt-get download "$pkg" >&2) || die "apt-get download $pkg failed"
	done
	for deb in "$out"/debs/*.deb; do dpkg-deb -x "$deb" "$out/root"; done
	ln -s ../root/usr/bin/catatonit "$out/bin/catatonit"
	ln -s ../root/bin/busybox "$out/bin/busybox"
}

# Installs what the real node needs: called by `cluster.sh up --real-node` (or
# `install.sh --real-node`); the kwok tier needs none of it.
install_real_node() {
	ensure_node_packages
	ensure "containerd-$CONTAINERD_VERSION" build_containerd containerd containerd-shim-runc-v2 ctr
	ensure "runc-$RUNC_VERSION" build_runc runc
	ensure "kube-router-$KUBE_ROUTER_VERSION" build_kube_router kube-router
	ensure "coredns-$COREDNS_VERSION" build_coredns coredns
	ensure "nats-server-$NATS_SERVER_VERSION" build_nats_server nats-server
	local debs_key
	debs_key=$(apt-cache policy "${IMAGE_DEBS[@]}" | awk '/Candidate/ { print $2 }' | paste -sd_ | tr ':~+' '---')
	ensure "image-debs-$debs_key" build_image_debs catatonit busybox
}

main() {
	local start=$SECONDS
	mkdir -p "$SHOP_TOOLS_BIN"
	# One install at a time: two concurrent cold builds would only fight over 2 cores.
	exec 9>"$SHOP_TOOLS_DIR/.lock"
	flock -n 9 || {
		log "another install is running; waiting for it"
		flock 9
	}
	log "tools cache: $SHOP_TOOLS_DIR"
	rm -rf "$SHOP_TOOLS_DIR"/.build-* # left by a run that was killed (we hold the lock)
	BUILT=false
	ensure "etcd-$ETCD_VERSION" build_etcd etcd
	ensure "kwok-$KWOK_VERSION" build_kwok kwok kwokctl
	ensure "helm-$HELM_VERSION" build_helm helm
	ensure "kubernetes-$KUBERNETES_VERSION" build_kubernetes \
		kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy
	if [[ ${1:-} == --real-node ]]; then install_real_node; fi
	if [[ $BUILT == true ]]; then
		# The binaries are what is cached; Go's compile cache (~4 GB after these builds)
		# would only speed up a version bump. The module cache (~2 GB) stays, so a rebuild
		# needs no downloads.
		"$GO" clean -cache
	fi
	log "all tools ready in $((SECONDS - start))s; use them with:"
	# shellcheck disable=SC2016 # $PATH is expanded by whoever evaluates the line
	printf 'export PATH=%s:"$PATH"\n' "$SHOP_TOOLS_BIN"
}

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	main "$@"
fi

#!/usr/bin/env bash
# Builds the real node's images without a container engine, as OCI archives for
# `ctr images import`, cached by content.
#
# Usage: tests/cluster/image-build.sh OUT_DIR infra|all
#   infra  the node's own: pause (catatonit), CoreDNS, busybox (test pods)
#   all    also the shop (from SHOP_BIN_DIR/{shop,shop-operator}), PostgreSQL 17 and NATS
# Writes OUT_DIR/<name>.tar and OUT_DIR/images.txt ("<image> <file>" per line).
#
# Debian bases come from `mmdebstrap --variant=extract` (Debian packages, no shell in the shop's)
# and are cached under SHOP_IMAGE_CACHE/bases/<hash of the recipe>; an image whose contents did
# not change keeps its archive (and digest). Environment: SHOP_TOOLS_BIN (coredns, nats-server),
# SHOP_IMAGE_DEBS_ROOT (catatonit and busybox unpacked), SHOP_BIN_DIR, SHOP_IMAGE.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
OUT=${1:?usage: image-build.sh OUT_DIR infra|all}
WHAT=${2:-all}
CACHE=${SHOP_IMAGE_CACHE:-$HOME/.cache/shop/images}
TOOLS=${SHOP_TOOLS_BIN:?SHOP_TOOLS_BIN must name the tools folder}
DEBS=${SHOP_IMAGE_DEBS_ROOT:?SHOP_IMAGE_DEBS_ROOT must name the unpacked catatonit and busybox}
SHOP_IMAGE=${SHOP_IMAGE:-ghcr.io/shop-dev/shop:e2e}
MIRROR=${SHOP_DEBIAN_MIRROR:-http://deb.debian.org/debian}
OCI="python3 $HERE/oci_layout.py build"

log() { printf '[images] %s\n' "$*" >&2; }
die() {
	printf '[images] ERROR: %s\n' "$*" >&2
	exit 1
}

mkdir -p "$OUT" "$CACHE/bases"
: >"$OUT/images.txt.new"

# A Debian base as one layer tar: `$1` name, `$2` suite, `$3` packages (comma-separated),
# `$4` paths to remove (relative, space-separated globs), `$5` a command run in the folder.
base() {
	local name=$1 suite=$2 packages=$3 trim=$4 fixup=${5:-true} key dir
	key=$(printf '%s\n' 2 "$suite" "$packages" "$trim" "$fixup" "$MIRROR" | sha256sum | cut -c1-16)
	dir=$CACHE/bases/$name-$key
	if [[ ! -f $dir/layer.tar ]]; then
		command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (apt-get install mmdebstrap)"
		log "base $name: mmdebstrap $suite ($packages)"
		rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
		mmdebstrap --quiet --variant=extract --include="$packages" --format=directory \
			"$suite" "$dir.tmp/root" "$MIRROR" >&2 || die "mmdebstrap of $name failed"
		(
			cd "$dir.tmp/root"
			rm -rf dev/* usr/share/doc usr/share/man usr/share/info usr/share/lintian
			# shellcheck disable=SC2086 # globs on purpose
			[[ -z $trim ]] || rm -rf $trim
			eval "$fixup"
		)
		tar --numeric-owner --sort=name --mtime=@0 -C "$dir.tmp/root" -cf "$dir.tmp/layer.tar" .
		rm -rf "$dir.tmp/root"
		rm -rf "$dir" && mv "$dir.tmp" "$dir"
	fi
	printf '%s/layer.tar' "$dir"
}

image() {
	local file=$1 ref=$2
	shift 2
	$OCI "$OUT/$file" --name "$ref" "$@" >&2 || die "building $ref failed"
	printf '%s %s\n' "$ref" "$file" >>"$OUT/images.txt.new"
}

start=$SECONDS
image pause.tar localhost/shop/pause:1 --add "$DEBS/usr/bin/catatonit:/catatonit:755:0:0" \
	--entrypoint '["/catatonit","-P"]' --user 65535:65535
busybox_links=()
for applet in sh nc nslookup wget sleep cat echo ls true httpd; do
	busybox_links+=(--symlink "/bin/$applet:busybox")
done
image busybox.tar localhost/shop/busybox:1 --add "$DEBS/bin/busybox:/bin/busybox:755:0:0" \
	"${busybox_links[@]}" --dir /tmp:1777:0:0 --entrypoint '["/bin/sh"]' --user 65532:65532
image coredns.tar "localhost/shop/coredns:$("$TOOLS/coredns" -version | awk -F- '/CoreDNS-/ { print $2; exit }')" \
	--add "$TOOLS/coredns:/coredns:755:0:0" --entrypoint '["/coredns"]' --user 65532:65532

if [[ $WHAT == all ]]; then
	bin=${SHOP_BIN_DIR:-${CARGO_TARGET_DIR:-$ROOT/target}/debug}
	for b in shop shop-operator; do [[ -x $bin/$b ]] || die "$bin/$b is missing (cargo build -p shop -p shop-operator)"; done
	# Debug sections are most of a debug build's size, and no part of what the image runs.
	mkdir -p "$CACHE/bin"
	for b in shop shop-operator; do
		if [[ ! -f $CACHE/bin/$b || $bin/$b -nt $CACHE/bin/$b ]]; then
			objcopy --strip-debug "$bin/$b" "$CACHE/bin/$b.tmp" && mv "$CACHE/bin/$b.tmp" "$CACHE/bin/$b"
		fi
	done
	# CycloneDX SBOMs of both binaries, carried in the image.
	"$ROOT/tests/lint/sbom.sh" "$CACHE/sbom" >&2 || die "the SBOMs could not be made"
	# What gcr.io/distroless/cc-debian12 holds: glibc, libgcc, OpenSSL, CA certificates,
	# tzdata, netbase; no shell, no package manager.
	shop_base=$(base shop bookworm libc6,libgcc-s1,libssl3,ca-certificates,tzdata,netbase,base-files "" \
		'[[ ! -e bin/sh && ! -e usr/bin/sh ]] || { echo "the shop base has a shell" >&2; exit 1; }')
	# The files, user, entrypoint, command, ports and labels of the Dockerfile's final stage.
	image shop.tar "$SHOP_IMAGE" --layer "$shop_base" --dockerfile "$ROOT/Dockerfile" \
		--file '/etc/passwd:644:0:0:root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
		--file '/etc/group:644:0:0:root:x:0:\nnonroot:x:65532:\n' \
		--dir /home/nonroot:700:65532:65532 --dir /usr/local/bin:755:0:0 \
		--add "$CACHE/bin/shop:/usr/local/bin/shop:755:0:0" \
		--add "$CACHE/bin/shop-operator:/usr/local/bin/shop-operator:755:0:0" \
		--dir /usr/share/doc/shop:755:0:0 --dir /usr/share/doc/shop/sbom:755:0:0 \
		--add "$CACHE/sbom/shop.cdx.json:/usr/share/doc/shop/sbom/shop.cdx.json:644:0:0" \
		--add "$CACHE/sbom/shop-operator.cdx.json:/usr/share/doc/shop/sbom/shop-operator.cdx.json:644:0:0"
	# PostgreSQL 17 from Debian trixie, without LLVM (jit is off) and perl (postgresql-common's
	# wrappers only); dash for the readiness probe's `sh -c`.
	pg_base=$(base postgres trixie postgresql-17,dash,coreutils,base-files \
		"usr/lib/x86_64-linux-gnu/libLLVM* usr/lib/x86_64-linux-gnu/libz3* usr/lib/postgresql/17/lib/llvmjit* usr/lib/postgresql/17/lib/bitcode usr/lib/x86_64-linux-gnu/perl* usr/lib/x86_64-linux-gnu/libperl* usr/share/perl* usr/bin/perl* usr/share/locale usr/share/i18n" \
		'mkdir -p var/run/postgresql var/lib/postgresql/data && chown 70:70 var/run/postgresql var/lib/postgresql var/lib/postgresql/data')
	image postgres.tar localhost/shop/postgres:17 --layer "$pg_base" \
		--file '/etc/passwd:644:0:0:root:x:0:0:root:/root:/bin/sh\npostgres:x:70:70:PostgreSQL:/var/lib/postgresql:/bin/sh\n' \
		--file '/etc/group:644:0:0:root:x:0:\npostgres:x:70:\n' \
		--add "$HERE/postgres-entrypoint.sh:/usr/local/bin/docker-entrypoint.sh:755:0:0" \
		--env PATH=/usr/local/sbin:/usr/local/bin:/usr/lib/postgresql/17/bin:/usr/sbin:/usr/bin:/sbin:/bin \
		--env PGDATA=/var/lib/postgresql/data/pgdata --entrypoint '["/usr/local/bin/docker-entrypoint.sh"]' \
		--user 70:70 --expose 5432/tcp
	image nats.tar "localhost/shop/nats:$("$TOOLS/nats-server" --version | awk '{ print $2 }' | tr -d v)" \
		--add "$TOOLS/nats-server:/usr/local/bin/nats-server:755:0:0" \
		--file '/etc/passwd:644:0:0:nats:x:10001:10001::/:/sbin/nologin\n' \
		--entrypoint '["/usr/local/bin/nats-server"]' --user 10001:10001
fi
mv "$OUT/images.txt.new" "$OUT/images.txt"
log "images ($WHAT) ready in $((SECONDS - start))s: $(cut -d' ' -f1 "$OUT/images.txt" | paste -sd' ')"

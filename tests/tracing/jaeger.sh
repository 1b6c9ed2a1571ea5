#!/usr/bin/env bash
# A throwaway Jaeger (all-in-one, in-memory storage) on 127.0.0.1, to look at the shop's traces
# and for the tracing test.
#   tests/tracing/jaeger.sh install  builds it from its Go module if not cached
#                                    ($SHOP_TOOLS_DIR/jaeger-<version>/bin/jaeger-all-in-one)
#   tests/tracing/jaeger.sh start    installs, starts it, prints `export` lines (eval them):
#                                    SHOP_TEST_JAEGER_OTLP_ENDPOINT (OTLP/HTTP, what a shop's
#                                    OTEL_EXPORTER_OTLP_ENDPOINT should be) and
#                                    SHOP_TEST_JAEGER_URL (the UI and its query API)
#   tests/tracing/jaeger.sh stop     stops it
# Every listener it opens is on 127.0.0.1 (ports below; override with SHOP_JAEGER_*_PORT).
set -euo pipefail

# Jaeger v1's last release line: one binary with collector, query and UI, flags for every
# listener, memory storage by default. (v2 is an OpenTelemetry Collector distribution: a far
# larger build for the same job here.)
JAEGER_VERSION=v1.76.0

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The tool-cache helpers (find_go, go_env, ensure) and SHOP_TOOLS_DIR, shared with the cluster tools.
# shellcheck source=../cluster/install.sh
source "$here/../cluster/install.sh"

state_dir=${SHOP_JAEGER_DIR:-${TMPDIR:-/tmp}/shop-test-jaeger}
# Every port below Linux's ephemeral range, as in tests/nats.sh (which says why).
otlp_port=${SHOP_JAEGER_OTLP_PORT:-14318}
query_port=${SHOP_JAEGER_QUERY_PORT:-16686}
# Listeners nobody here uses, still opened by the binary: kept on loopback, on ports of their own.
otlp_grpc_port=${SHOP_JAEGER_OTLP_GRPC_PORT:-14317}
query_grpc_port=${SHOP_JAEGER_QUERY_GRPC_PORT:-16685}
collector_http_port=${SHOP_JAEGER_COLLECTOR_HTTP_PORT:-14268}
collector_grpc_port=${SHOP_JAEGER_COLLECTOR_GRPC_PORT:-14250}
admin_port=${SHOP_JAEGER_ADMIN_PORT:-14269}

say() { printf 'jaeger: %s\n' "$*" >&2; }

jaeger_dir=$SHOP_TOOLS_DIR/jaeger-$JAEGER_VERSION
jaeger_bin=$jaeger_dir/bin/jaeger-all-in-one

# Jaeger's go.mod replaces a module (sarama, by version), which `go install pkg@version` refuses;
# a wrapper module requires it with the same replacements, as the cluster tools do for etcd.
build_jaeger() {
	local out=$1 src=$1/src
	mkdir -p "$src" "$out/bin"
	local gomod
	gomod=$(module_gomod "github.com/jaegertracing/jaeger@$JAEGER_VERSION")
	{
		printf 'module shop.local/jaeger-build\n\ngo 1.%s.0\n\n' "$MIN_GO_MINOR"
		printf 'require github.com/jaegertracing/jaeger %s\n\n' "$JAEGER_VERSION"
		grep '^replace .* => .* v[0-9]' "$gomod" || true
	} >"$src/go.mod"
	(
		cd "$src"
		nice -n 10 "$GO" build -mod=mod -trimpath -ldflags "-s -w" -o "$out/bin/jaeger-all-in-one" \
			github.com/jaegertracing/jaeger/cmd/all-in-one
	)
}

install() {
	mkdir -p "$SHOP_TOOLS_BIN"
	exec 9>"$SHOP_TOOLS_DIR/.lock"
	flock -n 9 || {
		say "another tool install is running; waiting for it"
		flock 9
	}
	BUILT=false
	ensure "jaeger-$JAEGER_VERSION" build_jaeger jaeger-all-in-one
	# The binary is what is cached; Go's compile cache would only speed up a version bump.
	if [[ $BUILT == true ]]; then "$GO" clean -cache; fi
	exec 9>&-
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start() {
	install
	stop_quietly
	mkdir -p "$state_dir"
	# Memory storage; sampling strategies are served by the collector only when asked for.
	SPAN_STORAGE_TYPE=memory "$jaeger_bin" \
		--collector.otlp.enabled=true \
		--collector.otlp.http.host-port="127.0.0.1:$otlp_port" \
		--collector.otlp.grpc.host-port="127.0.0.1:$otlp_grpc_port" \
		--collector.http-server.host-port="127.0.0.1:$collector_http_port" \
		--collector.grpc-server.host-port="127.0.0.1:$collector_grpc_port" \
		--collector.zipkin.host-port= \
		--query.http-server.host-port="127.0.0.1:$query_port" \
		--query.grpc-server.host-port="127.0.0.1:$query_grpc_port" \
		--admin.http.host-port="127.0.0.1:$admin_port" \
		--memory.max-traces=100000 \
		>"$state_dir/jaeger.log" 2>&1 &
	echo $! >"$state_dir/jaeger.pid"
	for _ in $(seq 1 200); do
		if port_open "$otlp_port" && port_open "$query_port"; then
			say "running: UI http://127.0.0.1:$query_port, OTLP/HTTP http://127.0.0.1:$otlp_port (log: $state_dir/jaeger.log)"
			say "send traces to it: OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:$otlp_port"
			# Not OTEL_EXPORTER_OTLP_ENDPOINT itself: every test's shop would then export.
			echo "export SHOP_TEST_JAEGER_OTLP_ENDPOINT=http://127.0.0.1:$otlp_port"
			echo "export SHOP_TEST_JAEGER_URL=http://127.0.0.1:$query_port"
			return
		fi
		kill -0 "$(cat "$state_dir/jaeger.pid")" 2>/dev/null || break
		sleep 0.1
	done
	say "jaeger did not start; its log:"
	cat "$state_dir/jaeger.log" >&2
	exit 1
}

stop_quietly() {
	if [ -f "$state_dir/jaeger.pid" ]; then
		local pid
		pid=$(cat "$state_dir/jaeger.pid")
		kill "$pid" 2>/dev/null || true
		for _ in $(seq 1 50); do
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.1
		done
		# Still shutting down after 5 s: a new one could not bind its ports.
		if kill -0 "$pid" 2>/dev/null; then
			kill -9 "$pid" 2>/dev/null || true
			sleep 0.2
		fi
	fi
	rm -rf "$state_dir"
}

case "${1:-}" in
install) install ;;
start) start ;;
stop)
	stop_quietly
	say "stopped"
	;;
*)
	echo "usage: $0 install|start|stop" >&2
	exit 2
	;;
esac

#!/usr/bin/env bash
# A throwaway NATS server with JetStream on 127.0.0.1 for the tests.
#   tests/nats.sh start   installs nats-server from Debian if missing, starts it, prints
#                         `export SHOP_TEST_NATS_URL=...` (eval it)
#   tests/nats.sh stop    stops it and removes its store
set -euo pipefail

state_dir=${SHOP_NATS_DIR:-${TMPDIR:-/tmp}/shop-test-nats}
# Below Linux's ephemeral range (32768 and up): there an outgoing connection on loopback can hold
# the port, and the server then cannot bind it (seen: nats-server failing to start after a
# benchmark's many connections). The tests' own servers take 20000-32000.
port=${SHOP_NATS_PORT:-14222}

say() { printf 'nats: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to install packages (run as root or install nats-server yourself)"; exit 1
  fi
}

nats_bin() {
  command -v nats-server 2>/dev/null || { [ -x /usr/sbin/nats-server ] && echo /usr/sbin/nats-server; } || true
}

install() {
  if [ -n "$(nats_bin)" ]; then return; fi
  say "installing nats-server from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >&2
}

start() {
  install
  stop_quietly
  mkdir -p "$state_dir/store"
  "$(nats_bin)" -js -a 127.0.0.1 -p "$port" -sd "$state_dir/store" -l "$state_dir/server.log" \
    -P "$state_dir/server.pid" >/dev/null 2>&1 &
  # Up to 30 s: JetStream recovers its store before it listens.
  for _ in $(seq 1 300); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      say "running on 127.0.0.1:$port (log: $state_dir/server.log)"
      echo "export SHOP_TEST_NATS_URL=nats://127.0.0.1:$port"
      return
    fi
    sleep 0.1
  done
  say "nats-server did not start (log: $state_dir/server.log)"; exit 1
}

stop_quietly() {
  if [ -f "$state_dir/server.pid" ]; then
    local pid; pid=$(cat "$state_dir/server.pid")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
  rm -rf "$state_dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop_quietly; say "stopped" ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the tests.
#   tests/postgres.sh start   installs PostgreSQL from Debian if missing, starts a server, prints
#                             `export SHOP_TEST_POSTGRES_URL=...` (eval it)
#   tests/postgres.sh stop    stops it and removes its data
#   tests/postgres.sh pause   stops it (a fast shutdown, as an operator's restart does), keeping
#                             its data; `resume` starts it again (the database-restart test)
# SHOP_PG_DIR and SHOP_PG_PORT give a server of one's own beside the shared one.
set -euo pipefail

state_dir=${SHOP_PG_DIR:-${TMPDIR:-/tmp}/shop-test-postgres}
# Below Linux's ephemeral range, as in tests/nats.sh (which says why).
port=${SHOP_PG_PORT:-15432}

say() { printf 'postgres: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    say "need root to install packages (run as root or install postgresql yourself)"; exit 1
  fi
}

pg_bin() {
  ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}

install() {
  if [ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] && command -v openssl >/dev/null; then return; fi
  say "installing PostgreSQL (and openssl, for its test certificates) from Debian packages"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql openssl >&2
}

# Runs a PostgreSQL binary as an unprivileged user: the server refuses to run as root.
run_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

start() {
  install
  local bin; bin=$(pg_bin)
  stop_quietly
  mkdir -p "$state_dir"
  [ "$(id -u)" = 0 ] && chown postgres "$state_dir"
  run_pg "$bin/initdb" -D "$state_dir/data" -U shop -A trust --no-sync >/dev/null
  certificates
  serve
  say "running on 127.0.0.1:$port, TLS with the CA $state_dir/tls/ca.crt (log: $state_dir/server.log)"
  echo "export SHOP_TEST_POSTGRES_URL=postgres://shop@127.0.0.1:$port/postgres"
  echo "export SHOP_TEST_POSTGRES_CA=$state_dir/tls/ca.crt"
}
# Loopback only; fsync off because test data is disposable and the disk is shared. TLS on
# (clients choose: sslmode=prefer by default, require or verify-full with the test CA).
serve() {
  run_pg "$(pg_bin)/pg_ctl" -D "$state_dir/data" -l "$state_dir/server.log" -w -t 60 \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $state_dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=400 -c ssl=on -c ssl_cert_file=$state_dir/tls/server.crt -c ssl_key_file=$state_dir/tls/server.key" \
    start >/dev/null
}

# A CA made for this server alone, and the server's certificate for 127.0.0.1 signed by it:
# what a test needs to connect with sslmode=verify-full. Valid two days; made at every start.
certificates() {
  local dir=$state_dir/tls
  mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=shop test PostgreSQL CA" -keyout "$dir/ca.key" -out "$dir/ca.crt" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj "/CN=127.0.0.1" -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf '%s\n' "subjectAltName=IP:127.0.0.1,DNS:localhost" "basicConstraints=critical,CA:FALSE" \
    "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 2 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
  rm -f "$dir/ca.key" "$dir/server.csr"
  chmod 600 "$dir/server.key"
  [ "$(id -u)" = 0 ] && chown -R postgres "$dir"
  chmod 755 "$dir"
  chmod 644 "$dir/ca.crt" "$dir/server.crt"
}

stop_quietly() {
  local bin; bin=$(pg_bin)
  if [ -f "$state_dir/data/postmaster.pid" ]; then
    run_pg "$bin/pg_ctl" -D "$state_dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$state_dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop_quietly; say "stopped" ;;
  pause) run_pg "$(pg_bin)/pg_ctl" -D "$state_dir/data" -m fast -w stop >/dev/null ;;
  resume) serve ;;
  *) echo "usage: $0 start|stop|pause|resume" >&2; exit 2 ;;
esac

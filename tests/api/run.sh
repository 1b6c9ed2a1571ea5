#!/usr/bin/env bash
# The API contract: Schemathesis (`--checks all`) against every service's /openapi.json and the
# gateway's merged public document at /openapi.json, under `shop up` on SQLite, with a seeded
# admin account for the operations that need a caller. Deterministic in CI: a fixed seed and a
# fixed number of examples per operation. Any failure fails the run.
#
#   tests/api/run.sh                   every service, then the gateway
#   tests/api/run.sh catalog gateway   only these
#
# SHOP_BIN            the shop binary (default: $CARGO_TARGET_DIR/debug/shop)
# SHOP_API_EXAMPLES   examples per operation (default 25)
# SHOP_API_SEED       the generator's seed (default 20261206); `random` for a new one each run
#
# By hand, a longer and different run: SHOP_API_EXAMPLES=500 SHOP_API_SEED=random tests/api/run.sh
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

say() { printf 'api contract: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

version=4.32.5
venv=$HOME/.cache/shop/venv-schemathesis-$version
if [ ! -x "$venv/bin/st" ]; then
  say "installing schemathesis $version into $venv"
  t0=$(date +%s)
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2 ||
      { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >&2; }
  fi
  # Installed beside, then renamed: a run that dies halfway never leaves a venv that looks done.
  rm -rf "$venv.partial"
  python3 -m venv "$venv.partial"
  "$venv.partial/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$version"
  rm -rf "$venv" && mv -T "$venv.partial" "$venv"
  # The venv's scripts name the directory they were made in.
  sed -i "s#$venv.partial#$venv#g" "$venv"/bin/*
  say "installed in $(($(date +%s) - t0)) s"
fi

rust_version=$(rustc --version | cut -d' ' -f2)
SHOP_BIN=${SHOP_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/shop/cargo-target-$rust_version}/debug/shop}
[ -x "$SHOP_BIN" ] || fail "no shop binary at $SHOP_BIN (cargo build -p shop)"
examples=${SHOP_API_EXAMPLES:-25}
seed=${SHOP_API_SEED:-20261206}
[ "$seed" = random ] && seed=$RANDOM$RANDOM

# Ten consecutive free ports on 127.0.0.1: the gateway's, then the services' in `shop up`'s order.
# Below Linux's ephemeral range (32768 and up), where an outgoing connection could take one of
# them before `shop up` binds it.
base=$(python3 - <<'PY'
import random, socket
for _ in range(200):
    base = random.randrange(20000, 32000)
    sockets = []
    try:
        for port in range(base, base + 10):
            s = socket.socket(); s.bind(("127.0.0.1", port)); sockets.append(s)
        print(base); break
    except OSError:
        pass
    finally:
        for s in sockets: s.close()
PY
)
[ -n "$base" ] || fail "no ten free consecutive ports on 127.0.0.1"
declare -A port=(
  [gateway]=$base [user]=$((base + 1)) [catalog]=$((base + 2)) [cart]=$((base + 3))
  [inventory]=$((base + 4)) [payment]=$((base + 5)) [shipping]=$((base + 6)) [order]=$((base + 7))
  [notification]=$((base + 8))
)
services=(user catalog cart inventory payment shipping order notification gateway)
[ $# -gt 0 ] && services=("$@")

data=$(mktemp -d "${TMPDIR:-/tmp}/shop-api.XXXXXX")
shop_pid=
stop() {
  status=$?
  [ -n "$shop_pid" ] && kill "$shop_pid" 2>/dev/null && wait "$shop_pid" 2>/dev/null
  if [ "$status" != 0 ] && [ -f "$data/shop.log" ]; then
    say "the last lines of shop up's log:"; tail -n 30 "$data/shop.log" >&2
  fi
  rm -rf "$data"
  exit "$status"
}
trap stop EXIT
# The installation's key, known here so that hooks.py can call the internal APIs as a service.
SHOP_SERVICE_KEY=$(python3 -c 'import base64, os; print(base64.b64encode(os.urandom(32)).decode())')
export SHOP_SERVICE_KEY
SHOP_OPENAPI_REFRESH_MS=1000 "$SHOP_BIN" up --data-dir "$data/shop" --port "$base" >"$data/shop.log" 2>&1 &
shop_pid=$!
for name in "${!port[@]}"; do
  for _ in $(seq 100); do
    curl -fsS -o /dev/null "http://127.0.0.1:${port[$name]}/readyz" 2>/dev/null && break
    kill -0 "$shop_pid" 2>/dev/null || fail "shop up exited"
    sleep 0.2
  done
  curl -fsS -o /dev/null "http://127.0.0.1:${port[$name]}/readyz" || fail "$name is not ready"
done

# The gateway merges the services' documents every few seconds: wait until it has all seven that
# publish public operations.
for _ in $(seq 60); do
  tags=$(curl -fsS "http://127.0.0.1:$base/openapi.json" | python3 -c 'import json,sys; print(len(json.load(sys.stdin).get("tags", [])))')
  [ "$tags" -ge 7 ] && break
  sleep 0.5
done
[ "$tags" -ge 7 ] || fail "the gateway's /openapi.json merged only $tags of 7 services' documents"

# The seeded account: an admin (shop up makes admin@shop.local one), so every operation that
# needs a caller or the admin role is reached.
gateway=http://127.0.0.1:$base
password=contract-test-$RANDOM$RANDOM
curl -fsS -o /dev/null -H 'content-type: application/json' \
  -d "{\"email\":\"admin@shop.local\",\"password\":\"$password\",\"name\":\"Contract Test\"}" "$gateway/api/users"
token=$(curl -fsS -H 'content-type: application/json' \
  -d "{\"email\":\"admin@shop.local\",\"password\":\"$password\"}" "$gateway/api/auth/login" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])')
user_id=$(curl -fsS -H "authorization: Bearer $token" "$gateway/api/users/me" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
SHOP_API_CATEGORIES=$(curl -fsS "$gateway/api/categories" |
  python3 -c 'import json,sys; print(",".join(c["slug"] for c in json.load(sys.stdin)))')
export SHOP_API_CATEGORIES
export SCHEMATHESIS_HOOKS=$here/hooks.py

say "schemathesis $version, seed $seed, $examples examples per operation"
failed=()
for name in "${services[@]}"; do
  if [ "$name" = gateway ]; then
    # The public API as clients see it: a Bearer token, the gateway's merged document.
    auth=(-H "Authorization: Bearer $token")
  else
    # A service behind the gateway: the identity headers the gateway sets after verifying.
    auth=(-H "x-shop-user-id: $user_id" -H "x-shop-user-roles: admin")
  fi
  say "$name (http://127.0.0.1:${port[$name]}/openapi.json)"
  if ! (cd "$data" && SHOP_API_SERVICE=$name "$venv/bin/st" --config-file "$here/schemathesis.toml" \
    run "http://127.0.0.1:${port[$name]}/openapi.json" --checks all --max-examples "$examples" --seed "$seed" \
    --generation-database none --workers 1 --no-color "${auth[@]}" >"$data/$name.log" 2>&1); then
    cat "$data/$name.log" >&2
    failed+=("$name")
  else
    tail -n 1 "$data/$name.log" >&2
  fi
done
[ ${#failed[@]} = 0 ] || fail "contract failures in: ${failed[*]} (reproduce: SHOP_API_SEED=$seed tests/api/run.sh ${failed[*]})"
say "every document holds: 0 failures"

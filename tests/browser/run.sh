#!/usr/bin/env bash
# The storefront in a real browser: Debian's headless Chromium driven by playwright-core under
# `node --test`. Installs what it needs (chromium from apt, the npm packages into a cache outside
# the checkout keyed by the lockfile), then runs every tests/browser/*.test.mjs against
# `$SHOP_BIN up` (each test file starts its own shop on free ports).
#
#   tests/browser/run.sh [test files...]     default: every *.test.mjs here
#
# SHOP_BIN             the shop binary (default: $CARGO_TARGET_DIR/debug/shop)
# SHOP_CHROMIUM        the browser (default: /usr/bin/chromium, installed if missing)
# SHOP_BROWSER_SCREENSHOTS  where screenshots and shop up's logs go
#                      (default: ${TMPDIR:-/tmp}/shop-browser-screenshots)
# Under CI=true a missing browser or binary fails the run; it never skips.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

say() { printf 'browser tests: %s\n' "$*" >&2; }
fail() { say "$*"; exit 1; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    return 1
  fi
}

# --- the browser: Debian's chromium (playwright never downloads one) ---
export SHOP_CHROMIUM=${SHOP_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$SHOP_CHROMIUM" ]; then
  say "installing chromium from Debian packages"
  t0=$(date +%s)
  apt_install() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >&2; }
  # Package lists may be stale or missing on a fresh machine: update only when the install fails.
  apt_install || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && apt_install; } || true
  [ -x "$SHOP_CHROMIUM" ] || fail "no chromium at $SHOP_CHROMIUM and apt-get could not install it (need root, or set SHOP_CHROMIUM); the browser tests cannot run"
  say "chromium installed in $(($(date +%s) - t0)) s"
fi

# --- the npm packages: `npm ci` once per lockfile, in a cache outside the checkout ---
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  say "installing Node.js and npm from Debian packages"
  apt_node() { as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >&2; }
  apt_node || { as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 && apt_node; } || true
fi
node --version >/dev/null 2>&1 || fail "node is missing (need Node.js 18 or later) and apt-get could not install it"
lock_hash=$(sha256sum package-lock.json | cut -c1-16)
modules_dir=$HOME/.cache/shop/browser-node-$lock_hash
if [ ! -d "$modules_dir/node_modules" ]; then
  say "npm ci into $modules_dir"
  t0=$(date +%s)
  mkdir -p "$(dirname "$modules_dir")"
  # Installed beside, then renamed: a run that dies halfway never leaves a cache that looks done.
  staging=$(mktemp -d "$modules_dir.XXXXXX")
  cp package.json package-lock.json "$staging/"
  (cd "$staging" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --ignore-scripts --loglevel=error >&2)
  mv -T "$staging" "$modules_dir" 2>/dev/null || rm -rf "$staging" # another run got there first
  say "npm ci took $(($(date +%s) - t0)) s"
fi
# ES modules ignore NODE_PATH, so the tests find the packages through a git-ignored symlink.
ln -sfn "$modules_dir/node_modules" node_modules

# --- the shop binary ---
if [ -z "${SHOP_BIN:-}" ]; then
  rust_version=$(rustc --version | cut -d' ' -f2)
  SHOP_BIN=${CARGO_TARGET_DIR:-$HOME/.cache/shop/cargo-target-$rust_version}/debug/shop
fi
[ -x "$SHOP_BIN" ] || fail "no shop binary at $SHOP_BIN (run: cargo build --locked -p shop, or set SHOP_BIN)"
export SHOP_BIN

# Each test empties only its own subfolder there; shop up's logs are kept there too.
export SHOP_BROWSER_SCREENSHOTS=${SHOP_BROWSER_SCREENSHOTS:-${TMPDIR:-/tmp}/shop-browser-screenshots}
mkdir -p "$SHOP_BROWSER_SCREENSHOTS"

if [ $# -eq 0 ]; then set -- ./*.test.mjs; fi
status=0
# One file at a time: each starts a whole shop, and the machine has two cores.
node --test --test-concurrency=1 --test-reporter=spec "$@" || status=$?
say "screenshots: $SHOP_BROWSER_SCREENSHOTS"
exit "$status"

# Sourced by tests/lint/*.sh: `cargo_tool NAME VERSION` installs the crates.io binary crate NAME
# at VERSION into the tool cache once ($SHOP_TOOLS_DIR/NAME-VERSION, keyed by version; a build
# of its own, removed after) and prints the path of its binary.
cargo_tool() {
  local name=$1 version=$2
  local dir=${SHOP_TOOLS_DIR:-$HOME/.cache/shop/tools}/$name-$version
  if [ ! -x "$dir/bin/$name" ]; then
    echo "$name: installing $version from crates.io into $dir" >&2
    local started build
    started=$(date +%s)
    build=$(mktemp -d)
    CARGO_TARGET_DIR=$build cargo install --quiet --locked "$name" --version "$version" --root "$dir.partial" >&2
    rm -rf "$build" "$dir"
    mv "$dir.partial" "$dir"
    echo "$name: installed in $(($(date +%s) - started)) s" >&2
  fi
  printf '%s\n' "$dir/bin/$name"
}

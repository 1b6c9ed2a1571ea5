#!/usr/bin/env bash
# CycloneDX SBOMs (JSON, spec 1.5) of the image's two binaries, `shop` and `shop-operator`:
# every crate compiled into each, with its version, licence and crates.io purl.
#   tests/lint/sbom.sh OUT_DIR    writes OUT_DIR/shop.cdx.json and OUT_DIR/shop-operator.cdx.json
# cargo-cyclonedx is built from crates.io into the tool cache once (keyed by version). The
# image built by tests/cluster/image-build.sh carries both files in /usr/share/doc/shop/sbom/.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${1:?usage: tests/lint/sbom.sh OUT_DIR}
# shellcheck source=cargo-tool.sh
source "$root/tests/lint/cargo-tool.sh"
cyclonedx=$(cargo_tool cargo-cyclonedx 0.5.9)
mkdir -p "$out"
# cargo-cyclonedx writes one file next to every workspace member's Cargo.toml (it has no output
# directory): the two of the binaries are moved out, the others removed, nothing stays in the
# tree. Only what a binary links: no dev- or build-dependencies.
members=$(cd "$root" && cargo metadata --no-deps --format-version 1 --locked |
  python3 -c 'import json,os,sys; [print(os.path.dirname(p["manifest_path"])) for p in json.load(sys.stdin)["packages"]]')
scratch=.sbom-scratch.cdx
trap 'for m in $members; do rm -f "$m/$scratch.json"; done' EXIT
(cd "$root" && "$cyclonedx" cyclonedx --format json --spec-version 1.5 \
  --target x86_64-unknown-linux-gnu --no-build-deps --override-filename "$scratch" -q)
for package in services/shop:shop operator:shop-operator; do
  name=${package#*:}
  mv "$root/${package%%:*}/$scratch.json" "$out/$name.cdx.json"
  # Not an empty document: the binary's own component and the crates it is built from.
  python3 - "$out/$name.cdx.json" "$name" <<'PY'
import json, sys
path, name = sys.argv[1], sys.argv[2]
bom = json.load(open(path))
assert bom["bomFormat"] == "CycloneDX", path
assert bom["metadata"]["component"]["name"] == name, bom["metadata"]["component"]
crates = {c["name"] for c in bom.get("components", [])}
needed = {"tokio", "axum"} if name == "shop" else {"tokio", "kube-runtime"}
assert needed <= crates, f"{path} lacks {needed - crates}"
# The same binaries give the same file (and the image the same digest): no random serial
# number, no time of generation, both optional in CycloneDX.
bom.pop("serialNumber", None)
bom["metadata"].pop("timestamp", None)
json.dump(bom, open(path, "w"), indent=2, sort_keys=True)
print(f"sbom: {path}: {len(bom['components'])} components")
PY
done

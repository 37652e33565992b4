#!/usr/bin/env bash
# slither over every deployable contract, compiled through the solc-js shim.
# Fails on any high-severity finding; prints medium ones (informational and low are off).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/@foundry-rs/forge-linux-amd64/bin:$PATH"  # crytic-compile asks forge for its config
status=0
for f in contracts/*.sol contracts/examples/*.sol; do
  echo "== slither $f"
  .venv/bin/slither "$f" --compile-force-framework solc --solc scripts/solc.js \
    --solc-remaps "@openzeppelin/contracts/=node_modules/@openzeppelin/contracts/" --solc-args=--optimize \
    --filter-paths node_modules --exclude-informational --exclude-low --fail-high || status=1
done
exit $status

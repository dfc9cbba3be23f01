#!/usr/bin/env bash
# Lints the protocol and checks it for breaking changes against the last
# released protos (sdk/proto-baseline/, see sdk/PROTOCOL.md "Version
# compatibility"). Installs the buf CLI from npm (@bufbuild/buf) if missing.
#   bash sdk/check-proto.sh
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v buf >/dev/null 2>&1; then
  echo "==> installing buf (npm install -g @bufbuild/buf)" >&2
  npm install -g @bufbuild/buf >&2
  PATH="$PATH:$(npm prefix -g)/bin"
  export PATH
fi
echo "==> buf $(buf --version)" >&2

echo "==> buf lint" >&2
buf lint

echo "==> buf breaking --against sdk/proto-baseline" >&2
buf breaking --against sdk/proto-baseline

echo "==> protos OK" >&2

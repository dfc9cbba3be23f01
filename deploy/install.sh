#!/usr/bin/env bash
# Installs ferry-control-plane and ferry-agent on PATH:
#
#   bash deploy/install.sh              # into ~/.cargo/bin (on PATH with rustup)
#   PREFIX=/usr/local bash deploy/install.sh   # into /usr/local/bin (as root)
#
# Builds with the `dist` profile (release, no debug info, stripped) through
# `cargo install --locked`, so the versions in Cargo.lock are the ones built.
# Needs a Rust toolchain (https://rustup.rs); nothing else: TLS is rustls,
# and certificates come from `ferry-control-plane certs` (no openssl).
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PREFIX="${PREFIX:-${CARGO_HOME:-$HOME/.cargo}}"

command -v cargo >/dev/null 2>&1 || {
  echo "install: cargo not found: install Rust first (https://rustup.rs), then re-run" >&2
  exit 1
}
for crate in control-plane agent; do
  echo "install: building ferry-$crate (profile dist) into $PREFIX/bin" >&2
  cargo install --locked --profile dist --force --root "$PREFIX" --path "$ROOT/$crate"
done
for b in ferry-control-plane ferry-agent; do
  "$PREFIX/bin/$b" --version
done
case ":$PATH:" in
  *":$PREFIX/bin:"*) ;;
  *) echo "install: add $PREFIX/bin to PATH, e.g. export PATH=\"$PREFIX/bin:\$PATH\"" >&2 ;;
esac

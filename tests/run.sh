#!/usr/bin/env bash
# Ferry's whole test suite, as CI runs it:
#   bash tests/run.sh
# 1. installs what the tests need (PostgreSQL, openssl, osmem-server, grpcurl);
# 2. format and lint gates (-D warnings);
# 3. builds the binaries (integration tests run the real ones from target/debug);
# 4. runs every test. Integration tests start their own PostgreSQL,
#    osmem-server, control plane and agent on free loopback ports, so test
#    binaries may run their tests in parallel; two threads suit the 2-core
#    machines we run on (TEST_THREADS overrides).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { echo "==> $*" >&2; }

step "install dependencies"
bash deploy/install-deps.sh
# pip may have put grpcurl next to python3 rather than on PATH.
PATH="$PATH:$(python3 -c 'import sys, os; print(os.path.dirname(sys.executable))')"
export PATH

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

step "cargo build (binaries for the integration tests)"
cargo build --workspace --bins

step "deploy files: hadolint, kubernetes-validate, systemd-analyze verify (deploy/check.sh)"
bash deploy/check.sh

step "protocol: buf lint + breaking"
bash sdk/check-proto.sh

step "Python SDK (install + pytest); the conformance tests run its example agent"
python3 -m pip install --quiet --disable-pip-version-check './sdk/python[dev]'
python3 -m pytest -q sdk/python

step "benchmark harness, CI size (correctness only: no lost or duplicated documents; no speed assertion)"
python3 -m pip install --quiet --disable-pip-version-check 'psycopg[binary]' elasticsearch
python3 bench/run --rows 50000 --large-rows --json bench/out/ci-50k.json

step "cargo test"
cargo test --workspace -- --test-threads "${TEST_THREADS:-2}"

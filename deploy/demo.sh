#!/usr/bin/env bash
# Ferry's one-command demo: Elastic's PostgreSQL connector tutorial, with Ferry.
#
#   bash deploy/demo.sh
#
# It installs what it needs (deploy/install-deps.sh), builds the two
# binaries it runs, then, all under .demo/ (git-ignored; DEMO_DIR=... to put
# it elsewhere) on loopback, on the README's ports when they are free
# (PostgreSQL 5432, Elasticsearch 9200, agents 50051, admin API 50052; free
# ones otherwise):
#   - a PostgreSQL cluster with database `chinook` (user myuser/mypassword)
#     holding a music catalogue of 275 artists and 347 albums;
#   - osmem-server as Elasticsearch, unless ES_URL points at a real one
#     (credentials for it: FERRY_ELASTICSEARCH__API_KEY, or
#     FERRY_ELASTICSEARCH__USERNAME + FERRY_ELASTICSEARCH__PASSWORD);
#   - development certificates made with openssl (a CA, the control plane's
#     server certificate, the agent's client certificate with CN=demo-agent);
#   - the control plane and one agent, logs in .demo/logs/;
# and walks the tutorial with grpcurl: PutConnector, wait for the agent to
# register, UpdateConfiguration, wait for connected, a full sync, then the
# finished job and `GET music/_count` (622 documents).
# It prints an `export A=... ES=... PGPORT=...` line: paste it and every
# command of README.md's tutorial runs as written against the demo.
# Everything it started is stopped when it ends (DEMO_KEEP_RUNNING=1 keeps it
# all running until Ctrl-C or `kill PID`), and PostgreSQL's data is removed.
# Re-runnable: each run starts from scratch.
# DEMO_PROFILE=debug uses a debug build instead of a release build;
# DEMO_SKIP_BUILD=1 uses whatever is built already.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
DEMO="${DEMO_DIR:-$ROOT/.demo}"
case "$DEMO" in /*) ;; *) DEMO="$ROOT/$DEMO" ;; esac
PROFILE="${DEMO_PROFILE:-release}"
TIMEOUT="${DEMO_TIMEOUT:-180}"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*" >&2; }
die() {
  echo "demo: ERROR: $*" >&2
  for f in "$DEMO"/logs/*.log; do
    [ -f "$f" ] || continue
    echo "----- last lines of $f -----" >&2
    tail -n 30 "$f" >&2
  done
  exit 1
}

# --- stop whatever a previous, interrupted run left behind ---------------------
# (only processes this script started: their ids are in .demo/pids)
# As root, PostgreSQL runs as the postgres OS user, from / (it may not be
# allowed into the current directory: no "could not change directory" noise).
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }
stop_old_run() {
  if [ -f "$DEMO/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done <"$DEMO/pids"
    rm -f "$DEMO/pids"
  fi
  if [ -f "$DEMO/pgdata-path" ]; then
    local old
    old="$(cat "$DEMO/pgdata-path")"
    if [ -f "$old/postmaster.pid" ]; then
      as_pg "$(cat "$DEMO/pgbin-path")/pg_ctl" stop -D "$old" -m fast >/dev/null 2>&1 || true
    fi
    rm -rf "$(dirname "$old")"
  fi
}
stop_old_run

# --- dependencies and binaries -------------------------------------------------
say "Installing dependencies (deploy/install-deps.sh)"
bash deploy/install-deps.sh
PYBIN="$(python3 -c 'import sys, os; print(os.path.dirname(sys.executable))')"
export PATH="$HOME/.cargo/bin:$PATH:$PYBIN"
GRPCURL="$(command -v grpcurl || echo "$PYBIN/grpcurl")"

say "Building Ferry ($PROFILE)"
if [ "${DEMO_SKIP_BUILD:-}" = 1 ]; then
  echo "(DEMO_SKIP_BUILD=1: using the binaries already built)"
elif [ "$PROFILE" = release ]; then
  cargo build --release -p ferry-control-plane -p ferry-agent --bin ferry-control-plane --bin ferry-agent
else
  cargo build -p ferry-control-plane -p ferry-agent --bin ferry-control-plane --bin ferry-agent
fi
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
BIN="$TARGET/$PROFILE"
for b in ferry-control-plane ferry-agent; do
  [ -x "$BIN/$b" ] || die "$BIN/$b was not built"
done

rm -rf "$DEMO"
mkdir -p "$DEMO/logs" "$DEMO/certs"
: >"$DEMO/pids"

PGDATA=""
PGBIN=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  echo >&2
  echo "demo: stopping everything it started" >&2
  if [ -f "$DEMO/pids" ]; then
    while read -r pid; do
      [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
    done <"$DEMO/pids"
    # Give them a moment to exit cleanly.
    sleep 1
    rm -f "$DEMO/pids"
  fi
  if [ -n "$PGDATA" ] && [ -f "$PGDATA/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" stop -D "$PGDATA" -m fast >/dev/null 2>&1 || true
  fi
  # The cluster is throwaway: remove its data (wherever it had to live).
  if [ -n "$PGDATA" ]; then
    rm -rf "$(dirname "$PGDATA")"
    rm -f "$DEMO/pgdata-path" "$DEMO/pgbin-path" "$DEMO/pg-data"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port [PREFERRED]: PREFERRED when nothing listens there, else any free port.
free_port() {
  python3 - "${1:-0}" <<'PY'
import socket, sys
for port in (int(sys.argv[1]), 0):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    print(s.getsockname()[1])
    break
PY
}
wait_port() { # host port seconds what pid
  python3 - "$@" <<'PY' || die "$4 did not listen on $1:$2 within $3 s (or exited)"
import os, socket, sys, time
host, port, limit, pid = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), int(sys.argv[5])
deadline = time.time() + limit
while time.time() < deadline:
    try:
        socket.create_connection((host, port), timeout=1).close()
        sys.exit(0)
    except OSError:
        time.sleep(0.2)
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit(1)  # the process is gone
sys.exit(1)
PY
}
started() { echo "$1" >>"$DEMO/pids"; }

# --- PostgreSQL ----------------------------------------------------------------
say "Starting PostgreSQL with the music catalogue"
PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
PGPORT="$(free_port 5432)"
PGROOT="$DEMO/pg"
mkdir -p "$PGROOT"
if [ "$(id -u)" = 0 ]; then
  # initdb refuses root: the cluster belongs to the postgres OS user, which
  # must be able to reach .demo/; otherwise the cluster goes to /tmp.
  chown postgres: "$PGROOT"
  if ! (cd / && runuser -u postgres -- test -w "$PGROOT"); then
    # The postgres user cannot reach .demo/ (e.g. under /root): the data
    # goes to /tmp, linked from .demo/pg-data, and is removed at the end.
    PGROOT="$(mktemp -d /tmp/ferry-demo-pg.XXXXXX)"
    chown postgres: "$PGROOT"
    ln -sfn "$PGROOT" "$DEMO/pg-data"
  fi
fi
PGDATA="$PGROOT/data"
echo "$PGDATA" >"$DEMO/pgdata-path"
echo "$PGBIN" >"$DEMO/pgbin-path"
as_pg "$PGBIN/initdb" -D "$PGDATA" -U postgres --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C --no-sync >"$DEMO/logs/initdb.log" 2>&1 || die "initdb failed (see .demo/logs/initdb.log)"
as_pg "$PGBIN/pg_ctl" start -w -t 60 -D "$PGDATA" -l "$PGROOT/postgresql.log" \
  -o "-c listen_addresses=127.0.0.1 -p $PGPORT -c unix_socket_directories='$PGROOT'" >/dev/null \
  || die "PostgreSQL did not start: $(tail -n 20 "$PGROOT/postgresql.log" 2>/dev/null)"
"$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PGROOT" -p "$PGPORT" -U postgres -d postgres \
  -c "CREATE ROLE myuser LOGIN PASSWORD 'mypassword'" \
  -c "CREATE DATABASE chinook OWNER myuser" >/dev/null
PGOPTIONS="-c client_min_messages=warning" PGPASSWORD=mypassword "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PGPORT" -U myuser -d chinook \
  -f deploy/demo/catalog.sql >/dev/null
echo "PostgreSQL $("$PGBIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$PGPORT, database chinook:" \
  "$("$PGBIN/psql" -X -At -h "$PGROOT" -p "$PGPORT" -U postgres -d chinook \
    -c "SELECT (SELECT count(*) FROM artist) || ' artists, ' || (SELECT count(*) FROM album) || ' albums'")"

# --- Elasticsearch --------------------------------------------------------------
if [ -n "${ES_URL:-}" ]; then
  say "Using Elasticsearch at $ES_URL"
else
  say "Starting osmem-server (in-memory, OpenSearch-compatible) as Elasticsearch"
  OSMEM="$(python3 -c 'import osmem_server, os; print(os.path.join(os.path.dirname(osmem_server.__file__), "bin", "osmem-server"))')"
  ESPORT="$(free_port 9200)"
  "$OSMEM" -addr "127.0.0.1:$ESPORT" -no-stdin-watch </dev/null >"$DEMO/logs/osmem.log" 2>&1 &
  started $!
  wait_port 127.0.0.1 "$ESPORT" 30 osmem-server $!
  ES_URL="http://127.0.0.1:$ESPORT"
  echo "osmem-server on $ES_URL"
fi

# --- development certificates -----------------------------------------------------
say "Making development certificates (openssl)"
C="$DEMO/certs"
ossl() { openssl "$@" >>"$DEMO/logs/openssl.log" 2>&1 || die "openssl $1 failed (see .demo/logs/openssl.log)"; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 30 \
  -keyout "$C/ca-key.pem" -out "$C/ca.pem" -subj "/CN=Ferry demo CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
leaf() { # name subject extensions
  ossl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$C/$1-key.pem" -out "$C/$1.csr" -subj "$2"
  printf '%b\n' "$3" >"$C/$1.ext"
  ossl x509 -req -in "$C/$1.csr" -CA "$C/ca.pem" -CAkey "$C/ca-key.pem" -CAcreateserial \
    -days 30 -out "$C/$1.pem" -extfile "$C/$1.ext"
}
leaf server "/CN=localhost" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost"
leaf agent "/CN=demo-agent" \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth"
echo "CA, server (127.0.0.1, localhost) and agent (CN=demo-agent) certificates in .demo/certs/"

# --- control plane and agent ------------------------------------------------------
AGENTS_PORT="$(free_port 50051)"
ADMIN_PORT="$(free_port 50052)"
ADMIN="127.0.0.1:$ADMIN_PORT"
cat >"$DEMO/control-plane.yaml" <<YAML
elasticsearch:
  host: $ES_URL
agents:
  listen: 127.0.0.1:$AGENTS_PORT
  tls:
    cert: $C/server.pem
    key: $C/server-key.pem
    client_ca: $C/ca.pem
admin:
  listen: $ADMIN
YAML
cat >"$DEMO/agent.yaml" <<YAML
control_plane:
  url: https://127.0.0.1:$AGENTS_PORT
  tls:
    ca: $C/ca.pem
    cert: $C/agent.pem
    key: $C/agent-key.pem
connectors:
  - connector_id: my-connector-id
    service_type: postgresql
YAML

say "Starting the control plane (admin API on $ADMIN, agents listener on 127.0.0.1:$AGENTS_PORT)"
RUST_LOG="${RUST_LOG:-info}" "$BIN/ferry-control-plane" --config "$DEMO/control-plane.yaml" \
  </dev/null >"$DEMO/logs/control-plane.log" 2>&1 &
CP_PID=$!
started "$CP_PID"
wait_port 127.0.0.1 "$ADMIN_PORT" 60 "the control plane's admin API" "$CP_PID"
wait_port 127.0.0.1 "$AGENTS_PORT" 60 "the control plane's agent listener" "$CP_PID"

# --- the tutorial -------------------------------------------------------------------
rpc() { # method json
  echo "\$ grpcurl -plaintext -d '$2' $ADMIN $1" >&2
  "$GRPCURL" -plaintext -emit-defaults -d "$2" "$ADMIN" "$1" || die "$1 failed"
}
quiet_rpc() { "$GRPCURL" -plaintext -emit-defaults -d "$2" "$ADMIN" "$1" 2>/dev/null; }
# jget 'expression on j' < json  (python: j is the parsed JSON)
jget() { python3 -c 'import json, sys; j = json.load(sys.stdin); print(eval(sys.argv[1]))' "$1"; }
wait_for() { # description shell-condition
  local deadline=$((SECONDS + TIMEOUT))
  until eval "$2"; do
    [ "$SECONDS" -lt "$deadline" ] || die "timed out after ${TIMEOUT}s waiting for $1"
    sleep 0.3
  done
}
connector_status() {
  quiet_rpc ferry.v1.ConnectorService/GetConnector '{"connector_id": "my-connector-id"}' \
    | jget 'j["connector"]["status"]' 2>/dev/null || echo "?"
}

say "1. PutConnector"
rpc ferry.v1.ConnectorService/PutConnector \
  '{"connector_id": "my-connector-id", "name": "Music catalog", "index_name": "music", "service_type": "postgresql"}' \
  | jget '"result: %s, status: %s" % (j["result"], j["connector"]["status"])'

say "2. Starting an agent next to PostgreSQL (it dials out over mTLS as CN=demo-agent)"
RUST_LOG="${RUST_LOG:-info}" "$BIN/ferry-agent" --config "$DEMO/agent.yaml" \
  </dev/null >"$DEMO/logs/agent.log" 2>&1 &
started $!
wait_for "the agent to register (status NEEDS_CONFIGURATION)" \
  '[ "$(connector_status)" = CONNECTOR_STATUS_NEEDS_CONFIGURATION ]'
rpc ferry.v1.ConnectorService/GetConnector '{"connector_id": "my-connector-id"}' | jget '
"status: " + j["connector"]["status"] + ", last_seen: " + str(j["connector"].get("lastSeen")) + "\nconfiguration schema:\n" + "\n".join(
    "  %-12s %r%s%s" % (k, v["label"], " (sensitive)" if v.get("sensitive") else "", " required" if v.get("required") else "")
    for k, v in sorted(j["connector"]["configuration"].items(), key=lambda kv: kv[1].get("order", 0)))'

say "3. UpdateConfiguration"
rpc ferry.v1.ConnectorService/UpdateConfiguration "{\"connector_id\": \"my-connector-id\", \"values\": {
  \"host\": \"127.0.0.1\", \"port\": $PGPORT, \"username\": \"myuser\", \"password\": \"mypassword\",
  \"database\": \"chinook\", \"schema\": \"public\", \"tables\": \"album,artist\"}}" \
  | jget '"status: " + j["connector"]["status"] + ", password shown as " + repr(j["connector"]["configuration"]["password"]["value"])'
wait_for "the agent to validate the configuration (status CONNECTED)" \
  's="$(connector_status)"; [ "$s" = CONNECTOR_STATUS_CONNECTED ] || { [ "$s" = CONNECTOR_STATUS_ERROR ] && die "connector error"; false; }'
echo "status: CONNECTOR_STATUS_CONNECTED"

say "4. CreateSyncJob (full)"
JOB_ID="$(rpc ferry.v1.SyncJobService/CreateSyncJob '{"connector_id": "my-connector-id", "job_type": "JOB_TYPE_FULL"}' \
  | jget 'j["syncJob"]["id"]')"
echo "sync job $JOB_ID"

say "5. ListSyncJobs size 1 until the job finishes"
LAST=""
job_done() {
  local s
  s="$(quiet_rpc ferry.v1.SyncJobService/ListSyncJobs '{"connector_id": "my-connector-id", "size": 1}' \
    | jget 'j["syncJobs"][0]["status"] + " indexed=" + str(j["syncJobs"][0]["indexedDocumentCount"])' 2>/dev/null || echo "?")"
  [ "$s" = "$LAST" ] || { echo "  $s"; LAST="$s"; }
  case "$s" in SYNC_STATUS_COMPLETED*|SYNC_STATUS_ERROR*|SYNC_STATUS_CANCELED*) return 0 ;; esac
  return 1
}
wait_for "the sync job to finish" job_done
rpc ferry.v1.SyncJobService/ListSyncJobs '{"connector_id": "my-connector-id", "size": 1}' | jget '
"\n".join("  %s: %s" % (k, j["syncJobs"][0].get(k)) for k in ("id", "jobType", "status", "error", "indexedDocumentCount",
  "deletedDocumentCount", "totalDocumentCount", "workerHostname", "startedAt", "completedAt"))'

say "6. GET music/_count"
python3 - "$ES_URL" <<'PY'
import base64, json, os, sys, urllib.request
url = sys.argv[1].rstrip("/")
req = urllib.request.Request(url + "/music/_count")
if os.environ.get("FERRY_ELASTICSEARCH__API_KEY"):
    req.add_header("Authorization", "ApiKey " + os.environ["FERRY_ELASTICSEARCH__API_KEY"])
elif os.environ.get("FERRY_ELASTICSEARCH__USERNAME"):
    cred = os.environ["FERRY_ELASTICSEARCH__USERNAME"] + ":" + os.environ.get("FERRY_ELASTICSEARCH__PASSWORD", "")
    req.add_header("Authorization", "Basic " + base64.b64encode(cred.encode()).decode())
print(json.dumps(json.load(urllib.request.urlopen(req, timeout=30))))
PY

STATUS="$(quiet_rpc ferry.v1.SyncJobService/GetSyncJob "{\"sync_job_id\": \"$JOB_ID\"}" | jget 'j["syncJob"]["status"]')"
[ "$STATUS" = SYNC_STATUS_COMPLETED ] || die "the sync job ended $STATUS"

say "Done. Logs: $DEMO/logs/"
EXPORTS="export A=$ADMIN AGENTS=127.0.0.1:$AGENTS_PORT ES=$ES_URL PGPORT=$PGPORT"
echo "$EXPORTS" >"$DEMO/env"
echo "The README's commands run against this demo after:"
echo "$EXPORTS"
if [ "${DEMO_KEEP_RUNNING:-}" = 1 ]; then
  echo "Everything keeps running (admin API $ADMIN, agents 127.0.0.1:$AGENTS_PORT, Elasticsearch $ES_URL);" \
    "Ctrl-C or \`kill $$\` stops it."
  # sleep in the background and wait: a TERM interrupts `wait` at once
  # (bash runs traps only between foreground commands).
  while :; do
    sleep 3600 &
    started $!
    wait $! || true
  done
fi

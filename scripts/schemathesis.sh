#!/usr/bin/env bash
# Schemathesis against the real daemon (issue 12): trapeze-gatewayd on a net_null virtual device
# (--no-pci, --no-huge, its own --file-prefix), its API on a free port of 127.0.0.1, every
# operation of GET /openapi.json (docs/openapi.json) run with generated valid and invalid input,
# mutating ones (drain, remove, reload...) included, with every check. It must find nothing.
# Needs target/pyenv (scripts/deps.sh python); builds the daemon (BIN=path uses another build).
# Usage: scripts/schemathesis.sh [MAX_EXAMPLES]   (default 20 per operation)
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples="${1:-20}"
bin="${BIN:-}"
st=target/pyenv/bin/schemathesis
[ -x "$st" ] || { echo "schemathesis.sh: $st missing (scripts/deps.sh python)" >&2; exit 1; }
if [ -z "$bin" ]; then
  cargo build -p trapeze-gatewayd --locked --quiet
  bin=target/debug/trapeze-gatewayd
fi

prefix="tzc-st-$$"
dir="$(mktemp -d "/tmp/${prefix}-XXXX")"
pid=""
cleanup() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  [ -n "${KEEP:-}" ] || rm -rf "$dir" "/var/run/dpdk/$prefix" "/tmp/dpdk/$prefix" 2>/dev/null || true
}
trap cleanup EXIT

cat > "$dir/gateway.toml" <<EOF
[eal]
args = ["--no-pci", "--no-huge", "-m", "128", "--file-prefix=$prefix", "-l", "0-1", "--vdev=net_null0,no-rx=1"]

[[ports]]
name = "arm"
device = "net_null0"
ipv4 = ["192.0.2.1/24", "198.51.100.1/24"]

[[vips]]
name = "web4"
address = "203.0.113.10"
port = 80
client_port = "arm"
backends = ["srv", "srv2"]

[[backends]]
name = "srv"
ipv4 = "198.51.100.10"
port = 8080
egress_port = "arm"
mac = "02:00:00:00:02:10"

[[backends]]
name = "srv2"
ipv4 = "198.51.100.11"
port = 8080
egress_port = "arm"
mac = "02:00:00:00:02:11"

[tables]
flow_capacity = 4096
token_capacity = 1024

[health]
enabled = false

[state]
persist = false

[workers]
count = 1
EOF
mkdir "$dir/reload"
cp "$dir/gateway.toml" "$dir/reload/next.toml"

port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
api="http://127.0.0.1:$port"
"$bin" --config "$dir/gateway.toml" --api "127.0.0.1:$port" --reload-dir "$dir/reload" \
  >"$dir/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 300); do
  curl -fsS -o /dev/null "$api/status" 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$dir/daemon.log" >&2; echo "schemathesis.sh: the daemon exited" >&2; exit 1; }
  sleep 0.1
done
curl -fsS -o /dev/null "$api/status"

start=$(date +%s)
set +e
# From the run's own directory: Schemathesis keeps a cache (.schemathesis/) in its working
# directory, which must neither land in the checkout nor carry over to the next run.
root="$PWD"
(cd "$dir" && "$root/$st" --config-file "$root/scripts/schemathesis.toml" run "$api/openapi.json" --checks all --max-examples "$max_examples" --seed 12 \
  --request-timeout 30 --max-response-time 10 --workers 1 --no-color \
  --report ndjson --report-ndjson-path "$dir/events.ndjson") 2>&1 | tee "$dir/run.log"
rc=${PIPESTATUS[0]}
set -e
took=$(( $(date +%s) - start ))

# The daemon must still be up and answering.
kill -0 "$pid" 2>/dev/null || { cat "$dir/daemon.log" >&2; echo "schemathesis.sh: the daemon died" >&2; exit 1; }
curl -fsS -o /dev/null "$api/status" || { echo "schemathesis.sh: the daemon no longer answers" >&2; exit 1; }
ops="$(sed -n 's/^ *Tested: \([0-9]*\)$/\1/p' "$dir/run.log" | tail -1)"
cases="$(sed -n 's/^ *\([0-9]*\) generated.*/\1/p' "$dir/run.log" | tail -1)"
# What the mutating operations did to the running daemon (they must have done something).
changes="$(curl -fsS "$api/stats" | python3 -c 'import json, sys; print("version %(version)s, pool_changes %(pool_changes)s, reloads_ok %(reloads_ok)s, reloads_error %(reloads_error)s" % json.load(sys.stdin)["control"])')"
echo "schemathesis: ${ops:-?} operations, ${cases:-?} test cases (max ${max_examples} examples per operation and phase), ${took} s, exit status $rc; the daemon is up: $changes"
if [ "$rc" -ne 0 ]; then
  echo "schemathesis.sh: schemathesis found something (above); daemon log:" >&2
  tail -n 50 "$dir/daemon.log" >&2
  exit 1
fi

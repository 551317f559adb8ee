#!/usr/bin/env bash
# End-to-end tests of trapeze-gatewayd's DSR (direct server return) mode with real Linux MPTCP
# clients and servers, in network namespaces this script creates and removes (testbed/netns.sh).
#
# The configuration (configs/testbed.toml, or $TRAPEZE_CONFIG) must serve, next to the NAT VIPs,
# four DSR VIPs on port 8080 with backends srv1..srv3:
#   dsr-ipip4 10.90.100.20   IPv4-in-IPv4           dsr-ipip6 fd90:100::20   IPv6-in-IPv6
#   dsr-gue4  10.90.100.21   GUE over UDP/IPv4      dsr-gue6  fd90:100::21   GUE over UDP/IPv6
# The servers decapsulate in user space (testbed/dsr_decap.py, TUN dsr0) and answer directly to
# the client through tz-rtr; the gateway only ever sees client -> VIP packets.
#
# With the daemon running (API on a Unix socket in the run's directory):
#   1. $N MPTCP connections (2 subflows each: one join) to dsr-ipip4, dsr-ipip6, dsr-gue4 and
#      dsr-gue6: every harness check (digests, joins on the owner by the servers' own records,
#      MPJoinNoTokenFound 0, no fallback, no RST on any of the three links) and the DSR checks
#      (no packet from a VIP on the client link, every client -> VIP packet on the server link
#      encapsulated as expected towards the owning server, the owners' decapsulators counted it);
#   2. $N plain-TCP connections to dsr-gue4, spread over all three servers;
#   3. GET /stats (trapezectl --json stats) before and after 1-2: printed; fails if a DSR VIP has a
#      non-zero `to_client_packets` (when the field exists: nothing may be forwarded back towards
#      clients for a DSR VIP), or if the client port's `tx_packets` (ports[] named "client",
#      when it exists) grew by more than ARP/NDP answers explain (200 + 1% of the DSR VIPs'
#      packets);
#   4. one NAT run over IPv4 (the NAT VIPs keep working next to the DSR ones);
# then the daemon is stopped with SIGTERM: it must exit 0 and print its final counters.
#
# Usage (root; hugepages reserved as scripts/test.sh does, or the daemon's own fallback):
#   testbed/e2e-dsr.sh                    builds trapeze-gatewayd and trapezectl (release) first
#   TRAPEZE_GATEWAYD=target/release/trapeze-gatewayd TRAPEZECTL=target/release/trapezectl \
#       testbed/e2e-dsr.sh                no build
#   TZ_DSR_CONNECTIONS=24 (default), TRAPEZE_CONFIG=configs/testbed.toml (default)
# Artefacts (every run's JSON / report / captures, the stats, the daemon's output) stay in the
# directory printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
# One user of the test bed at a time: its namespace names are fixed (tz-*).
exec 9>/tmp/tz-testbed.lock
flock -w 900 9 || { echo "the test bed is busy (another run holds /tmp/tz-testbed.lock)" >&2; exit 1; }

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-target/release/trapezectl}
CONFIG=${TRAPEZE_CONFIG:-configs/testbed.toml}
N=${TZ_DSR_CONNECTIONS:-24}
for name in dsr-ipip4 dsr-ipip6 dsr-gue4 dsr-gue6; do
  if ! grep -Eq "^[[:space:]]*name[[:space:]]*=[[:space:]]*\"$name\"" "$CONFIG"; then
    echo "e2e-dsr: $CONFIG has no VIP named $name: the DSR VIPs are not configured" >&2
    exit 1
  fi
done
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
OUT=$(mktemp -d /tmp/tz-e2e-dsr.XXXXXX)
SOCK=$OUT/api.sock
GW_PID=

log() { printf '[e2e-dsr] %s\n' "$*" >&2; }

stop_gateway() {
  [ -n "$GW_PID" ] || return 0
  local pid=$GW_PID
  GW_PID=
  kill -TERM "$pid" 2>/dev/null || true
  local status=0
  wait "$pid" || status=$?
  return "$status"
}

cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed
}
trap cleanup EXIT

start_gateway() {
  ip netns exec tz-gw "$BIN" --config "$CONFIG" --api "unix:$SOCK" >"$OUT/gw.out" 2>"$OUT/gw.err" &
  GW_PID=$!
  for _ in $(seq 1 100); do
    if grep -q "every backend is resolved" "$OUT/gw.err" 2>/dev/null; then
      log "gateway up ($CONFIG): $(grep -c neighbour "$OUT/gw.err") backends resolved"
      return 0
    fi
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      log "gateway exited during start-up:"
      cat "$OUT/gw.err" >&2
      return 1
    fi
    sleep 0.2
  done
  log "gateway did not resolve its backends in 20 s:"
  cat "$OUT/gw.err" >&2
  return 1
}

# stats FILE: GET /stats as JSON (trapezectl prints the API's answer as it is with --json).
stats() { "$CTL" --api "unix:$SOCK" --json stats >"$1"; }

# run TAG ARGS...: one harness run; its JSON summary and report are kept.
run() {
  local tag=$1
  shift
  if ! testbed/transfers.py "$@" >"$OUT/$tag.json" 2>"$OUT/$tag.txt"; then
    log "$tag FAILED (transfers.py $*):"
    grep -E "FAIL|RSTs|decapsulators|DSR" "$OUT/$tag.txt" >&2 || true
    return 1
  fi
  log "$tag: PASS ($(grep -E '^  decapsulators|^  RSTs' "$OUT/$tag.txt" | sed 's/^ *//' | paste -sd ';' -))"
}

testbed/netns.sh up >&2
start_gateway
"$CTL" --api "unix:$SOCK" list >&2 || true
stats "$OUT/stats-before.json"

run v4-ipip-mptcp -4 --vip dsr-ipip -n "$N"
run v6-ipip-mptcp -6 --vip dsr-ipip -n "$N"
run v4-gue-mptcp -4 --vip dsr-gue -n "$N"
run v6-gue-mptcp -6 --vip dsr-gue -n "$N"
run v4-gue-tcp -4 --vip dsr-gue --proto tcp -n "$N" --require-all-servers
stats "$OUT/stats-dsr.json"

log "gateway counters for the DSR runs (GET /stats):"
python3 - "$OUT/stats-before.json" "$OUT/stats-dsr.json" <<'PY'
import json, sys

before, after = (json.load(open(p)) for p in sys.argv[1:3])
DSR = ("dsr-ipip4", "dsr-ipip6", "dsr-gue4", "dsr-gue6")
fail = []


def by_name(d, key):
    return {x.get("name"): x for x in d.get(key) or [] if isinstance(x, dict)}


vb, va = by_name(before, "vips"), by_name(after, "vips")
dsr_packets = 0
for name in DSR:
    v = va.get(name)
    if v is None:
        print("    %-10s not in /stats vips[] (names: %s)" % (name, sorted(va)), file=sys.stderr)
        continue
    b = vb.get(name, {})
    delta = {k: v.get(k, 0) - b.get(k, 0) for k in ("packets", "new_conns", "joins")
             if isinstance(v.get(k), int)}
    dsr_packets += delta.get("packets", 0)
    tc = v.get("to_client_packets")
    print("    %-10s %s to_client_packets=%s" % (
        name, " ".join("%s+%d" % kv for kv in delta.items()),
        "absent" if tc is None else tc), file=sys.stderr)
    if tc:
        fail.append("%s: to_client_packets %s (a DSR VIP must forward nothing back to clients)"
                    % (name, tc))
for name, v in sorted(va.items()):
    if name not in DSR and "to_client_packets" in v:
        print("    %-10s (NAT) to_client_packets=%s" % (name, v["to_client_packets"]),
              file=sys.stderr)
pb, pa = by_name(before, "ports"), by_name(after, "ports")
if "client" in pa and isinstance(pa["client"].get("tx_packets"), int):
    grew = pa["client"]["tx_packets"] - pb.get("client", {}).get("tx_packets", 0)
    limit = 200 + dsr_packets // 100
    print("    port client: tx_packets +%d during the DSR runs (limit %d: ARP/NDP answers; "
          "DSR VIPs' packets +%d)" % (grew, limit, dsr_packets), file=sys.stderr)
    if grew > limit:
        fail.append("port client: tx_packets +%d > %d while only DSR VIPs were used" % (grew, limit))
else:
    print("    port client: no ports[].tx_packets in /stats (not checked)", file=sys.stderr)
for name, p in sorted(pa.items()):
    if name != "client":
        print("    port %s: %s" % (name, {k: v for k, v in p.items() if k != "name"}),
              file=sys.stderr)
for f in fail:
    print("    FAIL " + f, file=sys.stderr)
sys.exit(1 if fail else 0)
PY

run v4-nat-mptcp -4 -n "$N"
stats "$OUT/stats-after.json"

if ! stop_gateway; then
  log "gateway did not exit cleanly on SIGTERM"
  cat "$OUT/gw.err" >&2
  exit 1
fi
log "gateway stopped cleanly; final counters:"
sed 's/^/    /' "$OUT/gw.out" >&2
grep -q '^total: ' "$OUT/gw.out"
log "artefacts in $OUT"
echo "e2e-dsr: 6 runs passed (4 DSR MPTCP, 1 DSR TCP, 1 NAT), gateway counters ok"

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
#   3. GET /stats (trapezectl --json stats) before and after 1-2: the gateway's TX counters towards
#      the clients prove the direct return: the client port's `tx_forwarded` stays 0 (only
#      ARP/NDP, counted apart, leaves there), the DSR VIPs' `to_client_packets` stay 0, and the
#      server port forwarded every DSR VIP packet;
#   4. one NAT run over IPv4 next to the DSR VIPs, whose client-port `tx_forwarded` must grow;
#      then dsr-gue4 is removed and added again with `trapezectl add-vip --dsr --encap gue ...`
#      and one MPTCP run uses it at once (same checks);
#   5. the daemon restarted with the server port's MTU at 1500 (no room for a tunnel header on a
#      full-size packet): DSR MPTCP runs over IPv4 (IPIP) and IPv6 (GUE) still pass, and the
#      gateway counts the ICMP fragmentation needed / packet too big it sent the clients;
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
. testbed/gateway.sh
tb_lock

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

log() { printf '[e2e-dsr] %s\n' "$*" >&2; }

cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/{hugepages,shm}/trapeze-testbed.tzstate
}
trap cleanup EXIT

# stats FILE: GET /stats as JSON (trapezectl prints the API's answer as it is with --json).
stats() { "$CTL" --api "unix:$SOCK" --json stats >"$1"; }

# run TAG ARGS... (gateway.sh): on success, quote the decapsulators' and the RST lines.
RUN_SUMMARY='^  decapsulators|^  RSTs'

# check_stats dsr|nat BEFORE AFTER: the gateway's own counters between two GET /stats.
#  dsr: the DSR VIPs' `to_client_packets` stay 0, and the client port's `tx_forwarded` does not
#       grow: nothing but ARP/NDP (`tx_replies`, `tx_control`) leaves towards the clients, while
#       the server port forwarded at least every DSR VIP packet (the tunnels);
#  nat: the same counter does grow for a NAT VIP (so the DSR zero is not a dead counter).
check_stats() {
  python3 - "$@" <<'PY'
import json, sys

mode, before, after = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
DSR = ("dsr-ipip4", "dsr-ipip6", "dsr-gue4", "dsr-gue6")
fail = []


def by_name(d, key):
    return {x.get("name"): x for x in d.get(key) or [] if isinstance(x, dict)}


def delta(a, b, k):
    return a.get(k, 0) - b.get(k, 0)


vb, va = by_name(before, "vips"), by_name(after, "vips")
vip_packets = 0
for name, v in sorted(va.items()):
    b = vb.get(name, {})
    d = {k: delta(v, b, k) for k in ("packets", "new_conns", "joins", "to_client_packets")}
    if not any(d.values()):
        continue
    print("    vip %-10s %s" % (name, " ".join("%s +%d" % kv for kv in d.items())),
          file=sys.stderr)
    if name in DSR:
        vip_packets += d["packets"]
        if v.get("to_client_packets", 0):
            fail.append("%s: to_client_packets %d (a DSR VIP forwards nothing back to clients)"
                        % (name, v["to_client_packets"]))
pb, pa = by_name(before, "ports"), by_name(after, "ports")
if "client" not in pa or "server" not in pa:
    fail.append("GET /stats has no ports[] named client and server: %s" % sorted(pa))
else:
    for name in ("client", "server"):
        d = {k: delta(pa[name], pb.get(name, {}), k)
             for k in ("rx_packets", "tx_packets", "tx_forwarded", "tx_replies", "tx_control",
                       "tx_unsent")}
        dev = pa[name].get("device") or {}
        print("    port %-6s %s | device rx_missed %s tx_errors %s" % (
            name, " ".join("%s +%d" % kv for kv in d.items()), dev.get("rx_missed"),
            dev.get("tx_errors")), file=sys.stderr)
    c = {k: delta(pa["client"], pb.get("client", {}), k) for k in ("tx_forwarded", "rx_packets")}
    s = delta(pa["server"], pb.get("server", {}), "tx_forwarded")
    if mode == "dsr":
        if c["tx_forwarded"] != 0:
            fail.append("port client: tx_forwarded +%d while only DSR VIPs carried traffic "
                        "(must be 0: the servers answer the clients directly)" % c["tx_forwarded"])
        if vip_packets == 0 or s < vip_packets:
            fail.append("port server: tx_forwarded +%d < the DSR VIPs' packets +%d"
                        % (s, vip_packets))
    elif c["tx_forwarded"] == 0:
        fail.append("port client: tx_forwarded did not grow during a NAT run (dead counter?)")
for f in fail:
    print("    FAIL " + f, file=sys.stderr)
sys.exit(1 if fail else 0)
PY
}

testbed/netns.sh up >&2
start_gateway "$CONFIG" gw --api "unix:$SOCK"
"$CTL" --api "unix:$SOCK" list >&2 || true
stats "$OUT/stats-before.json"

run v4-ipip-mptcp -4 --vip dsr-ipip -n "$N"
run v6-ipip-mptcp -6 --vip dsr-ipip -n "$N"
run v4-gue-mptcp -4 --vip dsr-gue -n "$N"
run v6-gue-mptcp -6 --vip dsr-gue -n "$N"
run v4-gue-tcp -4 --vip dsr-gue --proto tcp -n "$N" --require-all-servers
stats "$OUT/stats-dsr.json"

log "gateway counters for the DSR runs (GET /stats):"
check_stats dsr "$OUT/stats-before.json" "$OUT/stats-dsr.json"

run v4-nat-mptcp -4 -n "$N"
stats "$OUT/stats-after.json"
log "gateway counters for the NAT run (GET /stats):"
check_stats nat "$OUT/stats-dsr.json" "$OUT/stats-after.json"

# The operator's path: dsr-gue4 removed and created again through the API (trapezectl add-vip
# --dsr), then used at once.
"$CTL" --api "unix:$SOCK" remove-vip dsr-gue4 >&2
"$CTL" --api "unix:$SOCK" add-vip dsr-gue4 10.90.100.21:8080 --backend srv1 --backend srv2 \
  --backend srv3 --dsr --encap gue --gue-port 6080 --outer-source 10.91.1.0/24 >&2
"$CTL" --api "unix:$SOCK" show dsr-gue4 >&2
stats "$OUT/stats-api-before.json"
run v4-gue-mptcp-api -4 --vip dsr-gue -n 8
stats "$OUT/stats-api-after.json"
log "gateway counters for the VIP added through the API (GET /stats):"
check_stats dsr "$OUT/stats-api-before.json" "$OUT/stats-api-after.json"

stop_clean() {
  if ! stop_gateway; then
    log "gateway did not exit cleanly on SIGTERM"
    cat "$GW_ERR" >&2
    exit 1
  fi
  log "gateway stopped cleanly; final counters:"
  sed 's/^/    /' "$GW_OUT" >&2
  grep -q '^total: ' "$GW_OUT"
}
stop_clean

# 5. Path MTU: the same bed with the server port's MTU at 1500, so that a full-size client
#    packet no longer fits in its tunnel. The gateway must answer with ICMP fragmentation needed
#    (IPv4) / packet too big (IPv6) from its client-port address, the clients' kernels lower
#    their path MTU towards the VIP, and every transfer still completes with no RST.
MTU_CONFIG=$OUT/testbed-mtu1500.toml
sed -E 's/^mtu = 1600$/mtu = 1500/' "$CONFIG" >"$MTU_CONFIG"
grep -q '^mtu = 1500$' "$MTU_CONFIG" || { log "no 'mtu = 1600' line in $CONFIG to lower"; exit 1; }
start_gateway "$MTU_CONFIG" gw-mtu1500 --api "unix:$SOCK"
stats "$OUT/stats-mtu-before.json"
run v4-ipip-mptcp-mtu1500 -4 --vip dsr-ipip -n 8
run v6-gue-mptcp-mtu1500 -6 --vip dsr-gue -n 8
stats "$OUT/stats-mtu-after.json"
log "gateway counters for the path-MTU runs (GET /stats):"
check_stats dsr "$OUT/stats-mtu-before.json" "$OUT/stats-mtu-after.json"
python3 - "$OUT/stats-mtu-after.json" <<'PY'
import json, sys

st = json.load(open(sys.argv[1]))
sent = sum(w.get("events", {}).get("dsr_too_big_sent", 0) for w in st["workers"])
refused = sum(w.get("drops", {}).get("dsr_too_big", 0) for w in st["workers"])
replies = next(p["tx_replies"] for p in st["ports"] if p["name"] == "client")
print("    dsr_too_big: %d refused, %d ICMP errors sent; client port tx_replies %d"
      % (refused, sent, replies), file=sys.stderr)
if sent == 0 or replies < sent:
    print("    FAIL no ICMP fragmentation needed / packet too big went back to the clients",
          file=sys.stderr)
    sys.exit(1)
PY
stop_clean
log "artefacts in $OUT"
echo "e2e-dsr: 9 runs passed (4 DSR MPTCP, 1 DSR TCP, 1 NAT, 1 DSR MPTCP on a VIP added by the API, 2 DSR MPTCP at MTU 1500), gateway counters ok"

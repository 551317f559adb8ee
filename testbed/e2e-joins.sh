#!/usr/bin/env bash
# End-to-end tests of join routing without the token table (README "Join routing"), with real
# Linux MPTCP clients and servers in the test bed (testbed/netns.sh):
#
#   1. Stateless join ports, servers configured (DSR): every server announces the DSR VIP with a
#      port of its own (`ip mptcp endpoint add VIP port 1808N signal`) and forbids joins to the
#      initial address and port (`net.mptcp.allow_join_initial_addr_port=0`, the C flag); the
#      gateway maps VIP:1808N -> srvN with no state ([vips.join_ports] in configs/testbed.toml).
#      IPv4 IPIP and IPv6 IPv6-in-IPv6: every join on its connection's server, the gateway routed
#      them by port (`join_port_routed`) and never by token (`join_routed` 0).
#   2. The same across a gateway restart: long transfers, the daemon stopped and a new one started
#      mid-transfer without its state file (join ports need no state; e2e-restart.sh tests the
#      state file); every connection completes with no RST, and new
#      connections with joins work on the new instance.
#   3. The gateway announces for unmodified servers (NAT, `announce = "join-ports"`): once it has
#      both keys it sends the client an ADD_ADDR of VIP:1808N with the HMAC of the learned keys;
#      the client's joins there reach the connection's server (NAT to its port 8080), the
#      client's echo is absorbed. IPv4 and IPv6.
#   4. Off the path (DSR, `announce = "backend"`): the gateway announces the server's own address,
#      the client joins the server directly (through tz-rtr) and is asked (MP_PRIO) to keep the
#      subflow through the gateway as a backup; then the gateway is stopped mid-transfer: every
#      transfer completes over the direct subflows, no RST.
# Every run passes every harness check (digests, joins on the owner by the servers' own records
# and MPJoinNoTokenFound 0, no fallback, RSTs) plus the gateway counters named above.
#
# Usage (root): testbed/e2e-joins.sh   (builds the daemon and trapezectl first, like e2e-dsr.sh)
#   TZ_JOINS_CONNECTIONS=16 (default), TRAPEZE_CONFIG=configs/testbed.toml (default)
set -euo pipefail
cd "$(dirname "$0")/.."
. testbed/gateway.sh
tb_lock

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-target/release/trapezectl}
CONFIG=${TRAPEZE_CONFIG:-configs/testbed.toml}
N=${TZ_JOINS_CONNECTIONS:-16}
JOIN_PORTS=srv1=18081,srv2=18082,srv3=18083
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
OUT=$(mktemp -d /tmp/tz-e2e-joins.XXXXXX)
SOCK=$OUT/api.sock

log() { printf '[e2e-joins] %s\n' "$*" >&2; }

cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/{hugepages,shm}/trapeze-testbed.tzstate
}
trap cleanup EXIT

# with_setting VIP 'key = value' OUT: the configuration with one more key on one VIP.
with_setting() {
  python3 - "$CONFIG" "$1" "$2" >"$3" <<'PY'
import sys
config, name, setting = sys.argv[1:]
done = False
for line in open(config):
    sys.stdout.write(line)
    if line.strip() == 'name = "%s"' % name:
        sys.stdout.write(setting + "\n")
        done = True
if not done:
    sys.exit("no vip named %s in %s" % (name, config))
PY
}

stats() { "$CTL" --api "unix:$SOCK" --json stats >"$1"; }

# counters BEFORE AFTER 'expr' ...: the gateway's event deltas between two GET /stats; each expr
# (python, over the deltas by event name, e.g. "join_port_routed >= 16") must hold.
counters() {
  python3 - "$@" <<'PY'
import json, sys

b, a = (json.load(open(p)) for p in sys.argv[1:3])


def events(st):
    ev = {}
    for w in st["workers"]:
        for k, v in (w.get("events") or {}).items():
            ev[k] = ev.get(k, 0) + v
    return ev


eb, ea = events(b), events(a)
d = {k: ea.get(k, 0) - eb.get(k, 0) for k in ea}
names = ("join_port_routed", "join_routed", "announce_sent", "announce_echoed",
         "announce_unechoed", "prio_backup_sent", "token_learned", "token_learned_from_client",
         "nonsyn_miss", "dsr_encapsulated")
print("    gateway: " + ", ".join("%s +%d" % (k, d.get(k, 0)) for k in names), file=sys.stderr)
ok = True
for expr in sys.argv[3:]:
    if not eval(expr, {}, {k: d.get(k, 0) for k in names}):
        print("    FAIL %s" % expr, file=sys.stderr)
        ok = False
sys.exit(0 if ok else 1)
PY
}

# run TAG ARGS... (gateway.sh): on success, quote the join checks.
RUN_SUMMARY='^  \[PASS\] (joins_on_owner|no_token_found|joins_direct)'

# new_conns: the connections the daemon has given its backends so far.
new_conns() {
  "$CTL" --api "unix:$SOCK" --json stats |
    python3 -c 'import json, sys; print(sum(b["new_conns"] for b in json.load(sys.stdin)["backends"]))'
}

# stop_after SECONDS STAMP N: in the background, once the daemon has seen N new connections (on
# a loaded machine the harness may open them later than SECONDS: one opened after the stop would
# find no gateway), SIGTERM it SECONDS later and write the time it was gone to STAMP; STOPPER is
# that job's PID.
stop_after() {
  local base
  base=$(new_conns)
  (
    for _ in $(seq 200); do
      (($(new_conns) - base >= $3)) && break
      sleep 0.1
    done
    sleep "$1"
    kill -TERM "$GW_PID"
    while kill -0 "$GW_PID" 2>/dev/null; do sleep 0.05; done
    date +%s.%N >"$2"
  ) &
  STOPPER=$!
}

# servers_announce VIP: servers that announce their join port of VIP (on their lo) themselves;
# servers_plain: no announcement, joins to the initial address allowed (the default).
# (One family at a time: a server announcing both would draw IPv4 joins into an IPv6 run, which
# works, but the DSR checks expect one tunnel family per run.)
servers_announce() {
  local n
  for n in 1 2 3; do
    ip netns exec "tz-srv$n" sysctl -qw net.mptcp.allow_join_initial_addr_port=0
    ip netns exec "tz-srv$n" ip mptcp endpoint flush
    ip netns exec "tz-srv$n" ip mptcp endpoint add "$1" port "1808$n" signal
  done
}
servers_plain() {
  local n
  for n in 1 2 3; do
    ip netns exec "tz-srv$n" sysctl -qw net.mptcp.allow_join_initial_addr_port=1
    ip netns exec "tz-srv$n" ip mptcp endpoint flush
  done
}

# Off-path joins: the client reaches the servers' own addresses through tz-rtr (from its cli1
# address), and the servers answer that address the same way.
direct_routes() {
  local op=$1 n
  ip netns exec tz-client ip route "$op" 10.91.0.0/24 via 10.92.0.1 dev cli1 src 10.92.0.2
  ip netns exec tz-client ip -6 route "$op" fd91::/64 via fd92::1 dev cli1 src fd92::2
  for n in 1 2 3; do
    ip netns exec "tz-srv$n" ip route "$op" 10.92.0.0/24 via 10.91.0.254
    ip netns exec "tz-srv$n" ip -6 route "$op" fd92::/64 via fd91::254
  done
}

testbed/netns.sh up >/dev/null
# Every scenario here routes joins by an announcement (the servers' or the gateway's ADD_ADDR):
# Linux takes none with the kernel's default add_addr_accepted 0 (testbed/c-flag-probe.sh), so
# the client accepts one announced address, and no more.
testbed/netns.sh client-limits announce

# 1. Stateless join ports announced by the servers (DSR).
start_gateway "$CONFIG" gw-ports --api "unix:$SOCK"
stats "$OUT/s1a.json"
# An IPv6 ADD_ADDR with a port is 30 bytes: with TCP timestamps (12) it does not fit in the 40
# bytes of options, and Linux never sends it (measured: no ADD_ADDR reached the client). Servers
# that announce IPv6 join ports must run without timestamps. (IPv6 first: an endpoint flushed
# and added again at once fails while its old listener lingers, EADDRINUSE.)
servers_announce fd90:100::20
for n in 1 2 3; do ip netns exec "tz-srv$n" sysctl -qw net.ipv4.tcp_timestamps=0; done
run ports-dsr-v6 -6 --vip dsr-ipip -n "$N" --join-ports "$JOIN_PORTS"
servers_announce 10.90.100.20
for n in 1 2 3; do ip netns exec "tz-srv$n" sysctl -qw net.ipv4.tcp_timestamps=1; done
run ports-dsr-v4 -4 --vip dsr-ipip -n "$N" --join-ports "$JOIN_PORTS"
stats "$OUT/s1b.json"
counters "$OUT/s1a.json" "$OUT/s1b.json" "join_port_routed >= 2 * $N" "join_routed == 0"

# 2. A restart mid-transfer: paced 2 MB transfers; 1 s in, this daemon stops and a new one starts.
#    Its state file is removed in between, so nothing of the old instance's state survives: the
#    first subflows' packets are adopted by Maglev, the joins' by their ports.
t0=$(date +%s.%N)
stop_after 1 "$OUT/restart-stopped" 8
transfers "$OUT/ports-restart.json" "$OUT/ports-restart.txt" -4 --vip dsr-ipip -n 8 \
  --join-ports "$JOIN_PORTS" --size-kb 2048 --chunk-kb 16 --pause-ms 10 --stagger-ms 10 \
  --timeout 30 &
xfer=$!
wait "$STOPPER"
wait "$GW_PID" 2>/dev/null || true
GW_PID=
rm -f /dev/{hugepages,shm}/trapeze-testbed.tzstate
start_gateway "$CONFIG" gw-ports-2 --api "unix:$SOCK"
date +%s.%N >"$OUT/restart-started"
if ! wait "$xfer"; then
  log "ports-restart FAILED:"
  grep -E "FAIL|RSTs" "$OUT/ports-restart.txt" >&2 || true
  exit 1
fi
t1=$(date +%s.%N)
python3 - "$t0" "$(cat "$OUT/restart-stopped")" "$(cat "$OUT/restart-started")" "$t1" <<'PY'
import sys
t0, stop, start, t1 = map(float, sys.argv[1:])
print("[e2e-joins] ports-restart: PASS (gateway stopped %.1f s into the transfers, a new one "
      "forwarding %.1f s later, the transfers ended %.1f s after that)"
      % (stop - t0, start - stop, t1 - start), file=sys.stderr)
if not t0 < stop < start < t1:
    sys.exit("the restart did not happen during the transfers")
PY
stats "$OUT/s2a.json"
run ports-after-restart -4 --vip dsr-ipip -n 8 --join-ports "$JOIN_PORTS"
stats "$OUT/s2b.json"
counters "$OUT/s2a.json" "$OUT/s2b.json" "join_port_routed >= 8" "join_routed == 0"
stop_gateway
servers_plain

# 3. The gateway announces join ports for unmodified servers (NAT).
with_setting web4 'announce = "join-ports"' "$OUT/announce-web4.toml"
CONFIG=$OUT/announce-web4.toml with_setting web6 'announce = "join-ports"' "$OUT/announce-both.toml"
start_gateway "$OUT/announce-both.toml" gw-announce --api "unix:$SOCK"
stats "$OUT/s3a.json"
# The SYN/ACKs the client receives carry the C flag the gateway set (deny_join_initial defaults
# on for an announcing VIP): captured on the client's link.
ip netns exec tz-client tcpdump -i cli0 -s 200 -U -nn -Z root -w "$OUT/announce-synack.pcap" \
  'tcp[tcpflags] & (tcp-syn|tcp-ack) == (tcp-syn|tcp-ack) or (ip6 and ip6[53] & 0x12 == 0x12)' \
  2>"$OUT/tcpdump-announce.log" &
TCPDUMP=$!
for _ in $(seq 50); do grep -q listening "$OUT/tcpdump-announce.log" && break; sleep 0.1; done
run announce-ports-v4 -4 -n "$N" --join-ports "$JOIN_PORTS"
run announce-ports-v6 -6 -n "$N" --join-ports "$JOIN_PORTS"
sleep 0.5
kill -INT "$TCPDUMP"
wait "$TCPDUMP" || true
stats "$OUT/s3b.json"
counters "$OUT/s3a.json" "$OUT/s3b.json" "announce_sent >= 2 * $N" "announce_echoed >= 2 * $N" \
  "join_port_routed >= 2 * $N"
testbed/pcap_mpc.py "$OUT/announce-synack.pcap" --vip-port 80 --min "$((2 * N))" --c-flag
stop_gateway

# 4. Off the path (DSR): the gateway announces the server's own address and is stopped 1 s into
#    paced 2 MB transfers; they complete over the direct subflows.
with_setting dsr-ipip4 'announce = "backend"' "$OUT/announce-backend.toml"
direct_routes add
start_gateway "$OUT/announce-backend.toml" gw-offpath --api "unix:$SOCK"
stats "$OUT/s4a.json"
run offpath-v4 -4 --vip dsr-ipip -n 8 --direct-joins --announced
stats "$OUT/s4b.json"
counters "$OUT/s4a.json" "$OUT/s4b.json" "announce_sent >= 8" "announce_echoed >= 8" \
  "prio_backup_sent >= 8"
t0=$(date +%s.%N)
stop_after 1 "$OUT/offpath-stopped" 8
run offpath-gateway-stopped -4 --vip dsr-ipip -n 8 --direct-joins --announced \
  --size-kb 2048 --chunk-kb 16 --pause-ms 10 --stagger-ms 10 --timeout 30
t1=$(date +%s.%N)
wait "$STOPPER"
wait "$GW_PID" 2>/dev/null || true
GW_PID=
python3 - "$t0" "$(cat "$OUT/offpath-stopped")" "$t1" <<'PY'
import sys
t0, stop, t1 = map(float, sys.argv[1:])
print("[e2e-joins] offpath-gateway-stopped: the gateway was gone %.1f s into the transfers, "
      "which ended %.1f s later without it" % (stop - t0, t1 - stop), file=sys.stderr)
if not t0 < stop < t1 - 0.3:
    sys.exit("the gateway did not stop during the transfers")
PY
direct_routes del

log "artefacts in $OUT"
echo "e2e-joins: 9 runs passed (join ports announced by DSR servers v4/v6, across a gateway restart, gateway-announced join ports v4/v6 for unmodified NAT servers, off-path joins with the gateway stopped mid-transfer)"

#!/usr/bin/env bash
# End-to-end test of MPTCP token collisions through real traffic (issue 6, "Token collisions"):
# the server keys 0xc66f and 0xe658 share the token 0x7357966a. The real daemon
# (trapeze-gatewayd, configs/testbed-collide.toml) runs on the test bed (testbed/netns.sh, under
# its lock); crafted peers (testbed/collide_peer.py, standard-library Python) make the collision,
# since Linux servers pick random keys:
#
#  NAT  the VIP collide4 (10.90.100.30:80) has two backends, fake1 / fake2, played by the
#       responder in the namespace tzc-resp (bridged onto the server segment, nftables drops the
#       port so its kernel never answers): their MP_CAPABLE SYN/ACKs carry the keys 0xc66f and
#       0xe658. A real Linux MPTCP client (tz-client) opens connections until both backends hold
#       one; its path manager then sends MP_JOIN SYNs with the token (and retransmits them).
#       Documented: both owners kept, `token_collision` +1, tokens.collisions >= 1, every join
#       for the token refused (`join_token_ambiguous` == the MP_JOIN SYNs on the client link),
#       none reaches a backend (server-link capture, the responder's own record).
#  DSR  crafted raw MP_CAPABLE handshakes to dsr-ipip4 (10.90.100.20:8080) from an address the
#       client kernel does not own; the real servers answer on the return link. The first third
#       ACK claims the server key 0xc66f, the second (on a connection Maglev sent to another
#       backend) 0xe658. Documented: first owner wins (`token_learned_from_client` +1, then
#       `token_claim_refused` +1); MP_JOIN SYNs with the token go to the first owner only (its
#       tunnel on the server link, its nstat MPJoinNoTokenFound, its RST on the return link; the
#       other servers' MPJoinSynRx stay 0).
#  Unaffected: with both tokens live, real Linux MPTCP transfers (testbed/transfers.py, every
#       harness check: joins on their owner by the servers' own records, MPJoinNoTokenFound 0,
#       no RST) over the NAT VIP web4 and the DSR VIP dsr-ipip4.
# The daemon must exit 0 on SIGTERM.
#
# Usage (root; hugepages reserved as scripts/test.sh does, or the daemon's own fallback):
#   testbed/e2e-collide.sh              builds trapeze-gatewayd and trapezectl (release) first
#   TRAPEZE_GATEWAYD=.../trapeze-gatewayd TRAPEZECTL=.../trapezectl testbed/e2e-collide.sh
#   TZ_COLLIDE_CONNECTIONS=8 (real connections per harness run)
#   testbed/e2e-collide.sh --workers=2     two forwarding workers (the config is derived from
#       configs/testbed-collide.toml as configs/testbed-2workers.toml is from testbed.toml: two
#       af_packet queue pairs): the shared token table sees the owners and joins from either.
#   testbed/e2e-collide.sh --wrong-owner   the same, except that after the release fake2 answers
#       the join with fake1's connection's keys, as the other owner of a genuine collision would if
#       a gateway guessed wrong: the Linux client must reject the SYN/ACK's HMAC
#       (MPJoinSynAckHMacFailure), reset the subflow, and never retransmit that join, i.e. a
#       "retry the other owner on retransmission" policy never gets its second chance.
# Artefacts (captures, stats, the peers' reports, the daemon's output) stay in the directory
# printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
WRONG=
RELEASE_TIMEOUT=8 # s: the pending join's next retransmission (1 s apart, then 2, 4 s)
WORKERS=1
while [ $# -gt 0 ]; do
  case "$1" in
    --wrong-owner) WRONG=1 RELEASE_TIMEOUT=4 ;;
    --workers=1) ;;
    --workers=2) WORKERS=2 ;;
    *) echo "usage: $0 [--wrong-owner] [--workers=1|2]" >&2; exit 2 ;;
  esac
  shift
done
. testbed/gateway.sh

TARGET=${CARGO_TARGET_DIR:-target}
BIN=${TRAPEZE_GATEWAYD:-$TARGET/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-$TARGET/release/trapezectl}
CONFIG=${TRAPEZE_CONFIG:-configs/testbed-collide.toml}
N=${TZ_COLLIDE_CONNECTIONS:-8}
PREFIX=trapeze-collide # the config's --file-prefix
NS_RESP=tzc-resp
PEER=testbed/collide_peer.py
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
OUT=$(mktemp -d /tmp/tz-e2e-collide.XXXXXX)
SOCK=$OUT/api.sock
START=$(date +%s)

log() { printf '[e2e-collide] %s +%ss: %s\n' "$(date +%T)" "$(($(date +%s) - START))" "$*" >&2; }

PIDS=()
LOCKED= # the bed is ours to take down only once we hold its lock
cleanup() {
  local p
  for p in "${PIDS[@]:-}"; do
    if [ -n "$p" ]; then kill -TERM "$p" 2>/dev/null || true; fi
  done
  for p in "${PIDS[@]:-}"; do
    if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
  done
  stop_gateway || true
  ip netns del "$NS_RESP" 2>/dev/null || true
  if [ -n "$LOCKED" ]; then testbed/netns.sh down >/dev/null 2>&1 || true; fi
  rm -rf "/var/run/dpdk/$PREFIX"
  rm -f /dev/hugepages/"$PREFIX"map_* /dev/{hugepages,shm}/"$PREFIX".tzstate 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

log "waiting for the test-bed lock (/tmp/tz-testbed.lock)"
tb_lock
LOCKED=1
log "artefacts in $OUT"
testbed/netns.sh up >&2

# tzc-resp: the crafted backends fake1 / fake2 on the server segment. Its kernel holds their
# addresses (ARP) and drops their port (no RST); the responder reads and writes frames itself.
ip netns add "$NS_RESP"
ip link add r0 netns "$NS_RESP" address 02:91:00:00:00:31 type veth peer name sw-tzc netns tz-sw \
  address 02:91:00:00:ff:31
ip netns exec "$NS_RESP" ethtool -K r0 tx off tso off gso off gro off >/dev/null
ip netns exec tz-sw ethtool -K sw-tzc tx off tso off gso off gro off >/dev/null
ip -n tz-sw link set sw-tzc mtu 1600 master br-tz up
ip netns exec "$NS_RESP" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
ip -n "$NS_RESP" link set lo up
ip -n "$NS_RESP" addr add 10.91.0.31/24 dev r0
ip -n "$NS_RESP" addr add 10.91.0.32/24 dev r0
ip -n "$NS_RESP" link set r0 up
ip netns exec "$NS_RESP" nft -f - <<'EOF'
table inet tzc {
    chain input {
        type filter hook input priority 0; policy accept;
        tcp dport 9090 drop
    }
}
EOF
ip netns exec "$NS_RESP" python3 "$PEER" responder --iface r0 --port 9090 \
  --backend fake1=10.91.0.31=0xc66f --backend fake2=10.91.0.32=0xe658 ${WRONG:+--wrong-hmac} \
  --state "$OUT/responder.json" --ready "$OUT/responder.ready" 2>"$OUT/responder.err" &
PIDS+=($!)
RESP_PID=$!
for _ in $(seq 50); do [ -e "$OUT/responder.ready" ] && break; sleep 0.1; done
[ -e "$OUT/responder.ready" ] || { log "responder not ready"; cat "$OUT/responder.err" >&2; exit 1; }

# Captures of the whole run: the client link and the server link.
ip netns exec tz-client tcpdump -i cli0 -s 0 -U -nn -Z root -w "$OUT/client-link.pcap" tcp \
  2>"$OUT/tcpdump-client.log" &
PIDS+=($!)
CAP1=$!
ip netns exec tz-sw tcpdump -i sw-gw -s 0 -U -nn -Z root -w "$OUT/server-link.pcap" \
  2>"$OUT/tcpdump-server.log" &
PIDS+=($!)
CAP2=$!
for _ in $(seq 50); do
  grep -q listening "$OUT/tcpdump-client.log" && grep -q listening "$OUT/tcpdump-server.log" && break
  sleep 0.1
done

if [ "$WORKERS" = 2 ]; then
  sed -e 's/iface=gw-c"/iface=gw-c,qpairs=2"/' -e 's/iface=gw-s"/iface=gw-s,qpairs=2"/' \
    -e 's/^count = 1$/count = 2/' "$CONFIG" >"$OUT/gateway-2workers.toml"
  if ! grep -q '^count = 2$' "$OUT/gateway-2workers.toml" ||
    [ "$(grep -c 'qpairs=2' "$OUT/gateway-2workers.toml")" != 2 ]; then
    log "could not derive a two-worker configuration from $CONFIG"
    exit 1
  fi
  CONFIG=$OUT/gateway-2workers.toml
fi
start_gateway "$CONFIG" gw --api "unix:$SOCK"
stats() { "$CTL" --api "unix:$SOCK" --json stats >"$OUT/$1.json"; }
nstat_servers() {
  python3 - "$OUT/$1.json" <<'PY'
import json, subprocess, sys
out = {}
for s in ("srv1", "srv2", "srv3"):
    t = subprocess.run(["ip", "netns", "exec", "tz-" + s, "nstat", "-asz"], capture_output=True,
                       text=True, check=True).stdout
    out[s] = {ln.split()[0]: int(ln.split()[1]) for ln in t.splitlines()
              if ln and not ln.startswith("#") and len(ln.split()) >= 2}
json.dump(out, open(sys.argv[1], "w"))
PY
}
stats stats0

# Real Linux MPTCP connections (other tokens) next to the colliding ones.
FAILED=0
# wait_event NAME N: until the gateway's counter NAME (events or drops) reaches N (5 s at most).
count() {
  python3 -c 'import json, sys
s = json.load(sys.stdin)
print(sum((w.get("events") or {}).get(sys.argv[1], 0) + (w.get("drops") or {}).get(sys.argv[1], 0)
          for w in s["workers"]))' "$1" <"$OUT/$2.json"
}
wait_event() {
  for _ in $(seq 50); do
    stats probe
    [ "$(count "$1" probe)" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

# NAT: the collision, made by a real Linux MPTCP client and the crafted backends.
ip netns exec tz-client python3 "$PEER" nat-client --vip 10.90.100.30 --port 80 \
  --state "$OUT/responder.json" --ready "$OUT/nat-client.ready" --hold 120 \
  --release fake1 --released "$OUT/nat-released.json" --release-timeout "$RELEASE_TIMEOUT" \
  >"$OUT/nat-client.json" 2>"$OUT/nat-client.err" &
PIDS+=($!)
NATC_PID=$!
for _ in $(seq 150); do
  [ -e "$OUT/nat-client.ready" ] && break
  kill -0 "$NATC_PID" 2>/dev/null || break
  sleep 0.1
done
[ -e "$OUT/nat-client.ready" ] || { log "the NAT client did not get both backends"; cat "$OUT/nat-client.err" >&2; exit 1; }
log "NAT: both colliding connections established"
sleep 1.5 # the path manager's joins and their first retransmission
stats stats1
log "NAT: join_token_ambiguous $(count join_token_ambiguous stats1), token_collision $(count token_collision stats1)"
run nat4 -4 -n "$N" --out "$OUT/nat4" || FAILED=1

# One owner goes (MP_FASTCLOSE): the other connection's join must now reach its server.
nstat_client() { ip netns exec tz-client nstat -asz | awk '!/^#/ && NF >= 2 { printf "%s\"%s\": %s", (n++ ? ", " : "{"), $1, $2 } END { print "}" }' >"$OUT/$1.json"; }
nstat_client nstatc0
kill -USR1 "$NATC_PID"
for _ in $(seq 120); do
  [ -e "$OUT/nat-released.json" ] && break
  sleep 0.1
done
[ -e "$OUT/nat-released.json" ] || log "NAT: no outcome of the release"
stats stats2
nstat_client nstatc1
log "NAT: after the release: $(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["others"])' "$OUT/nat-released.json" 2>/dev/null)"
kill -TERM "$NATC_PID"
wait "$NATC_PID" || { log "the NAT client failed"; FAILED=1; }
wait_event fastclose "$(($(count fastclose stats2) + 1))" || log "no fastclose for the last NAT connection"
stats stats3

# DSR: the crafted client; its connections stay (--keep), so the claimed token is live below.
nstat_servers nstat0
ip netns exec tz-client python3 "$PEER" dsr-client --vip 10.90.100.20 --port 8080 \
  --api "$SOCK" --joins 2 --keep >"$OUT/dsr-client.json" 2>"$OUT/dsr-client.err" ||
  { log "dsr-client failed"; cat "$OUT/dsr-client.json" "$OUT/dsr-client.err" >&2; FAILED=1; }
nstat_servers nstat1
stats stats4
log "DSR: crafted claims and joins done"
run dsr4 -4 --vip dsr-ipip -n "$N" --out "$OUT/dsr4" || FAILED=1
sleep 0.3
stats stats5
kill -TERM "$RESP_PID" "$CAP1" "$CAP2"
wait "$RESP_PID" "$CAP1" "$CAP2" || true

log "verdict:"
python3 "$PEER" verify --out "$OUT" --dsr-joins 2 ${WRONG:+--wrong-owner} >&2 || FAILED=1
python3 - "$OUT/stats5.json" <<'PY' >&2
import json, sys
s = json.load(open(sys.argv[1]))
ev = {}
for w in s["workers"]:
    for k, v in list((w.get("events") or {}).items()) + list((w.get("drops") or {}).items()):
        if "token" in k or "join" in k or "claim" in k:
            ev[k] = ev.get(k, 0) + v
print("  gateway counters: " + ", ".join("%s %d" % kv for kv in sorted(ev.items())))
print("  tokens: %s" % s.get("tokens"))
PY

status=0
stop_gateway || status=$?
if [ "$status" -ne 0 ]; then
  log "the daemon exited with status $status"
  FAILED=1
fi
log "artefacts: $OUT"
if [ "$FAILED" -ne 0 ]; then
  log "FAIL"
  exit 1
fi
log "PASS"

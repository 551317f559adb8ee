#!/usr/bin/env bash
# End-to-end tests of removing servers with live MPTCP connections (issue 13), with real Linux
# MPTCP clients and servers in the test bed (testbed/netns.sh):
#
#   1. Migration, NAT (IPv4): every backend declares its own address as `direct`; 1.5 s into
#      paced transfers every server is drained with a 3 s deadline. The gateway announces each
#      connection's server address (ADD_ADDR with the HMAC of the learned keys), the client joins
#      the server directly (through tz-rtr), is asked (MP_PRIO) to keep the subflow through the
#      gateway as a backup, and the servers leave the gateway as soon as every connection's
#      traffic has moved to its direct subflow, **before the deadline**: every transfer completes
#      over its direct subflow, no RST, each server took as many direct joins as it had
#      connections (the servers' records and nstat), the gateway counted them as migrated and
#      the three drains as completed early.
#   2. The same in DSR (IPIP).
#   3. Left behind: plain TCP connections on a server that migrates are counted as left behind
#      (they keep the drain policy and end at the deadline, as a drain would end them: a server
#      holding one completes its drain at the deadline, not early).
#   4. Hard remove and re-add 5 s later (token mode, clients at the kernel's default limits):
#      every server is removed with --hard 1 s into paced transfers and added back 5 s later;
#      its flows' packets are dropped while it is out (`backend_gone`) and forwarded again after:
#      every transfer completes, no RST.
# Clients: the kernel's default MPTCP limits (add_addr_accepted 0, subflows 2) for 4; for 1-3
# add_addr_accepted 1, as migration needs the client to take one ADD_ADDR, which Linux 6.18 does
# not with the default 0 (testbed/c-flag-probe.sh).
#
# Usage (root): testbed/e2e-removal.sh   (builds the daemon and trapezectl first, like e2e-joins.sh)
#   TRAPEZE_CONFIG=configs/testbed.toml (default)
set -euo pipefail
cd "$(dirname "$0")/.."
. testbed/gateway.sh
tb_lock

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-target/release/trapezectl}
CONFIG=${TRAPEZE_CONFIG:-configs/testbed.toml}
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
OUT=$(mktemp -d /tmp/tz-e2e-removal.XXXXXX)
SOCK=$OUT/api.sock
SERVERS=(srv1 srv2 srv3)

log() { printf '[e2e-removal] %s\n' "$*" >&2; }

cleanup() {
  stop_gateway || true
  direct_routes del 2>/dev/null || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/{hugepages,shm}/trapeze-testbed.tzstate
}
trap cleanup EXIT

ctl() { "$CTL" --api "unix:$SOCK" "$@"; }

# The configuration with `direct = "<its own IPv4 address>"` on every backend.
direct_config() {
  python3 - "$CONFIG" >"$1" <<'PY'
import re, sys
out, name = [], None
for line in open(sys.argv[1]):
    out.append(line)
    m = re.match(r'name = "(srv\d)"', line.strip())
    name = m.group(1) if m else name
    if name and line.strip().startswith("ipv4 = ") and '"10.91.0.1' in line:
        out.append('direct = %s\n' % line.split("=", 1)[1].strip())
        name = None
sys.stdout.write("".join(out))
PY
}

# Off-path joins: the client reaches the servers' own addresses through tz-rtr, and the servers
# answer that address the same way (as e2e-joins.sh).
direct_routes() {
  local op=$1 n
  ip netns exec tz-client ip route "$op" 10.91.0.0/24 via 10.92.0.1 dev cli1 src 10.92.0.2
  for n in 1 2 3; do
    ip netns exec "tz-srv$n" ip route "$op" 10.92.0.0/24 via 10.91.0.254
  done
}

# migration_check TAG DEADLINE: the gateway's migration counters (GET /stats once the servers are
# back under their ids: a removed backend leaves the stats, its counters stay) and the servers'
# own records of their joins (the harness's per-server figures, cross-checked with their nstat by
# its nstat_consistent check): each server established at least one join per connection it
# holds, every connection has a direct join (the harness's joins_direct), the gateway counted
# each connection as announced and migrated, and every drain completed early: the servers left
# the gateway before the deadline (seen by the drainer's polling, no timing beyond that).
migration_check() {
  python3 - "$OUT/$1.json" "$OUT/$1-after.json" "$(cat "$OUT/drained")" \
    "$(cat "$OUT/gone" 2>/dev/null || echo none)" "$2" <<'PY'
import json, sys
run, st = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
drained, gone, deadline = float(sys.argv[3]), sys.argv[4], float(sys.argv[5])
n = len(run["connections"])
per = {s: v["first_subflows"] for s, v in run["per_server"].items()}
joins = {s: v["joins_established"] for s, v in run["per_server"].items()}
mig = {b["name"]: b.get("migration") or {} for b in st["backends"]}
keys = ("announced", "migrated", "closed", "left_behind", "completed_early",
        "completed_at_deadline")
tot = {k: sum(m.get(k, 0) for m in mig.values()) for k in keys}
print("    connections per server %s, joins established per server %s, gateway migration %s"
      % (per, joins, tot), file=sys.stderr)
print("    servers gone from the gateway %s s after the drain (deadline %g s)"
      % ("never" if gone == "none" else "%.2f" % (float(gone) - drained), deadline),
      file=sys.stderr)
ok = tot["announced"] >= n and tot["migrated"] >= n
ok = ok and all(joins.get(s, 0) >= c for s, c in per.items())
ok = ok and tot["completed_early"] == 3 and tot["completed_at_deadline"] == 0
ok = ok and gone != "none" and float(gone) - drained < deadline
sys.exit(0 if ok else 1)
PY
}

# new_conns: the connections the gateway has given its backends so far.
new_conns() {
  ctl --json stats | python3 -c 'import json, sys; print(sum(b["new_conns"] for b in json.load(sys.stdin)["backends"]))'
}

# servers_in: how many of the servers the gateway still has (GET /stats).
servers_in() {
  ctl --json stats | python3 -c 'import json, sys; print(sum(b["name"] in sys.argv[1:] for b in json.load(sys.stdin)["backends"]))' "${SERVERS[@]}"
}

# drain_all SECONDS DEADLINE STATS N: in the background, once the gateway has seen N new
# connections (every server drains: a later one would find none), and SECONDS later, drain every
# server with DEADLINE; until half a second before the deadline, note when every server has left
# the gateway ($OUT/gone: a migrating drain that completed early); then GET /stats into STATS.
drain_all() {
  local base end
  base=$(new_conns)
  rm -f "$OUT/gone"
  (
    for _ in $(seq 200); do
      (($(new_conns) - base >= $4)) && break
      sleep 0.1
    done
    sleep "$1"
    for s in "${SERVERS[@]}"; do ctl drain "$s" --deadline "$2" >/dev/null; done
    date +%s.%N >"$OUT/drained"
    end=$(python3 -c "print($(cat "$OUT/drained") + $2 - 0.5)")
    while python3 -c "import sys, time; sys.exit(time.time() >= $end)"; do
      if (($(servers_in) == 0)); then
        date +%s.%N >"$OUT/gone"
        break
      fi
      sleep 0.2
    done
    ctl --json stats >"$3"
    ctl stats | grep -E '^(backend|control)' >&2 || true
  ) &
  DRAINER=$!
}

# readd VIP [direct]: every server added back to VIP (the same id: its flows resume).
readd() {
  local n
  for n in 1 2 3; do
    ctl add-backend "$1" "srv$n" --ipv4 "10.91.0.1$n" --ipv6 "fd91::1$n" --port 8080 \
      ${2:+--direct "10.91.0.1$n"} >/dev/null
  done
}

testbed/netns.sh up >/dev/null
direct_config "$OUT/direct.toml"

# 1-2. Migration, NAT and DSR. The client takes one ADD_ADDR (add_addr_accepted 1): the
#      migration's. --join-timeout 0: no join exists before the migration (NAT: the C flag keeps
#      the client off the VIP's address), so the harness does not wait for one.
testbed/netns.sh client-limits announce 2>/dev/null
direct_routes add
for vip in nat dsr-ipip; do
  tag=migrate-$vip
  start_gateway "$OUT/direct.toml" "gw-$tag" --api "unix:$SOCK"
  drain_all 1 3 "$OUT/$tag-stats.json" 6
  run "$tag" -4 --vip "$vip" -n 6 --expect-joins 1 --join-timeout 0 --direct-joins --announced \
    --size-kb 2048 --chunk-kb 16 --pause-ms 30 --stagger-ms 20 --timeout 30
  wait "$DRAINER"
  # The servers come back (same ids, their counters with them): the subflows through the gateway
  # that the clients kept as backups, whose packets were dropped while their servers were out,
  # can close cleanly instead of ending in a client's RST during the next run.
  if [ "$vip" = nat ]; then readd web4 direct; else readd dsr-ipip4 direct; fi
  ctl --json stats >"$OUT/$tag-after.json"
  ctl stats | grep -E '^(backend|control)' >&2 || true
  migration_check "$tag" 3
  sleep 3
  stop_gateway
done

direct_routes del

# 3. Hard remove, and the same servers added back 5 s later: token mode, default client limits.
testbed/netns.sh client-limits default 2>/dev/null
tag=hard-readd
start_gateway "$CONFIG" "gw-$tag" --api "unix:$SOCK"
base=$(new_conns)
(
  for _ in $(seq 200); do
    (($(new_conns) - base >= 6)) && break
    sleep 0.1
  done
  sleep 1
  for s in "${SERVERS[@]}"; do ctl remove-backend "$s" --hard >/dev/null; done
  date +%s.%N >"$OUT/removed"
  sleep 5
  readd web4
  date +%s.%N >"$OUT/readded"
) &
READD=$!
ctl --json stats >"$OUT/$tag-before.json"
run "$tag" -4 -n 6 --size-kb 2048 --chunk-kb 16 --pause-ms 30 --stagger-ms 20 --timeout 30
wait "$READD"
ctl --json stats >"$OUT/$tag-after.json"
python3 - "$OUT/$tag-before.json" "$OUT/$tag-after.json" "$(cat "$OUT/removed")" \
  "$(cat "$OUT/readded")" <<'PY'
import json, sys
b, a = (json.load(open(p)) for p in sys.argv[1:3])
removed, readded = map(float, sys.argv[3:5])
def drops(st, r):
    return sum((w.get("drops") or {}).get(r, 0) for w in st["workers"])
gone = drops(a, "backend_gone") - drops(b, "backend_gone")
print("[e2e-removal] hard-readd: every server out for %.1f s; %d packets of their flows dropped "
      "(backend_gone) while out, forwarded again after the re-add" % (readded - removed, gone),
      file=sys.stderr)
sys.exit(0 if gone > 0 else 1)
PY
stop_gateway

# 4. Left behind: plain TCP connections keep the drain policy (they end at the deadline). Last:
#    the cut connections end later in RSTs of their own (their client gave up; the flows stay in
#    the state file), which a run after this one would count as its own.
direct_routes add
tag=left-behind
start_gateway "$OUT/direct.toml" "gw-$tag" --api "unix:$SOCK"
drain_all 0.5 2 "$OUT/$tag-stats.json" 4
transfers "$OUT/$tag.json" "$OUT/$tag.txt" -4 --proto tcp -n 4 --size-kb 4096 --chunk-kb 16 \
  --pause-ms 30 --stagger-ms 20 --timeout 6 || true
wait "$DRAINER"
python3 - "$OUT/$tag-stats.json" <<'PY'
import json, sys
st = json.load(open(sys.argv[1]))
left = sum((b.get("migration") or {}).get("left_behind", 0) for b in st["backends"])
ann = sum((b.get("migration") or {}).get("announced", 0) for b in st["backends"])
print("[e2e-removal] left-behind: %d plain TCP connections counted as left behind, %d announced"
      % (left, ann), file=sys.stderr)
sys.exit(0 if left >= 4 and ann == 0 else 1)
PY
readd web4 direct # (as above: the cut connections close cleanly)
ctl --json stats >"$OUT/$tag-after.json"
# A server holding left-behind connections keeps them to its deadline; one that got none of the
# 4 connections has nothing to wait for and leaves early.
python3 - "$OUT/$tag-after.json" <<'PY'
import json, sys
mig = {b["name"]: b.get("migration") or {} for b in json.load(open(sys.argv[1]))["backends"]}
how = {n: (m.get("left_behind", 0), m.get("completed_early", 0), m.get("completed_at_deadline", 0))
       for n, m in mig.items()}
print("[e2e-removal] left-behind: per server (left behind, drains completed early, at the "
      "deadline): %s" % how, file=sys.stderr)
ok = len(how) == 3 and all((e, d) == ((0, 1) if left else (1, 0)) for left, e, d in how.values())
sys.exit(0 if ok else 1)
PY
sleep 3
stop_gateway
direct_routes del

log "artefacts in $OUT"
echo "e2e-removal: 4 scenarios passed (migration NAT and DSR completed before the deadline, left behind counted and kept to the deadline, hard remove and re-add)"

#!/usr/bin/env bash
# End-to-end restarts of trapeze-gatewayd with real Linux MPTCP clients and servers
# (testbed/netns.sh): the flow and token tables live in the state file ([state],
# docs/restarts.md), so a restarted daemon re-attaches to them, and every subflow of
# every connection, joins included, stays on its server.
#
# Each run: 6 MPTCP transfers (2 subflows each: the client's second address opens a join) of
# 10 MB, paced over about 20 s; 10 s in, the daemon dies; 1 s later a new one starts.
#   1. kill -9, the same configuration, 1 worker (configs/testbed.toml);
#   2. kill -9, the same, 2 workers (configs/testbed-2workers.toml);
#   3. kill -9, and a backend added while the daemon was down: srv4 (a static MAC, no server
#      behind it) inserted first in the file, so every backend's position shifts;
#   4. SIGTERM (a planned stop, marked clean), restarted with 2 workers instead of 1: the entries
#      are carried over into a new file and move to the worker that owns them now;
#   5. kill -9 before any join: the client's second address is added only once the new daemon
#      runs, so every join is routed by a token the old daemon learned (join_routed 6).
# Every run passes every harness check (0 failed, 0 RST on both links, every join on its
# connection's server by the servers' own subflow lists, the servers' MPJoinNoTokenFound 0,
# digests), and the new daemon says it re-attached (or carried over) every flow (12; 6 in run 5)
# and the 6 tokens, and never adopted a flow (nonsyn_miss 0) nor rewrote a return packet
# statelessly.
# The clients keep the kernel's default MPTCP limits: token routing needs nothing from them.
#
# Usage (root): testbed/e2e-restart.sh   (builds the daemon and trapezectl first, as e2e-joins.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. testbed/gateway.sh
tb_lock

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-target/release/trapezectl}
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
OUT=$(mktemp -d /tmp/tz-e2e-restart.XXXXXX)
SOCK=$OUT/api.sock
STATE_DIR=/dev/shm
mountpoint -q /dev/hugepages && STATE_DIR=/dev/hugepages
# Run 4's two configurations (two file prefixes) share one state file.
SHARED_STATE=$STATE_DIR/trapeze-restart.tzstate

log() { printf '[e2e-restart] %s\n' "$*" >&2; }

forget_state() {
  rm -f /dev/hugepages/trapeze-testbed.tzstate /dev/shm/trapeze-testbed.tzstate \
    /dev/hugepages/trapeze-testbed2.tzstate /dev/shm/trapeze-testbed2.tzstate \
    "$SHARED_STATE" "/dev/shm/${SHARED_STATE##*/}"
}

cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed /var/run/dpdk/trapeze-testbed2
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/hugepages/trapeze-testbed2map_*
  forget_state
}
trap cleanup EXIT

# with CONFIG OUT PY: CONFIG edited by the python expression PY over its text `t`.
with() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
src, dst, expr = sys.argv[1:]
t = open(src).read()
open(dst, "w").write(eval(expr))
PY
}

stats() { "$CTL" --api "unix:$SOCK" --json stats >"$1"; }

# check_gateway STATS LOG HOW FLOWS JOINS: the new daemon's counters and its state report.
check_gateway() {
  python3 - "$@" <<'PY'
import json, re, sys
stats, err, how, want_flows, want_joins = sys.argv[1:]
ev = {}
for w in json.load(open(stats))["workers"]:
    for k, v in (w.get("events") or {}).items():
        ev[k] = ev.get(k, 0) + v
line = next((l for l in open(err) if "state: " in l and " flows " in l), "")
m = re.search(r"flows (\d+) kept .*; tokens (\d+) \((\d+) owners\) kept", line)
flows, tokens = (int(m.group(1)), int(m.group(2))) if m else (-1, -1)
print("    new daemon: %s" % line.split("state: ", 1)[-1].strip(), file=sys.stderr)
print("    new daemon's events: nonsyn_miss %d, return_stateless %d, join_routed %d"
      % (ev.get("nonsyn_miss", 0), ev.get("return_stateless", 0), ev.get("join_routed", 0)),
      file=sys.stderr)
ok = (how in line and flows == int(want_flows) and tokens == 6
      and ev.get("nonsyn_miss", 0) == 0 and ev.get("return_stateless", 0) == 0
      and ev.get("join_routed", 0) == int(want_joins))
sys.exit(0 if ok else 1)
PY
}

# restart_run TAG CONFIG1 CONFIG2 SIGNAL HOW: the transfers, CONFIG1's daemon killed with SIGNAL
# 10 s in, CONFIG2's started 1 s later; HOW is what its state report must say. LATE_JOINS=1: the
# client's second address comes only after the restart.
LATE_JOINS=0
restart_run() {
  local tag=$1 config1=$2 config2=$3 sig=$4 how=$5
  local flows=12 joins=0 late=()
  if [ "$LATE_JOINS" = 1 ]; then
    flows=6 joins=6 late=(--expect-joins 0)
    second_address delete
  fi
  forget_state
  start_gateway "$config1" "$tag-before" --api "unix:$SOCK"
  local t0 killed started
  t0=$(date +%s.%N)
  transfers "$OUT/$tag.json" "$OUT/$tag.txt" -4 -n 6 --parallel 6 --stagger-ms 20 \
    --size-kb 10240 --chunk-kb 16 --pause-ms 30 --timeout 40 "${late[@]}" &
  local xfer=$!
  sleep 10
  kill "-$sig" "$GW_PID"
  wait "$GW_PID" 2>/dev/null || true
  GW_PID=
  killed=$(date +%s.%N)
  sleep 1
  GW_OUT=$OUT/$tag-after.out GW_ERR=$OUT/$tag-after.err
  ip netns exec tz-gw "$BIN" --config "$config2" --api "unix:$SOCK" >"$GW_OUT" 2>"$GW_ERR" &
  GW_PID=$!
  started=$(date +%s.%N)
  if [ "$LATE_JOINS" = 1 ]; then
    for _ in $(seq 1 50); do grep -q "every backend is resolved" "$GW_ERR" && break; sleep 0.1; done
    second_address add # the client's path manager now opens a join on every connection
  fi
  if ! wait "$xfer"; then
    log "$tag FAILED:"
    grep -E "FAIL|RSTs" "$OUT/$tag.txt" >&2 || true
    grep -E "state|error|warning" "$GW_ERR" >&2 || true
    return 1
  fi
  stats "$OUT/$tag-stats.json"
  if [ "$LATE_JOINS" = 1 ] && ! python3 - "$OUT/$tag.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
est = sum(s["joins_established"] for s in d["per_server"].values())
owner = d["checks"].get("joins_on_owner", {}).get("ok")
print("    joins opened after the restart: %d established, on their owner: %s" % (est, owner),
      file=sys.stderr)
sys.exit(0 if est == 6 and owner else 1)
PY
  then
    log "$tag FAILED: the joins opened after the restart did not all reach their server"
    return 1
  fi
  if ! check_gateway "$OUT/$tag-stats.json" "$GW_ERR" "$how" "$flows" "$joins"; then
    log "$tag FAILED: the new daemon did not re-attach every flow and token, or adopted flows"
    cat "$GW_ERR" >&2
    return 1
  fi
  python3 - "$t0" "$killed" "$started" "$(date +%s.%N)" "$tag" <<'PY'
import sys
t0, killed, started, end = map(float, sys.argv[1:5])
print("[e2e-restart] %s: daemon gone %.1f s into the transfers, a new one started %.1f s later, "
      "the transfers ended %.1f s after that" % (sys.argv[5], killed - t0, started - killed,
                                                 end - started), file=sys.stderr)
if not t0 < killed < started < end:
    sys.exit("the restart did not happen during the transfers")
PY
  log "$tag: PASS ($(grep -E "^  RSTs|joins_on_owner|no_token_found" "$OUT/$tag.txt" \
    | sed -E 's/^ *(\[PASS\] *)?//' | paste -sd ';' -))"
  stop_gateway
}

# second_address add|delete: the client's subflow endpoint (its second IPv4 address), as
# netns.sh sets it up.
second_address() {
  if [ "$1" = add ]; then
    ip netns exec tz-client ip mptcp endpoint add 10.90.0.3 subflow
  else
    ip netns exec tz-client ip mptcp endpoint delete id "$(ip netns exec tz-client ip mptcp \
      endpoint show | awk '$1 == "10.90.0.3" {for (i = 1; i < NF; i++) if ($i == "id") print $(i + 1)}')"
  fi
}

testbed/netns.sh up >/dev/null
# The kernel's default MPTCP limits on the client (a fresh namespace's), not the bed's: the
# token mode asks nothing of clients. The join comes from the client's subflow endpoint.
read -r -a limits <<<"$(unshare --net ip mptcp limits show)"
ip netns exec tz-client ip mptcp limits set "${limits[@]/#subflows/subflow}"
log "client MPTCP limits: $(ip netns exec tz-client ip mptcp limits show)"

restart_run kill9-1worker configs/testbed.toml configs/testbed.toml KILL "re-attached"
restart_run kill9-2workers configs/testbed-2workers.toml configs/testbed-2workers.toml KILL \
  "re-attached"

# srv4 first in the file: srv1..srv3 move to positions 1..3; it joins web4.
with configs/testbed.toml "$OUT/added.toml" "t.replace('[[backends]]                    # BackendId 0', '''[[backends]]
name = \"srv4\"
ipv4 = \"10.91.0.14\"
port = 8080
egress_port = \"server\"
mac = \"02:91:00:00:00:14\"

[[backends]]''', 1).replace('backends = [\"srv1\", \"srv2\", \"srv3\"]', 'backends = [\"srv1\", \"srv2\", \"srv3\", \"srv4\"]', 1)"
restart_run kill9-backend-added configs/testbed.toml "$OUT/added.toml" KILL "re-attached"
grep -q 'backends added \["srv4"\]' "$OUT/kill9-backend-added-after.err" \
  || { log "the new daemon did not report srv4 as added"; exit 1; }

with configs/testbed.toml "$OUT/shared-1.toml" "t + '\n[state]\npath = \"$SHARED_STATE\"\n'"
with configs/testbed-2workers.toml "$OUT/shared-2.toml" "t + '\n[state]\npath = \"$SHARED_STATE\"\n'"
restart_run sigterm-1to2workers "$OUT/shared-1.toml" "$OUT/shared-2.toml" TERM "carried over"
grep -q "previous stop clean" "$OUT/sigterm-1to2workers-after.err" \
  || { log "the planned stop was not marked clean"; exit 1; }

LATE_JOINS=1 restart_run kill9-late-joins configs/testbed.toml configs/testbed.toml KILL \
  "re-attached"

log "artefacts in $OUT"
echo "e2e-restart: 5 runs passed (kill -9 with 1 and 2 workers, kill -9 with a backend added while down, SIGTERM and 1 -> 2 workers, joins opened after a kill -9 routed by the restored tokens)"

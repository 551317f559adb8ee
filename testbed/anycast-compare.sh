#!/usr/bin/env bash
# anycast-compare.sh: the anycast experiment, trapeze vs stateless ECMP, in one command (root).
#
#   testbed/anycast-compare.sh [--short] [--gateway=auto|daemon|standin] [--build] [--force]
#                              [--out=DIR]
#
# Runs testbed/anycast.py twice, one bed after the other, then renders one PNG with both panels:
#   1. baseline: `netns.sh up --standin=ecmp` (Linux ECMP multipath route over the three servers,
#      L4 hash, the VIP on every server); a server leaves = its nexthop is removed from the route;
#   2. gateway: `netns.sh up` and target/release/trapeze-gatewayd --config configs/testbed.toml in
#      tz-gw (as e2e.sh does, stopped with SIGTERM); a server leaves = `trapezectl drain srvN`,
#      returns = `trapezectl undrain srvN` (run in tz-gw);
#   3. with the daemon, two more gateway runs: "remove with migration" (every backend declares
#      its own address as `direct`; leave = `trapezectl drain srvN --deadline 2`: its MPTCP
#      connections are announced that address and move to it, and the server leaves the gateway
#      2 s later; return = `trapezectl add-backend` of the same server, which resumes its id;
#      clients at add_addr_accepted 1, which taking the announcement needs) and "hard remove and
#      re-add" (leave = `trapezectl remove-backend srvN --hard`, return = `add-backend`; clients
#      at the kernel's default limits; a connection stalls while its server is out, so the stall
#      limit is 9 s there and the table says how soon the stalled connections resumed);
#   4. `netns.sh down`; docs/anycast.png (drain | migration | hard remove | baseline) and
#      docs/anycast.md (the table); with --short, anycast.png and anycast.md go to the run's
#      artefact directory instead.
#
# --short          30 s, 4 connections, a server out for 5 s every 10 s (CI); default: 60 s, 6
#                  connections, the same flaps.
# --gateway=MODE   daemon: the real daemon (needs trapezectl with `drain`); standin: the Linux
#                  stand-in (`up --standin=linux`, DNAT to srv1) with no-op flaps, which only
#                  validates the harness and the plot; auto (default): daemon if
#                  target/release/trapezectl exists and its --help lists `drain`, else standin.
# --build          cargo build --release the daemon and trapezectl first.
# --force          run even if a tz-* namespace exists (the bed is shared by every script that
#                  uses netns.sh: a run in another shell would be torn down, and would tear this
#                  one down).
# --out=DIR        run artefacts (default: a new /tmp/tz-anycast.XXXXXX).
# Environment: TRAPEZE_GATEWAYD, TRAPEZECTL (binaries), ANYCAST_ARGS (extra anycast.py options),
# ANYCAST_DOCS (where the PNG and the table go; default docs/).
#
# Exit status: 0 when the gateway run had 0 RST and 0 failed transfers and the baseline showed
# RSTs on both links; the plot and the table are written either way.
set -euo pipefail
cd "$(dirname "$0")/.."
# One user of the test bed at a time: its namespace names are fixed (tz-*).
exec 9>/tmp/tz-testbed.lock
flock -w 900 9 || { echo "the test bed is busy (another run holds /tmp/tz-testbed.lock)" >&2; exit 1; }

SHORT=0
GATEWAY=auto
BUILD=0
FORCE=0
OUT=
for arg in "$@"; do
  case "$arg" in
    --short) SHORT=1 ;;
    --gateway=*) GATEWAY=${arg#--gateway=} ;;
    --build) BUILD=1 ;;
    --force) FORCE=1 ;;
    --out=*) OUT=${arg#--out=} ;;
    -h | --help)
      sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
      exit 0
      ;;
    *)
      echo "anycast-compare.sh: unknown option $arg (see --help)" >&2
      exit 2
      ;;
  esac
done
case "$GATEWAY" in auto | daemon | standin) ;; *) echo "--gateway=auto|daemon|standin" >&2; exit 2 ;; esac
[ "$(id -u)" -eq 0 ] || { echo "anycast-compare.sh: must run as root" >&2; exit 1; }
if ((!FORCE)) && ip netns list | grep -q '^tz-'; then
  echo "anycast-compare.sh: the test bed is up ($(cat "${TZTB_RUN_DIR:-/tmp/tz-testbed}/state" 2>/dev/null || echo 'state unknown')): another run may be using it. testbed/netns.sh down first, or --force" >&2
  exit 1
fi

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-target/release/trapezectl}
OUT=${OUT:-$(mktemp -d /tmp/tz-anycast.XXXXXX)}
# The long run makes the figure the README shows (docs/); the short one (CI) keeps its
# PNG and table with its artefacts.
if ((SHORT)); then DOCS=${ANYCAST_DOCS:-$OUT}; else DOCS=${ANYCAST_DOCS:-docs}; fi
mkdir -p "$OUT" "$DOCS"
if ((SHORT)); then
  RUN=(--duration 30 --connections 4 --flap-every 10 --flap-for 5)
else
  RUN=(--duration 60 --connections 6 --flap-every 10 --flap-for 5)
fi
# A failed connection is replaced by a new one (each failure still counts), so every flap hits
# live connections; --no-plot: the per-run PNGs are not needed here.
# shellcheck disable=SC2206
RUN+=(--reconnect --quiet --no-plot ${ANYCAST_ARGS:-})

log() { printf '[anycast-compare] %s\n' "$*" >&2; }

if ((BUILD)); then
  cargo build --release --locked -q --bin trapeze-gatewayd --bin trapezectl
fi
if [ "$GATEWAY" = auto ]; then
  GATEWAY=standin
  if [ -x "$CTL" ] && [ -x "$BIN" ] && "$CTL" --help 2>&1 | grep -qw drain; then GATEWAY=daemon; fi
  log "gateway panel: $GATEWAY"
fi
if [ "$GATEWAY" = daemon ]; then
  [ -x "$BIN" ] || { log "$BIN missing (--build?)"; exit 1; }
  [ -x "$CTL" ] || { log "$CTL missing (--build?)"; exit 1; }
fi

GW_PID=
stop_gateway() {
  [ -n "$GW_PID" ] || return 0
  local pid=$GW_PID status=0
  GW_PID=
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" || status=$?
  return "$status"
}
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/{hugepages,shm}/trapeze-testbed.tzstate
}
trap cleanup EXIT

start_gateway() {
  if [ -n "${TZTB_GW_IMAGE:-}" ]; then
    # Container mode (testbed/README.md; as testbed/gateway.sh): the image's daemon in tz-gw.
    docker run --rm --name tz-gw-daemon --network container:tz-gw-holder --cap-drop ALL \
      --cap-add NET_ADMIN --cap-add NET_RAW --cap-add IPC_LOCK --cap-add SYS_NICE \
      -v /dev/hugepages:/dev/hugepages -v "$PWD:$PWD:ro" -v "$OUT:$OUT:ro" -w "$PWD" \
      "$TZTB_GW_IMAGE" --config "${1:-configs/testbed.toml}" >"$OUT/gatewayd.out" 2>"$OUT/gatewayd.err" &
  else
    ip netns exec tz-gw "$BIN" --config "${1:-configs/testbed.toml}" >"$OUT/gatewayd.out" 2>"$OUT/gatewayd.err" &
  fi
  GW_PID=$!
  for _ in $(seq 1 100); do
    if grep -q "every backend is resolved" "$OUT/gatewayd.err" 2>/dev/null; then
      log "gateway up (PID $GW_PID)"
      return 0
    fi
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      log "gateway exited during start-up:"
      cat "$OUT/gatewayd.err" >&2
      GW_PID=
      return 1
    fi
    sleep 0.2
  done
  log "gateway did not resolve its backends in 20 s"
  cat "$OUT/gatewayd.err" >&2
  return 1
}

# The leave / return commands of the removal variants (anycast.py substitutes {server}): srvN's
# addresses are 10.91.0.1N and fd91::1N, port 8080 (configs/testbed.toml).
cat >"$OUT/readd.sh" <<EOF
#!/bin/sh
n=\${1#srv}
exec ip netns exec tz-gw $CTL add-backend web4 "\$1" --ipv4 "10.91.0.1\$n" --ipv6 "fd91::1\$n" --port 8080 \${2:+--direct "10.91.0.1\$n"}
EOF
chmod +x "$OUT/readd.sh"
# Every backend with its own IPv4 address as `direct` (the migration target).
python3 - configs/testbed.toml >"$OUT/direct.toml" <<'PY'
import sys
out = []
for line in open(sys.argv[1]):
    out.append(line)
    if line.startswith('ipv4 = "10.91.0.1'):
        out.append("direct = %s\n" % line.split("=", 1)[1].strip())
sys.stdout.write("".join(out))
PY
# Off-path subflows: the client reaches the servers' own addresses through tz-rtr.
direct_routes() {
  local n
  ip netns exec tz-client ip route "$1" 10.91.0.0/24 via 10.92.0.1 dev cli1 src 10.92.0.2
  for n in 1 2 3; do ip netns exec "tz-srv$n" ip route "$1" 10.92.0.0/24 via 10.91.0.254; done
}

rc=0
log "1/2 baseline: Linux ECMP (artefacts in $OUT/baseline)"
testbed/netns.sh up --standin=ecmp >&2
testbed/anycast.py --mode baseline "${RUN[@]}" --expect-rst --out "$OUT/baseline" || rc=1

log "2/2 gateway ($GATEWAY; artefacts in $OUT/gateway)"
if [ "$GATEWAY" = daemon ]; then
  testbed/netns.sh up >&2
  start_gateway
  testbed/anycast.py --mode gateway "${RUN[@]}" --expect-clean \
    --leave-cmd "ip netns exec tz-gw $CTL drain {server}" \
    --return-cmd "ip netns exec tz-gw $CTL undrain {server}" --out "$OUT/gateway" || rc=1
  if ! stop_gateway; then
    log "gateway did not exit cleanly on SIGTERM"
    rc=1
  fi
  sed 's/^/    /' "$OUT/gatewayd.out" >&2

  log "2b/2 gateway, remove with migration (artefacts in $OUT/migrate)"
  testbed/netns.sh client-limits announce >&2
  direct_routes add
  start_gateway "$OUT/direct.toml"
  testbed/anycast.py --mode gateway "${RUN[@]}" --expect-clean --label "trapeze: remove with migration" \
    --leave-cmd "ip netns exec tz-gw $CTL drain {server} --deadline 2" \
    --return-cmd "$OUT/readd.sh {server} direct" --out "$OUT/migrate" || rc=1
  stop_gateway || rc=1
  direct_routes del
  testbed/netns.sh client-limits default >&2

  log "2c/2 gateway, hard remove and re-add (artefacts in $OUT/hard)"
  start_gateway
  testbed/anycast.py --mode gateway "${RUN[@]}" --expect-clean --stall 9 \
    --label "trapeze: hard remove, re-add" \
    --leave-cmd "ip netns exec tz-gw $CTL remove-backend {server} --hard" \
    --return-cmd "$OUT/readd.sh {server}" --out "$OUT/hard" || rc=1
  stop_gateway || rc=1
else
  log "no daemon with drain/undrain: the gateway panel is the Linux stand-in with no-op flaps"
  testbed/netns.sh up --standin=linux >&2
  testbed/anycast.py --mode gateway "${RUN[@]}" --expect-clean --leave-cmd true --return-cmd true \
    --out "$OUT/gateway" || rc=1
fi
testbed/netns.sh down >&2

RUNS=(gateway baseline)
if [ "$GATEWAY" = daemon ]; then RUNS=(gateway migrate hard baseline); fi
for run in "${RUNS[@]}"; do
  if [ ! -f "$OUT/$run/results.json" ]; then
    log "the $run run left no results ($OUT/$run): $DOCS/anycast.png and $DOCS/anycast.md not written"
    exit 1
  fi
done
# The plot needs matplotlib (Debian's python3-matplotlib, scripts/deps.sh e2e): the Python on
# PATH may be another one.
PLOT_PY=python3
python3 -c 'import matplotlib' 2>/dev/null || PLOT_PY=/usr/bin/python3
"$PLOT_PY" testbed/anycast.py plot "${RUNS[@]/#/$OUT/}" --png "$DOCS/anycast.png" --md "$OUT/table.md"
{
  echo "# Anycast: a server leaves the pool every $( ((SHORT)) && echo "10 s (short run)" || echo "10 s")"
  echo
  echo "Generated by \`testbed/anycast-compare.sh$( ((SHORT)) && echo " --short")\` on $(date -u +%Y-%m-%d), Linux $(uname -r)."
  echo "Each run: long MPTCP connections to the VIP through tz-gw, each with a join from the"
  echo "client's second address, sending paced data the server echoes; every 10 s one server"
  echo "(srv1, srv2, srv3, ...) leaves the pool for 5 s and comes back. Left: the gateway"
  if [ "$GATEWAY" = daemon ]; then
    echo "(trapeze-gatewayd; leave/return = \`trapezectl drain\`/\`undrain\`); then trapeze"
    echo "*removing with migration* (every backend has its own address as \`direct\`; leave ="
    echo "\`drain srvN --deadline 2\`: its MPTCP connections are announced that address, move to"
    echo "it, and the server leaves the gateway 2 s later; return = \`add-backend\` of the same"
    echo "server, which gets its id back; clients at \`add_addr_accepted 1\`); then trapeze"
    echo "*hard remove and re-add* (leave = \`remove-backend srvN --hard\`, return ="
    echo "\`add-backend\`; clients at the kernel's default limits; the removed server's"
    echo "connections stall while it is out, so a connection fails there only after 9 s without"
    echo "data)."
  else
    echo "panel is the **Linux stand-in with no-op flaps** (DNAT to one server; the daemon has no"
    echo "drain yet): it validates the harness, not trapeze."
  fi
  echo "Right: the stateless baseline, Linux ECMP with an L4 hash over the three servers (leave/return"
  echo "= the nexthop removed from / re-added to the multipath route)."
  echo
  echo "![throughput over time, gateway and baseline](anycast.png)"
  echo
  cat "$OUT/table.md"
  echo
  echo "* RSTs: every RST segment captured on the link (tcpdump), with their kind: *join refused*"
  echo "  (an MP_JOIN SYN reached a server without the token: MPJoinNoTokenFound), *aborted* (a"
  echo "  running subflow's segments reached a server that does not know it, or the reverse),"
  echo "  *after close* (a late segment after both FINs). *Subflows reset*: distinct subflows hit."
  echo "* Failed transfers: connections that errored, stalled (nothing received for 3 s: the MPTCP"
  echo "  socket outlives its last subflow's reset), or whose echo was incomplete or differed. A"
  echo "  failed connection is replaced by a new one, so *attempts* > connections."
  echo "* Throughput: bytes the client received per second (the echo), summed over connections,"
  echo "  from second 1 on; offered = connections x rate. Dip = (median - second) / median, in the"
  echo "  seconds overlapping a server's absence (+1 s) and in the others (the noise)."
  echo "* Raw data: \`results.json\`, \`throughput.csv\`, \`summary.md\` and the captures in each"
  echo "  run directory (\`$OUT\` for this run)."
} >"$DOCS/anycast.md"
log "wrote $DOCS/anycast.md and $DOCS/anycast.png (artefacts in $OUT)"
cat "$OUT/table.md"
exit "$rc"

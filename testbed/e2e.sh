#!/usr/bin/env bash
# End-to-end tests of trapeze-gatewayd with real Linux MPTCP clients and servers, in network
# namespaces this script creates and removes (testbed/netns.sh). Run by scripts/test.sh (as root).
#
# For one worker (configs/testbed.toml) and for two (configs/testbed-2workers.toml):
#   1. 24 MPTCP connections over IPv4, each with a join: every subflow on its connection's
#      server, MPJoinNoTokenFound 0 on every server, digests match, no RST on either link;
#   2. the same over IPv6;
#   3. plain TCP over IPv4 and IPv6, spread over all three servers;
# then the daemon is stopped with SIGTERM: it must exit 0 and print its final counters, and
# with two workers at least one frame must have been handed between workers.
set -euo pipefail
cd "$(dirname "$0")/.."
. testbed/gateway.sh
tb_lock

BIN=${TRAPEZE_GATEWAYD:-target/release/trapeze-gatewayd}
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd
fi
OUT=$(mktemp -d /tmp/tz-e2e.XXXXXX)

log() { printf '[e2e] %s\n' "$*" >&2; }

cleanup() {
  stop_gateway || true
  testbed/netns.sh down >/dev/null 2>&1 || true
  rm -rf /var/run/dpdk/trapeze-testbed /var/run/dpdk/trapeze-testbed2
  rm -f /dev/hugepages/trapeze-testbedmap_* /dev/hugepages/trapeze-testbed2map_* \
    /dev/{hugepages,shm}/trapeze-testbed{,2}.tzstate
}
trap cleanup EXIT

run_suite() {
  local config=$1 tag=$2
  start_gateway "$config" "$tag"
  local run words
  for run in "v4-mptcp -4" "v6-mptcp -6" "v4-tcp -4 --proto tcp --require-all-servers" \
    "v6-tcp -6 --proto tcp --require-all-servers"; do
    read -r -a words <<<"$run"
    set -- "${words[@]}"
    local name=$1
    shift
    local ok=0
    transfers "$OUT/$tag-$name.json" "$OUT/$tag-$name.txt" "$@" || ok=$?
    cat "$OUT/$tag-$name.txt" >&2
    [ "$ok" = 0 ] || return 1
  done
  if ! stop_gateway; then
    log "gateway did not exit cleanly on SIGTERM"
    cat "$OUT/$tag.err" >&2
    return 1
  fi
  log "gateway stopped cleanly; final counters:"
  sed 's/^/    /' "$OUT/$tag.out" >&2
  grep -q '^total: ' "$OUT/$tag.out"
  if [ "$tag" = two-workers ]; then
    local handed
    handed=$(awk '/^worker /{for(i=1;i<=NF;i++) if($i=="handed_off") s+=$(i+1)} END{print s+0}' "$OUT/$tag.out")
    log "frames handed between workers: $handed"
    [ "$handed" -gt 0 ]
  fi
}

testbed/netns.sh up >&2
run_suite configs/testbed.toml one-worker
run_suite configs/testbed-2workers.toml two-workers
log "artefacts in $OUT"
echo "e2e: 2 passed, 0 failed"

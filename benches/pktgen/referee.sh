#!/usr/bin/env bash
# Pktgen-DPDK as an external referee: the same Pktgen run (benches/pktgen/lua/range-established.lua,
# 64 B ACKs over 65344 flows to nat4) against the gateway, then against dpdk-testpmd io-forward
# on the same two memif sockets, and the ratio of what came back on pktgen's port 1.
#
#   PKTGEN=/path/to/pktgen benches/pktgen/referee.sh      # or: benches/pktgen/referee.sh /path/to/pktgen
#
# Pktgen is not part of this repository: bring your own build (benches/pktgen/README.md says which
# version and what it needs). Knobs: REFEREE_SECONDS (measured seconds, default 10),
# REFEREE_SIZE (frame size, default 64), REFEREE_PKTGEN_MEM (pktgen's EAL memory, default
# "-m 1024", huge pages: stock 23.06.1 needs about 850 MB; with --no-huge it failed here to
# create its mbuf pools even at -m 1024), REFEREE_OUT (directory kept with the logs, default a
# temporary one that is removed). The gateway and testpmd each take -m 256.
#
# Cores (2 here): gateway and testpmd forward on CPU 1 and keep their main thread on CPU 0;
# pktgen sends and receives on CPU 0 (its main lcore shares CPU 1). Every DPDK process runs
# with --no-pci and a file prefix of its own; everything started here is stopped by pid.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PKTGEN=${1:-${PKTGEN:-}}
SECS=${REFEREE_SECONDS:-10}
SIZE=${REFEREE_SIZE:-64}
read -r -a PGMEM <<< "${REFEREE_PKTGEN_MEM:--m 1024}"

die() {
    echo "referee: $*" >&2
    exit 2
}
if [ -z "$PKTGEN" ]; then
    die "no Pktgen-DPDK binary given: PKTGEN=/path/to/pktgen $0, or $0 /path/to/pktgen (Pktgen-DPDK 23.06.1 for DPDK 22.11; see benches/pktgen/README.md)"
fi
if [ ! -f "$PKTGEN" ] || [ ! -x "$PKTGEN" ]; then die "$PKTGEN is not an executable file (PKTGEN must name the pktgen binary, e.g. build/app/pktgen)"; fi
command -v dpdk-testpmd > /dev/null || die "dpdk-testpmd not found (Debian: apt-get install dpdk)"
command -v script > /dev/null || die "script(1) not found (util-linux): pktgen needs a terminal"
GATEWAYD=$TARGET/release/trapeze-gatewayd
[ -x "$GATEWAYD" ] || die "no $GATEWAYD: cargo build --release -p trapeze-gatewayd -p trapeze-control"

RUN=$(mktemp -d /tmp/tzreferee.XXXXXX)
OUT=${REFEREE_OUT:-}
[ -n "$OUT" ] && mkdir -p "$OUT"
PREFIX=tzreferee-$$
PIDS=()
stop_pid() { # pid: SIGINT, then SIGKILL after 10 s
    local p=$1
    kill -INT "$p" 2> /dev/null || return 0
    for _ in $(seq 100); do kill -0 "$p" 2> /dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2> /dev/null || true
    wait "$p" 2> /dev/null || true
}
cleanup() {
    for p in "${PIDS[@]:-}"; do
        [ -n "$p" ] || continue
        # script(1) runs pktgen as its child: stop the child by its pid first.
        for c in $(pgrep -P "$p" 2> /dev/null || true); do kill -KILL "$c" 2> /dev/null || true; done
        stop_pid "$p"
    done
    if [ -n "$OUT" ]; then cp -r "$RUN"/. "$OUT"/ 2> /dev/null || true; fi
    rm -rf "$RUN" "/var/run/dpdk/$PREFIX-gw" "/var/run/dpdk/$PREFIX-tp" "/var/run/dpdk/$PREFIX-pg"
    rm -f "/dev/hugepages/$PREFIX"-*
}
trap cleanup EXIT

A_SOCK=$RUN/memif-client.sock # pktgen port 0 <-> gateway "client" / testpmd port 0
B_SOCK=$RUN/memif-server.sock # pktgen port 1 <-> gateway "server" / testpmd port 1
MEMIF_A="id=0,socket=$A_SOCK,socket-abstract=no"
MEMIF_B="id=0,socket=$B_SOCK,socket-abstract=no"

wait_sockets() { # pid log
    for _ in $(seq 300); do
        [ -S "$A_SOCK" ] && [ -S "$B_SOCK" ] && return 0
        kill -0 "$1" 2> /dev/null || { tail -n 20 "$2" >&2; die "the memif server exited"; }
        sleep 0.1
    done
    tail -n 20 "$2" >&2
    die "no memif sockets after 30 s"
}

# One pktgen run against whatever serves the sockets; prints pktgen's port-1 receive rate.
run_pktgen() { # name
    local name=$1
    local cmd
    cmd=$(printf '%q ' "$PKTGEN" -l 0-1 --main-lcore 1 --no-pci "--file-prefix=$PREFIX-pg" "${PGMEM[@]}" \
        "--vdev=net_memif0,role=client,$MEMIF_A,mac=02:74:7a:00:10:00" \
        "--vdev=net_memif1,role=client,$MEMIF_B,mac=02:74:7a:00:10:01" \
        -- -P -m '0.[0-1]' -f "$ROOT/benches/pktgen/lua/range-established.lua")
    TZP_OUT=$RUN/$name.txt TZP_SIZES=$SIZE TZP_SECONDS=$SECS TZP_WARMUP=2 TZP_QUIT=yes \
        timeout $((SECS + 180)) script -qfec "$cmd" "$RUN/pktgen-$name.log" > /dev/null 2>&1 &
    local pg=$!
    PIDS+=("$pg")
    wait "$pg" || true
    PIDS=("${PIDS[@]/$pg/}")
    local pps
    pps=$(awk '/^ACK/ {print $(NF - 1)}' "$RUN/$name.txt" 2> /dev/null | tail -n 1)
    if [ -z "$pps" ]; then
        tail -n 30 "$RUN/pktgen-$name.log" >&2
        die "$name: pktgen reported no rate (log above; REFEREE_OUT=dir keeps the logs)"
    fi
    grep -E '^(==|ACK|warm)' "$RUN/$name.txt" | sed "s/^/$name: /" >&2
    echo "$pps"
}

# 1. The gateway (benches/pktgen/gateway-memif.toml with this run's sockets and file prefix).
sed -e "s#/tmp/tzpktgen/memif-client.sock#$A_SOCK#" -e "s#/tmp/tzpktgen/memif-server.sock#$B_SOCK#" \
    -e "s#--file-prefix=tzpktgen-gw#--file-prefix=$PREFIX-gw#" \
    "$ROOT/benches/pktgen/gateway-memif.toml" > "$RUN/gw.toml"
grep -q -- "--file-prefix=$PREFIX-gw" "$RUN/gw.toml" || die "gateway-memif.toml: file prefix not found"
"$GATEWAYD" --config "$RUN/gw.toml" --api off > "$RUN/gateway.log" 2>&1 &
GW=$!
PIDS+=("$GW")
wait_sockets "$GW" "$RUN/gateway.log"
GW_PPS=$(run_pktgen gateway)
stop_pid "$GW"
PIDS=("${PIDS[@]/$GW/}")
grep -E '^total:' "$RUN/gateway.log" | sed 's/^/gateway: /' >&2 || true
rm -f "$A_SOCK" "$B_SOCK"

# 2. testpmd io-forward on the same sockets (port 0 -> port 1), same cores and memory as the gateway.
mkfifo "$RUN/testpmd.in"
exec 3<> "$RUN/testpmd.in"
dpdk-testpmd --no-pci -l 0-1 --main-lcore 0 --file-prefix "$PREFIX-tp" -m 256 \
    "--vdev=net_memif0,role=server,$MEMIF_A,mac=02:74:7a:00:00:01" \
    "--vdev=net_memif1,role=server,$MEMIF_B,mac=02:74:7a:00:00:02" \
    -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=16384 --auto-start \
    < "$RUN/testpmd.in" > "$RUN/testpmd.log" 2>&1 &
TP=$!
PIDS+=("$TP")
wait_sockets "$TP" "$RUN/testpmd.log"
TP_PPS=$(run_pktgen testpmd)
stop_pid "$TP"
PIDS=("${PIDS[@]/$TP/}")
exec 3>&-

awk -v g="$GW_PPS" -v t="$TP_PPS" -v s="$SIZE" 'BEGIN {
    printf "%d B established flows, pktgen port-1 receive rate: gateway %.0f pps, testpmd io-forward %.0f pps\n", s, g, t
    if (t > 0) printf "gateway / testpmd = %.1f %%\n", 100 * g / t
}'

#!/usr/bin/env bash
# Profiles the gateway daemon under the memif load with callgrind (perf counters are not
# available on this VM): the daemon runs under valgrind (--no-huge), the load generator offers
# more than it can forward so the worker is never idle, and collection is switched on only
# while the load runs. Prints the instructions per forwarded packet and the top functions.
#
#   benches/system/profile.sh [data|syn|handshake|join|testpmd] [SECONDS]
#
# "testpmd" profiles dpdk-testpmd's io forwarding on the same path with data traffic, for the
# instructions per frame of the I/O path alone.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
TRAFFIC=${1:-data}
SECS=${2:-5}
RUN=/run/tzbench-prof
OUTDIR=${TZB_LOGS:-$ROOT/target/tzbench}/profile-$TRAFFIC
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
rm -rf "$RUN" "$OUTDIR"; mkdir -p "$RUN" "$OUTDIR"
PIDS=()
cleanup() {
    for p in "${PIDS[@]:-}"; do if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi; done
    for p in "${PIDS[@]:-}"; do if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi; done
    rm -rf "$RUN"
    rm -f /dev/hugepages/tzbench-lgprof* /dev/hugepages/tzbench-prof*
    rm -rf /var/run/dpdk/tzbench-lgprof /var/run/dpdk/tzbench-prof
}
trap cleanup EXIT
MEMIF="socket-abstract=no,rsize=12"
# The benchmark's gateway configuration with this run's sockets and file prefix.
sed -e "s#/run/tzbench/#$RUN/#g" -e "s#tzbench-gw#tzbench-prof#" "$ROOT/benches/system/gateway.toml" > "$RUN/gw.toml"
LGTRAFFIC=$TRAFFIC
if [ "$TRAFFIC" = testpmd ]; then
    LGTRAFFIC=data
    mkfifo "$RUN/testpmd.in"
    exec 3<> "$RUN/testpmd.in"
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUTDIR/callgrind.out" \
        dpdk-testpmd --no-pci --no-huge -m 512 -l 0,1 --main-lcore 0 --file-prefix tzbench-prof \
        "--vdev=net_memif0,role=server,socket=$RUN/a.sock,$MEMIF" \
        "--vdev=net_memif1,role=server,socket=$RUN/b.sock,$MEMIF" \
        -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=16384 --auto-start \
        < "$RUN/testpmd.in" > "$OUTDIR/gateway.log" 2>&1 &
else
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$OUTDIR/callgrind.out" \
        "$TARGET/release/trapeze-gatewayd" --config "$RUN/gw.toml" --api off --no-huge \
        > "$OUTDIR/gateway.log" 2>&1 &
fi
GWPID=$!
PIDS+=("$GWPID")
for _ in $(seq 600); do [ -S "$RUN/b.sock" ] && break; sleep 0.1; done
sleep 1
callgrind_control -i on "$GWPID" > /dev/null
"$TARGET/release/trapeze-loadgen" --traffic "$LGTRAFFIC" --tokens 4096 --flows 10000 --rate 300000 \
    --trial-secs "$SECS" --latency-at 0 --label profile -- \
    --no-pci -l 0 --file-prefix tzbench-lgprof -m 256 --log-level=lib.eal:error \
    "--vdev=net_memif0,role=client,socket=$RUN/a.sock,$MEMIF" \
    "--vdev=net_memif1,role=client,socket=$RUN/b.sock,$MEMIF" > "$OUTDIR/loadgen.out" 2> "$OUTDIR/loadgen.log" || true
callgrind_control -i off "$GWPID" > /dev/null
kill -INT "$GWPID"
wait "$GWPID" || true
PIDS=()
if [ "$TRAFFIC" = testpmd ]; then
    # The frames the generator sent that testpmd took (its own counters print at exit).
    rx=$(awk '/port near:/ {for (i = 1; i <= NF; i++) if ($i == "opackets") print $(i + 1)}' "$OUTDIR/loadgen.log")
else
    rx=$(awk '/^total: rx/ {print $3}' "$OUTDIR/gateway.log")
fi
ir=$(callgrind_annotate "$OUTDIR/callgrind.out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",","",$1); print $1}')
echo "traffic $TRAFFIC: $ir instructions for $rx frames received by the gateway (collection on while loaded)"
[ -n "$rx" ] && [ "$rx" -gt 0 ] && echo "instructions per frame: $((ir / rx))"
callgrind_annotate --inclusive=no "$OUTDIR/callgrind.out" 2>/dev/null | sed -n '/Ir .*file:function/,$p' | head -30

#!/usr/bin/env bash
# The system benchmark (issue 5): trapeze-loadgen against dpdk-testpmd (io forwarding, the
# ceiling of the memif path) and the gateway with one worker, side by side in one run; writes
# benches/RESULTS.md.
#
#   benches/system/run.sh            full run (5 s trials, binary search of up to 8 trials)
#   benches/system/run.sh --quick    smoke run for CI (1 s trials, 3 search steps, 10k flows)
#
# Before each run the script waits (up to TZB_QUIET_WAIT seconds, default 900; 0 in --quick)
# until the machine is quiet (under 10% of the CPUs busy over 2 s): the device under test and the
# generator each need a core of their own.
#
# Options: --skip-build, --out FILE (default benches/RESULTS.md), --only NAME[,NAME] (testpmd,
# data, data1m, dsr, dsr-gue, syn, handshake, join, mix, data-container).
# TZB_IMAGE=trapeze:latest adds `data-container`: the `data` run against the gateway in a
# container (docker/compose.yml, profile "bench"), right after the same run on the host.
#
# Cores (2-vCPU machine): the load generator polls on CPU 0 (EAL -l 0). The device under test
# forwards on CPU 1: testpmd's forwarding lcore 1 (-l 0,1 --main-lcore 0: its main thread only
# sleeps between stats), the gateway's one worker (workers.lcores = [1]; EAL -l 0-1, so its
# control thread, which sleeps 10 ms between ticks, sits on CPU 0). Every DPDK process passes
# --no-pci, uses memif virtual devices only and has its own --file-prefix (tzbench-*).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
QUICK=0
BUILD=1
KERNEL=1
QUIET_WAIT=${TZB_QUIET_WAIT:-900}
OUT="$ROOT/benches/RESULTS.md"
ONLY=""
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --skip-build) BUILD=0 ;;
        --out) OUT=$2; shift ;;
        --only) ONLY=$2; shift ;;
        --no-kernel) KERNEL=0 ;;
        *) echo "usage: $0 [--quick] [--skip-build] [--no-kernel] [--out FILE] [--only LIST]" >&2; exit 2 ;;
    esac
    shift
done

if [ "$QUICK" = 1 ]; then
    TRIAL=1; STEPS=3; FLOWS_BIG=100000; TOKENS=16384; QUIET_WAIT=${TZB_QUIET_WAIT:-0}
else
    TRIAL=5; STEPS=8; FLOWS_BIG=1000000; TOKENS=65536
fi
RUN=/run/tzbench
LOGS=${TZB_LOGS:-$ROOT/target/tzbench}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
LG=$TARGET/release/trapeze-loadgen
GW=$TARGET/release/trapeze-gatewayd
PIDS=()
FAILED=""

log() { echo "== $*" >&2; }

cleanup() {
    for p in "${PIDS[@]:-}"; do
        if [ -n "$p" ]; then kill "$p" 2>/dev/null || true; fi
    done
    for p in "${PIDS[@]:-}"; do
        if [ -n "$p" ]; then wait "$p" 2>/dev/null || true; fi
    done
    rm -rf "$RUN"
    # Our DPDK processes have ended: their hugepage files and runtime directories go too.
    rm -f /dev/hugepages/tzbench-lg* /dev/hugepages/tzbench-gw* /dev/hugepages/tzbench-tp*
    rm -rf /var/run/dpdk/tzbench-lg /var/run/dpdk/tzbench-gw /var/run/dpdk/tzbench-tp
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "run as root (DPDK, hugepages)" >&2; exit 1; }
command -v dpdk-testpmd >/dev/null || { echo "dpdk-testpmd not found (apt-get install dpdk)" >&2; exit 1; }
if [ "$BUILD" = 1 ]; then
    log "building (release)"
    cargo build --release -p trapeze-loadgen -p trapeze-gatewayd >&2
fi
# Hugepages: two DPDK processes at once, each with -m 256 and mempools that may grow past it
# (testpmd's default pools alone took ~580 MB on a machine with only 600 MB free): 2 GB free.
free=$(awk '/HugePages_Free/ {print $2}' /proc/meminfo)
if [ "${free:-0}" -lt 1024 ]; then
    total=$(awk '/HugePages_Total/ {print $2}' /proc/meminfo)
    echo $((total + 1024 - free)) > /proc/sys/vm/nr_hugepages
    mountpoint -q /dev/hugepages || mount -t hugetlbfs nodev /dev/hugepages
fi
rm -rf "$RUN"; mkdir -p "$RUN" "$LOGS"
[ -n "${TZB_APPEND:-}" ] || : > "$LOGS/results.txt"

MEMIF="socket-abstract=no,rsize=12"   # 4096-slot rings, as a NIC queue
LG_EAL=(--no-pci -l 0 --file-prefix tzbench-lg -m 256 --log-level=lib.eal:error
    "--vdev=net_memif0,role=client,socket=$RUN/a.sock,$MEMIF"
    "--vdev=net_memif1,role=client,socket=$RUN/b.sock,$MEMIF")

wait_sockets() {
    for _ in $(seq 200); do
        [ -S "$RUN/a.sock" ] && [ -S "$RUN/b.sock" ] && return 0
        sleep 0.05
    done
    echo "the device under test did not create its memif sockets" >&2
    return 1
}

stop_dut() {
    local pid=$1
    kill -INT "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    PIDS=()   # one device at a time: never signal a pid that may have been reused
    rm -f "$RUN/a.sock" "$RUN/b.sock"
}

start_testpmd() {
    local name=$1
    # Without -i, testpmd forwards until a read of its standard input returns: give it a FIFO
    # that this script holds open.
    [ -p "$RUN/testpmd.in" ] || mkfifo "$RUN/testpmd.in"
    exec 3<> "$RUN/testpmd.in"
    dpdk-testpmd --no-pci -l 0,1 --main-lcore 0 --file-prefix tzbench-tp -m 256 \
        "--vdev=net_memif0,role=server,socket=$RUN/a.sock,$MEMIF" \
        "--vdev=net_memif1,role=server,socket=$RUN/b.sock,$MEMIF" \
        -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=32768 --auto-start \
        < "$RUN/testpmd.in" > "$LOGS/$name.dut.log" 2>&1 &
    DUT=$!
    PIDS+=("$DUT")
    DUT_CMD="dpdk-testpmd --no-pci -l 0,1 --main-lcore 0 --file-prefix tzbench-tp -m 256 --vdev=net_memif0,role=server,socket=$RUN/a.sock,$MEMIF --vdev=net_memif1,role=server,socket=$RUN/b.sock,$MEMIF -- --forward-mode=io --nb-cores=1 --rxq=1 --txq=1 --total-num-mbufs=32768 --auto-start"
}

gw_config() {
    # benches/system/gateway.toml names the sockets under /run/tzbench, as RUN here.
    sed -e "s#/run/tzbench/#$RUN/#g" "$ROOT/benches/system/gateway.toml" > "$RUN/gw.toml"
    case "$1" in
        handshake|mix)
            # Completed handshakes stay established: with the default 10 minutes a million
            # handshakes a second fill the 2M-entry flow table in two seconds, after which new
            # connections are forwarded without state (flow_table_full, no token learned). Idle
            # connections expire after 1 s here, so every handshake takes the stateful path;
            # the mix's data keeps its 16k MPTCP connections (whose tokens its joins carry)
            # busy, each at least every 0.4 s.
            # Live tokens are then about the handshake rate times 2 s (expiry and sweep): room
            # for 4M, so that every handshake's token is learned.
            sed -i 's/^token_capacity = .*/token_capacity = 4194304/' "$RUN/gw.toml"
            printf '\n[tables.timeouts]\nestablished = "1s"\n' >> "$RUN/gw.toml"
            GW_NOTE=" (with token_capacity = 4194304 and [tables.timeouts] established = \"1s\")" ;;
        *) GW_NOTE="" ;;
    esac
}

start_gateway() {
    local name=$1
    gw_config "$name"
    "$GW" --config "$RUN/gw.toml" --api off > "$LOGS/$name.dut.log" 2>&1 &
    DUT=$!
    PIDS+=("$DUT")
    DUT_CMD="trapeze-gatewayd --config benches/system/gateway.toml$GW_NOTE --api off"
}

# The same gateway in a container (TZB_IMAGE, e.g. trapeze:latest from docker/build.sh), brought
# up by docker/compose.yml's profile "bench": the memif sockets of $RUN are on a volume shared
# with the generator. DUT is the container's init (tini) as a host PID, so stop_dut's SIGINT
# reaches the daemon as on the host.
start_container() {
    local name=$1 up
    gw_config "$name"
    local compose=(docker-compose -f "$ROOT/docker/compose.yml" -p tzbench --profile bench)
    TZK_IMAGE=$TZB_IMAGE TZB_RUN=$RUN "${compose[@]}" rm -fs bench-gateway >/dev/null 2>&1 || true
    TZK_IMAGE=$TZB_IMAGE TZB_RUN=$RUN "${compose[@]}" up --no-color bench-gateway > "$LOGS/$name.dut.log" 2>&1 &
    up=$!
    DUT=
    for _ in $(seq 200); do
        DUT=$(docker inspect -f '{{.State.Pid}}' tzbench_bench-gateway_1 2>/dev/null || true)
        [ -n "$DUT" ] && [ "$DUT" != 0 ] && break
        sleep 0.1
    done
    PIDS+=("$DUT" "$up")
    DUT_CMD="docker-compose -f docker/compose.yml --profile bench up bench-gateway (image $TZB_IMAGE: trapeze-gatewayd --config benches/system/gateway.toml$GW_NOTE --api off)"
}

# CPU busy fraction (percent, both CPUs) over 2 s, from /proc/stat.
busy_pct() {
    local a b
    read -r -a a </proc/stat; sleep 2; read -r -a b </proc/stat
    local idle=$(( (b[4] + b[5]) - (a[4] + a[5]) )) total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    echo $(( total > 0 ? 100 * (total - idle) / total : 0 ))
}

wait_quiet() {
    local waited=0 busy
    while :; do
        busy=$(busy_pct)
        if [ "$busy" -lt 10 ] || [ "$waited" -ge "$QUIET_WAIT" ]; then break; fi
        [ "$waited" = 0 ] && log "waiting for a quiet machine (CPU busy ${busy}%)"
        sleep 8; waited=$((waited + 10))
    done
    QUIET="busy ${busy}% before the run, waited ${waited}s"
}

# run NAME DUT(testpmd|gateway) LOADGEN-ARGS...
run_one() {
    local name=$1 dut=$2; shift 2
    if [ -n "$ONLY" ] && ! echo ",$ONLY," | grep -q ",$name,"; then return 0; fi
    wait_quiet
    log "$name: $dut, loadgen $* ($QUIET)"
    local eal=("${LG_EAL[@]}")
    if [ "$dut" = self ]; then
        # No device: the generator's two ports are the two ends of one memif link, so this is
        # the generator's own ceiling (it builds, sends, receives and timestamps on one core).
        eal=(--no-pci -l 0 --file-prefix tzbench-lg -m 256 --log-level=lib.eal:error
            "--vdev=net_memif0,role=server,socket=$RUN/self.sock,$MEMIF"
            "--vdev=net_memif1,role=client,socket=$RUN/self.sock,$MEMIF")
        DUT=""
        DUT_CMD="(none: memif loopback inside the generator)"
    else
        "start_$dut" "$name"
        wait_sockets
    fi
    local load_before; load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    local lg_cmd="trapeze-loadgen $* --trial-secs $TRIAL --steps $STEPS --label $name -- ${eal[*]}"
    local res rc=0
    res=$("$LG" "$@" --trial-secs "$TRIAL" --steps "$STEPS" --label "$name" -- "${eal[@]}" 2> "$LOGS/$name.loadgen.log") || rc=$?
    if [ "$rc" -ne 0 ]; then
        if [ "$dut" = self ] && [[ "$res" == "result label=$name "* ]]; then
            # DPDK 22.11's memif PMD with both ends of a link in one process sometimes crashes
            # while closing them (rte_free "Invalid memory", then SIGSEGV: 2 of 20 runs here),
            # after the measurement was printed. The figure stands; the exit status is kept.
            res="$res teardown_exit=$rc"
            log "$name: the generator exited $rc in DPDK's memif teardown, after its result"
        else
            res="result label=$name failed=1"
            tail -5 "$LOGS/$name.loadgen.log" >&2
        fi
    fi
    local load_after; load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    if [ -n "$DUT" ]; then stop_dut "$DUT"; fi
    local after; after=$(busy_pct)
    echo "$res dut=$dut busy_after=$after load_before=${load_before// /,} load_after=${load_after// /,} quiet=${QUIET// /_}" >> "$LOGS/results.txt"
    printf '%s\t%s\t%s\n' "$name" "$lg_cmd" "$DUT_CMD" >> "$LOGS/commands.tsv"
    echo "$res" >&2
    grep -E "^trapeze-gatewayd: +(rx|tx|drop|total)" "$LOGS/$name.dut.log" | head -5 >&2 || true
}

[ -n "${TZB_APPEND:-}" ] || : > "$LOGS/commands.tsv"
run_one self      self    --traffic data --flows 10000
run_one testpmd   testpmd --traffic data --flows 10000
run_one data      gateway --traffic data --flows 10000
if [ -n "${TZB_IMAGE:-}" ]; then
    run_one data-container container --traffic data --flows 10000
fi
run_one data1m    gateway --traffic data --flows "$FLOWS_BIG"
run_one dsr       gateway --traffic data --flows 10000 --vip 192.0.2.11:8080
run_one dsr-gue   gateway --traffic data --flows 10000 --vip 192.0.2.12:8080
run_one syn       gateway --traffic syn
run_one handshake gateway --traffic handshake
run_one join      gateway --traffic join --tokens "$TOKENS"
run_one mix       gateway --traffic mix --tokens 16384

if [ "$KERNEL" = 1 ] && { [ -z "$ONLY" ] || echo ",$ONLY," | grep -q ",kernel,"; }; then
    rm -f "$LOGS/kernel.txt"
    log "the gateway on af_xdp against nftables DNAT (benches/system/kernel.sh)"
    if [ "$QUICK" = 1 ]; then kargs=(--quick); else kargs=(--rounds 5 --secs 5); fi
    if ! TZB_LOGS="$LOGS" TZB_QUIET_WAIT="$QUIET_WAIT" bash "$ROOT/benches/system/kernel.sh" "${kargs[@]}" >&2; then
        log "kernel.sh failed (see $LOGS/kernel-*.log)"
        FAILED="$FAILED kernel"
    fi
fi

python3 "$ROOT/benches/system/report.py" --results "$LOGS/results.txt" --commands "$LOGS/commands.tsv" \
    --mode "$([ "$QUICK" = 1 ] && echo quick || echo full)" --out "$OUT"
log "wrote $OUT"
# A run that failed (no result from the generator, a device that did not start) fails the
# script, so that the smoke run in the test command catches a broken benchmark.
FAILED="$FAILED $({ grep -o 'label=[^ ]* failed=1' "$LOGS/results.txt" || true; } | sed 's/label=//; s/ failed=1//' | tr '\n' ' ')"
if [ -n "${FAILED// /}" ]; then
    log "failed runs:$FAILED"
    exit 1
fi

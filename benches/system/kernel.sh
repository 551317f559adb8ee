#!/usr/bin/env bash
# The gateway against the Linux kernel on the same veth topology (issue 5): trapeze-gatewayd on
# DPDK af_xdp (or af_packet, --pmd af_packet) vs nftables DNAT with conntrack, forwarding the same
# traffic, alternating A/B over several rounds. Prints one line per round and a summary, and
# appends them to $TZB_LOGS/kernel.txt.
#
#   benches/system/kernel.sh [--quick] [--rounds N] [--pmd af_xdp|af_packet] [--secs S]
#
#   tzb-lg (the load generator)                         tzb-dut (the device under test)
#     lgc 02:00:00:00:c1:01  <---- veth ---->  dutc 02:00:00:00:00:01  10.0.0.1/24
#     lgs (any MAC)          <---- veth ---->  duts 02:00:00:00:00:02  10.1.0.1/16
#
# The generator (CPU 0) sends 64-byte data segments of 10,000 established flows to the VIP
# 192.0.2.10:80 as fast as it can on lgc (DPDK net_af_packet) and counts what arrives on lgs.
# A: the gateway, one worker on CPU 1. B: the kernel: ip_forward, nftables DNAT to 4 backends
# (jhash of the client address and port), conntrack (tcp_be_liberal, as the flows start
# mid-stream), static neighbours; RPS steers dutc's receive processing to CPU 1 and lgs's to
# CPU 0, so the kernel forwards on CPU 1 like the gateway.
#
# CPU accounting, from /proc/stat over the measured trial: the kernel's cost is CPU 1's busy time
# (its forwarding softirq); the gateway's is CPU 1's busy time (its worker polls all the time)
# plus CPU 0's softirq time (veth's XDP receive runs on the sender's CPU, and that time also holds
# the generator's own receive processing): the comparison is conservative for the gateway.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
ROUNDS=5; SECS=5; PMD=af_xdp; LGPMD=${TZB_LG_PMD:-af_xdp}
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) ROUNDS=2; SECS=2 ;;
        --rounds) ROUNDS=$2; shift ;;
        --secs) SECS=$2; shift ;;
        --pmd) PMD=$2; shift ;;
        *) echo "usage: $0 [--quick] [--rounds N] [--secs S] [--pmd af_xdp|af_packet]" >&2; exit 2 ;;
    esac
    shift
done
LOGS=${TZB_LOGS:-$ROOT/target/tzbench}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
RUN=/run/tzbench-k
mkdir -p "$LOGS" "$RUN"
LG=$TARGET/release/trapeze-loadgen
GW=$TARGET/release/trapeze-gatewayd
GWPID=""
log() { echo "== $*" >&2; }
inns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }

teardown() {
    if [ -n "$GWPID" ]; then gateway_off; fi
    ip netns del tzb-lg 2>/dev/null || true
    ip netns del tzb-dut 2>/dev/null || true
    rm -rf "$RUN"
    # Our DPDK processes have ended: their hugepage files and runtime directories go too.
    rm -f /dev/hugepages/tzbench-kgw* /dev/hugepages/tzbench-klg*
    rm -rf /var/run/dpdk/tzbench-kgw /var/run/dpdk/tzbench-klg
}
trap teardown EXIT

setup() {
    teardown
    mkdir -p "$RUN"
    ip netns add tzb-lg
    ip netns add tzb-dut
    ip link add lgc netns tzb-lg type veth peer name dutc netns tzb-dut
    ip link add lgs netns tzb-lg type veth peer name duts netns tzb-dut
    inns tzb-lg ip link set lgc address 02:00:00:00:c1:01
    inns tzb-dut ip link set dutc address 02:00:00:00:00:01
    inns tzb-dut ip link set duts address 02:00:00:00:00:02
    for d in lgc lgs; do
        inns tzb-lg ip link set "$d" up
        inns tzb-lg ethtool -K "$d" tx off tso off gso off gro off >/dev/null 2>&1 || true
    done
    for d in dutc duts; do
        inns tzb-dut ip link set "$d" up
        inns tzb-dut ethtool -K "$d" tx off tso off gso off gro off >/dev/null 2>&1 || true
    done
    inns tzb-dut ip link set lo up
    # Receive processing: the device's on CPU 1, the generator's on CPU 0.
    inns tzb-dut sh -c 'echo 2 > /sys/class/net/dutc/queues/rx-0/rps_cpus; echo 2 > /sys/class/net/duts/queues/rx-0/rps_cpus'
    inns tzb-lg sh -c 'echo 1 > /sys/class/net/lgc/queues/rx-0/rps_cpus; echo 1 > /sys/class/net/lgs/queues/rx-0/rps_cpus'
}

kernel_on() {
    inns tzb-dut ip addr add 10.0.0.1/24 dev dutc
    inns tzb-dut ip addr add 10.1.0.1/16 dev duts
    inns tzb-dut ip route add 10.64.0.0/10 via 10.0.0.254
    inns tzb-dut ip neigh replace 10.0.0.254 lladdr 02:00:00:00:c1:01 dev dutc nud permanent
    for i in 0 1 2 3; do
        inns tzb-dut ip neigh replace "10.1.0.1$i" lladdr "02:00:00:be:00:0$i" dev duts nud permanent
    done
    inns tzb-dut sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 \
        net.ipv4.conf.dutc.rp_filter=0 net.ipv4.conf.duts.rp_filter=0 \
        net.netfilter.nf_conntrack_tcp_be_liberal=1 net.netfilter.nf_conntrack_tcp_loose=1
    inns tzb-dut nft -f - <<'NFT'
table ip tzb {
    chain pre {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr 192.0.2.10 tcp dport 80 dnat to jhash ip saddr . tcp sport mod 4 map { 0 : 10.1.0.10, 1 : 10.1.0.11, 2 : 10.1.0.12, 3 : 10.1.0.13 } : 8080
    }
}
NFT
}

kernel_off() {
    inns tzb-dut nft delete table ip tzb 2>/dev/null || true
    inns tzb-dut sysctl -qw net.ipv4.ip_forward=0
    inns tzb-dut ip addr flush dev dutc
    inns tzb-dut ip addr flush dev duts
    inns tzb-dut conntrack -F >/dev/null 2>&1 || true
}

gw_config() {
    local vdev0 vdev1
    if [ "$PMD" = af_xdp ]; then
        vdev0="net_af_xdp0,iface=dutc,start_queue=0,queue_count=1"
        vdev1="net_af_xdp1,iface=duts,start_queue=0,queue_count=1"
    else
        vdev0="net_af_packet0,iface=dutc"
        vdev1="net_af_packet1,iface=duts"
    fi
    sed -e "s#\"--vdev=net_memif0[^\"]*\"#\"--vdev=$vdev0\"#" \
        -e "s#\"--vdev=net_memif1[^\"]*\"#\"--vdev=$vdev1\"#" \
        -e "s#device = \"net_memif0\"#device = \"${vdev0%%,*}\"#" \
        -e "s#device = \"net_memif1\"#device = \"${vdev1%%,*}\"#" \
        -e "s#tzbench-gw#tzbench-kgw#" \
        "$ROOT/benches/system/gateway.toml" > "$RUN/gw.toml"
}

gateway_on() {
    gw_config
    # nsenter executes the daemon itself (ip netns exec forks here), so $! is its pid.
    nsenter --net=/run/netns/tzb-dut -- "$GW" --config "$RUN/gw.toml" --api off >> "$LOGS/kernel-gateway.log" 2>&1 &
    GWPID=$!
    for _ in $(seq 300); do
        grep -q "forwarding;" "$LOGS/kernel-gateway.log" 2>/dev/null && return 0
        kill -0 "$GWPID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the gateway did not start on $PMD:" >&2
    tail -20 "$LOGS/kernel-gateway.log" >&2
    return 1
}

gateway_off() {
    local t0=$SECONDS
    kill -INT "$GWPID" 2>/dev/null || true
    for _ in $(seq 150); do kill -0 "$GWPID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$GWPID" 2>/dev/null; then
        echo "the gateway did not stop within 15 s of SIGINT; killed" >&2
        local last
        last=$(tail -3 "$LOGS/kernel-gateway.log" 2>/dev/null || true)
        {
            echo "not stopped 15 s after SIGINT; its threads (name state wchan utime):"
            for t in /proc/"$GWPID"/task/*; do
                echo "  $(cat "$t/comm") $(awk '{print $3, $14}' "$t/stat") $(cat "$t/wchan")"
            done
            echo "$last"
        } >> "$LOGS/kernel-gateway.log" 2>/dev/null || true
        kill -KILL "$GWPID" 2>/dev/null || true
    fi
    wait "$GWPID" 2>/dev/null || true
    GWPID=""
    # Whatever the shutdown left, no XDP program may stay on the veths for the kernel's turn.
    inns tzb-dut ip link set dev dutc xdp off 2>/dev/null || true
    inns tzb-dut ip link set dev duts xdp off 2>/dev/null || true
    echo "gateway stopped in $((SECONDS - t0)) s" >> "$LOGS/kernel-gateway.log"
}

LG_OPTS=(--traffic data --flows 10000 --rate 0 --trial-secs "$SECS" --latency-at 0 --drain-secs 0.2
    --tx-port "net_${LGPMD}0" --rx-port "net_${LGPMD}1")
LG_EAL=(--no-pci -l 0 --file-prefix tzbench-klg -m 256 --log-level=lib.eal:error
    "--vdev=net_${LGPMD}0,iface=lgc" "--vdev=net_${LGPMD}1,iface=lgs")

# measure NAME: one loaded trial; prints "NAME pps cpu_s mpkt_per_cpu_s"
measure() {
    local name=$1 res
    res=$(inns tzb-lg "$LG" "${LG_OPTS[@]}" --label "$name" -- "${LG_EAL[@]}" 2>> "$LOGS/kernel-loadgen.log")
    echo "$res" >> "$LOGS/kernel-raw.txt"
    python3 - "$name" "$res" <<'PY'
import sys
name, line = sys.argv[1], sys.argv[2]
kv = dict(p.split("=", 1) for p in line.split() if "=" in p)
fwd, secs = float(kv["forwarded"]), float(kv["secs"])
if name.startswith("gateway"):
    # Its worker polls CPU 1 (all of it, system time of its TX kicks included), and veth's
    # XDP receive runs in CPU 0's softirq (with the generator's own receive processing).
    cpu = float(kv["cpu1_busy_s"]) + float(kv["cpu0_softirq_s"])
else:
    # The kernel forwards in CPU 1's softirq (RPS); system time there counts too, user time
    # there is nobody's forwarding (other processes).
    cpu = float(kv["cpu1_softirq_s"]) + float(kv["cpu1_system_s"])
print(f"{name} pps={fwd / secs:.0f} cpu_s={cpu:.2f} pkts_per_cpu_s={fwd / max(cpu, 0.01):.0f} "
      f"cpu0_busy_s={kv['cpu0_busy_s']} cpu0_softirq_s={kv['cpu0_softirq_s']} cpu1_busy_s={kv['cpu1_busy_s']} "
      f"cpu1_system_s={kv['cpu1_system_s']} cpu1_softirq_s={kv['cpu1_softirq_s']} load={open('/proc/loadavg').read().split()[0]}")
PY
}

# Wait (up to TZB_QUIET_WAIT s, default 600) for the CPUs to be under 10% busy over 2 s.
quiet_wait=${TZB_QUIET_WAIT:-600}
while [ "$quiet_wait" -gt 0 ]; do
    read -r -a a </proc/stat; sleep 2; read -r -a b </proc/stat
    idle=$(( b[4] + b[5] - a[4] - a[5] )); total=0
    for i in 1 2 3 4 5 6 7 8; do total=$(( total + b[i] - a[i] )); done
    busy=$(( 100 * (total - idle) / (total > 0 ? total : 1) ))
    [ "$busy" -lt 10 ] && break
    log "waiting for a quiet machine (CPU busy ${busy}%)"
    sleep 8; quiet_wait=$((quiet_wait - 10))
done
setup
: > "$LOGS/kernel-raw.txt"
: > "$LOGS/kernel-gateway.log"
OUT="$LOGS/kernel.txt"
echo "# kernel.sh rounds=$ROUNDS secs=$SECS pmd=$PMD $(date -u +%FT%TZ); generator: trapeze-loadgen ${LG_OPTS[*]} -- ${LG_EAL[*]}" > "$OUT"
for r in $(seq "$ROUNDS"); do
    # Alternate the order each round.
    if [ $((r % 2)) = 1 ]; then order="gateway kernel"; else order="kernel gateway"; fi
    for who in $order; do
        if [ "$who" = gateway ]; then
            gateway_on
            measure "gateway-$PMD" | tee -a "$OUT"
            gateway_off
        else
            kernel_on
            measure "kernel-nft" | tee -a "$OUT"
            kernel_off
        fi
    done
done
(python3 - "$OUT" <<'PY'
import statistics, sys
rows = {}
for line in open(sys.argv[1]):
    if line.startswith("#") or line.startswith("summary"):
        continue
    p = line.split()
    kv = dict(x.split("=", 1) for x in p[1:])
    rows.setdefault(p[0], []).append((float(kv["pps"]), float(kv["pkts_per_cpu_s"])))
out = []
for name, v in rows.items():
    pps = [a for a, _ in v]; eff = [b for _, b in v]
    out.append((name, statistics.median(pps), min(pps), max(pps), statistics.median(eff), min(eff), max(eff)))
    print(f"summary {name} rounds={len(v)} pps_median={statistics.median(pps):.0f} pps_min={min(pps):.0f} "
          f"pps_max={max(pps):.0f} pkts_per_cpu_s_median={statistics.median(eff):.0f} "
          f"pkts_per_cpu_s_min={min(eff):.0f} pkts_per_cpu_s_max={max(eff):.0f}")
g = [o for o in out if o[0].startswith("gateway")]
k = [o for o in out if o[0].startswith("kernel")]
if g and k:
    print(f"summary ratio pps={g[0][1] / k[0][1]:.2f} pkts_per_cpu_s={g[0][4] / k[0][4]:.2f}")
PY
) | tee -a "$OUT"

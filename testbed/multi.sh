#!/usr/bin/env bash
# multi.sh: several trapeze gateway instances behind an ECMP router, announced with BGP (issue 6).
#
#                          tzm-rtr (BIRD 2)                 tzm-gwN (N = 1..3)
#  tzm-client             +-----------------+  veth   +--------------------------------+
#  +--------+   veth      |  rtr-c    rtr-g1|---------|gw1-c  trapeze-gatewayd   gw1-s |--+
#  |   cli0 |-------------|           rtr-g2|---------|gw2-c  + ExaBGP, feeder   gw2-s |--+ tzm-sw
#  |   cli1 |-------------|  rtr-r    rtr-g3|---------|gw3-c  (bgp-feed)         gw3-s |--+ (bridge
#  +--------+             |           rtr-s |--+      +--------------------------------+  |  br-tzm)
#  MPTCP client           +-----------------+  +------------------------------------------+--+
#  10.90.0.2 (primary)     ECMP route per VIP over                                         |
#  10.90.0.3 (subflow)     the instances that announce it,                 tzm-srv1..3: MPTCP
#  fd90::2 / fd90::3       L4 hash (fib_multipath_hash_policy=1)           servers, DSR VIPs on lo,
#  default via 10.90.0.1                                                   dsr_decap.py (TUN dsr0)
#
# Addresses:
#   client link  cli0 10.90.0.2, .3/24  fd90::2, ::3/64   <->  rtr-c 10.90.0.1  fd90::1
#   return link  cli1 10.92.0.2/24      fd92::2/64        <->  rtr-r 10.92.0.1  fd92::1
#                (the router sends the DSR replies to the client's addresses over cli1, so the
#                client-link capture holds only client -> VIP traffic, as in the tz bed)
#   instance N   rtr-gN 10.81.N.1/24 fd81:N::1/64 <-> gwN-c: kernel 10.81.N.2 fd81:N::2 (BGP
#                session, the VIPs' next hop), daemon 10.81.N.3 fd81:N::3 (af_packet on gwN-c)
#                gwN-s: daemon 10.91.0.N fd91::N (no kernel address), MTU 1600
#   servers      srvN 10.91.0.1N fd91::1N, port 8080, default via the router 10.91.0.254 fd91::254
#   DSR VIPs     10.90.100.20 (IPIP) 10.90.100.21 (GUE) fd90:100::20 fd90:100::21, port 8080
#
# The af_packet PMD does not take frames from the kernel: the kernel of tzm-gwN sees every frame
# on gwN-c too. It answers ARP/NDP and BGP for its own address only; forwarding is off and an
# nftables table drops anything addressed to the VIPs or to the daemon's addresses before
# routing, so the kernel never forwards or answers VIP traffic (the daemon does).
#
# BGP: BIRD (AS 65000) in tzm-rtr has one IPv4 and one IPv6 session per instance (AS 65001);
# each instance runs ExaBGP with `trapezectl bgp-feed` as its process: the feeder polls the
# daemon's API (GET /instance, every TZM_FEED_MS, default 100 ms) and announces a VIP while the
# instance serves it, withdraws it when the instance drains, the VIP has no serving backend, the
# daemon stops (SIGTERM: withdrawn during the stop grace, TZM_GRACE_MS, default 2000) or dies
# (API refused). BIRD's kernel protocol merges the equal routes (`merge paths`).
#
# Usage (root):
#   multi.sh up [--instances N] [--mode MODE]   bed + N instances started (default 2 of 3; mode:
#                                               configs/multi/MODE.toml, default token)
#   multi.sh start gwN | stop gwN | kill gwN    one instance's daemon (kill: SIGKILL)
#   multi.sh bgp-start gwN | bgp-stop gwN       its ExaBGP
#   multi.sh drain gwN | undrain gwN            trapezectl instance-drain / instance-undrain
#   multi.sh routes                             the router's VIP routes (kernel)
#   multi.sh status | down
# Environment: TZM_RUN_DIR (/tmp/tzm-testbed), TRAPEZE_GATEWAYD, TRAPEZECTL (target/release/...),
# TZM_GRACE_MS, TZM_FEED_MS.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
RUN_DIR="${TZM_RUN_DIR:-/tmp/tzm-testbed}"
BIN="${TRAPEZE_GATEWAYD:-$ROOT/target/release/trapeze-gatewayd}"
CTL="${TRAPEZECTL:-$ROOT/target/release/trapezectl}"
GRACE_MS="${TZM_GRACE_MS:-2000}"
FEED_MS="${TZM_FEED_MS:-100}"

NS_CLI=tzm-client
NS_RTR=tzm-rtr
NS_SW=tzm-sw
INSTANCES=(gw1 gw2 gw3)
SERVERS=(srv1 srv2 srv3)
ALL_NS=("$NS_CLI" "$NS_RTR" "$NS_SW" tzm-gw1 tzm-gw2 tzm-gw3 tzm-srv1 tzm-srv2 tzm-srv3)

SEG_MTU=1600
PATH_MTU=1500
DSR_VIP4=(10.90.100.20 10.90.100.21)
DSR_VIP6=(fd90:100::20 fd90:100::21)
RTR_AS=65000
GW_AS=65001

log() { printf '[multi.sh] %s\n' "$*" >&2; }
die() {
    printf 'multi.sh: %s\n' "$*" >&2
    exit 1
}
nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}
ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }
gw_num() {
    [[ $1 =~ ^gw([1-3])$ ]] || die "unknown instance '$1' (gw1, gw2, gw3)"
    echo "${BASH_REMATCH[1]}"
}

# detached CMD...: exec CMD with only file descriptors 0-2 (a caller's lock is not inherited).
detached() {
    local f n
    for f in /proc/self/fd/*; do
        n=${f##*/}
        if ((n > 2)); then eval "exec $n>&-"; fi
    done
    exec "$@"
}

install_tools() {
    local missing=()
    command -v bird >/dev/null || missing+=(bird2)
    command -v exabgp >/dev/null || missing+=(exabgp)
    command -v tcpdump >/dev/null || missing+=(tcpdump)
    command -v ethtool >/dev/null || missing+=(ethtool)
    command -v nft >/dev/null || missing+=(nftables)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
    fi
}

# pid_alive PIDFILE PATTERN: prints the PID if it is alive and its command line has PATTERN.
pid_alive() {
    local f=$1 pat=$2 pid
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "$pat" || return 1
    echo "$pid"
}

# stop_pid PIDFILE PATTERN [SIGNAL]: signal (default TERM), wait up to 10 s, then KILL.
stop_pid() {
    local pid i sig=${3:-TERM}
    if pid="$(pid_alive "$1" "$2")"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        for i in $(seq 100); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

# --- build ----------------------------------------------------------------------------------

quiet() {
    nsx "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 ||
        die "ethtool -K $2 failed in $1"
    nsx "$1" ethtool -K "$2" rx off >/dev/null 2>&1 || true
}

veth() {
    ip link add "$2" netns "$1" address "$3" type veth peer name "$5" netns "$4" address "$6"
    quiet "$1" "$2"
    quiet "$4" "$5"
}

mkns() {
    if [[ $1 == tzm-gw? && -n ${TZTB_GW_IMAGE:-} ]]; then
        # Container mode (testbed/README.md): tzm-gwN is a holder container's namespace; the
        # instance runs in docker/compose.yml's profile "multi" sharing it.
        docker rm -f "$1-holder" >/dev/null 2>&1 || true
        docker run -d --name "$1-holder" --network none --entrypoint /usr/bin/tini \
            --sysctl net.ipv6.conf.all.disable_ipv6=0 --sysctl net.ipv6.conf.default.disable_ipv6=0 \
            "$TZTB_GW_IMAGE" -- sleep infinity >/dev/null
        ip netns attach "$1" "$(docker inspect -f '{{.State.Pid}}' "$1-holder")"
    else
        ip netns add "$1"
    fi
    nsx "$1" ip link set lo up
    nsx "$1" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
    nsx "$1" sysctl -qw net.mptcp.enabled=1
}

build() {
    local ns s n
    for ns in "${ALL_NS[@]}"; do mkns "$ns"; done

    # client <-> router (forward link and return link)
    veth "$NS_CLI" cli0 02:90:00:00:00:02 "$NS_RTR" rtr-c 02:90:00:00:00:01
    veth "$NS_CLI" cli1 02:92:00:00:00:02 "$NS_RTR" rtr-r 02:92:00:00:00:01
    nsx "$NS_CLI" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    nsx "$NS_CLI" ip addr add 10.90.0.2/24 dev cli0
    nsx "$NS_CLI" ip addr add 10.90.0.3/24 dev cli0
    nsx "$NS_CLI" ip addr add fd90::2/64 dev cli0 nodad
    nsx "$NS_CLI" ip addr add fd90::3/64 dev cli0 nodad
    nsx "$NS_CLI" ip addr add 10.92.0.2/24 dev cli1
    nsx "$NS_CLI" ip addr add fd92::2/64 dev cli1 nodad
    nsx "$NS_CLI" ip link set cli0 up
    nsx "$NS_CLI" ip link set cli1 up
    nsx "$NS_CLI" sysctl -qw net.ipv4.conf.cli0.rp_filter=0 net.ipv4.conf.cli1.rp_filter=0
    nsx "$NS_CLI" ip route add default via 10.90.0.1 dev cli0 src 10.90.0.2
    nsx "$NS_CLI" ip -6 route add default via fd90::1 dev cli0 src fd90::2
    nsx "$NS_CLI" ip mptcp endpoint flush
    # The kernel's default MPTCP limits (a fresh namespace's): clients as they come. A mode whose
    # joins follow an ADD_ADDR raises add_addr_accepted to 1 (multi-modes/ports.env).
    local limits
    read -r -a limits <<<"$(unshare --net ip mptcp limits show)"
    nsx "$NS_CLI" ip mptcp limits set "${limits[@]/#subflows/subflow}"
    # No `dev cli0` on the endpoints: the join's socket would be bound to cli0 and its SYN/ACK,
    # which comes back on cli1 (DSR), would find no socket (RST). See netns.sh.
    nsx "$NS_CLI" ip mptcp endpoint add 10.90.0.3 subflow
    nsx "$NS_CLI" ip mptcp endpoint add fd90::3 subflow
    # The router's ECMP hash must depend on the flow only. Across veths a forwarded skb keeps
    # the sender socket's tx hash (skb->l4_hash), which the router's multipath hash uses as it
    # is, and TCP picks a new random tx hash on every retransmission timeout (net.core.txrehash):
    # a retransmitted SYN would then hash to another instance. Real routers hash the headers.
    nsx "$NS_CLI" sysctl -qw net.core.txrehash=0

    # the router
    nsx "$NS_RTR" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 \
        net.ipv4.fib_multipath_hash_policy=1 net.ipv6.fib_multipath_hash_policy=1 \
        net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
    nsx "$NS_RTR" ip addr add 10.90.0.1/24 dev rtr-c
    nsx "$NS_RTR" ip addr add fd90::1/64 dev rtr-c nodad
    nsx "$NS_RTR" ip addr add 10.92.0.1/24 dev rtr-r
    nsx "$NS_RTR" ip addr add fd92::1/64 dev rtr-r nodad
    nsx "$NS_RTR" ip link set rtr-c up
    nsx "$NS_RTR" ip link set rtr-r up
    # DSR replies to the client's addresses leave on the return link (more specific than the
    # client link's prefix).
    for s in 10.90.0.2 10.90.0.3; do nsx "$NS_RTR" ip route add "$s/32" via 10.92.0.2 dev rtr-r; done
    for s in fd90::2 fd90::3; do nsx "$NS_RTR" ip -6 route add "$s/128" via fd92::2 dev rtr-r; done

    # the server segment: a bridge
    nsx "$NS_SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$NS_SW" ip link add br-tzm address 02:91:00:00:ff:00 type bridge stp_state 0 \
        forward_delay 0 mcast_snooping 0
    quiet "$NS_SW" br-tzm
    nsx "$NS_SW" ip link set br-tzm mtu "$SEG_MTU" up
    veth "$NS_RTR" rtr-s 02:91:00:00:00:fe "$NS_SW" sw-rtr 02:91:00:00:ff:fe
    nsx "$NS_RTR" ip link set rtr-s mtu "$SEG_MTU" up
    nsx "$NS_SW" ip link set sw-rtr mtu "$SEG_MTU" master br-tzm up
    nsx "$NS_SW" bridge fdb replace 02:91:00:00:00:fe dev sw-rtr master static
    nsx "$NS_RTR" ip addr add 10.91.0.254/24 dev rtr-s
    nsx "$NS_RTR" ip addr add fd91::254/64 dev rtr-s nodad

    # the instances (all three are wired; `up` starts --instances of them)
    for n in 1 2 3; do
        ns=tzm-gw$n
        veth "$NS_RTR" "rtr-g$n" "02:81:00:00:0$n:01" "$ns" "gw$n-c" "02:81:00:00:0$n:02"
        veth "$ns" "gw$n-s" "02:91:00:00:0$n:01" "$NS_SW" "sw-g$n" "02:91:00:00:ff:0$n"
        nsx "$NS_RTR" ip addr add "10.81.$n.1/24" dev "rtr-g$n"
        nsx "$NS_RTR" ip addr add "fd81:$n::1/64" dev "rtr-g$n" nodad
        nsx "$NS_RTR" ip link set "rtr-g$n" up
        nsx "$ns" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0 \
            "net.ipv6.conf.gw$n-s.disable_ipv6=1"
        nsx "$ns" ip addr add "10.81.$n.2/24" dev "gw$n-c"
        nsx "$ns" ip addr add "fd81:$n::2/64" dev "gw$n-c" nodad
        nsx "$ns" ip link set "gw$n-c" up
        # The instances' kernels reach each other through the router (token sharing, [cluster]).
        nsx "$ns" ip route add 10.81.0.0/16 via "10.81.$n.1" dev "gw$n-c"
        nsx "$ns" ip link set "gw$n-s" mtu "$SEG_MTU" up
        nsx "$NS_SW" ip link set "sw-g$n" mtu "$SEG_MTU" master br-tzm up
        # The kernel must leave the VIP traffic (and the daemon's own addresses) to the daemon.
        nsx "$ns" nft -f - <<EOF
table inet tzm-guard {
    chain pre {
        type filter hook prerouting priority raw; policy accept;
        ip daddr { ${DSR_VIP4[0]}, ${DSR_VIP4[1]}, 10.81.$n.3, 10.91.0.0/24 } counter drop
        ip6 daddr { ${DSR_VIP6[0]}, ${DSR_VIP6[1]}, fd81:$n::3, fd91::/64 } counter drop
    }
    chain out {
        type filter hook output priority raw; policy accept;
        ip saddr { ${DSR_VIP4[0]}, ${DSR_VIP4[1]} } counter drop
        ip6 saddr { ${DSR_VIP6[0]}, ${DSR_VIP6[1]} } counter drop
    }
}
EOF
    done

    # the servers
    for s in "${SERVERS[@]}"; do
        n=${s#srv}
        ns=tzm-$s
        veth "$NS_SW" "sw-$s" "02:91:00:00:ff:1$n" "$ns" srv0 "02:91:00:00:00:1$n"
        nsx "$NS_SW" ip link set "sw-$s" mtu "$SEG_MTU" master br-tzm up
        nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
        nsx "$ns" ip addr add "10.91.0.1$n/24" dev srv0
        nsx "$ns" ip addr add "fd91::1$n/64" dev srv0 nodad
        nsx "$ns" ip link set srv0 mtu "$SEG_MTU" up
        nsx "$ns" sysctl -qw net.ipv4.conf.srv0.rp_filter=0
        nsx "$ns" ip route add default via 10.91.0.254 dev srv0 mtu "$PATH_MTU"
        nsx "$ns" ip -6 route add default via fd91::254 dev srv0 mtu "$PATH_MTU"
        local v
        for v in "${DSR_VIP4[@]}"; do nsx "$ns" ip addr add "$v/32" dev lo; done
        for v in "${DSR_VIP6[@]}"; do nsx "$ns" ip addr add "$v/128" dev lo nodad; done
        nsx "$ns" ip mptcp endpoint flush
        nsx "$ns" ip mptcp limits set subflow 2 add_addr_accepted 2
    done
}

write_bird() {
    local n
    {
        cat <<EOF
# BIRD 2 in $NS_RTR (written by testbed/multi.sh): one IPv4 and one IPv6 eBGP session per
# gateway instance; the kernel protocols merge equal routes into ECMP routes.
log "$RUN_DIR/bird.log" all;
router id 10.90.0.1;
protocol device { scan time 5; }
protocol kernel k4 {
    ipv4 { import none; export where source = RTS_BGP; };
    merge paths on limit 8;
}
protocol kernel k6 {
    ipv6 { import none; export where source = RTS_BGP; };
    merge paths on limit 8;
}
template bgp instance_peer {
    local as $RTR_AS;
    hold time 9;
    keepalive time 3;
    connect retry time 1;
    error wait time 1, 5;
}
EOF
        for n in 1 2 3; do
            cat <<EOF
protocol bgp gw${n}v4 from instance_peer {
    description "instance gw$n, IPv4";
    source address 10.81.$n.1;
    neighbor 10.81.$n.2 as $GW_AS;
    ipv4 { import filter { if net ~ [ 10.90.100.0/24{32,32} ] then accept; reject; }; export none; };
}
protocol bgp gw${n}v6 from instance_peer {
    description "instance gw$n, IPv6";
    source address fd81:$n::1;
    neighbor fd81:$n::2 as $GW_AS;
    ipv6 { import filter { if net ~ [ fd90:100::/64{128,128} ] then accept; reject; }; export none; };
}
EOF
        done
    } >"$RUN_DIR/bird.conf"
}

start_bird() {
    write_bird
    nsx "$NS_RTR" bird -p -c "$RUN_DIR/bird.conf" || die "bird.conf is invalid"
    rm -f "$RUN_DIR/bird.ctl"
    detached ip netns exec "$NS_RTR" bird -f -c "$RUN_DIR/bird.conf" -s "$RUN_DIR/bird.ctl" \
        -P "$RUN_DIR/bird.pid" </dev/null >>"$RUN_DIR/bird.out" 2>&1 &
    echo $! >"$RUN_DIR/bird.pid.launch"
    local i
    for i in $(seq 50); do
        [[ -S "$RUN_DIR/bird.ctl" ]] && return 0
        sleep 0.1
    done
    die "bird did not start: $(tail -3 "$RUN_DIR/bird.out")"
}

birdc_() { birdc -s "$RUN_DIR/bird.ctl" "$@"; }

start_servers() {
    local py s n pid i
    py="$(python3 -c 'import sys; print(sys.executable)')"
    for s in "${SERVERS[@]}"; do
        if ! pid_alive "$RUN_DIR/$s.pid" mptcp_server.py >/dev/null; then
            rm -f "$RUN_DIR/$s.ready"
            detached ip netns exec "tzm-$s" "$py" "$HERE/mptcp_server.py" --name "$s" --port 8080 \
                --log "$RUN_DIR/$s.jsonl" --ready "$RUN_DIR/$s.ready" \
                </dev/null >>"$RUN_DIR/$s.out" 2>&1 &
            echo $! >"$RUN_DIR/$s.pid"
        fi
        if ! pid_alive "$RUN_DIR/$s-decap.pid" dsr_decap.py >/dev/null; then
            rm -f "$RUN_DIR/$s-decap.ready"
            detached ip netns exec "tzm-$s" "$py" "$HERE/dsr_decap.py" --name "$s" --tun dsr0 \
                --stats "$RUN_DIR/$s-decap.json" --ready "$RUN_DIR/$s-decap.ready" \
                </dev/null >>"$RUN_DIR/$s-decap.out" 2>&1 &
            echo $! >"$RUN_DIR/$s-decap.pid"
        fi
    done
    for s in "${SERVERS[@]}"; do
        for i in $(seq 50); do
            [[ -e "$RUN_DIR/$s.ready" && -e "$RUN_DIR/$s-decap.ready" ]] && break
            sleep 0.1
        done
        [[ -e "$RUN_DIR/$s.ready" && -e "$RUN_DIR/$s-decap.ready" ]] ||
            die "server $s not ready: $(tail -3 "$RUN_DIR/$s.out" "$RUN_DIR/$s-decap.out")"
        nsx "tzm-$s" sysctl -qw net.ipv4.conf.dsr0.rp_filter=0
    done
}

# --- instances ------------------------------------------------------------------------------

mode_config() {
    local mode
    mode="$(cat "$RUN_DIR/mode" 2>/dev/null || echo token)"
    echo "$ROOT/configs/multi/$mode.toml"
}

# start_gw gwN: the daemon (waits until every backend is resolved), then its ExaBGP if absent.
start_gw() {
    local gw=$1 n pid i cfg
    n="$(gw_num "$gw")"
    [[ -x "$BIN" ]] || die "$BIN not built (cargo build --release -p trapeze-gatewayd)"
    if pid_alive "$RUN_DIR/$gw.pid" trapeze-gatewayd >/dev/null; then
        log "$gw already runs"
    else
        cfg="$(mode_config)"
        [[ -f "$cfg" ]] || die "no configuration $cfg"
        # @N@: the instance number; @PEERS@: the other instances' kernel addresses on port 7946
        # (token sharing); @RUN@: the run directory (e.g. the cluster secret, written once).
        local peers="" m
        for m in 1 2 3; do
            if ((m != n)); then peers+="${peers:+, }\"10.81.$m.2:7946\""; fi
        done
        [[ -s "$RUN_DIR/cluster.key" ]] || head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RUN_DIR/cluster.key"
        sed -e "s/@N@/$n/g" -e "s/@PEERS@/$peers/g" -e "s|@RUN@|$RUN_DIR|g" "$cfg" >"$RUN_DIR/$gw.toml"
        rm -rf "/var/run/dpdk/tzm-$gw"
        : >"$RUN_DIR/$gw.err"
        if [[ -n ${TZTB_GW_IMAGE:-} ]]; then
            # The instance as docker/compose.yml's service multi-gwN (profile "multi"); its PID
            # file holds the container's init (tini, whose command line names the daemon), so
            # stop_gw's signal reaches the daemon as on the host.
            export "TZM_GW${n}_NETWORK=container:tzm-$gw-holder" # (compose.yml: none otherwise)
            TZK_IMAGE=$TZTB_GW_IMAGE TZM_RUN_DIR=$RUN_DIR TZM_GRACE_MS=$GRACE_MS \
                detached docker-compose -f "$ROOT/docker/compose.yml" -p tzm --profile multi \
                up --no-color --no-log-prefix --force-recreate "multi-$gw" \
                </dev/null >"$RUN_DIR/$gw.err" 2>&1 &
            : >"$RUN_DIR/$gw.out" # (compose shows the container's two streams as one)
            pid=
            for i in $(seq 150); do
                pid="$(docker inspect -f '{{.State.Pid}}' "tzm_multi-${gw}_1" 2>/dev/null || true)"
                [[ -n $pid && $pid != 0 ]] && break
                sleep 0.2
            done
        else
            detached ip netns exec "tzm-$gw" "$BIN" --config "$RUN_DIR/$gw.toml" --no-huge \
                --api "unix:$RUN_DIR/$gw.sock" --stop-grace-ms "$GRACE_MS" \
                </dev/null >"$RUN_DIR/$gw.out" 2>"$RUN_DIR/$gw.err" &
            pid=$!
        fi
        echo "$pid" >"$RUN_DIR/$gw.pid"
        for i in $(seq 150); do
            grep -q "every backend is resolved" "$RUN_DIR/$gw.err" && break
            kill -0 "$pid" 2>/dev/null || die "$gw exited: $(tail -5 "$RUN_DIR/$gw.err")"
            sleep 0.2
        done
        grep -q "every backend is resolved" "$RUN_DIR/$gw.err" ||
            die "$gw did not resolve its backends in 30 s: $(tail -5 "$RUN_DIR/$gw.err")"
        log "$gw: daemon PID $pid"
    fi
    pid_alive "$RUN_DIR/$gw-exabgp.pid" exabgp >/dev/null || start_bgp "$gw"
}

write_exabgp() {
    local gw=$1 n=$2
    cat >"$RUN_DIR/$gw-exabgp.conf" <<EOF
# ExaBGP of instance $gw (written by testbed/multi.sh): the feeder polls the daemon's API.
process feed {
    run $CTL --api unix:$RUN_DIR/$gw.sock bgp-feed --next-hop4 10.81.$n.2 --next-hop6 fd81:$n::2 --neighbor4 10.81.$n.1 --neighbor6 fd81:$n::1 --interval-ms $FEED_MS;
    encoder text;
}
neighbor 10.81.$n.1 {
    router-id 10.81.$n.2;
    local-address 10.81.$n.2;
    local-as $GW_AS;
    peer-as $RTR_AS;
    hold-time 9;
    family { ipv4 unicast; }
    api { processes [ feed ]; }
}
neighbor fd81:$n::1 {
    router-id 10.81.$n.2;
    local-address fd81:$n::2;
    local-as $GW_AS;
    peer-as $RTR_AS;
    hold-time 9;
    family { ipv6 unicast; }
    api { processes [ feed ]; }
}
EOF
}

start_bgp() {
    local gw=$1 n
    n="$(gw_num "$gw")"
    write_exabgp "$gw" "$n"
    detached ip netns exec "tzm-$gw" env exabgp_daemon_user=root exabgp_daemon_daemonize=false \
        exabgp_api_cli=false exabgp_log_destination=stdout exabgp_daemon_pid= \
        exabgp "$RUN_DIR/$gw-exabgp.conf" </dev/null >>"$RUN_DIR/$gw-exabgp.out" 2>&1 &
    echo $! >"$RUN_DIR/$gw-exabgp.pid"
    log "$gw: ExaBGP PID $!"
}

stop_gw() {
    local gw=$1 sig=${2:-TERM}
    gw_num "$gw" >/dev/null
    stop_pid "$RUN_DIR/$gw.pid" trapeze-gatewayd "$sig"
    rm -rf "/var/run/dpdk/tzm-$gw"
}

# routes: the router's kernel routes for the VIPs.
routes() {
    nsx "$NS_RTR" ip route show proto bird
    nsx "$NS_RTR" ip -6 route show proto bird
}

# --- down -----------------------------------------------------------------------------------

do_down() {
    local gw s ns p
    for gw in "${INSTANCES[@]}"; do
        stop_pid "$RUN_DIR/$gw-exabgp.pid" exabgp
        stop_gw "$gw"
    done
    if [[ -s "$RUN_DIR/bird.pid" ]]; then stop_pid "$RUN_DIR/bird.pid" bird; fi
    for s in "${SERVERS[@]}"; do
        stop_pid "$RUN_DIR/$s.pid" mptcp_server.py
        stop_pid "$RUN_DIR/$s-decap.pid" dsr_decap.py
    done
    for ns in "${ALL_NS[@]}"; do
        ns_exists "$ns" || continue
        for p in $(ip netns pids "$ns" 2>/dev/null); do
            log "killing PID $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)) left in $ns"
            kill -TERM "$p" 2>/dev/null || true
        done
        sleep 0.2
        for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
        ip netns del "$ns"
        if [[ $ns == tzm-gw? ]] && command -v docker >/dev/null; then
            docker rm -f "$ns-holder" "tzm_multi-${ns#tzm-}_1" >/dev/null 2>&1 || true
        fi
    done
    for gw in "${INSTANCES[@]}"; do
        rm -rf "/var/run/dpdk/tzm-$gw"
        rm -f "/dev/hugepages/tzm-$gw.tzstate" "/dev/shm/tzm-$gw.tzstate" # [state] files
    done
    if [[ -d "$RUN_DIR" ]]; then
        rm -f "$RUN_DIR"/{state,mode,cluster.key,bird.conf,bird.ctl,bird.pid,bird.pid.launch,bird.out,bird.log}
        rm -f "$RUN_DIR"/srv?.{jsonl,out,ready,pid} "$RUN_DIR"/srv?-decap.{json,json.tmp,out,ready,pid}
        rm -f "$RUN_DIR"/gw?.{toml,out,err,pid,sock} "$RUN_DIR"/gw?-exabgp.{conf,out,pid}
        rmdir "$RUN_DIR" 2>/dev/null || log "kept $RUN_DIR (it holds other files)"
    fi
    log "down"
}

do_up() {
    local count=2 mode=token i
    while (($#)); do
        case "$1" in
            --instances) count=$2; shift 2 ;;
            --instances=*) count=${1#*=}; shift ;;
            --mode) mode=$2; shift 2 ;;
            --mode=*) mode=${1#*=}; shift ;;
            *) die "unknown option $1" ;;
        esac
    done
    [[ $count =~ ^[1-3]$ ]] || die "--instances takes 1..3"
    [[ -f "$ROOT/configs/multi/$mode.toml" ]] || die "no configs/multi/$mode.toml"
    install_tools
    local ns
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            log "tearing down the existing bed first"
            do_down
            break
        fi
    done
    mkdir -p "$RUN_DIR"
    echo "$mode" >"$RUN_DIR/mode"
    trap 'rc=$?; if ((rc)); then log "up failed: removing the bed"; do_down; fi' EXIT
    build
    start_servers
    start_bird
    for i in $(seq 1 "$count"); do start_gw "gw$i"; done
    echo "mode=multi instances=$count join_mode=$mode" >"$RUN_DIR/state"
    trap - EXIT
    log "up: $count instance(s), mode $mode; run dir $RUN_DIR"
}

do_status() {
    local gw s pid
    echo "run dir: $RUN_DIR  state: $(cat "$RUN_DIR/state" 2>/dev/null || echo none)"
    for gw in "${INSTANCES[@]}"; do
        printf '== %s: daemon %s, ExaBGP %s\n' "$gw" \
            "$(pid_alive "$RUN_DIR/$gw.pid" trapeze-gatewayd || echo -)" \
            "$(pid_alive "$RUN_DIR/$gw-exabgp.pid" exabgp || echo -)"
        if [[ -S "$RUN_DIR/$gw.sock" ]]; then
            "$CTL" --api "unix:$RUN_DIR/$gw.sock" --timeout 2 instance 2>&1 | sed 's/^/  /' || true
        fi
    done
    for s in "${SERVERS[@]}"; do
        echo "== $s: server $(pid_alive "$RUN_DIR/$s.pid" mptcp_server.py || echo -)," \
            "decapsulator $(pid_alive "$RUN_DIR/$s-decap.pid" dsr_decap.py || echo -)"
    done
    if [[ -S "$RUN_DIR/bird.ctl" ]]; then
        echo "== BIRD"
        birdc_ show protocols | sed 's/^/  /'
        echo "== router VIP routes"
        routes | sed 's/^/  /'
    fi
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        up) need_root; do_up "$@" ;;
        down) need_root; do_down ;;
        status) need_root; do_status ;;
        start) need_root; start_gw "$1" ;;
        stop) need_root; stop_gw "$1" TERM ;;
        kill) need_root; stop_gw "$1" KILL ;;
        bgp-start) need_root; start_bgp "$1" ;;
        bgp-stop) need_root; gw_num "$1" >/dev/null; stop_pid "$RUN_DIR/$1-exabgp.pid" exabgp ;;
        drain | undrain)
            need_root
            gw_num "$1" >/dev/null
            "$CTL" --api "unix:$RUN_DIR/$1.sock" "instance-$cmd"
            ;;
        routes) need_root; routes ;;
        birdc) need_root; birdc_ "$@" ;;
        *)
            echo "usage: $0 up [--instances N] [--mode MODE] | down | status | start|stop|kill|drain|undrain|bgp-start|bgp-stop gwN | routes | birdc CMD..." >&2
            exit 2
            ;;
    esac
}

main "$@"

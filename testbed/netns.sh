#!/usr/bin/env bash
# netns.sh: the trapeze end-to-end test bed in network namespaces.
#
#   tz-client                 tz-gw                            tz-sw                     tz-srv1..3
#  +------------+  veth   +-----------------------+  veth  +------------------+  veth  +------------+
#  |       cli0 |---------| gw-c             gw-s |--------| sw-gw            |        |  lo: DSR   |
#  |            |         +-----------------------+        |  br-tz  sw-srv1 |--------| srv0  VIPs |
#  |            |          the gateway:                    |  (bridge)sw-srv2 |--------| srv0  dsr0 |
#  |            |          DPDK daemon (af_packet on       |          sw-srv3 |--------| srv0  (TUN)|
#  |            |          gw-c / gw-s), or a stand-in     |           sw-rtr |--+     +------------+
#  |            |                                          +------------------+  |      MPTCP servers
#  |            |  veth   +-----------------------+  veth                        |      + dsr_decap.py
#  |       cli1 |---------| rtr-c   tz-rtr  rtr-s |------------------------------+
#  +------------+         +-----------------------+
#   MPTCP client           a plain Linux router: the DSR return path (servers -> client)
#   2 addrs per family
#
# DSR (direct server return): the gateway sends client -> DSR-VIP packets to a server
# encapsulated (IPIP, IPv6-in-IPv6, GUE on udp/6080); the kernel here has no ipip / ip6_tunnel /
# fou, so dsr_decap.py (one per server) receives them on raw / UDP sockets and writes the inner
# packet into the TUN device dsr0. The four DSR VIPs sit on every server's lo; policy routing
# sends traffic FROM a DSR VIP via tz-rtr (10.91.0.254 / fd91::254) to the client's second
# interface cli1, bypassing the gateway; everything else (NAT replies, health-probe answers)
# still goes via the gateway. rp_filter is off in the client, the router and the servers. The
# server segment (gw-s, the bridge and its ports, srv0, rtr-s) has MTU 1600 so that an
# encapsulated full-size packet (1500 + up to 52 bytes) fits; the servers' routes say mtu 1500,
# so the MSS they advertise is unchanged (1460 / 1440).
#
# Usage (root):
#   netns.sh up [--standin=none|linux|linux-hash|afpacket|ecmp] [--static-neigh]
#   netns.sh ecmp srv1 srv3   (ecmp mode: the multipath route's nexthops are these servers)
#   netns.sh client-limits default|announce   (the client's MPTCP limits; `up` sets default)
#   netns.sh down
#   netns.sh status
#
# Every mode builds the DSR parts (tz-rtr, cli1, the VIPs on the servers' lo, the policy
# routes, the decapsulators): they are inert unless something sends encapsulated packets.
#
#   --standin=none        (default) DPDK mode: gw-c / gw-s are up, fixed MACs, offloads off, and
#                         nothing else: no IP address, no IPv6, no forwarding. The daemon opens
#                         them with net_af_packet and answers ARP/NDP itself.
#   --standin=linux       Linux forwards in tz-gw: ip_forward + nftables DNAT of both VIPs to ONE
#                         server (srv1). Every MPTCP check must pass here.
#   --standin=linux-hash  negative control: nftables DNAT by jhash(client addr, client port) over
#                         the three servers, i.e. a per-5-tuple L4 balancer that knows nothing
#                         of MPTCP. Plain TCP passes; MPTCP joins land on the wrong server.
#   --standin=afpacket    DPDK-mode wiring (as none) plus afpacket_standin.py in tz-gw: a
#                         userspace NAT to srv1 over AF_PACKET that answers ARP/NDP itself, i.e.
#                         what the daemon does on gw-c / gw-s, minus everything clever; and DSR
#                         for the four DSR VIPs (encapsulation towards one server per VIP, no
#                         return path). TZTB_AFPACKET_ARGS adds options (e.g. --no-dsr).
#   --standin=ecmp        the stateless anycast baseline: Linux forwards in tz-gw (no NAT) with an
#                         ECMP multipath route for both VIPs via the three servers, L4 hash
#                         (fib_multipath_hash_policy=1); every server holds the VIPs on its lo
#                         and its MPTCP server listens on port 80 too (and 8080). `netns.sh ecmp
#                         SERVER...` replaces the nexthops (a server leaves / rejoins the pool).
#   --static-neigh        permanent neighbour entries for the gateway addresses in the client and
#                         the servers (and for clients/servers in tz-gw in the linux modes), so no
#                         ARP/NDP is needed towards the gateway.
#
# `up` is idempotent: if the bed is already up in the same mode it only makes sure the servers
# (and the afpacket stand-in) run; otherwise it tears the old one down and builds a fresh one.
# If `up` fails half-way, a trap removes exactly what this invocation created. `down` kills the
# servers and the afpacket stand-in (by their PID files) and any other process left inside a
# tz-* namespace (by PID, with a message), deletes the tz-* namespaces (which deletes every veth
# and the bridge) and the run directory. The decapsulators are stopped like the servers.
#
# Run directory: $TZTB_RUN_DIR (default /tmp/tz-testbed): state, srvN.pid, srvN.jsonl (per
# connection records of each server), srvN.out (server stderr), gw.pid / gw.out (afpacket),
# srvN-decap.pid / srvN-decap.json (decapsulator counters) / srvN-decap.out.
# Nothing outside the tz-* namespaces is touched (no host interface, route or sysctl).

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
RUN_DIR="${TZTB_RUN_DIR:-/tmp/tz-testbed}"

NS_CLI=tz-client
NS_GW=tz-gw
NS_SW=tz-sw
NS_RTR=tz-rtr
SERVERS=(srv1 srv2 srv3)
ALL_NS=("$NS_CLI" "$NS_GW" "$NS_SW" tz-srv1 tz-srv2 tz-srv3 "$NS_RTR")

# Interfaces and MACs.
CLI_IF=cli0
CLI_MAC=02:90:00:00:00:02
GWC_IF=gw-c
GWC_MAC=02:90:00:00:00:01
GWS_IF=gw-s
GWS_MAC=02:91:00:00:00:01
BR_IF=br-tz
BR_MAC=02:91:00:00:ff:00
SWGW_IF=sw-gw
SWGW_MAC=02:91:00:00:ff:01
SRV_IF=srv0
# srvN: srv0 MAC 02:91:00:00:00:1N, bridge port sw-srvN MAC 02:91:00:00:ff:1N.
# DSR return path: tz-rtr's leg on the server segment and its leg to the client.
RTRS_IF=rtr-s
RTRS_MAC=02:91:00:00:00:fe
SWRTR_IF=sw-rtr
SWRTR_MAC=02:91:00:00:ff:fe
RTRC_IF=rtr-c
RTRC_MAC=02:92:00:00:00:01
CLI1_IF=cli1
CLI1_MAC=02:92:00:00:00:02
DECAP_IF=dsr0
# The server segment carries encapsulated full-size packets: 1500 + at most 52 (GUE over IPv6).
SEG_MTU=1600
PATH_MTU=1500

# Addresses.
CLI4=10.90.0.2
CLI4B=10.90.0.3
CLI6=fd90::2
CLI6B=fd90::3
GWC4=10.90.0.1
GWC6=fd90::1
GWS4=10.91.0.1
GWS6=fd91::1
VIP4=10.90.100.10
VIP6=fd90:100::10
VIP_PORT=80
SRV_PORT=8080
# srvN: 10.91.0.1N/24, fd91::1N/64.
RTRS4=10.91.0.254
RTRS6=fd91::254
RTRC4=10.92.0.1
RTRC6=fd92::1
CLI1_4=10.92.0.2
CLI1_6=fd92::2
# DSR VIPs (port 8080 = the servers' port): dsr-ipip4, dsr-gue4, dsr-ipip6, dsr-gue6.
DSR_VIP4=(10.90.100.20 10.90.100.21)
DSR_VIP6=(fd90:100::20 fd90:100::21)
DSR_TABLE=100

log() { printf '[netns.sh] %s\n' "$*" >&2; }
die() {
    printf 'netns.sh: %s\n' "$*" >&2
    exit 1
}

nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

ns_exists() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

srv_num() { echo "${1#srv}"; }
srv_ns() { echo "tz-$1"; }
srv_mac() { echo "02:91:00:00:00:1$(srv_num "$1")"; }
srv_port_mac() { echo "02:91:00:00:ff:1$(srv_num "$1")"; }
srv4() { echo "10.91.0.1$(srv_num "$1")"; }
srv6() { echo "fd91::1$(srv_num "$1")"; }

need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root"; }

# detached CMD...: exec CMD with only file descriptors 0-2 (run it in the background). A caller
# holding /tmp/tz-testbed.lock (`flock /tmp/tz-testbed.lock netns.sh up`, or e2e.sh's fd 9) must
# not pass the lock on to the servers, the decapsulators and the stand-in: they outlive `up`, and
# the lock would stay held (every later `flock` waiting) until `down` kills them.
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
    command -v nft >/dev/null || missing+=(nftables)
    command -v tcpdump >/dev/null || missing+=(tcpdump)
    command -v ethtool >/dev/null || missing+=(ethtool)
    command -v nstat >/dev/null || missing+=(iproute2)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
    fi
    command -v python3 >/dev/null || die "python3 is required"
}

python_bin() {
    local py
    py="$(python3 -c 'import sys; print(sys.executable)')"
    "$py" -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262).close()' ||
        die "$py cannot open an MPTCP socket (IPPROTO_MPTCP=262; net.mptcp.enabled?)"
    echo "$py"
}

# --- teardown -------------------------------------------------------------------------------

# pid_is_ours PIDFILE [SCRIPT]: prints the PID if it is alive and runs SCRIPT (one of ours).
pid_is_ours() {
    local f=$1 script=${2:-mptcp_server.py} pid
    [[ -s "$f" ]] || return 1
    pid="$(cat "$f")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "$script" || return 1
    echo "$pid"
}

# stop_pidfile PIDFILE SCRIPT: SIGTERM (then SIGKILL after 3 s) the process, remove the file.
stop_pidfile() {
    local pid i
    if pid="$(pid_is_ours "$1" "$2")"; then
        kill -TERM "$pid" 2>/dev/null || true
        for i in $(seq 30); do
            [[ -d "/proc/$pid" ]] || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$1"
}

stop_servers() {
    local s
    stop_pidfile "$RUN_DIR/gw.pid" afpacket_standin.py
    for s in "${SERVERS[@]}"; do
        stop_pidfile "$RUN_DIR/$s.pid" mptcp_server.py
        stop_pidfile "$RUN_DIR/$s-decap.pid" dsr_decap.py
        rm -f "$RUN_DIR/$s.ready" "$RUN_DIR/$s-decap.ready"
    done
}

# del_ns NS: kill what still runs inside (by PID), then delete the namespace (and its links).
del_ns() {
    local ns=$1 p
    ns_exists "$ns" || return 0
    for p in $(ip netns pids "$ns" 2>/dev/null); do
        log "killing PID $p ($(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null | cut -c1-80)) left in $ns"
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.2
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
    ip netns del "$ns"
    if [[ $ns == "$NS_GW" ]] && command -v docker >/dev/null; then
        docker rm -f tz-gw-holder >/dev/null 2>&1 || true
    fi
}

do_down() {
    stop_servers
    local ns
    for ns in "${ALL_NS[@]}"; do del_ns "$ns"; done
    if [[ -d "$RUN_DIR" ]]; then
        rm -f "$RUN_DIR/state" "$RUN_DIR"/srv?.jsonl "$RUN_DIR"/srv?.out "$RUN_DIR/gw.out" \
            "$RUN_DIR"/srv?-decap.json "$RUN_DIR"/srv?-decap.json.tmp "$RUN_DIR"/srv?-decap.out
        rmdir "$RUN_DIR" 2>/dev/null || log "kept $RUN_DIR (it holds files not made by netns.sh)"
    fi
    log "down"
}

# --- build ----------------------------------------------------------------------------------

CREATED_NS=()
STARTED_PIDS=()

on_up_failure() {
    local rc=$?
    trap - EXIT
    if ((rc != 0)); then
        log "up failed (rc=$rc): removing what this run created"
        local p ns
        for p in "${STARTED_PIDS[@]:-}"; do
            if [[ -n "$p" ]]; then kill -TERM "$p" 2>/dev/null || true; fi
        done
        for ns in "${CREATED_NS[@]:-}"; do
            if [[ -n "$ns" ]]; then del_ns "$ns"; fi
        done
        rm -f "$RUN_DIR/state"
    fi
    exit "$rc"
}

mkns() {
    if [[ $1 == "$NS_GW" && -n ${TZTB_GW_IMAGE:-} ]]; then
        # Container mode (testbed/README.md): tz-gw is the network namespace of a holder
        # container of that image, so testbed/gateway.sh runs the daemon in containers sharing it.
        # (Docker turns IPv6 off in a container without a network; the Linux modes need it.)
        docker run -d --name tz-gw-holder --network none --entrypoint /usr/bin/tini \
            --sysctl net.ipv6.conf.all.disable_ipv6=0 --sysctl net.ipv6.conf.default.disable_ipv6=0 \
            "$TZTB_GW_IMAGE" -- sleep infinity >/dev/null
        ip netns attach "$1" "$(docker inspect -f '{{.State.Pid}}' tz-gw-holder)"
    else
        ip netns add "$1"
    fi
    CREATED_NS+=("$1")
    nsx "$1" ip link set lo up
    nsx "$1" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
    nsx "$1" sysctl -qw net.mptcp.enabled=1
}

# quiet NS DEV: no partial checksums, no TSO/GSO/GRO super-frames (an af_packet DPDK port would
# forward them as they are, and TCP through it breaks). Applied to every veth end and the bridge.
quiet() {
    nsx "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 ||
        die "ethtool -K $2 failed in $1"
    nsx "$1" ethtool -K "$2" rx off >/dev/null 2>&1 || true
}

# veth NS_A IF_A MAC_A NS_B IF_B MAC_B
veth() {
    ip link add "$2" netns "$1" address "$3" type veth peer name "$5" netns "$4" address "$6"
    quiet "$1" "$2"
    quiet "$4" "$5"
}

# seg_mtu NS DEV: the server segment's MTU on DEV.
seg_mtu() { nsx "$1" ip link set dev "$2" mtu "$SEG_MTU"; }

build_links() {
    local s
    mkns "$NS_CLI"
    mkns "$NS_GW"
    mkns "$NS_SW"
    for s in "${SERVERS[@]}"; do mkns "$(srv_ns "$s")"; done
    mkns "$NS_RTR"

    veth "$NS_CLI" "$CLI_IF" "$CLI_MAC" "$NS_GW" "$GWC_IF" "$GWC_MAC"
    veth "$NS_GW" "$GWS_IF" "$GWS_MAC" "$NS_SW" "$SWGW_IF" "$SWGW_MAC"
    for s in "${SERVERS[@]}"; do
        veth "$NS_SW" "sw-$s" "$(srv_port_mac "$s")" "$(srv_ns "$s")" "$SRV_IF" "$(srv_mac "$s")"
    done
    veth "$NS_RTR" "$RTRS_IF" "$RTRS_MAC" "$NS_SW" "$SWRTR_IF" "$SWRTR_MAC"
    veth "$NS_RTR" "$RTRC_IF" "$RTRC_MAC" "$NS_CLI" "$CLI1_IF" "$CLI1_MAC"

    # The server segment carries encapsulated full-size packets (DSR): MTU 1600 on every link of
    # it, the gateway's gw-s included (an af_packet port cannot send a frame above its MTU).
    seg_mtu "$NS_GW" "$GWS_IF"
    seg_mtu "$NS_SW" "$SWGW_IF"
    seg_mtu "$NS_SW" "$SWRTR_IF"
    seg_mtu "$NS_RTR" "$RTRS_IF"
    for s in "${SERVERS[@]}"; do
        seg_mtu "$NS_SW" "sw-$s"
        seg_mtu "$(srv_ns "$s")" "$SRV_IF"
    done

    # The switch: a plain learning bridge, no STP, no multicast snooping (so NDP's solicited-node
    # multicast is flooded to every port), no IP stack of its own.
    nsx "$NS_SW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$NS_SW" ip link add "$BR_IF" address "$BR_MAC" type bridge stp_state 0 forward_delay 0 \
        mcast_snooping 0
    quiet "$NS_SW" "$BR_IF"
    nsx "$NS_SW" ip link set "$BR_IF" up
    nsx "$NS_SW" ip link set "$SWGW_IF" master "$BR_IF" up
    for s in "${SERVERS[@]}"; do nsx "$NS_SW" ip link set "sw-$s" master "$BR_IF" up; done
    nsx "$NS_SW" ip link set "$SWRTR_IF" master "$BR_IF" up
    seg_mtu "$NS_SW" "$BR_IF"
    # The router's MAC is pinned to its port: a DSR reply (server -> router) is never flooded to
    # sw-gw (the server-link capture) while the bridge has not learnt it yet.
    nsx "$NS_SW" bridge fdb replace "$RTRS_MAC" dev "$SWRTR_IF" master static
}

config_client() {
    nsx "$NS_CLI" ip addr add "$CLI4/24" dev "$CLI_IF"
    nsx "$NS_CLI" ip addr add "$CLI4B/24" dev "$CLI_IF"
    nsx "$NS_CLI" ip addr add "$CLI6/64" dev "$CLI_IF" nodad
    nsx "$NS_CLI" ip addr add "$CLI6B/64" dev "$CLI_IF" nodad
    nsx "$NS_CLI" ip link set "$CLI_IF" up
    nsx "$NS_CLI" ip route add default via "$GWC4" dev "$CLI_IF" src "$CLI4"
    nsx "$NS_CLI" ip -6 route add default via "$GWC6" dev "$CLI_IF" src "$CLI6"
    # DSR return link: replies from the DSR VIPs arrive on cli1 (via tz-rtr) for addresses that
    # live on cli0, so no reverse-path filter. Nothing is routed out of cli1 but its subnet.
    nsx "$NS_CLI" ip addr add "$CLI1_4/24" dev "$CLI1_IF"
    nsx "$NS_CLI" ip addr add "$CLI1_6/64" dev "$CLI1_IF" nodad
    nsx "$NS_CLI" ip link set "$CLI1_IF" up
    nsx "$NS_CLI" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        "net.ipv4.conf.$CLI_IF.rp_filter=0" "net.ipv4.conf.$CLI1_IF.rp_filter=0"
    # Path manager: a second subflow from the second address of the connection's family. No
    # `dev cli0` on the endpoints: with it the kernel binds the join's socket to cli0
    # (SO_BINDTODEVICE), and a DSR join's SYN/ACK, which comes back on cli1, then finds no
    # socket and is answered with a RST. The route (default via the gateway on cli0) is the same.
    nsx "$NS_CLI" ip mptcp endpoint flush
    client_limits default
    nsx "$NS_CLI" ip mptcp endpoint add "$CLI4B" subflow
    nsx "$NS_CLI" ip mptcp endpoint add "$CLI6B" subflow
}

# client_limits default|announce: the client's MPTCP limits. `default`: the kernel's own (those
# of a fresh namespace; on Linux 6.18 add_addr_accepted 0 subflows 2): what clients as they come
# have, and all the token mode needs (the client's own subflow endpoint opens its joins).
# `announce`: add_addr_accepted 1 and nothing more, for scenarios whose joins follow an ADD_ADDR
# (join ports, announce = "backend", migration): with add_addr_accepted 0 Linux 6.18 takes no
# ADD_ADDR, whether the server set the C flag or not (testbed/c-flag-probe.sh measures it).
client_limits() {
    local limits
    read -r -a limits <<<"$(unshare --net ip mptcp limits show)"
    nsx "$NS_CLI" ip mptcp limits set "${limits[@]/#subflows/subflow}"
    case "$1" in
        default) ;;
        announce) nsx "$NS_CLI" ip mptcp limits set "${limits[@]/#subflows/subflow}" add_addr_accepted 1 ;;
        *) die "client-limits: default or announce" ;;
    esac
}

config_servers() {
    local s ns
    for s in "${SERVERS[@]}"; do
        ns="$(srv_ns "$s")"
        nsx "$ns" ip addr add "$(srv4 "$s")/24" dev "$SRV_IF"
        nsx "$ns" ip addr add "$(srv6 "$s")/64" dev "$SRV_IF" nodad
        nsx "$ns" ip link set "$SRV_IF" up
        # mtu 1500: the paths to the clients have MTU 1500 (srv0 has 1600 for DSR encapsulation),
        # so the MSS the servers advertise stays 1460 / 1440.
        nsx "$ns" ip route add default via "$GWS4" dev "$SRV_IF" mtu "$PATH_MTU"
        nsx "$ns" ip -6 route add default via "$GWS6" dev "$SRV_IF" mtu "$PATH_MTU"
        nsx "$ns" ip mptcp endpoint flush
        # Two joins per connection (the kernel default, stated). add_addr_accepted is left at 0:
        # it governs taking an ADD_ADDR, and no client here announces one.
        nsx "$ns" ip mptcp limits set subflow 2
    done
    config_servers_dsr
}

# DSR on the servers: the DSR VIPs on lo; traffic FROM a DSR VIP leaves via the router (table
# 100), everything else via the gateway; no reverse-path filter (decapsulated packets come in on
# dsr0 with the client as source).
config_servers_dsr() {
    local s ns v
    for s in "${SERVERS[@]}"; do
        ns="$(srv_ns "$s")"
        nsx "$ns" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
            "net.ipv4.conf.$SRV_IF.rp_filter=0"
        for v in "${DSR_VIP4[@]}"; do
            nsx "$ns" ip addr add "$v/32" dev lo
            nsx "$ns" ip rule add from "$v" lookup "$DSR_TABLE"
        done
        for v in "${DSR_VIP6[@]}"; do
            nsx "$ns" ip addr add "$v/128" dev lo nodad
            nsx "$ns" ip -6 rule add from "$v" lookup "$DSR_TABLE"
        done
        nsx "$ns" ip route add default via "$RTRS4" dev "$SRV_IF" table "$DSR_TABLE" mtu "$PATH_MTU"
        nsx "$ns" ip -6 route add default via "$RTRS6" dev "$SRV_IF" table "$DSR_TABLE" mtu "$PATH_MTU"
    done
}

# tz-rtr: a plain Linux router from the server segment to the client's second interface.
config_router() {
    nsx "$NS_RTR" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    nsx "$NS_RTR" sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
        "net.ipv4.conf.$RTRS_IF.rp_filter=0" "net.ipv4.conf.$RTRC_IF.rp_filter=0"
    nsx "$NS_RTR" ip addr add "$RTRS4/24" dev "$RTRS_IF"
    nsx "$NS_RTR" ip addr add "$RTRS6/64" dev "$RTRS_IF" nodad
    nsx "$NS_RTR" ip addr add "$RTRC4/24" dev "$RTRC_IF"
    nsx "$NS_RTR" ip addr add "$RTRC6/64" dev "$RTRC_IF" nodad
    nsx "$NS_RTR" ip link set "$RTRS_IF" up
    nsx "$NS_RTR" ip link set "$RTRC_IF" up
    nsx "$NS_RTR" ip route add "${CLI4%.*}.0/24" via "$CLI1_4" dev "$RTRC_IF"
    nsx "$NS_RTR" ip -6 route add "${CLI6%::*}::/64" via "$CLI1_6" dev "$RTRC_IF"
}

# DPDK mode: the kernel of tz-gw must stay out of the way (no address, no IPv6 link-local, no
# forwarding); the daemon owns the wire through af_packet.
config_gw_dpdk() {
    nsx "$NS_GW" sysctl -qw net.ipv4.ip_forward=0 net.ipv6.conf.all.forwarding=0
    nsx "$NS_GW" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
    nsx "$NS_GW" sysctl -qw "net.ipv6.conf.$GWC_IF.disable_ipv6=1" "net.ipv6.conf.$GWS_IF.disable_ipv6=1"
    nsx "$NS_GW" ip link set "$GWC_IF" up
    nsx "$NS_GW" ip link set "$GWS_IF" up
}

config_gw_linux() {
    local mode=$1 s
    nsx "$NS_GW" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
    nsx "$NS_GW" ip addr add "$GWC4/24" dev "$GWC_IF"
    nsx "$NS_GW" ip addr add "$GWC6/64" dev "$GWC_IF" nodad
    nsx "$NS_GW" ip addr add "$GWS4/24" dev "$GWS_IF"
    nsx "$NS_GW" ip addr add "$GWS6/64" dev "$GWS_IF" nodad
    nsx "$NS_GW" ip link set "$GWC_IF" up
    nsx "$NS_GW" ip link set "$GWS_IF" up
    if [[ $mode == ecmp ]]; then
        nsx "$NS_GW" sysctl -qw net.ipv4.fib_multipath_hash_policy=1 \
            net.ipv6.fib_multipath_hash_policy=1
        set_ecmp_nexthops "${SERVERS[@]}"
        return 0
    fi
    local s1_4 s1_6 map4="" map6="" i=0
    s1_4="$(srv4 srv1)"
    s1_6="$(srv6 srv1)"
    for s in "${SERVERS[@]}"; do
        map4+="${map4:+, }$i : $(srv4 "$s") . $SRV_PORT"
        map6+="${map6:+, }$i : $(srv6 "$s") . $SRV_PORT"
        i=$((i + 1))
    done
    local rule4 rule6
    case "$mode" in
        linux)
            rule4="dnat ip to $s1_4:$SRV_PORT"
            rule6="dnat ip6 to [$s1_6]:$SRV_PORT"
            ;;
        linux-hash)
            rule4="dnat ip to jhash ip saddr . tcp sport mod ${#SERVERS[@]} map { $map4 }"
            rule6="dnat ip6 to jhash ip6 saddr . tcp sport mod ${#SERVERS[@]} map { $map6 }"
            ;;
        *) die "unknown stand-in $mode" ;;
    esac
    # No SNAT: the servers route back through the gateway; conntrack reverses the DNAT.
    nsx "$NS_GW" nft -f - <<EOF
table inet tz-standin {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP4 tcp dport $VIP_PORT $rule4
        ip6 daddr $VIP6 tcp dport $VIP_PORT $rule6
    }
}
EOF
}

# set_ecmp_nexthops SERVER...: (ecmp mode) the VIP routes in tz-gw become a multipath route over
# exactly these servers (`ip route replace`: one atomic change per family; with no server the
# routes are removed).
set_ecmp_nexthops() {
    local s nh4=() nh6=()
    for s in "$@"; do
        case " ${SERVERS[*]} " in *" $s "*) ;; *) die "unknown server '$s'" ;; esac
        nh4+=(nexthop via "$(srv4 "$s")" dev "$GWS_IF")
        nh6+=(nexthop via "$(srv6 "$s")" dev "$GWS_IF")
    done
    if (($# == 0)); then
        nsx "$NS_GW" ip route del "$VIP4/32" 2>/dev/null || true
        nsx "$NS_GW" ip -6 route del "$VIP6/128" 2>/dev/null || true
        return 0
    fi
    nsx "$NS_GW" ip route replace "$VIP4/32" "${nh4[@]}"
    nsx "$NS_GW" ip -6 route replace "$VIP6/128" "${nh6[@]}"
}

# ecmp mode: the servers answer from the VIP (no NAT), so each holds both VIPs on lo.
config_servers_vip() {
    local s ns
    for s in "${SERVERS[@]}"; do
        ns="$(srv_ns "$s")"
        nsx "$ns" ip addr add "$VIP4/32" dev lo
        nsx "$ns" ip addr add "$VIP6/128" dev lo
    done
}

config_static_neigh() {
    local mode=$1 s a
    nsx "$NS_CLI" ip neigh replace "$GWC4" lladdr "$GWC_MAC" dev "$CLI_IF" nud permanent
    nsx "$NS_CLI" ip neigh replace "$GWC6" lladdr "$GWC_MAC" dev "$CLI_IF" nud permanent
    for s in "${SERVERS[@]}"; do
        nsx "$(srv_ns "$s")" ip neigh replace "$GWS4" lladdr "$GWS_MAC" dev "$SRV_IF" nud permanent
        nsx "$(srv_ns "$s")" ip neigh replace "$GWS6" lladdr "$GWS_MAC" dev "$SRV_IF" nud permanent
    done
    if [[ $mode == linux* || $mode == ecmp ]]; then
        for a in "$CLI4" "$CLI4B" "$CLI6" "$CLI6B"; do
            nsx "$NS_GW" ip neigh replace "$a" lladdr "$CLI_MAC" dev "$GWC_IF" nud permanent
        done
        for s in "${SERVERS[@]}"; do
            nsx "$NS_GW" ip neigh replace "$(srv4 "$s")" lladdr "$(srv_mac "$s")" dev "$GWS_IF" nud permanent
            nsx "$NS_GW" ip neigh replace "$(srv6 "$s")" lladdr "$(srv_mac "$s")" dev "$GWS_IF" nud permanent
        done
    fi
}

start_servers() {
    local py=$1 mode=$2 s pid i ports=(--port "$SRV_PORT")
    # ecmp mode: the VIP port as well (the servers own the VIP; nothing translates the port).
    if [[ $mode == ecmp ]]; then ports+=(--port "$VIP_PORT"); fi
    mkdir -p "$RUN_DIR"
    for s in "${SERVERS[@]}"; do
        if pid_is_ours "$RUN_DIR/$s.pid" >/dev/null; then continue; fi
        rm -f "$RUN_DIR/$s.ready"
        # `detached` and `ip netns exec` exec the command, so $! is the server's own PID.
        detached ip netns exec "$(srv_ns "$s")" "$py" "$HERE/mptcp_server.py" --name "$s" \
            "${ports[@]}" --log "$RUN_DIR/$s.jsonl" --ready "$RUN_DIR/$s.ready" \
            </dev/null >>"$RUN_DIR/$s.out" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        echo "$pid" >"$RUN_DIR/$s.pid"
        for i in $(seq 50); do
            [[ -e "$RUN_DIR/$s.ready" ]] && break
            kill -0 "$pid" 2>/dev/null || die "server $s exited: $(tail -3 "$RUN_DIR/$s.out")"
            sleep 0.1
        done
        [[ -e "$RUN_DIR/$s.ready" ]] || die "server $s not ready"
    done
}

# One DSR decapsulator per server (dsr_decap.py): TUN dsr0, counters in srvN-decap.json.
start_decaps() {
    local py=$1 s pid i
    mkdir -p "$RUN_DIR"
    for s in "${SERVERS[@]}"; do
        if pid_is_ours "$RUN_DIR/$s-decap.pid" dsr_decap.py >/dev/null; then continue; fi
        rm -f "$RUN_DIR/$s-decap.ready"
        detached ip netns exec "$(srv_ns "$s")" "$py" "$HERE/dsr_decap.py" --name "$s" --tun "$DECAP_IF" \
            --stats "$RUN_DIR/$s-decap.json" --ready "$RUN_DIR/$s-decap.ready" \
            </dev/null >>"$RUN_DIR/$s-decap.out" 2>&1 &
        pid=$!
        STARTED_PIDS+=("$pid")
        echo "$pid" >"$RUN_DIR/$s-decap.pid"
        for i in $(seq 50); do
            [[ -e "$RUN_DIR/$s-decap.ready" ]] && break
            kill -0 "$pid" 2>/dev/null || die "decapsulator of $s exited: $(tail -3 "$RUN_DIR/$s-decap.out")"
            sleep 0.1
        done
        [[ -e "$RUN_DIR/$s-decap.ready" ]] || die "decapsulator of $s not ready"
        [[ "$(nsx "$(srv_ns "$s")" sysctl -n "net.ipv4.conf.$DECAP_IF.rp_filter")" == 0 ]] ||
            die "rp_filter is not 0 on $DECAP_IF in $(srv_ns "$s")"
    done
}

# The userspace af_packet stand-in for the daemon (DPDK-mode wiring, see afpacket_standin.py).
start_afpacket_standin() {
    local py=$1 pid i extra=() skip
    if pid_is_ours "$RUN_DIR/gw.pid" afpacket_standin.py >/dev/null; then return 0; fi
    read -r -a extra <<<"${TZTB_AFPACKET_ARGS:-}"
    # readiness: "forwarding" in what this instance writes, not in an earlier one's lines
    skip=$(($(stat -c %s "$RUN_DIR/gw.out" 2>/dev/null || echo 0) + 1))
    detached ip netns exec "$NS_GW" "$py" "$HERE/afpacket_standin.py" "${extra[@]}" \
        </dev/null >>"$RUN_DIR/gw.out" 2>&1 &
    pid=$!
    STARTED_PIDS+=("$pid")
    echo "$pid" >"$RUN_DIR/gw.pid"
    for i in $(seq 50); do
        [[ "$(tail -c "+$skip" "$RUN_DIR/gw.out" 2>/dev/null)" == *forwarding* ]] && return 0
        kill -0 "$pid" 2>/dev/null || die "afpacket stand-in exited: $(tail -3 "$RUN_DIR/gw.out")"
        sleep 0.1
    done
    die "afpacket stand-in not ready"
}

all_ns_exist() {
    local ns
    for ns in "${ALL_NS[@]}"; do ns_exists "$ns" || return 1; done
}

do_up() {
    local mode=none static=0 arg
    for arg in "$@"; do
        case "$arg" in
            --standin=*) mode="${arg#--standin=}" ;;
            --standin) die "use --standin=linux (or none, linux-hash, afpacket, ecmp)" ;;
            --static-neigh) static=1 ;;
            *) die "unknown option $arg" ;;
        esac
    done
    case "$mode" in none | linux | linux-hash | afpacket | ecmp) ;; *) die "unknown stand-in '$mode'" ;; esac
    install_tools
    local py want
    py="$(python_bin)"
    want="mode=$mode static_neigh=$static${TZTB_GW_IMAGE:+ gw_image=$TZTB_GW_IMAGE}"
    if all_ns_exist && [[ -f "$RUN_DIR/state" && "$(cat "$RUN_DIR/state")" == "$want" ]]; then
        trap on_up_failure EXIT
        start_servers "$py" "$mode"
        start_decaps "$py"
        if [[ $mode == afpacket ]]; then start_afpacket_standin "$py"; fi
        client_limits default
        trap - EXIT
        log "already up ($want)"
        return 0
    fi
    local ns
    for ns in "${ALL_NS[@]}"; do
        if ns_exists "$ns"; then
            log "tearing down the existing bed first"
            do_down
            break
        fi
    done
    mkdir -p "$RUN_DIR"
    trap on_up_failure EXIT
    build_links
    config_client
    config_servers
    config_router
    if [[ $mode == ecmp ]]; then config_servers_vip; fi
    case "$mode" in
        none | afpacket) config_gw_dpdk ;;
        *) config_gw_linux "$mode" ;;
    esac
    if ((static)); then config_static_neigh "$mode"; fi
    start_servers "$py" "$mode"
    start_decaps "$py"
    if [[ $mode == afpacket ]]; then start_afpacket_standin "$py"; fi
    echo "$want" >"$RUN_DIR/state"
    trap - EXIT
    log "up ($want); run dir $RUN_DIR"
}

do_status() {
    local ns s pid
    echo "run dir: $RUN_DIR  state: $(cat "$RUN_DIR/state" 2>/dev/null || echo none)"
    for ns in "${ALL_NS[@]}"; do
        if ! ns_exists "$ns"; then
            echo "== $ns: absent"
            continue
        fi
        echo "== $ns"
        nsx "$ns" ip -br link show | grep -v '^lo ' | sed 's/^/  /'
        nsx "$ns" ip -br addr show | grep -v '^lo ' | awk 'NF > 2' | sed 's/^/  /'
        nsx "$ns" ip route show default | sed 's/^/  v4 /'
        nsx "$ns" ip -6 route show default 2>/dev/null | sed 's/^/  v6 /'
    done
    if ns_exists "$NS_CLI"; then
        echo "== MPTCP endpoints (tz-client)"
        nsx "$NS_CLI" ip mptcp endpoint show | sed 's/^/  /'
        nsx "$NS_CLI" ip mptcp limits show | sed 's/^/  /'
    fi
    if ns_exists "$NS_GW"; then
        echo "== tz-gw: ip_forward=$(nsx "$NS_GW" sysctl -n net.ipv4.ip_forward)" \
            "gw-s mtu=$(nsx "$NS_GW" cat "/sys/class/net/$GWS_IF/mtu" 2>/dev/null || echo ?)"
        nsx "$NS_GW" nft list ruleset 2>/dev/null | sed 's/^/  /'
        nsx "$NS_GW" ip route show "$VIP4/32" | sed 's/^/  v4 VIP route: /' || true
        nsx "$NS_GW" ip -6 route show "$VIP6/128" 2>/dev/null | sed 's/^/  v6 VIP route: /' || true
    fi
    for s in "${SERVERS[@]}"; do
        if pid="$(pid_is_ours "$RUN_DIR/$s.pid")"; then
            local n=0
            [[ -f "$RUN_DIR/$s.jsonl" ]] && n=$(wc -l <"$RUN_DIR/$s.jsonl")
            echo "== $s: server PID $pid, $n connections logged"
        else
            echo "== $s: server not running"
        fi
        if pid="$(pid_is_ours "$RUN_DIR/$s-decap.pid" dsr_decap.py)"; then
            echo "   DSR decapsulator PID $pid: $(python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
print(" ".join("%s=%s" % (k, d.get(k)) for k in ("ipip4", "ipip6", "gue4", "gue6", "bad")))' \
                "$RUN_DIR/$s-decap.json" 2>/dev/null || echo "no counters yet")"
        else
            echo "   DSR decapsulator not running"
        fi
        if ns_exists "$(srv_ns "$s")"; then
            echo "   lo: $(nsx "$(srv_ns "$s")" ip -br addr show dev lo | cut -d' ' -f2- | xargs)"
            nsx "$(srv_ns "$s")" ip rule show | grep "lookup $DSR_TABLE" | sed 's/^/   v4 rule /' || true
            nsx "$(srv_ns "$s")" ip -6 rule show | grep "lookup $DSR_TABLE" | sed 's/^/   v6 rule /' || true
            nsx "$(srv_ns "$s")" ip route show table "$DSR_TABLE" | sed 's/^/   v4 table 100: /' || true
            nsx "$(srv_ns "$s")" ip -6 route show table "$DSR_TABLE" | sed 's/^/   v6 table 100: /' || true
        fi
    done
    if ns_exists "$NS_RTR"; then
        echo "== tz-rtr: ip_forward=$(nsx "$NS_RTR" sysctl -n net.ipv4.ip_forward)" \
            "ipv6 forwarding=$(nsx "$NS_RTR" sysctl -n net.ipv6.conf.all.forwarding)"
        nsx "$NS_RTR" ip route show | sed 's/^/  v4 /'
        nsx "$NS_RTR" ip -6 route show | grep -v '^fe80' | sed 's/^/  v6 /'
    fi
}

main() {
    local cmd=${1:-}
    shift || true
    case "$cmd" in
        up)
            need_root
            do_up "$@"
            ;;
        down)
            need_root
            do_down
            ;;
        status)
            need_root
            do_status
            ;;
        client-limits)
            need_root
            ns_exists "$NS_CLI" || die "client-limits: the bed is not up"
            client_limits "${1:-}"
            log "client MPTCP limits: $(nsx "$NS_CLI" ip mptcp limits show)"
            ;;
        ecmp)
            need_root
            [[ "$(cat "$RUN_DIR/state" 2>/dev/null)" == mode=ecmp* ]] ||
                die "ecmp: the bed is not up in ecmp mode (netns.sh up --standin=ecmp)"
            set_ecmp_nexthops "$@"
            log "ecmp nexthops: ${*:-none}"
            ;;
        *)
            echo "usage: $0 up [--standin=none|linux|linux-hash|afpacket|ecmp] [--static-neigh] | down | status | ecmp SERVER... | client-limits default|announce" >&2
            exit 2
            ;;
    esac
}

main "$@"

#!/usr/bin/env bash
# make-captures.sh: regenerate the golden MPTCP packet captures in ./captures.
#
# Every capture is made on a fresh three-namespace topology and torn down afterwards:
#
#   tzcap-cli                      tzcap-nat                          tzcap-srv
#   +-----------+    veth pair    +-----------------------+  veth   +-----------+
#   |      cli0 |-----------------| natc0           nats0 |---------| srv0      |
#   +-----------+                 +-----------------------+         +-----------+
#    client, 2 addrs               Linux forwarding + nftables        real MPTCP
#    (MPTCP path manager           DNAT  VIP:80 -> server:8080        server
#     opens a 2nd subflow)         (no SNAT; the server routes
#                                   back through it)
#
# tcpdump runs in tzcap-nat on natc0 (-> <name>.client.pcap, the packets before DNAT) and on
# nats0 (-> <name>.server.pcap, the same packets after DNAT), full frames (-s 0), classic pcap,
# linktype Ethernet, filter "tcp" (static neighbour entries mean there is no ARP/ND anyway).
#
# Addresses, MACs, VIPs and ports (fixed, so the fixtures are stable; see README.md):
#   cli0   02:00:00:00:01:10   192.0.2.10/24 (primary)  192.0.2.11/24 (2nd)
#                              2001:db8:1::10/64        2001:db8:1::11/64
#   natc0  02:00:00:00:01:01   192.0.2.1/24             2001:db8:1::1/64
#   nats0  02:00:00:00:02:01   198.51.100.1/24          2001:db8:2::1/64
#   srv0   02:00:00:00:02:10   198.51.100.10/24 (main)  198.51.100.11/24 (ADD_ADDR)
#                              2001:db8:2::10/64        2001:db8:2::11/64
#   VIP v4 203.0.113.10:80        -> DNAT -> 198.51.100.10:8080
#   VIP v6 [2001:db8:ff::10]:80   -> DNAT -> [2001:db8:2::10]:8080
#   client source port of the first subflow: 40000 (later subflows: kernel's choice)
#
# Captures:
#   v4_mptcp_join     client endpoint 192.0.2.11 "subflow": MP_CAPABLE + MP_JOIN through DNAT;
#                     once joined, the client marks its primary address backup (MP_PRIO), so
#                     the rest of the data flows on the joined subflow
#   v4_mptcp_add_addr server endpoint 198.51.100.11 port 8080 "signal": ADD_ADDR + echo, and the
#                     client's join straight to the announced address (routed, not DNATed)
#   v6_mptcp_join     as v4_mptcp_join over IPv6 (client endpoint 2001:db8:1::11)
#   v4_plain_tcp      plain TCP (IPPROTO_TCP on both ends) through the same DNAT
#
# Usage: sudo ./make-captures.sh [NAME...]   (default: all four; needs root, ip netns, an MPTCP
#        kernel; idempotent: stale tzcap-* namespaces are deleted first, outputs overwritten)
# Never touches interfaces outside its own namespaces.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="$HERE/captures"
PFX="tzcap"
NS_CLI="$PFX-cli"
NS_NAT="$PFX-nat"
NS_SRV="$PFX-srv"

MAC_CLI=02:00:00:00:01:10
MAC_NATC=02:00:00:00:01:01
MAC_NATS=02:00:00:00:02:01
MAC_SRV=02:00:00:00:02:10

CLI4=192.0.2.10
CLI4B=192.0.2.11
NATC4=192.0.2.1
NATS4=198.51.100.1
SRV4=198.51.100.10
SRV4B=198.51.100.11
VIP4=203.0.113.10

CLI6=2001:db8:1::10
CLI6B=2001:db8:1::11
NATC6=2001:db8:1::1
NATS6=2001:db8:2::1
SRV6=2001:db8:2::10
SRV6B=2001:db8:2::11
VIP6=2001:db8:ff::10

VIP_PORT=80
SRV_PORT=8080
CLI_PORT=40000

WORK=""
PIDS=()

log() { printf '[make-captures] %s\n' "$*" >&2; }

need_root() {
    if [[ $(id -u) -ne 0 ]]; then
        echo "make-captures.sh: must run as root" >&2
        exit 1
    fi
}

install_tools() {
    local missing=()
    command -v nft >/dev/null || missing+=(nftables)
    command -v tcpdump >/dev/null || missing+=(tcpdump)
    command -v ethtool >/dev/null || missing+=(ethtool)
    command -v nstat >/dev/null || missing+=(iproute2)
    command -v python3 >/dev/null || missing+=(python3)
    if ((${#missing[@]})); then
        log "installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >/dev/null
    fi
}

# Kill only the processes this script started, by PID. SIGTERM, not SIGINT: background jobs of a
# non-interactive shell ignore SIGINT. tcpdump flushes and closes its file on SIGTERM.
kill_pids() {
    local p
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] || continue
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" ]] || continue
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}

forget_pid() {
    local p keep=()
    for p in "${PIDS[@]:-}"; do
        [[ -n "$p" && "$p" != "$1" ]] && keep+=("$p")
    done
    PIDS=("${keep[@]:-}")
}

teardown() {
    kill_pids
    local ns
    for ns in "$NS_CLI" "$NS_NAT" "$NS_SRV"; do
        if ip netns list | awk '{print $1}' | grep -qx "$ns"; then
            # Deleting the namespace deletes its veth ends too.
            ip netns pids "$ns" 2>/dev/null | while read -r p; do kill "$p" 2>/dev/null || true; done
            ip netns del "$ns" 2>/dev/null || true
        fi
    done
}

cleanup() {
    local rc=$?
    teardown
    [[ -n "$WORK" && -d "$WORK" ]] && rm -rf "$WORK"
    exit "$rc"
}

nsx() {
    local ns=$1
    shift
    ip netns exec "$ns" "$@"
}

quiet_veth() {
    # Real wire-size frames with full checksums: no partial-checksum or GSO/GRO super-frames.
    nsx "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null 2>&1 || true
    nsx "$1" ethtool -K "$2" rx off >/dev/null 2>&1 || true
}

# setup MODE: MODE is one of v4_mptcp_join v4_mptcp_add_addr v6_mptcp_join v4_plain_tcp
setup() {
    local mode=$1
    teardown
    ip netns add "$NS_CLI"
    ip netns add "$NS_NAT"
    ip netns add "$NS_SRV"

    ip link add cli0 netns "$NS_CLI" type veth peer name natc0 netns "$NS_NAT"
    ip link add nats0 netns "$NS_NAT" type veth peer name srv0 netns "$NS_SRV"

    nsx "$NS_CLI" ip link set dev cli0 address "$MAC_CLI"
    nsx "$NS_NAT" ip link set dev natc0 address "$MAC_NATC"
    nsx "$NS_NAT" ip link set dev nats0 address "$MAC_NATS"
    nsx "$NS_SRV" ip link set dev srv0 address "$MAC_SRV"

    local ns
    for ns in "$NS_CLI" "$NS_NAT" "$NS_SRV"; do
        nsx "$ns" sysctl -qw net.ipv6.conf.all.accept_ra=0 net.ipv6.conf.default.accept_ra=0
        nsx "$ns" sysctl -qw net.mptcp.enabled=1
        nsx "$ns" ip link set lo up
    done
    nsx "$NS_NAT" sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1

    quiet_veth "$NS_CLI" cli0
    quiet_veth "$NS_NAT" natc0
    quiet_veth "$NS_NAT" nats0
    quiet_veth "$NS_SRV" srv0

    nsx "$NS_CLI" ip addr add "$CLI4/24" dev cli0
    nsx "$NS_CLI" ip addr add "$CLI4B/24" dev cli0
    nsx "$NS_CLI" ip addr add "$CLI6/64" dev cli0 nodad
    nsx "$NS_CLI" ip addr add "$CLI6B/64" dev cli0 nodad
    nsx "$NS_NAT" ip addr add "$NATC4/24" dev natc0
    nsx "$NS_NAT" ip addr add "$NATC6/64" dev natc0 nodad
    nsx "$NS_NAT" ip addr add "$NATS4/24" dev nats0
    nsx "$NS_NAT" ip addr add "$NATS6/64" dev nats0 nodad
    nsx "$NS_SRV" ip addr add "$SRV4/24" dev srv0
    nsx "$NS_SRV" ip addr add "$SRV4B/24" dev srv0
    nsx "$NS_SRV" ip addr add "$SRV6/64" dev srv0 nodad
    nsx "$NS_SRV" ip addr add "$SRV6B/64" dev srv0 nodad

    nsx "$NS_CLI" ip link set cli0 up
    nsx "$NS_NAT" ip link set natc0 up
    nsx "$NS_NAT" ip link set nats0 up
    nsx "$NS_SRV" ip link set srv0 up

    # Routes: client and server both go through the nat namespace (no SNAT needed).
    nsx "$NS_CLI" ip route add default via "$NATC4" dev cli0
    nsx "$NS_CLI" ip -6 route add default via "$NATC6" dev cli0
    nsx "$NS_SRV" ip route add default via "$NATS4" dev srv0
    nsx "$NS_SRV" ip -6 route add default via "$NATS6" dev srv0

    # Static neighbours: no ARP / ND in the captures, no resolution delays.
    nsx "$NS_CLI" ip neigh replace "$NATC4" lladdr "$MAC_NATC" dev cli0 nud permanent
    nsx "$NS_CLI" ip neigh replace "$NATC6" lladdr "$MAC_NATC" dev cli0 nud permanent
    local a
    for a in "$CLI4" "$CLI4B" "$CLI6" "$CLI6B"; do
        nsx "$NS_NAT" ip neigh replace "$a" lladdr "$MAC_CLI" dev natc0 nud permanent
    done
    for a in "$SRV4" "$SRV4B" "$SRV6" "$SRV6B"; do
        nsx "$NS_NAT" ip neigh replace "$a" lladdr "$MAC_SRV" dev nats0 nud permanent
    done
    nsx "$NS_SRV" ip neigh replace "$NATS4" lladdr "$MAC_NATS" dev srv0 nud permanent
    nsx "$NS_SRV" ip neigh replace "$NATS6" lladdr "$MAC_NATS" dev srv0 nud permanent

    # DNAT: VIP:80 -> server:8080, IPv4 and IPv6. No SNAT.
    nsx "$NS_NAT" nft -f - <<EOF
table inet $PFX {
    chain prerouting {
        type nat hook prerouting priority dstnat; policy accept;
        ip daddr $VIP4 tcp dport $VIP_PORT dnat ip to $SRV4:$SRV_PORT
        ip6 daddr $VIP6 tcp dport $VIP_PORT dnat ip6 to [$SRV6]:$SRV_PORT
    }
}
EOF

    # MPTCP path managers.
    nsx "$NS_CLI" ip mptcp endpoint flush
    nsx "$NS_SRV" ip mptcp endpoint flush
    nsx "$NS_CLI" ip mptcp limits set subflow 2 add_addr_accepted 2
    nsx "$NS_SRV" ip mptcp limits set subflow 2 add_addr_accepted 2
    case "$mode" in
        v4_mptcp_join) nsx "$NS_CLI" ip mptcp endpoint add "$CLI4B" dev cli0 subflow ;;
        v6_mptcp_join) nsx "$NS_CLI" ip mptcp endpoint add "$CLI6B" dev cli0 subflow ;;
        v4_mptcp_add_addr) nsx "$NS_SRV" ip mptcp endpoint add "$SRV4B" port "$SRV_PORT" dev srv0 signal ;;
        v4_plain_tcp) ;;
        *) echo "unknown mode $mode" >&2; exit 1 ;;
    esac
}

write_helpers() {
    cat >"$WORK/server.py" <<'EOF'
# Echo-ish server: read until EOF, answer with a 2000-byte response, close.
import socket, sys, time
IPPROTO_MPTCP = 262
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
proto = IPPROTO_MPTCP if sys.argv[2] == "mptcp" else socket.IPPROTO_TCP
addr, port, ready = sys.argv[3], int(sys.argv[4]), sys.argv[5]
ls = socket.socket(fam, socket.SOCK_STREAM, proto)
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind((addr, port))
ls.listen(4)
open(ready, "w").close()
c, peer = ls.accept()
got = 0
while True:
    b = c.recv(65536)
    if not b:
        break
    got += len(b)
body = (b"S" * 1999) + b"\n"
c.sendall(body)
time.sleep(0.3)
c.shutdown(socket.SHUT_WR)
# Drain until the client closed too, so neither side resets.
c.settimeout(3)
try:
    while c.recv(65536):
        pass
except OSError:
    pass
c.close()
ls.close()
print(f"server: peer={peer} got={got} sent={len(body)}", file=sys.stderr)
EOF
    cat >"$WORK/client.py" <<'EOF'
# Client: connect to the VIP from the primary address (fixed port) and send 4 x 1000 bytes,
# then half-close, read the answer, close. The first chunk completes the MP_CAPABLE handshake;
# only then does the path manager open its second subflow. If argv[7] is given, it is a shell
# command run (in the client namespace) once that subflow is up, before the other 3 chunks.
import socket, subprocess, sys, time
IPPROTO_MPTCP = 262
fam = socket.AF_INET6 if sys.argv[1] == "6" else socket.AF_INET
proto = IPPROTO_MPTCP if sys.argv[2] == "mptcp" else socket.IPPROTO_TCP
src, sport, dst, dport = sys.argv[3], int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
hook = sys.argv[7] if len(sys.argv) > 7 else ""
s = socket.socket(fam, socket.SOCK_STREAM, proto)
s.bind((src, sport))
s.connect((dst, dport))
time.sleep(0.3)
for i in range(4):
    s.sendall(bytes([0x41 + i]) * 999 + b"\n")
    time.sleep(0.3 if i == 0 else 0.1)
    if i == 0 and hook:
        subprocess.run(hook, shell=True, check=True)
        time.sleep(0.2)
s.shutdown(socket.SHUT_WR)
got = 0
while True:
    b = s.recv(65536)
    if not b:
        break
    got += len(b)
time.sleep(0.2)
s.close()
print(f"client: sent=4000 got={got}", file=sys.stderr)
EOF
}

nstat_srv() {
    # -a absolute, -s do not touch the history file, -z include zeros. Fresh netns => per capture.
    nsx "$NS_SRV" nstat -asz 2>/dev/null | awk -v k="$1" '$1 == k {print $2}'
}

capture() {
    local name=$1 fam proto vip
    setup "$name"
    case "$name" in
        v6_*) fam=6; vip=$VIP6 ;;
        *) fam=4; vip=$VIP4 ;;
    esac
    case "$name" in
        *plain*) proto=tcp ;;
        *) proto=mptcp ;;
    esac
    local src srvbind
    # The server binds its main address only: the ADD_ADDR endpoint owns SRV4B:8080 itself.
    if [[ $fam == 6 ]]; then src=$CLI6; srvbind=$SRV6; else src=$CLI4; srvbind=$SRV4; fi

    local cpcap="$WORK/$name.client.pcap" spcap="$WORK/$name.server.pcap"
    # -Z root: keep root so tcpdump can write into $WORK; -U: flush per packet.
    # Started with "ip netns exec" directly (it execs), so $! is tcpdump's own PID.
    ip netns exec "$NS_NAT" tcpdump -i natc0 -s 0 -U -nn -Z root -w "$cpcap" tcp 2>"$WORK/tcpdump-c.log" &
    PIDS+=("$!")
    ip netns exec "$NS_NAT" tcpdump -i nats0 -s 0 -U -nn -Z root -w "$spcap" tcp 2>"$WORK/tcpdump-s.log" &
    PIDS+=("$!")
    for _ in $(seq 50); do
        grep -q listening "$WORK/tcpdump-c.log" && grep -q listening "$WORK/tcpdump-s.log" && break
        sleep 0.1
    done

    rm -f "$WORK/ready"
    ip netns exec "$NS_SRV" "$PY" "$WORK/server.py" "$fam" "$proto" "$srvbind" "$SRV_PORT" "$WORK/ready" &
    local spid=$!
    PIDS+=("$spid")
    for _ in $(seq 50); do [[ -e "$WORK/ready" ]] && break; sleep 0.1; done

    # In the join captures, once the join is up, the client marks its primary address "backup"
    # (MP_PRIO on the first subflow), so the rest of the data in both directions moves to the
    # joined subflow and the fixture holds DSS data mappings on both subflows.
    local hook=""
    case "$name" in
        *_join) hook="ip mptcp endpoint add $src dev cli0 id 9 && ip mptcp endpoint change id 9 backup" ;;
    esac
    nsx "$NS_CLI" "$PY" "$WORK/client.py" "$fam" "$proto" "$src" "$CLI_PORT" "$vip" "$VIP_PORT" "$hook"
    wait "$spid"
    forget_pid "$spid" # reaped: never signal that PID again
    sleep 1 # let the last FIN/ACKs of every subflow go by

    local joinsyn joinack mpcsyn addaddr
    mpcsyn=$(nstat_srv MPTcpExtMPCapableSYNRX)
    joinsyn=$(nstat_srv MPTcpExtMPJoinSynRx)
    joinack=$(nstat_srv MPTcpExtMPJoinAckRx)
    addaddr=$(nsx "$NS_CLI" nstat -asz 2>/dev/null | awk '$1 == "MPTcpExtAddAddr" {print $2}')
    kill_pids
    log "$name: server MPCapableSYNRX=${mpcsyn:-0} MPJoinSynRx=${joinsyn:-0} MPJoinAckRx=${joinack:-0}; client AddAddr(rx)=${addaddr:-0}"

    case "$name" in
        *join | *add_addr)
            if [[ ${joinsyn:-0} -lt 1 || ${joinack:-0} -lt 1 ]]; then
                echo "make-captures.sh: $name: no MP_JOIN reached the server" >&2
                exit 1
            fi
            ;;
    esac
    cp "$cpcap" "$OUT/$name.client.pcap"
    cp "$spcap" "$OUT/$name.server.pcap"
    teardown
}

main() {
    need_root
    install_tools
    PY="$(python3 -c 'import sys; print(sys.executable)')"
    WORK="$(mktemp -d /tmp/tzcap.XXXXXX)"
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    mkdir -p "$OUT"
    write_helpers
    local names=("$@")
    ((${#names[@]})) || names=(v4_mptcp_join v4_mptcp_add_addr v6_mptcp_join v4_plain_tcp)
    local n
    for n in "${names[@]}"; do
        capture "$n"
    done
    for n in "${names[@]}"; do
        log "$n: $(tcpdump -r "$OUT/$n.client.pcap" -nn 2>/dev/null | wc -l) client-side / $(tcpdump -r "$OUT/$n.server.pcap" -nn 2>/dev/null | wc -l) server-side packets"
    done
}

main "$@"

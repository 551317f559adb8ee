#!/usr/bin/env bash
# End-to-end test of token sharing between two gateway instances ([cluster]), with real Linux
# MPTCP peers, in namespaces of its own (tzs-*; the tz-* bed is not touched).
#
#   tzs-client  cli0 10.90.0.2 (primary) ---- ga-c  tzs-gwa (instance A, 10.90.0.1 / 10.91.0.1)
#               cli2 10.90.1.2 (subflow) ---- gb-c  tzs-gwb (instance B, 10.90.1.1 / 10.91.0.2)
#               cli1 10.92.0.2 (return)  ---- rtr-c tzs-rtr 10.92.0.1 / 10.91.0.254
#   tzs-sw: bridge brs: ga-s, gb-s (the daemons' server ports), srv1..3 (10.91.0.11-13), rtr-s
#   tzs-gwa sync0 10.99.0.1/30 ---- tzs-gwb sync0 10.99.0.2/30   (kernel link: token sync UDP)
#
# Deterministic ECMP stand-in: the first subflow leaves from the client's primary address via A
# (main table), the join from the second address via B (`ip rule from 10.90.1.2 lookup 200`,
# the `subflow` endpoint on cli2). The VIP 10.90.100.20:8080 is DSR (IPIP): servers decapsulate
# with testbed/dsr_decap.py and answer through tzs-rtr, so neither gateway is on the return path
# (NAT would need it through the instance that saw the handshake).
#
#   1. no sync: every join reaches B, which does not know the token: B drops it (join_no_token),
#      no join reaches a server (MPJoinSynRx 0), no connection gets its join;
#   2. sync ([cluster] on both): every connection's join is established on the server that holds
#      the connection (the servers' own subflow lists), MPJoinNoTokenFound 0, B routed the joins
#      by remote owners; the figures: propagation delay learn on A -> applied on B (B's
#      counters), and third ACK -> first MP_JOIN SYN of the clients (testbed/join_delay.py);
#      once A reclaims the closed connections, its removals take the remote owners off B;
#   3. B's decoder end to end: a datagram with a wrong secret (rejected auth), a valid one before
#      any session (rejected epoch: B challenges the sender), the challenge answered (a session),
#      a valid one (applied), its replay (rejected sequence);
#   4. late joins through a restarted B: long connections via A, B started after their
#      handshakes, then the subflow endpoint added: every late join is routed by B from tokens
#      it only got from A's periodic refresh.
#
# Usage (root): testbed/e2e-tsync.sh   (TRAPEZE_GATEWAYD / TRAPEZECTL: prebuilt binaries;
# otherwise builds them; TZS_CONNECTIONS=16; TZS_BATCH sets [cluster] batch_interval, else the
# daemon's default). Artefacts: the printed directory.
set -euo pipefail
cd "$(dirname "$0")/.."
HERE=$PWD/testbed

exec 8>/tmp/tzs-testbed.lock
flock -w 300 8 || { echo "e2e-tsync: another run holds /tmp/tzs-testbed.lock" >&2; exit 1; }

N=${TZS_CONNECTIONS:-16}
BATCH=${TZS_BATCH:-}
BATCH_LINE=
if [ -n "$BATCH" ]; then BATCH_LINE="batch_interval = \"$BATCH\""; fi
if [ -z "${TRAPEZE_GATEWAYD:-}" ]; then
  cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
TD=${CARGO_TARGET_DIR:-target}
BIN=${TRAPEZE_GATEWAYD:-$TD/release/trapeze-gatewayd}
CTL=${TRAPEZECTL:-$TD/release/trapezectl}
OUT=$(mktemp -d /tmp/tzs-e2e.XXXXXX)
log() { printf '[e2e-tsync] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

NSES=(tzs-client tzs-sw tzs-gwa tzs-gwb tzs-rtr tzs-srv1 tzs-srv2 tzs-srv3)
PIDS=()
GWA_PID='' GWB_PID=''

cleanup() {
  local rc=$? p
  set +e
  for p in $GWA_PID $GWB_PID; do kill -TERM "$p" 2>/dev/null; done
  for p in $GWA_PID $GWB_PID; do wait "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
  for n in "${NSES[@]}"; do ip netns del "$n" 2>/dev/null; done
  rm -f /dev/hugepages/tzs-gw*map_* /dev/{hugepages,shm}/tzs-gw*.tzstate 2>/dev/null
  rm -rf /var/run/dpdk/tzs-gwa /var/run/dpdk/tzs-gwb 2>/dev/null
  log "artefacts in $OUT (exit $rc)"
}
trap cleanup EXIT

# Background processes are started with `ip netns exec` directly (it execs: $! is theirs).
nsx() { local n=$1; shift; ip netns exec "$n" "$@"; }
offload() { nsx "$1" ethtool -K "$2" tx off tso off gso off gro off >/dev/null; nsx "$1" ethtool -K "$2" rx off >/dev/null 2>&1 || true; }
# veth NS1 IF1 NS2 IF2
veth() {
  ip link add "$2" netns "$1" type veth peer name "$4" netns "$3"
  offload "$1" "$2"; offload "$3" "$4"
  nsx "$1" ip link set "$2" up; nsx "$3" ip link set "$4" up
}

for n in "${NSES[@]}"; do
  if ip netns list | grep -qw "$n"; then ip netns del "$n"; fi
done
for n in "${NSES[@]}"; do
  ip netns add "$n"
  nsx "$n" ip link set lo up
  nsx "$n" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  nsx "$n" sysctl -qw net.mptcp.enabled=1
done

# --- topology --------------------------------------------------------------------------------
nsx tzs-sw ip link add brs type bridge stp_state 0 mcast_snooping 0
nsx tzs-sw ip link set brs mtu 1600 up
veth tzs-client cli0 tzs-gwa ga-c
veth tzs-client cli2 tzs-gwb gb-c
veth tzs-client cli1 tzs-rtr rtr-c
veth tzs-gwa ga-s tzs-sw sws-ga
veth tzs-gwb gb-s tzs-sw sws-gb
veth tzs-rtr rtr-s tzs-sw sws-rtr
veth tzs-gwa sync0 tzs-gwb sync0
for s in 1 2 3; do veth tzs-srv$s srv0 tzs-sw sws-srv$s; done
for p in sws-ga sws-gb sws-rtr sws-srv1 sws-srv2 sws-srv3; do
  nsx tzs-sw ip link set "$p" mtu 1600 master brs
done
nsx tzs-gwa ip link set ga-s mtu 1600
nsx tzs-gwb ip link set gb-s mtu 1600
nsx tzs-rtr ip link set rtr-s mtu 1600
for g in a b; do nsx tzs-gw$g sysctl -qw net.ipv4.ip_forward=0; done
nsx tzs-gwa ip addr add 10.99.0.1/30 dev sync0
nsx tzs-gwb ip addr add 10.99.0.2/30 dev sync0

# client: primary via A, the join's address via B (policy routing), DSR replies on cli1
nsx tzs-client ip addr add 10.90.0.2/24 dev cli0
nsx tzs-client ip addr add 10.90.1.2/24 dev cli2
nsx tzs-client ip addr add 10.92.0.2/24 dev cli1
nsx tzs-client ip route add default via 10.90.0.1 dev cli0 src 10.90.0.2
nsx tzs-client ip route add default via 10.90.1.1 dev cli2 src 10.90.1.2 table 200
nsx tzs-client ip rule add from 10.90.1.2 lookup 200
nsx tzs-client sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 \
  net.ipv4.conf.cli0.rp_filter=0 net.ipv4.conf.cli1.rp_filter=0 net.ipv4.conf.cli2.rp_filter=0
nsx tzs-client ip mptcp endpoint flush
# The client keeps the kernel's default MPTCP limits (subflows 2, add_addr_accepted 0): its
# second subflow comes from its own endpoint, and token routing needs no announcement.
# No `dev`: a subflow bound to cli2 would not accept its SYN/ACK, which comes back on cli1 (DSR).
nsx tzs-client ip mptcp endpoint add 10.90.1.2 subflow

# router: server segment <-> the client's return link
nsx tzs-rtr sysctl -qw net.ipv4.ip_forward=1 net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0
nsx tzs-rtr ip addr add 10.91.0.254/24 dev rtr-s
nsx tzs-rtr ip addr add 10.92.0.1/24 dev rtr-c
nsx tzs-rtr ip route add 10.90.0.0/23 via 10.92.0.2 dev rtr-c

# servers: the DSR VIP on lo, answers from it via the router, decapsulation in user space
for s in 1 2 3; do
  ns=tzs-srv$s
  nsx $ns ip addr add 10.91.0.1$s/24 dev srv0
  nsx $ns ip link set srv0 mtu 1600
  nsx $ns ip route add default via 10.91.0.1 dev srv0 mtu 1500
  nsx $ns ip addr add 10.90.100.20/32 dev lo
  nsx $ns ip rule add from 10.90.100.20 lookup 100
  nsx $ns ip route add default via 10.91.0.254 dev srv0 table 100 mtu 1500
  nsx $ns sysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0 net.ipv4.conf.srv0.rp_filter=0
  nsx $ns ip mptcp endpoint flush
  # Default limits: a server accepts up to 2 joins per connection, which is all this test opens.
  ip netns exec $ns python3 "$HERE/mptcp_server.py" --name srv$s --port 8080 --log "$OUT/srv$s.jsonl" \
    --ready "$OUT/srv$s.ready" </dev/null >"$OUT/srv$s.out" 2>&1 &
  PIDS+=($!)
  ip netns exec $ns python3 "$HERE/dsr_decap.py" --name srv$s --tun dsr0 --stats "$OUT/srv$s-decap.json" \
    --ready "$OUT/srv$s-decap.ready" </dev/null >"$OUT/srv$s-decap.out" 2>&1 &
  PIDS+=($!)
done
for s in 1 2 3; do
  for _ in $(seq 50); do
    [ -e "$OUT/srv$s.ready" ] && [ -e "$OUT/srv$s-decap.ready" ] && break
    sleep 0.1
  done
  { [ -e "$OUT/srv$s.ready" ] && [ -e "$OUT/srv$s-decap.ready" ]; } || fail "server srv$s not ready"
  nsx tzs-srv$s sysctl -qw net.ipv4.conf.dsr0.rp_filter=0 net.ipv4.conf.all.rp_filter=0
done
log "topology up; servers and decapsulators running"

# --- daemon configurations -------------------------------------------------------------------
head -c 32 /dev/urandom | base64 >"$OUT/cluster.key"
chmod 600 "$OUT/cluster.key"
# config NAME CLIENT_IF SERVER_IF CLIENT_ADDR SERVER_ADDR [SYNC_LISTEN SYNC_PEER...]
config() {
  local name=$1 cif=$2 sif=$3 caddr=$4 saddr=$5 listen=${6:-} peers=${7:-}
  cat <<EOF
[eal]
args = ["--no-pci", "--file-prefix=tzs-$name", "--vdev=net_af_packet0,framecnt=4096,iface=$cif",
        "--vdev=net_af_packet1,framecnt=4096,iface=$sif", "-l", "0-1"]

[[ports]]
name = "client"
device = "net_af_packet0"
ipv4 = ["$caddr/24"]

[[ports]]
name = "server"
device = "net_af_packet1"
ipv4 = ["$saddr/24"]
mtu = 1600

[[vips]]
name = "dsr4"
address = "10.90.100.20"
port = 8080
mode = "dsr"
client_port = "client"
backends = ["srv1", "srv2", "srv3"]

[[backends]]
name = "srv1"
ipv4 = "10.91.0.11"
port = 8080
egress_port = "server"

[[backends]]
name = "srv2"
ipv4 = "10.91.0.12"
port = 8080
egress_port = "server"

[[backends]]
name = "srv3"
ipv4 = "10.91.0.13"
port = 8080
egress_port = "server"

[tables]
flow_capacity = 4096
token_capacity = 4096

[tables.timeouts]
# Closed connections release their tokens soon (step 2 checks that removals propagate).
closing = "1s"

[workers]
count = 1
idle_sleep_us = 50

[health]
enabled = false
EOF
  if [ -n "$listen" ]; then
    cat <<EOF

[cluster]
listen = "$listen"
peers = [$peers]
secret_file = "$OUT/cluster.key"
$BATCH_LINE
remote_timeout = "60s"
refresh_interval = "2s"
EOF
  fi
}
config gwa ga-c ga-s 10.90.0.1 10.91.0.1 >"$OUT/gwa-nosync.toml"
config gwb gb-c gb-s 10.90.1.1 10.91.0.2 >"$OUT/gwb-nosync.toml"
config gwa ga-c ga-s 10.90.0.1 10.91.0.1 10.99.0.1:7946 '"10.99.0.2:7946"' >"$OUT/gwa-sync.toml"
# B also lists 10.99.0.1:7947: the injector of step 3 sends from there.
config gwb gb-c gb-s 10.90.1.1 10.91.0.2 10.99.0.2:7946 '"10.99.0.1:7946", "10.99.0.1:7947"' >"$OUT/gwb-sync.toml"

# start_gw a|b TAG CONFIG
start_gw() {
  local g=$1 tag=$2 cfg=$3 pid
  ip netns exec "tzs-gw$g" "$BIN" --config "$cfg" --no-huge --api "unix:$OUT/gw$g.sock" \
    >"$OUT/$tag.out" 2>"$OUT/$tag.err" &
  pid=$!
  if [ "$g" = a ]; then GWA_PID=$pid; else GWB_PID=$pid; fi
  for _ in $(seq 100); do
    grep -q "every backend is resolved" "$OUT/$tag.err" 2>/dev/null && return 0
    kill -0 "$pid" 2>/dev/null || { cat "$OUT/$tag.err" >&2; fail "gateway $tag exited"; }
    sleep 0.2
  done
  cat "$OUT/$tag.err" >&2
  fail "gateway $tag did not resolve its backends"
}
stop_gws() {
  local p
  for p in $GWA_PID $GWB_PID; do kill -TERM "$p" 2>/dev/null || true; done
  for p in $GWA_PID $GWB_PID; do wait "$p" || fail "a gateway exited with $?"; done
  GWA_PID='' GWB_PID=''
}
stats() { "$CTL" --api "unix:$OUT/gw$1.sock" --json stats >"$2"; }
nstat_all() {
  for s in 1 2 3; do
    echo "srv$s $(nsx tzs-srv$s nstat -asz MPTcpExtMPJoinSynRx MPTcpExtMPJoinAckRx MPTcpExtMPJoinNoTokenFound MPTcpExtMPCapableSYNRX | awk 'NR>1 {printf "%s=%s ", $1, $2}')"
  done >"$1"
}
# client RUN JOIN_TIMEOUT: N connections from the primary address to the DSR VIP
client() {
  nsx tzs-client python3 "$HERE/transfers.py" _client --run "$1" --family 4 --proto mptcp \
    --vip dsr-ipip --connections "$N" --size-kb 64 --parallel 4 --expect-joins 1 \
    --join-timeout "$2" --first-chunk-kb 16 --chunk-kb 1024 --pause-ms 0 --stagger-ms 20 \
    --timeout 20 --linger 0.3 >"$OUT/$1-client.json"
}
capture() {
  ip netns exec tzs-client tcpdump -i "$2" -w "$OUT/$1-$2.pcap" -U -s 200 'tcp port 8080' \
    >"$OUT/$1-$2.tcpdump.log" 2>&1 &
  CAP_PID=$!
  PIDS+=("$CAP_PID")
}

# --- 1. no sync ------------------------------------------------------------------------------
start_gw a gwa-nosync "$OUT/gwa-nosync.toml"
start_gw b gwb-nosync "$OUT/gwb-nosync.toml"
nstat_all "$OUT/nosync-nstat-before.txt"
client nosync 1.5
sleep 0.5
nstat_all "$OUT/nosync-nstat-after.txt"
stats a "$OUT/nosync-gwa-stats.json"
stats b "$OUT/nosync-gwb-stats.json"
stop_gws

# --- 2. sync ---------------------------------------------------------------------------------
start_gw a gwa-sync "$OUT/gwa-sync.toml"
start_gw b gwb-sync "$OUT/gwb-sync.toml"
grep -q "cluster: token sync" "$OUT/gwa-sync.err" || fail "A did not start its sync thread"
capture sync cli0; c0=$CAP_PID
capture sync cli2; c2=$CAP_PID
sleep 1
nstat_all "$OUT/sync-nstat-before.txt"
client sync 4
sleep 0.5
nstat_all "$OUT/sync-nstat-after.txt"
kill -INT "$c0" "$c2" 2>/dev/null || true
stats a "$OUT/sync-gwa-stats.json"
stats b "$OUT/sync-gwb-stats.json"

# Removals: once A has reclaimed the closed connections' flows, their tokens go on B too.
for _ in $(seq 40); do
  stats b "$OUT/preinject-gwb-stats.json"
  python3 -c 'import json,sys; sys.exit(json.load(open(sys.argv[1]))["cluster"]["remote_tokens"] != 0)' \
    "$OUT/preinject-gwb-stats.json" && break
  sleep 0.25
done
stats a "$OUT/end-gwa-stats.json"

# --- 3. B's decoder end to end ---------------------------------------------------------------
nsx tzs-gwa python3 - "$OUT/cluster.key" >"$OUT/inject.log" 2>&1 <<'EOF'
import hashlib, hmac, socket, struct, sys, time
secret = open(sys.argv[1], "rb").read()
if secret.endswith(b"\n"):
    secret = secret[:-1]
def dgram(key, epoch, seq, token, name=b"srv2"):
    rec = struct.pack("!BIQB", 1, token, int(time.time() * 1e6), len(name)) + name
    body = b"TZS1" + struct.pack("!BBHQQ", 1, 0, 1, epoch, seq) + rec
    k = hashlib.sha256(key).digest()
    return body + hmac.new(k, body, hashlib.sha256).digest()
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("10.99.0.1", 7947))
dst = ("10.99.0.2", 7946)
k = hashlib.sha256(secret).digest()
s.sendto(dgram(b"not the secret at all", 1, 1, 0x01020304), dst)
# Authentic, but no session yet: refused (epoch), and B challenges this peer.
s.sendto(dgram(secret, 1, 1, 0x0a0b0c0d), dst)
# The latest challenge (B also retries every second while it has no session with us).
s.settimeout(3)
nonce = None
while True:
    try:
        m, _ = s.recvfrom(200)
    except socket.timeout:
        break
    if m[:5] == b"TZH1\x01" and len(m) == 72:
        nonce = m[8:24]
        s.settimeout(0.2)
assert nonce is not None, "no challenge from B"
# The response: the nonce, our epoch 1, last sequence sent 1 (the refused one).
resp = b"TZH1" + bytes([2, 0, 0, 0]) + nonce + struct.pack("!QQ", 1, 1)
s.sendto(resp + hmac.new(k, resp, hashlib.sha256).digest(), dst)
time.sleep(0.05)
good = dgram(secret, 1, 2, 0x0a0b0c0d)
s.sendto(good, dst)
time.sleep(0.05)
s.sendto(good, dst)
print("sent: bad secret, valid before a session, challenge answered, valid, replay")
EOF
sleep 0.3
stats b "$OUT/inject-gwb-stats.json"
stop_gws

# --- 4. late joins through a restarted B: the periodic refresh repairs it ----------------------
# Long connections through A with no subflow endpoint yet; B starts after their handshakes (it
# only hears of their tokens from A's refresh, every 2 s); then the endpoint is added and the
# kernel opens a join on every established connection, seconds after its handshake.
LATE=8
nsx tzs-client ip mptcp endpoint flush
start_gw a gwa-late "$OUT/gwa-sync.toml"
nstat_all "$OUT/late-nstat-before.txt"
ip netns exec tzs-client python3 "$HERE/transfers.py" _client --run late --family 4 --proto mptcp \
  --vip dsr-ipip --connections $LATE --size-kb 64 --parallel $LATE --expect-joins 0 \
  --first-chunk-kb 16 --chunk-kb 2 --pause-ms 400 --stagger-ms 20 --timeout 30 --linger 0.3 \
  >"$OUT/late-client.json" &
LATE_PID=$!
PIDS+=("$LATE_PID")
sleep 1
start_gw b gwb-late "$OUT/gwb-sync.toml"
sleep 2.5
nsx tzs-client ip mptcp endpoint add 10.90.1.2 subflow
wait "$LATE_PID" || fail "the late-join client failed"
sleep 0.5
nstat_all "$OUT/late-nstat-after.txt"
stats a "$OUT/late-gwa-stats.json"
stats b "$OUT/late-gwb-stats.json"
stop_gws

# --- checks ----------------------------------------------------------------------------------
python3 "$HERE/join_delay.py" --json "$OUT/sync-cli0.pcap" "$OUT/sync-cli2.pcap" >"$OUT/join-delay.json"
python3 - "$OUT" "$N" <<'EOF'
import json, sys
out, n = sys.argv[1], int(sys.argv[2])
fails = []
def check(ok, what):
    print("  [%s] %s" % ("ok" if ok else "FAIL", what))
    if not ok:
        fails.append(what)
def nstat(path):
    d = {}
    for line in open(path):
        srv, *kv = line.split()
        d[srv] = {k: int(v) for k, v in (x.split("=") for x in kv)}
    return d
def delta(tag):
    a, b = nstat("%s/%s-nstat-before.txt" % (out, tag)), nstat("%s/%s-nstat-after.txt" % (out, tag))
    return {s: {k: b[s].get(k, 0) - a[s].get(k, 0) for k in b[s]} for s in b}
def st(name):
    return json.load(open("%s/%s" % (out, name)))
def drops(s, reason):
    return sum(w.get("drops", {}).get(reason, 0) for w in s["workers"])
def events(s, ev):
    return sum(w.get("events", {}).get(ev, 0) for w in s["workers"])
def servers(run):
    recs = []
    for i in (1, 2, 3):
        for line in open("%s/srv%d.jsonl" % (out, i)):
            r = json.loads(line)
            if r.get("run") == run:
                recs.append(r)
    return recs
def joined_on_owner(r):
    return any(sf[1] and sf[1][0] == "10.90.1.2" for sf in r.get("subflows", []))

print("1. without sync")
d = delta("nosync")
c = json.load(open(out + "/nosync-client.json"))
a, b = st("nosync-gwa-stats.json"), st("nosync-gwb-stats.json")
tot = lambda k: sum(v.get("MPTcpExt" + k, 0) for v in d.values())
check(all(r["error"] is None for r in c), "%d/%d connections completed (first subflow via A)" % (sum(r["error"] is None for r in c), n))
check(drops(b, "join_no_token") >= n, "B refused the joins: join_no_token %d (>= %d: every join SYN, retransmissions included)" % (drops(b, "join_no_token"), n))
check(events(b, "join_routed") == 0 and events(a, "join_routed") == 0, "no join routed by A or B")
check(tot("MPJoinSynRx") == 0, "servers' MPJoinSynRx delta %d (no join reached a server)" % tot("MPJoinSynRx"))
srecs = servers("nosync")
check(not any(joined_on_owner(r) for r in srecs), "no server lists a subflow from 10.90.1.2")
nosync_nt = drops(b, "join_no_token")

print("2. with sync")
d = delta("sync")
c = json.load(open(out + "/sync-client.json"))
a, b = st("sync-gwa-stats.json"), st("sync-gwb-stats.json")
ca, cb = a.get("cluster"), b.get("cluster")
check(ca is not None and cb is not None, "cluster counters in both instances' /stats")
check(all(r["error"] is None for r in c), "%d/%d connections completed" % (sum(r["error"] is None for r in c), n))
srecs = servers("sync")
conns = {r["conn"] for r in srecs}
check(len(srecs) == n and len(conns) == n, "one server record per connection (%d)" % len(srecs))
owners = sum(joined_on_owner(r) for r in srecs)
check(owners == n, "%d/%d joins established on the server holding the connection (its own subflow list)" % (owners, n))
per = {s: v.get("MPTcpExtMPJoinSynRx", 0) for s, v in d.items()}
check(tot("MPJoinNoTokenFound") == 0, "servers' MPJoinNoTokenFound delta %d" % tot("MPJoinNoTokenFound"))
check(tot("MPJoinAckRx") >= n, "servers' MPJoinAckRx delta %d (>= %d), MPJoinSynRx per server %s" % (tot("MPJoinAckRx"), n, per))
byserver = {}
for r in srecs:
    byserver[r["server"]] = byserver.get(r["server"], 0) + 1
for s, k in per.items():
    check(k >= byserver.get(s, 0), "%s: MPJoinSynRx %d >= its connections %d" % (s, k, byserver.get(s, 0)))
check(events(b, "join_routed") >= n, "B routed %d joins (by remote owners); A routed %d" % (events(b, "join_routed"), events(a, "join_routed")))
check(ca["records_sent"] >= n and ca["datagrams_sent"] > 0, "A sent %d records in %d datagrams (%d refreshes of all its tokens, every 2 s)" % (ca["records_sent"], ca["datagrams_sent"], ca["refreshes"]))
check(cb["records_applied"] >= n, "B applied %d records (received %d)" % (cb["records_applied"], cb["records_received"]))
check(cb["rejected_auth"] + cb["rejected_sequence"] + cb["rejected_malformed"] == 0, "B rejected nothing from A")
raced = drops(b, "join_no_token")
print("  B: join_no_token %d (first join SYNs that arrived before the token; the client retransmits after 1 s)" % raced)
jd = json.load(open(out + "/join-delay.json"))
dl = cb["delay_count"]
mean = cb["delay_sum_us"] / dl if dl else 0
print("  propagation learn on A -> applied on B: n %d mean %.0f us max %d us; buckets (<=100us,250us,500us,1ms,2ms,5ms,10ms,100ms,1s,all) %s" % (dl, mean, cb["delay_max_us"], cb["delay_buckets"]))
print("  clients: third ACK -> first MP_JOIN SYN (ms): %s over %d connections" % (jd["ms"], jd["joined"]))
waits = sorted(r.get("join_wait_s", 0) for r in c)
print("  clients: wait for the join established (s): min %.3f median %.3f max %.3f" % (waits[0], waits[len(waits)//2], waits[-1]))

e = st("end-gwa-stats.json")
p = st("preinject-gwb-stats.json")["cluster"]
check(e["tokens"]["entries"] == 0 and p["remote_tokens"] == 0 and p["records_applied"] >= 2 * n,
      "removals: A released its %d tokens (left %d), B's remote owners went with them (left %d, applied %d)"
      % (n, e["tokens"]["entries"], p["remote_tokens"], p["records_applied"]))

print("3. B's decoder")
cb = st("preinject-gwb-stats.json")["cluster"]
i = st("inject-gwb-stats.json")["cluster"]
check(i["rejected_auth"] == cb["rejected_auth"] + 1, "wrong secret: rejected_auth %d" % i["rejected_auth"])
check(i["rejected_sequence"] == cb["rejected_sequence"] + 1, "replay: rejected_sequence %d" % i["rejected_sequence"])
check(i["records_applied"] == cb["records_applied"] + 1, "the valid datagram applied (%d)" % i["records_applied"])
check(i["rejected_epoch"] >= cb["rejected_epoch"] + 1 and i["sessions"] == cb["sessions"] + 1,
      "before the session: refused (rejected_epoch %d); the challenge answered: a session (%d)" % (i["rejected_epoch"], i["sessions"]))
print("4. late joins through a restarted B (tokens from A's refresh only)")
d = delta("late")
c = json.load(open(out + "/late-client.json"))
b = st("late-gwb-stats.json")
cb4 = b["cluster"]
late = len(c)
check(all(r["error"] is None for r in c), "%d/%d long connections completed" % (sum(r["error"] is None for r in c), late))
srecs = servers("late")
owners4 = sum(joined_on_owner(r) for r in srecs)
check(len(srecs) == late and owners4 == late, "%d/%d late joins established on the connection's server" % (owners4, late))
check(events(b, "join_routed") == late and drops(b, "join_no_token") == 0,
      "B routed %d joins, refused %d" % (events(b, "join_routed"), drops(b, "join_no_token")))
check(cb4["delay_count"] == 0 and cb4["records_applied"] >= late,
      "B learned them from refreshes only (%d records applied, %d fresh learns)" % (cb4["records_applied"], cb4["delay_count"]))
check(tot("MPJoinNoTokenFound") == 0, "servers' MPJoinNoTokenFound delta %d" % tot("MPJoinNoTokenFound"))

json.dump({"connections": n, "nosync_join_no_token": nosync_nt, "sync_join_no_token": raced,
           "sync_joins_on_owner": owners, "propagation_us": {"n": dl, "mean": mean, "max": cb["delay_max_us"], "buckets": cb["delay_buckets"]},
           "join_delay_ms": jd["ms"], "failed": fails}, open(out + "/summary.json", "w"))
sys.exit(1 if fails else 0)
EOF
log "PASS"

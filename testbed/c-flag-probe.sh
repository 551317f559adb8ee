#!/usr/bin/env bash
# c-flag-probe.sh: does a Linux MPTCP client take a server's ADD_ADDR, with the kernel's default
# limits or with add_addr_accepted 1, whether or not the server set the C flag ("do not join
# the initial address", RFC 8684 §3.1)? Two plain namespaces (tzx-cli, tzx-srv; not the test
# bed), a server announcing a second address (`ip mptcp endpoint ... signal`; C from
# net.mptcp.allow_join_initial_addr_port=0), one 1.5 s upload; the client's nstat says whether the
# ADD_ADDR arrived (MPTcpExtAddAddr) and whether it opened a join to it (MPJoinSynTx).
# Measured on Linux 6.18 (README "Join routing"): default limits (add_addr_accepted 0): no join,
# with or without C; add_addr_accepted 1: a join, with or without C.
#
# Usage (root): testbed/c-flag-probe.sh
set -euo pipefail

cleanup() { ip netns del tzx-cli 2>/dev/null || true; ip netns del tzx-srv 2>/dev/null || true; }
trap cleanup EXIT

# probe C(0|1) ADD_ADDR_ACCEPTED(default|N)
probe() {
  cleanup
  ip netns add tzx-cli
  ip netns add tzx-srv
  ip link add tzx-c netns tzx-cli type veth peer name tzx-s netns tzx-srv
  ip -n tzx-cli addr add 10.77.0.1/24 dev tzx-c
  ip -n tzx-srv addr add 10.77.0.2/24 dev tzx-s
  ip -n tzx-srv addr add 10.77.0.3/24 dev tzx-s
  ip -n tzx-cli link set lo up
  ip -n tzx-srv link set lo up
  ip -n tzx-cli link set tzx-c up
  ip -n tzx-srv link set tzx-s up
  ip netns exec tzx-cli sysctl -qw net.mptcp.enabled=1
  ip netns exec tzx-srv sysctl -qw net.mptcp.enabled=1 \
    net.mptcp.allow_join_initial_addr_port=$((1 - $1))
  ip -n tzx-srv mptcp limits set subflow 2 # the server announces; it takes no ADD_ADDR itself
  ip -n tzx-srv mptcp endpoint add 10.77.0.3 signal
  if [[ $2 != default ]]; then ip -n tzx-cli mptcp limits set add_addr_accepted "$2"; fi
  sleep 1 # DAD-free IPv4, but let the links settle
  ip netns exec tzx-srv python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.77.0.2", 9000)); s.listen(); c, _ = s.accept()
while c.recv(65536):
    pass' &
  local srv=$!
  sleep 0.5
  ip netns exec tzx-cli nstat -n >/dev/null
  ip netns exec tzx-cli python3 -c '
import socket, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)
s.connect(("10.77.0.2", 9000))
for _ in range(30):
    s.send(b"x" * 10000); time.sleep(0.05)
s.close()'
  wait "$srv"
  local ns
  ns=$(ip netns exec tzx-cli nstat -az MPTcpExtAddAddr MPTcpExtMPJoinSynTx | awk '/^MPTcp/ {printf "%s=%s ", $1, $2}')
  printf 'C=%s client limits: %-34s %s\n' "$1" "$(ip -n tzx-cli mptcp limits show)" "$ns"
}

uname -r
probe 0 default
probe 1 default
probe 0 1
probe 1 1

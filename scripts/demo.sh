#!/usr/bin/env bash
# The demo of the forwarding core: replays real Linux MPTCP captures (a connection with a join
# over IPv4 and over IPv6, one with ADD_ADDR, plain TCP), recorded across a real Linux DNAT,
# through trapeze's pipeline; prints each decision, which server every subflow reached, the
# tokens learned and the joins routed, and whether each output frame equals Linux's.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v cc >/dev/null || {
  [ "$(id -u)" -eq 0 ] || { echo "install build-essential first" >&2; exit 1; }
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq build-essential
}
exec cargo run --release --locked -q -p trapeze-core --example replay -- "$@"

#!/usr/bin/env bash
# Tests of the gateway image (docker/build.sh builds it), each against the real image and a real
# Docker engine, never privileged:
#
#   docker/test-container.sh caps        every capability of the list is needed: with each one
#                                        dropped in turn (32 MiB of af_packet rings, so that
#                                        IPC_LOCK counts), and without the hugetlbfs mount, the
#                                        daemon exits 1 with a one-line hint; with all of them it
#                                        forwards; without the preflight checks DPDK itself fails
#   docker/test-container.sh lifecycle   HEALTHCHECK healthy (seconds), /metrics on a published
#                                        loopback port, config mounted read-only, SIGHUP reload
#                                        bumps the version, `docker stop` exits 0 after
#                                        /instance showed `stopping`
#
# Names: containers tzk-ct-*, the namespace tzk-ct (the holder container's, attached), DPDK file
# prefix tzk-ct, temp dir /tmp/tzk-ct.*. Everything is removed at exit.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${TZK_IMAGE:-trapeze:latest}
# The list the README gives. IPC_LOCK matters once the af_packet rings (MAP_LOCKED) exceed
# RLIMIT_MEMLOCK (8 MiB in a container here): the caps test's ports use 4096-frame rings (32 MiB).
CAPS=(NET_ADMIN NET_RAW IPC_LOCK SYS_NICE)
work=$(mktemp -d /tmp/tzk-ct.XXXXXX)
log() { printf '[test-container] %s\n' "$*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

cleanup() {
  local c
  for c in $(docker ps -aq --filter name='^tzk-ct-'); do docker rm -f "$c" >/dev/null 2>&1 || true; done
  ip netns del tzk-ct 2>/dev/null || true
  rm -f /dev/hugepages/tzk-ct*.tzstate /dev/shm/tzk-ct*.tzstate
  rm -rf "$work"
}
trap cleanup EXIT
docker image inspect "$IMAGE" >/dev/null || fail "no image $IMAGE (docker/build.sh builds it)"
mountpoint -q /dev/hugepages || fail "the host has no hugetlbfs at /dev/hugepages"

# The image's configuration with this test's file prefix (its state file: /dev/hugepages/tzk-ct*).
config_for() { # PREFIX DIR [null]
  mkdir -p "$2"
  sed -e "s/\"--file-prefix=trapeze\"/\"--file-prefix=$1\"/" configs/container.toml >"$2/gateway.toml"
  if [ "${3:-}" = null ]; then
    # Null devices: no interfaces, no capabilities; the API, reload and stop do not need ports.
    # The [eal] args keep --no-pci and their own --file-prefix; only the devices change.
    sed -i -e 's/--vdev=net_af_packet0,iface=gw-c/--vdev=net_null0/' \
      -e 's/--vdev=net_af_packet1,iface=gw-s/--vdev=net_null1/' \
      -e 's/net_af_packet0"/net_null0"/; s/net_af_packet1"/net_null1"/' -e '/^mtu = /d' "$2/gateway.toml"
  fi
}

# wait_for CONTAINER PATTERN SECONDS: 0 once PATTERN is in its logs, 1 when it exited first or the
# time ran out.
wait_for() {
  local end=$((SECONDS + $3))
  while [ $SECONDS -lt $end ]; do
    docker logs "$1" 2>&1 | grep -q "$2" && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$1")" = true ] || return 1
    sleep 0.2
  done
  return 1
}

caps_test() {
  # A holder container owns the network namespace the gateways share: its veths gw-c and gw-s
  # (peers inside too) are what the af_packet ports open. Each case is a new container in it.
  docker run -d --name tzk-ct-holder --network none --entrypoint /usr/bin/tini "$IMAGE" -- sleep infinity >/dev/null
  local pid
  pid=$(docker inspect -f '{{.State.Pid}}' tzk-ct-holder)
  ip netns attach tzk-ct "$pid"
  ip -n tzk-ct link add gw-c type veth peer name c-peer
  ip -n tzk-ct link add gw-s mtu 1600 type veth peer name s-peer mtu 1600
  local l
  for l in gw-c c-peer gw-s s-peer; do ip -n tzk-ct link set "$l" up; done
  config_for tzk-ct "$work/caps"
  sed -i 's/--vdev=net_af_packet\([01]\),iface/--vdev=net_af_packet\1,framecnt=4096,iface/' "$work/caps/gateway.toml"

  # run_case NAME ENV HUGE CAP...: runs the daemon with exactly these capabilities (HUGE=1: with
  # the hugetlbfs mount); prints "forwarding" or "exit N: <its stderr>".
  run_case() {
    local name=$1 env=$2 huge=$3
    shift 3
    local args=(--name "tzk-ct-$name" --network container:tzk-ct-holder --cap-drop ALL
      -v "$work/caps:/etc/trapeze:ro" -e "TRAPEZE_NO_PREFLIGHT=$env")
    local c
    for c in "$@"; do args+=(--cap-add "$c"); done
    if [ "$huge" = 1 ]; then args+=(-v /dev/hugepages:/dev/hugepages); fi
    docker run -d "${args[@]}" "$IMAGE" --config /etc/trapeze/gateway.toml --stop-grace-ms 0 >/dev/null
    if wait_for "tzk-ct-$name" "forwarding; stop with" 30; then
      docker stop -t 10 "tzk-ct-$name" >/dev/null
      echo "forwarding (docker stop: exit $(docker inspect -f '{{.State.ExitCode}}' "tzk-ct-$name"))"
    else
      docker wait "tzk-ct-$name" >/dev/null
      echo "exit $(docker inspect -f '{{.State.ExitCode}}' "tzk-ct-$name"): $(docker logs "tzk-ct-$name" 2>&1 | wc -l) line(s): $(docker logs "tzk-ct-$name" 2>&1 | tail -n1)"
    fi
    docker rm -f "tzk-ct-$name" >/dev/null
  }

  local out
  out=$(run_case all 0 1 "${CAPS[@]}")
  log "with ${CAPS[*]} and /dev/hugepages: $out"
  [[ $out == "forwarding (docker stop: exit 0)" ]] || fail "the daemon did not forward with the full list"

  local drop rest c
  for drop in "${CAPS[@]}"; do
    rest=()
    for c in "${CAPS[@]}"; do [ "$c" = "$drop" ] || rest+=("$c"); done
    out=$(run_case "no-$drop" 0 1 "${rest[@]}")
    log "without $drop: $out"
    [[ $out == "exit 1: 1 line(s): trapeze-gatewayd: error: "*"$drop"* ]] ||
      fail "without $drop the daemon must exit 1 with one line naming $drop"
    # The check only names the cause: without it, DPDK itself fails (the capability is needed).
    out=$(run_case "no-$drop-raw" 1 1 "${rest[@]}")
    log "without $drop, preflight checks off: ${out:0:200}"
    [[ $out == exit* ]] || fail "without $drop and without the checks the daemon forwarded: $drop is not needed"
  done
  out=$(run_case no-huge 0 0 "${CAPS[@]}")
  log "without the hugetlbfs mount: $out"
  [[ $out == "exit 1: 1 line(s): trapeze-gatewayd: error: no hugetlbfs mount"* ]] ||
    fail "without /dev/hugepages the daemon must exit 1 with one line"
  log "caps: PASS (each of ${CAPS[*]} and the hugetlbfs mount is needed)"
}

lifecycle_test() {
  config_for tzk-ct-life "$work/life" null
  local t0=$SECONDS
  # The image's command line with the API on the container's interface, published on a loopback
  # port of the host. Off loopback the daemon requires a bearer token (docs/API.md): a secret
  # file mounted read-only; TRAPEZE_API_TOKEN_FILE makes the HEALTHCHECK's trapezectl send it.
  mkdir -p "$work/secret"
  head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$work/secret/api-token"
  chmod 0644 "$work/secret/api-token" # read by the container's user; the directory is ours
  local token
  token=$(cat "$work/secret/api-token")
  docker run -d --name tzk-ct-life --cap-drop ALL "${CAPS[@]/#/--cap-add=}" \
    -v /dev/hugepages:/dev/hugepages -v "$work/life:/etc/trapeze:ro" \
    -v "$work/secret:/run/secrets/trapeze:ro" -e TRAPEZE_API_TOKEN_FILE=/run/secrets/trapeze/api-token \
    -p 127.0.0.1::9180 "$IMAGE" \
    --config /etc/trapeze/gateway.toml --api 0.0.0.0:9180 \
    --api-token-file /run/secrets/trapeze/api-token --stop-grace-ms 2000 >/dev/null
  local health=
  while [ $((SECONDS - t0)) -le 30 ]; do
    health=$(docker inspect -f '{{.State.Health.Status}}' tzk-ct-life)
    [ "$health" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' tzk-ct-life)" = true ] || { docker logs tzk-ct-life >&2; fail "the container exited"; }
    sleep 0.5
  done
  [ "$health" = healthy ] || fail "not healthy within 30 s ($health)"
  log "healthy after $((SECONDS - t0)) s (HEALTHCHECK: trapezectl instance)"

  local api
  api=$(docker port tzk-ct-life 9180/tcp | head -n1)
  if curl -s -o /dev/null -w '%{http_code}' "http://$api/metrics" | grep -qv '^401$'; then
    fail "/metrics answered without the bearer token"
  fi
  curl -sf -H "Authorization: Bearer $token" "http://$api/metrics" >"$work/metrics" || fail "no /metrics on $api"
  log "/metrics on the host's $api: $(grep -c '^trapeze_' "$work/metrics") samples"

  if docker exec tzk-ct-life sh -c ': > /etc/trapeze/gateway.toml' 2>/dev/null; then
    fail "the configuration is writable inside the container"
  fi
  log "the configuration is read-only in the container"

  local v0 v1
  v0=$(curl -sf -H "Authorization: Bearer $token" "http://$api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
  # A new file in the mounted directory (the bind mount shows the directory, so a replaced file
  # is seen): srv1's weight 1 -> 3.
  awk 'BEGIN{n=0} /^weight = 1$/ && n==0 {print "weight = 3"; n=1; next} {print}' \
    "$work/life/gateway.toml" >"$work/life/gateway.toml.new"
  mv "$work/life/gateway.toml.new" "$work/life/gateway.toml"
  docker kill -s HUP tzk-ct-life >/dev/null
  for _ in $(seq 1 50); do
    v1=$(curl -sf -H "Authorization: Bearer $token" "http://$api/status" | python3 -c 'import json,sys; print(json.load(sys.stdin)["version"])')
    [ "$v1" -gt "$v0" ] && break
    sleep 0.1
  done
  [ "$v1" -gt "$v0" ] || fail "SIGHUP did not reload (version $v0 -> $v1)"
  log "SIGHUP: version $v0 -> $v1"

  # docker stop: SIGTERM -> the instance says `stopping` (VIPs withdrawn) for the stop grace
  # (2 s, shorter than docker stop's 10 s), then the daemon exits 0.
  docker stop -t 10 tzk-ct-life >/dev/null &
  local stopper=$! seen=0
  for _ in $(seq 1 100); do
    if curl -sf -H "Authorization: Bearer $token" "http://$api/instance" 2>/dev/null | grep -q '"stopping"'; then seen=1; break; fi
    sleep 0.05
  done
  wait "$stopper"
  local code
  code=$(docker inspect -f '{{.State.ExitCode}}' tzk-ct-life)
  [ "$seen" = 1 ] || fail "/instance never showed stopping"
  [ "$code" = 0 ] || { docker logs tzk-ct-life 2>&1 | tail -5 >&2; fail "docker stop: exit $code"; }
  log "docker stop: /instance showed stopping, exit $code"
  log "lifecycle: PASS"
}

case "${1:-}" in
  caps) caps_test ;;
  lifecycle) lifecycle_test ;;
  *) echo "usage: $0 caps|lifecycle" >&2; exit 2 ;;
esac

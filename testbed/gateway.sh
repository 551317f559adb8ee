# shellcheck shell=bash
# Sourced by the end-to-end scripts (e2e.sh, e2e-dsr.sh, e2e-joins.sh, e2e-restart.sh,
# e2e-collide.sh): the test-bed lock, the daemon's start and stop, and a harness run. The caller
# sets BIN (the daemon), OUT (its artefact directory) and log().

# One user of the test bed at a time: its namespace names are fixed (tz-*). The lock is held on
# fd 9 until the script exits.
tb_lock() {
  exec 9>/tmp/tz-testbed.lock
  flock -w 900 9 || { echo "the test bed is busy (another run holds /tmp/tz-testbed.lock)" >&2; exit 1; }
}

GW_PID=
GW_OUT=
GW_ERR=

# start_gateway CONFIG TAG [DAEMON ARGS...]: the daemon in tz-gw, its output in $OUT/TAG.out and
# .err (GW_OUT, GW_ERR); returns once it has resolved every backend, fails if it exits or does
# not within 20 s.
start_gateway() {
  local config=$1 tag=$2
  shift 2
  GW_OUT=$OUT/$tag.out GW_ERR=$OUT/$tag.err
  if [ -n "${TZTB_GW_IMAGE:-}" ]; then
    # Container mode (testbed/README.md): the image's daemon in a container sharing tz-gw (the
    # holder's namespace), with the image's capability list only; the repository (configs) is
    # mounted read-only at its own path, $OUT read-write. `docker run` passes SIGTERM on.
    docker run --rm --name tz-gw-daemon --network container:tz-gw-holder --cap-drop ALL \
      --cap-add NET_ADMIN --cap-add NET_RAW --cap-add IPC_LOCK --cap-add SYS_NICE \
      -v /dev/hugepages:/dev/hugepages -v "$PWD:$PWD:ro" -v "$OUT:$OUT" -w "$PWD" \
      "$TZTB_GW_IMAGE" --config "$config" "$@" >"$GW_OUT" 2>"$GW_ERR" &
  else
    ip netns exec tz-gw "$BIN" --config "$config" "$@" >"$GW_OUT" 2>"$GW_ERR" &
  fi
  GW_PID=$!
  for _ in $(seq 1 100); do
    if grep -q "every backend is resolved" "$GW_ERR" 2>/dev/null; then
      log "gateway up ($config): $(grep -c neighbour "$GW_ERR") backends resolved"
      return 0
    fi
    if ! kill -0 "$GW_PID" 2>/dev/null; then
      log "gateway exited during start-up:"
      cat "$GW_ERR" >&2
      return 1
    fi
    sleep 0.2
  done
  log "gateway did not resolve its backends in 20 s:"
  cat "$GW_ERR" >&2
  return 1
}

# stop_gateway: SIGTERM, then its exit status (0 when none is running).
stop_gateway() {
  [ -n "$GW_PID" ] || return 0
  local pid=$GW_PID
  GW_PID=
  kill -TERM "$pid" 2>/dev/null || true
  local status=0
  wait "$pid" || status=$?
  return "$status"
}

# transfers JSON REPORT ARGS...: one harness run (testbed/transfers.py ARGS), its JSON summary in
# JSON and its report in REPORT. A failed run is repeated once, and only when the harness proved
# the failure was the endpoints' own: the only failed checks are the payload digests, and a
# server's MPTCP stack reset a subflow (MP_TCPRST) after every segment before the reset had
# crossed the gateway unchanged (seen with Linux 6.18: MPTcpExtDSSNotMatching on the server).
# The repetition is logged and the first report kept as REPORT.first. (transfers.py itself
# passes such a run when it can prove more: every segment of every subflow of the connection
# crossed unchanged, none lost or added; this repetition is for when the captures cannot show
# that, e.g. a segment tcpdump missed.)
transfers() {
  local json=$1 report=$2
  shift 2
  if testbed/transfers.py "$@" >"$json" 2>"$report"; then
    return 0
  fi
  if grep -q "endpoint reset: .*crossed the gateway unchanged" "$report" \
    && ! grep '\[FAIL\]' "$report" | grep -qvE '\[FAIL\] (digest|echo) '; then
    mv "$report" "$report.first"
    log "transfers.py $* failed only after an endpoint's own MPTCP reset (every segment crossed the gateway unchanged; $report.first): running it again once"
    testbed/transfers.py "$@" >"$json" 2>"$report" && return 0
  fi
  return 1
}

# run TAG ARGS...: one harness run through `transfers`, kept as $OUT/TAG.json and $OUT/TAG.txt.
# On success it logs PASS with the report lines matching $RUN_SUMMARY (set by the caller); on
# failure, the failed checks and the RST line, and returns 1.
RUN_SUMMARY='^  RSTs'
run() {
  local tag=$1
  shift
  if ! transfers "$OUT/$tag.json" "$OUT/$tag.txt" "$@"; then
    log "$tag FAILED (transfers.py $*):"
    grep -E "FAIL|RSTs|decapsulators" "$OUT/$tag.txt" >&2 || true
    return 1
  fi
  log "$tag: PASS ($(grep -E "$RUN_SUMMARY" "$OUT/$tag.txt" | sed -E 's/^ *(\[PASS\] *)?//' | paste -sd ';' -))"
}

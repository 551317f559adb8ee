#!/usr/bin/env bash
# End-to-end test of several trapeze gateway instances behind an ECMP router, announced with BGP
# (issue 6), on the multi-instance bed (testbed/multi.sh: namespaces tzm-*, BIRD 2 router,
# instances with ExaBGP + `trapezectl bgp-feed`, DSR VIPs, three MPTCP servers).
#
# For each join-routing mode (testbed/multi-modes/MODE.env + configs/multi/MODE.toml; default:
# token and ports; --mode tsync for token sharing), with two instances announcing (gw1, gw2;
# gw3 wired but stopped):
#   steady   MPTCP connections with one join each over IPv4 (dsr-ipip) and IPv6 (dsr-gue). The
#            first subflow and the join are hashed by ECMP on their own 5-tuples, so they often
#            cross different instances. Reported: joins sent / established, join SYNs per
#            instance and per server (nstat), join_no_token drops per instance, RSTs.
#   kill9    paced transfers; `kill -9` of gw2 mid-transfer: its feeder sees the API refused and
#            withdraws; the router moves gw2's flows to gw1 (Maglev adopts them: same server).
#            Measured: kill -> route withdrawn on the router.
#   sigterm  the same with SIGTERM (gw2 restarted first): withdrawn at once, forwarding during
#            the stop grace (2 s), then exit. Measured: SIGTERM -> withdrawn, SIGTERM -> exit.
#   add      gw3 started mid-transfer: announced, ECMP re-spreads the flows over 3 instances.
#            Measured: start -> route has gw3.
#   drain    (long form) `trapezectl instance-drain` on gw1: withdrawn, forwarding goes on;
#            undrain: announced again. `health`: every backend drained on gw1: the VIPs have no
#            serving backend there and are withdrawn.
# Every scenario asserts: every connection completed with intact payload both ways (digests),
# no fallback to TCP, the DSR return path (nothing from a VIP on the client or server link);
# subflows that stayed on one instance saw no RST ("untouched"); in the steady runs, no RST at
# all and every join that reached a server reached the owner. Modes whose file says so
# (MODE_JOINS_ALL, MODE_MOVED_NO_RST) also require every join established and no RST on moved
# subflows; the token baseline only reports them.
#
# Usage (root):
#   testbed/e2e-multi.sh [--long] [--mode MODE]... [--no-build] [--keep-captures]
#   TRAPEZE_GATEWAYD / TRAPEZECTL: binaries (default: ${CARGO_TARGET_DIR:-target}/release/...,
#   built first unless --no-build or these are set).
# Short form (CI): under 3 minutes. --long: more and longer connections, IPv6 disruption runs,
# drain and health scenarios.
# Output: a line per scenario on stderr, everything in the directory printed at the end
# (results.jsonl, each run's transfers.py output, the daemons' logs; the captures of failed runs
# only, unless --keep-captures: a long form's captures take about 12 GB).
set -euo pipefail
cd "$(dirname "$0")/.."

LONG=0
BUILD=1
KEEP=0
MODES=()
while (($#)); do
    case "$1" in
        --long) LONG=1 ;;
        --no-build) BUILD=0 ;;
        --keep-captures) KEEP=1 ;;
        --mode) MODES+=("$2"); shift ;;
        --mode=*) MODES+=("${1#*=}") ;;
        *) echo "usage: $0 [--long] [--mode MODE]... [--no-build] [--keep-captures]" >&2; exit 2 ;;
    esac
    shift
done
((${#MODES[@]})) || MODES=(token ports)

TARGET=${CARGO_TARGET_DIR:-target}
export TRAPEZE_GATEWAYD=${TRAPEZE_GATEWAYD:-$TARGET/release/trapeze-gatewayd}
export TRAPEZECTL=${TRAPEZECTL:-$TARGET/release/trapezectl}
if ((BUILD)) && [[ -z "${TZM_NO_BUILD:-}" ]]; then
    cargo build --release --locked -q -p trapeze-gatewayd -p trapeze-control
fi
TRAPEZE_GATEWAYD=$(realpath "$TRAPEZE_GATEWAYD")
TRAPEZECTL=$(realpath "$TRAPEZECTL")

OUT=$(mktemp -d /tmp/tzm-e2e.XXXXXX)
export TZM_RUN_DIR=/tmp/tzm-testbed
export TZM_GRACE_MS=${TZM_GRACE_MS:-2000}
# transfers.py on this bed (same addresses as the tz bed; see transfers.py)
export TZTB_RUN_DIR=$TZM_RUN_DIR TZTB_NS_PREFIX=tzm- TZTB_GW_NS=tzm-gw1 \
    TZTB_SERVER_LINKS=sw-g1,sw-g2,sw-g3 \
    TZTB_GW_SERVER_SIDE=10.91.0.1,10.91.0.2,10.91.0.3,fd91::1,fd91::2,fd91::3

log() { printf '[e2e-multi] %s\n' "$*" >&2; }

# One user of the tzm bed at a time.
exec 8>/tmp/tzm-testbed.lock
flock -w 600 8 || { log "the tzm bed is busy (/tmp/tzm-testbed.lock)"; exit 1; }

BG_PIDS=()
cleanup() {
    local p
    for p in "${BG_PIDS[@]:-}"; do
        if [[ -n "$p" ]]; then kill "$p" 2>/dev/null || true; fi
    done
    cp "$TZM_RUN_DIR"/gw?.err "$TZM_RUN_DIR"/gw?-exabgp.out "$TZM_RUN_DIR"/bird.log "$OUT/" 2>/dev/null || true
    testbed/multi.sh down >/dev/null 2>&1 || true
}
trap cleanup EXIT

if ((LONG)); then
    STEADY=(-n 24)
    MOVE=(-n 24 --parallel 24 --size-kb 6144 --chunk-kb 32 --pause-ms 40 --join-timeout 1.5 --timeout 40)
    MOVE_AT=4
    MOVE_FAMILIES=(4 6)
else
    STEADY=(-n 12)
    MOVE=(-n 12 --parallel 12 --size-kb 3072 --chunk-kb 32 --pause-ms 50 --join-timeout 1.5 --timeout 30)
    MOVE_AT=2.5
    MOVE_FAMILIES=(4)
fi

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# has_nexthop N: the router's kernel routes for the VIPs go (also) via instance N, IPv4 and IPv6.
has_nexthop() {
    ip -n tzm-rtr route show proto bird | grep -q "via 10.81.$1.2 " &&
        ip -n tzm-rtr -6 route show proto bird | grep -q "via fd81:$1::2 "
}
has_no_nexthop() {
    ! ip -n tzm-rtr route show proto bird | grep -q "via 10.81.$1.2 " &&
        ! ip -n tzm-rtr -6 route show proto bird | grep -q "via fd81:$1::2 "
}

# wait_ms T0 TIMEOUT_S CMD...: polls CMD every 5 ms; prints the ms since T0 when it holds, or
# "timeout".
wait_ms() {
    local t0=$1 timeout=$2 end
    shift 2
    end=$(($(now_ms) + timeout * 1000))
    while (($(now_ms) < end)); do
        if "$@"; then
            echo $(($(now_ms) - t0))
            return 0
        fi
        sleep 0.005
    done
    echo timeout
    return 1
}

# stats TAG: every running instance's GET /stats.
stats() {
    local gw
    for gw in gw1 gw2 gw3; do
        [[ -S "$TZM_RUN_DIR/$gw.sock" ]] || continue
        "$TRAPEZECTL" --api "unix:$TZM_RUN_DIR/$gw.sock" --timeout 2 --json stats \
            >"$OUT/$1-$gw.stats.json" 2>/dev/null || rm -f "$OUT/$1-$gw.stats.json"
    done
}

# start_transfers TAG ARGS...: transfers.py in the background (its PID in TR_PID).
TR_PID=
start_transfers() {
    local tag=$1
    shift
    testbed/transfers.py "$@" --out "$OUT/$tag" >"$OUT/$tag.json" 2>"$OUT/$tag.txt" &
    TR_PID=$!
    BG_PIDS+=("$TR_PID")
}

# finish TAG KIND [EXTRA JSON]: waits for the run, analyses it (multi_report.py) and judges it.
# KIND: steady | move. Appends a line to results.jsonl; returns 1 on a failed assertion.
FAILED=0
finish() {
    local tag=$1 kind=$2 extra=${3:-"{}"} rc=0
    if [[ -n "$TR_PID" ]]; then
        wait "$TR_PID" || true
        TR_PID=
    fi
    if [[ ! -s "$OUT/$tag/summary.json" ]]; then
        log "$tag: no summary (transfers.py failed): $(tail -3 "$OUT/$tag.txt")"
        FAILED=1
        return 1
    fi
    testbed/multi_report.py "$OUT/$tag" >"$OUT/$tag.report.json"
    python3 - "$OUT/$tag.report.json" "$OUT/$tag/summary.json" "$kind" "$MODE_JOINS_ALL" \
        "$MODE_MOVED_NO_RST" "$tag" "$extra" "$OUT" "${MODE_SKIP_CHECKS:-}" \
        >>"$OUT/results.jsonl" <<'PY' || rc=$?
import glob, json, os, sys

rep, summ, kind, joins_all, moved_no_rst, tag, extra, out, skip = sys.argv[1:]
r, s = json.load(open(rep)), json.load(open(summ))
t = r["totals"]
checks = s["checks"]
need = ["completed", "server_records", "digest", "echo", "mptcp", "dsr_bypass"]
if kind == "steady":
    need += ["no_rst", "joins_on_owner", "joins_all_known", "no_token_found", "dsr_encap",
             "dsr_decap", "token_derivation"]
if joins_all == "1":
    need += ["joins_established", "data_on_joins", "nstat_consistent"]
if kind == "move" and moved_no_rst == "1":
    need += ["no_rst"]
need = [k for k in need if k not in skip.split()]
fail = ["%s: %s" % (k, checks[k]["detail"]) for k in need if k in checks and not checks[k]["ok"]]
# Untouched: an answered subflow that stayed on one instance never sees a RST (a join that was
# never answered, refused by an instance, ends with the client's own RST: reported apart).
for key, v in r["subflows"].items():
    if len(v["instances"]) <= 1 and v["rst"] and v["answered"]:
        fail.append("subflow %s (conn %d, %s) stayed on %s and saw %d RST(s)"
                    % (key, v["conn"], v["kind"], v["instances"], v["rst"]))
for k, v in json.loads(extra).items():
    if v == "timeout":
        fail.append("%s: the router's route did not change in time" % k)
# The instances' own counters (cumulative since each started), from GET /stats after the run.
drops = {}
for f in sorted(glob.glob(os.path.join(out, "%s-gw?.stats.json" % tag))):
    gw = f.rsplit("-", 1)[1].split(".")[0]
    d = json.load(open(f))
    tot = {}
    for w in d.get("workers", []):
        for k, n in list(w.get("drops", {}).items()) + list(w.get("events", {}).items()):
            if k in ("join_no_token", "nonsyn_miss", "join_owner_down", "join_ambiguous"):
                tot[k] = tot.get(k, 0) + n
    drops[gw] = tot
line = {"tag": tag, "kind": kind, "ok": not fail, "fail": fail, "totals": t,
        "instance_counters": drops, **json.loads(extra)}
print(json.dumps(line))
sys.exit(1 if fail else 0)
PY
    local last
    last=$(tail -1 "$OUT/results.jsonl")
    python3 - "$last" >&2 <<'PY'
import json, sys
l = json.loads(sys.argv[1])
t = l["totals"]
extra = {k: v for k, v in l.items() if k.endswith("_ms")}
print("[e2e-multi] %-16s %s  conns %d/%d  joins sent %d, at a server %d, established %d  "
      "first subflows moved %d (%d with RST), joins moved %d (%d with RST)  RSTs c/s/r %s "
      "(%d on unanswered joins)  "
      "instance counters %s %s"
      % (l["tag"], "PASS" if l["ok"] else "FAIL", t["completed"], t["connections"],
         t["joins_sent_by_client"], t["joins_reaching_a_server"], t["joins_established"],
         t["first_moved"], t["first_moved_with_rst"], t["join_moved"], t["join_moved_with_rst"],
         "/".join(str(v) for v in t["rst_links"].values()), t["rst_on_unanswered_joins"],
         l["instance_counters"],
         extra or ""))
for f in l["fail"]:
    print("[e2e-multi]     FAIL %s" % f)
PY
    if ((rc)); then
        FAILED=1
    elif ((!KEEP)); then
        # A passed run's captures are large (full frames: ~0.5 GB per long-form run).
        rm -f "$OUT/$tag"/*.pcap
    fi
    return 0
}

T_START=$(now_ms)
for MODE in "${MODES[@]}"; do
    [[ -f "testbed/multi-modes/$MODE.env" ]] || { log "no testbed/multi-modes/$MODE.env"; exit 1; }
    MODE_SKIP_CHECKS=
    MODE_TRANSFERS_ARGS=()
    # shellcheck disable=SC1090
    . "testbed/multi-modes/$MODE.env"
    log "mode $MODE: $MODE_DESC"
    testbed/multi.sh up --instances 2 --mode "$MODE" 2>"$OUT/$MODE-up.log" ||
        { cat "$OUT/$MODE-up.log" >&2; exit 1; }
    # Clients as they come (the kernel's default MPTCP limits) unless the mode says otherwise.
    read -r -a limits <<<"$(unshare --net ip mptcp limits show)"
    ip netns exec tzm-client ip mptcp limits set "${limits[@]/#subflows/subflow}"
    mode_servers_setup
    log "client MPTCP limits: $(ip netns exec tzm-client ip mptcp limits show)"
    wait_ms "$(now_ms)" 10 has_nexthop 2 >/dev/null || { log "gw2 never announced"; exit 1; }

    # steady: two instances, every connection hashed by ECMP
    for fam in 4 6; do
        vip=dsr-ipip
        if ((fam == 6)); then vip=dsr-gue; fi
        tag=$MODE-steady-v$fam
        start_transfers "$tag" "-$fam" --vip "$vip" "${STEADY[@]}" "${MODE_TRANSFERS_ARGS[@]}"
        wait "$TR_PID" || true
        TR_PID=
        stats "$tag"
        finish "$tag" steady
    done

    for fam in "${MOVE_FAMILIES[@]}"; do
        # kill9: gw2 dies mid-transfer
        tag=$MODE-kill9-v$fam
        start_transfers "$tag" "-$fam" --vip dsr-ipip "${MOVE[@]}" "${MODE_TRANSFERS_ARGS[@]}"
        sleep "$MOVE_AT"
        t0=$(now_ms)
        kill -KILL "$(cat "$TZM_RUN_DIR/gw2.pid")"
        w=$(wait_ms "$t0" 15 has_no_nexthop 2) || true
        wait "$TR_PID" || true
        TR_PID=
        stats "$tag"
        finish "$tag" move "{\"withdraw_ms\": \"$w\"}"
        testbed/multi.sh kill gw2 2>/dev/null || true # pid file, /var/run/dpdk
        t0=$(now_ms)
        testbed/multi.sh start gw2 2>>"$OUT/$MODE-up.log"
        a=$(wait_ms "$t0" 15 has_nexthop 2) || true
        log "gw2 restarted and announced again after $a ms"

        # sigterm: gw2 stops mid-transfer (withdraw, grace, exit)
        tag=$MODE-sigterm-v$fam
        start_transfers "$tag" "-$fam" --vip dsr-ipip "${MOVE[@]}" "${MODE_TRANSFERS_ARGS[@]}"
        sleep "$MOVE_AT"
        pid=$(cat "$TZM_RUN_DIR/gw2.pid")
        t0=$(now_ms)
        kill -TERM "$pid"
        w=$(wait_ms "$t0" 15 has_no_nexthop 2) || true
        x=$(wait_ms "$t0" 30 bash -c "! kill -0 $pid 2>/dev/null") || true
        wait "$TR_PID" || true
        TR_PID=
        stats "$tag"
        finish "$tag" move "{\"withdraw_ms\": \"$w\", \"exit_ms\": \"$x\", \"grace_ms\": $TZM_GRACE_MS}"
        testbed/multi.sh stop gw2 2>/dev/null || true
        testbed/multi.sh start gw2 2>>"$OUT/$MODE-up.log"
        wait_ms "$(now_ms)" 15 has_nexthop 2 >/dev/null || true

        # add: gw3 joins mid-transfer
        tag=$MODE-add-v$fam
        start_transfers "$tag" "-$fam" --vip dsr-ipip "${MOVE[@]}" "${MODE_TRANSFERS_ARGS[@]}"
        sleep "$MOVE_AT"
        t0=$(now_ms)
        testbed/multi.sh start gw3 2>>"$OUT/$MODE-up.log"
        up_ms=$(($(now_ms) - t0))
        a=$(wait_ms "$t0" 15 has_nexthop 3) || true
        wait "$TR_PID" || true
        TR_PID=
        stats "$tag"
        finish "$tag" move "{\"daemon_ready_ms\": \"$up_ms\", \"announce_ms\": \"$a\"}"
        testbed/multi.sh bgp-stop gw3 2>/dev/null
        testbed/multi.sh stop gw3 2>/dev/null
        wait_ms "$(now_ms)" 15 has_no_nexthop 3 >/dev/null || true
    done

    if ((LONG)); then
        # drain: gw1 withdrawn by the operator mid-transfer, forwarding goes on
        tag=$MODE-drain-v4
        start_transfers "$tag" -4 --vip dsr-ipip "${MOVE[@]}" "${MODE_TRANSFERS_ARGS[@]}"
        sleep "$MOVE_AT"
        t0=$(now_ms)
        testbed/multi.sh drain gw1 >/dev/null
        w=$(wait_ms "$t0" 15 has_no_nexthop 1) || true
        wait "$TR_PID" || true
        TR_PID=
        stats "$tag"
        finish "$tag" move "{\"withdraw_ms\": \"$w\"}"
        t0=$(now_ms)
        testbed/multi.sh undrain gw1 >/dev/null
        a=$(wait_ms "$t0" 15 has_nexthop 1) || true
        log "gw1 undrained, announced after $a ms"
        # health: no backend of gw1 takes new connections -> its VIPs are withdrawn
        t0=$(now_ms)
        for s in srv1 srv2 srv3; do
            "$TRAPEZECTL" --api "unix:$TZM_RUN_DIR/gw1.sock" drain "$s" >/dev/null
        done
        w=$(wait_ms "$t0" 15 has_no_nexthop 1) || true
        for s in srv1 srv2 srv3; do
            "$TRAPEZECTL" --api "unix:$TZM_RUN_DIR/gw1.sock" undrain "$s" >/dev/null
        done
        a=$(wait_ms "$t0" 15 has_nexthop 1) || true
        log "every backend drained on gw1: withdrawn after $w ms; back after $a ms"
        echo "{\"tag\": \"$MODE-health\", \"kind\": \"health\", \"ok\": $([[ $w != timeout && $a != timeout ]] && echo true || echo false), \"withdraw_ms\": \"$w\", \"announce_ms\": \"$a\"}" >>"$OUT/results.jsonl"
        [[ $w != timeout && $a != timeout ]] || FAILED=1
    fi
    # The instances' kernels saw the VIP traffic too (af_packet does not take frames away) and
    # must have left it to the daemons: nothing forwarded, nothing sent from a VIP address; the
    # guard table dropped the VIP packets before routing.
    for n in 1 2 3; do
        k=$(ip netns exec "tzm-gw$n" nstat -asz 2>/dev/null | awk '$1 ~ /^(IpForwDatagrams|Ip6OutForwDatagrams|IcmpOutDestUnreachs|Icmp6OutDestUnreachs|TcpOutRsts)$/ {printf "%s=%s ", $1, $2}')
        d=$(ip netns exec "tzm-gw$n" nft list chain inet tzm-guard pre 2>/dev/null | grep -o 'packets [0-9]*' | awk '{s += $2} END {print s + 0}')
        o=$(ip netns exec "tzm-gw$n" nft list chain inet tzm-guard out 2>/dev/null | grep -o 'packets [0-9]*' | awk '{s += $2} END {print s + 0}')
        log "kernel of tzm-gw$n: ${k}guard drops=$d, sent from a VIP=$o (ICMP and RSTs are about its own address: BGP retries, [cluster] peers)"
        echo "{\"tag\": \"$MODE-kernel-gw$n\", \"kind\": \"kernel\", \"counters\": \"$k\", \"guard_drops\": $d, \"from_vip\": $o}" >>"$OUT/results.jsonl"
        if [[ $k =~ (IpForwDatagrams|Ip6OutForwDatagrams)=[1-9] || $o != 0 ]]; then
            log "FAIL: the kernel of tzm-gw$n forwarded or answered traffic itself"
            FAILED=1
        fi
    done
    cp "$TZM_RUN_DIR"/gw?.err "$TZM_RUN_DIR"/gw?-exabgp.out "$TZM_RUN_DIR"/bird.log "$OUT/" 2>/dev/null || true
    for f in "$OUT"/gw?.err; do mv "$f" "$OUT/$MODE-$(basename "$f")"; done
    testbed/multi.sh down 2>/dev/null
done

log "$(( ($(now_ms) - T_START) / 1000 )) s; artefacts in $OUT (results.jsonl)"
if ((FAILED)); then
    log "FAIL"
    exit 1
fi
log "PASS"

-- Replay a trace from benches/pktgen/traces/ on port 0 towards the gateway's VIP.
--
--   pktgen <EAL args> -- -P -m <map> -s 0:benches/pktgen/traces/v4_mptcp_join_64conns.pcap \
--       -f benches/pktgen/lua/replay-trace.lua
--
-- Pktgen loads the pcap given with -s 0:FILE; this script needs the same path in TZP_TRACE to
-- count its frames. Two phases:
--   1. exactly TZP_PASSES passes (default 1) at a low rate (TZP_PASS_RATE %, default 1): the
--      gateway must learn one token per MPTCP connection and route one join per connection
--      (with `TZP_API` set, its counters are saved before and after);
--   2. TZP_SECONDS seconds (default 10, 0 to skip) looping over the trace at TZP_RATE %
--      (default 100) of the link speed: the replay rate of real MPTCP packets (each loop
--      re-opens every connection: SYN on a closed flow, third ACK, join, data, FINs).
-- Port 1 receives what the gateway forwards (DSR VIPs: IPIP packets to the backends).

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

tz.main(function()
    local trace = os.getenv("TZP_TRACE")
    assert(trace, "set TZP_TRACE to the pcap given to pktgen with -s 0:FILE")

    -- Frames in a classic pcap (little-endian, as make_traces.py writes them).
    local function pcap_frames(path)
        local f = assert(io.open(path, "rb"))
        local data = f:read("a")
        f:close()
        local off, n = 25, 0
        while off + 16 <= #data + 1 do
            local incl = string.unpack("<I4", data, off + 8)
            off = off + 16 + incl
            n = n + 1
        end
        return n
    end

    local frames = pcap_frames(trace)
    local passes = tz.env_num("TZP_PASSES", 1)
    local seconds = tz.env_num("TZP_SECONDS", 10)

    tz.header("replay " .. trace)
    tz.wait_links({0, 1}, 30)
    pktgen.screen("off")
    pktgen.pcap("0", "on")
    pktgen.set("0", "rate", tz.env_num("TZP_PASS_RATE", 1))

    -- Phase 1: exact passes.
    tz.gateway_stats("replay-before")
    pktgen.clr()
    pktgen.delay(200)
    pktgen.set("0", "count", frames * passes)
    pktgen.start("0")
    for _ = 1, 600 do
        pktgen.delay(100)
        if tz.stats(0).opackets >= frames * passes then break end
    end
    pktgen.delay(1000)
    pktgen.stop("0")
    local s0, s1 = tz.stats(0), tz.stats(1)
    tz.log("%-34s %d frames x %d pass(es): tx %d  rx %d", "exact passes", frames, passes,
        s0.opackets, s1.ipackets)
    tz.gateway_stats("replay-after-passes")

    -- Phase 2: sustained loop.
    if seconds > 0 then
        pktgen.set("0", "count", 0)
        pktgen.set("0", "rate", tz.env_num("TZP_RATE", 100))
        local m = tz.measure(0, 1, seconds)
        tz.report(string.format("loop %ds @%s%%", seconds, tz.env_num("TZP_RATE", 100)), m)
        tz.gateway_stats("replay-after-loop")
    end
end)

-- Established-flow load: ACK data packets over a range of flows in pktgen range mode.
--
--   pktgen <EAL args> -- -P -m <map> -f benches/pktgen/lua/range-established.lua
--
-- Flows: source addresses 198.19.64.1 .. 198.19.64.N (TZP_ADDRS, default 64) times source ports
-- 20000 .. 20000+P-1 (TZP_PORTS, default 1021, a prime so the two ranges step through every
-- pair): 64 x 1021 = 65344 flows. Flags ACK|PSH with payload (a 64 B frame carries 6 bytes).
-- The gateway has no state for them at first: the first packet of each flow follows Maglev and
-- is adopted (nonsyn_miss), every later one is an established-flow hit. A warm-up of
-- TZP_WARMUP seconds (default 2) precedes the measured sizes.
-- Environment: TZP_VIP (default 198.18.100.20, VIP nat4), TZP_VIP_PORT (80), TZP_SIZES (frame
-- sizes with CRC, default "64 128 256 512 1024 1518"), TZP_SECONDS per size (10), TZP_RATE (100).
-- Expect on the gateway: forwarded == pktgen tx, nonsyn_miss == number of flows (once),
-- flows == number of flows, no drops.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

tz.main(function()
    local vip = os.getenv("TZP_VIP") or "198.18.100.20"
    local seconds = tz.env_num("TZP_SECONDS", 10)
    local sizes = os.getenv("TZP_SIZES") or "64 128 256 512 1024 1518"
    local addrs = tz.env_num("TZP_ADDRS", 64)
    local ports = tz.env_num("TZP_PORTS", 1021)
    local vport = tz.env_num("TZP_VIP_PORT", 80)

    tz.header(string.format("range established load -> %s (%d flows)", vip, addrs * ports))
    tz.wait_links({0, 1}, 30)
    pktgen.screen("off")
    tz.cli({
        "range 0 proto tcp",
        "range 0 dst mac start 02:74:7a:00:00:01",
        "range 0 src mac start 02:74:7a:00:10:00",
        "range 0 dst ip " .. vip .. " " .. vip .. " " .. vip .. " 0.0.0.0",
        string.format("range 0 src ip 198.19.64.1 198.19.64.1 198.19.64.%d 0.0.0.1", addrs),
        string.format("range 0 dst port %d %d %d 0", vport, vport, vport),
        string.format("range 0 src port 20000 20000 %d 1", 20000 + ports - 1),
        "range 0 tcp flag clr all",
        "range 0 tcp flag set ack",
        "range 0 tcp flag set psh",
        "range 0 tcp seq 1000 1000 1000 0",
        "range 0 tcp ack 5000 5000 5000 0",
        "range 0 ttl start 64",
        "enable 0 range",
    })
    pktgen.set("0", "count", 0)
    pktgen.set("0", "rate", tz.env_num("TZP_RATE", 100))

    local warm = tz.env_num("TZP_WARMUP", 2)
    if warm > 0 then
        tz.range_size(0, 64)
        tz.gateway_stats("est-warmup-before")
        local m = tz.measure(0, 1, warm)
        tz.report(string.format("warm-up 64 B %ds", warm), m)
    end
    for size in string.gmatch(sizes, "%d+") do
        tz.range_size(0, size)
        tz.gateway_stats("est-" .. size .. "-before")
        local m = tz.measure(0, 1, seconds)
        tz.report(string.format("ACK %4s B %ds", size, seconds), m)
        tz.gateway_stats("est-" .. size .. "-after")
    end
    tz.cli({"disable 0 range"})
end)

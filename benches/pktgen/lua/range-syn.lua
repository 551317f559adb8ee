-- SYN load: new flows to a VIP in pktgen range mode (every packet a SYN from a new 5-tuple).
--
--   pktgen <EAL args> -- -P -m <map> -f benches/pktgen/lua/range-syn.lua
--
-- Source addresses 198.19.0.1 - 198.19.0.251 (251, prime) and source ports 1024 - 65535
-- (64512) step together, so the first 251 x 64512 = 16.2 M packets are all distinct flows.
-- Environment: TZP_VIP (default 198.18.100.20, VIP nat4), TZP_VIP_PORT (80), TZP_SIZES (frame
-- sizes with CRC, default "64 128 512"), TZP_SECONDS per size (10), TZP_RATE (% of the link, 100).
-- Expect on the gateway: forwarded == pktgen tx, new_flow == SYNs (until the 5-tuples repeat),
-- each backend about a quarter of new_conns; port 1 receives the NATed SYNs.

local here = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(here .. "common.lua")

tz.main(function()
    local vip = os.getenv("TZP_VIP") or "198.18.100.20"
    local seconds = tz.env_num("TZP_SECONDS", 10)
    local sizes = os.getenv("TZP_SIZES") or "64 128 512"

    tz.header("range SYN load -> " .. vip)
    tz.wait_links({0, 1}, 30)
    pktgen.screen("off")
    tz.cli({
        "range 0 proto tcp",
        "range 0 dst mac start 02:74:7a:00:00:01",
        "range 0 src mac start 02:74:7a:00:10:00",
        "range 0 dst ip " .. vip .. " " .. vip .. " " .. vip .. " 0.0.0.0",
        "range 0 src ip 198.19.0.1 198.19.0.1 198.19.0.251 0.0.0.1",
        "range 0 dst port " .. tz.env_num("TZP_VIP_PORT", 80) .. " " .. tz.env_num("TZP_VIP_PORT", 80)
            .. " " .. tz.env_num("TZP_VIP_PORT", 80) .. " 0",
        "range 0 src port 1024 1024 65535 1",
        "range 0 tcp flag clr all",
        "range 0 tcp flag set syn",
        "range 0 tcp seq 1000 1000 1000 0",
        "range 0 tcp ack 0 0 0 0",
        "range 0 ttl start 64",
        "enable 0 range",
    })
    pktgen.set("0", "count", 0)
    pktgen.set("0", "rate", tz.env_num("TZP_RATE", 100))
    for size in string.gmatch(sizes, "%d+") do
        tz.range_size(0, size)
        tz.gateway_stats("syn-" .. size .. "-before")
        local m = tz.measure(0, 1, seconds)
        tz.report(string.format("SYN %4s B %ds", size, seconds), m)
        tz.gateway_stats("syn-" .. size .. "-after")
    end
    tz.cli({"disable 0 range"})
end)

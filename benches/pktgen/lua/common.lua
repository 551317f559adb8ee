-- Helpers shared by the trapeze Pktgen-DPDK scripts (loaded with dofile by each script).
-- Tested with Pktgen-DPDK 23.06.1 (Lua 5.3) on DPDK 22.11.
--
-- Environment (all optional):
--   TZP_OUT        file the results are appended to (default /tmp/tzpktgen/results.txt)
--   TZP_API        gateway API, e.g. unix:/tmp/tzpktgen/api.sock: the gateway's counters
--                  (trapezectl --json stats) are saved before and after each run
--   TZP_TRAPEZECTL path of trapezectl (default: trapezectl in PATH)
--   TZP_QUIT       "no" keeps pktgen running after the script (default: quit)

package.path = package.path -- pktgen's Lua has the standard libraries (io, os, string)

tz = {}
tz.out_path = os.getenv("TZP_OUT") or "/tmp/tzpktgen/results.txt"

function tz.log(fmt, ...)
    local line = string.format(fmt, ...)
    local f = io.open(tz.out_path, "a")
    if f then f:write(line .. "\n"); f:close() end
    print(line)
end

function tz.env_num(name, default)
    local v = os.getenv(name)
    if v == nil or v == "" then return default end
    return tonumber(v)
end

-- Run pktgen CLI commands (for what the Lua API lacks, e.g. "range 0 tcp flag set syn").
function tz.cli(lines)
    local tmp = os.tmpname()
    local path = tmp .. ".pkt"
    local f = assert(io.open(path, "w"))
    for _, l in ipairs(lines) do f:write(l .. "\n") end
    f:close()
    -- Pktgen 23.06.1's run() insists on three arguments although it reads two.
    pktgen.run("cmd", path, "")
    os.remove(path)
    os.remove(tmp)
end

-- One port's counters: type "port" (totals) or "rate" (per second, updated once a second).
function tz.stats(port, kind)
    return pktgen.portStats(tostring(port), kind or "port")[port]
end

-- The gateway's counters (JSON text) through trapezectl, or nil without TZP_API.
function tz.gateway_stats(label)
    local api = os.getenv("TZP_API")
    if api == nil or api == "" then return nil end
    local ctl = os.getenv("TZP_TRAPEZECTL") or "trapezectl"
    local p = io.popen(ctl .. " --api " .. api .. " --json stats 2>&1")
    local text = p:read("a")
    p:close()
    local path = tz.out_path .. "." .. label .. ".json"
    local f = io.open(path, "w")
    if f then f:write(text); f:close() end
    tz.log("  gateway counters (%s) saved to %s", label, path)
    return text
end

-- Wait until every port's link is up (memif: until the gateway accepted the connection).
function tz.wait_links(ports, seconds)
    for _ = 1, seconds * 10 do
        local up = true
        for _, p in ipairs(ports) do
            local s = pktgen.linkState(tostring(p))[p]
            if s == nil or not string.find(s, "UP") then up = false end
        end
        if up then return true end
        pktgen.delay(100)
    end
    tz.log("links not up after %d s", seconds)
    return false
end

-- Send for `seconds` on tx_port (already configured) and measure: packets sent on tx_port,
-- received on rx_port, and the mean of the per-second rates after the first second.
function tz.measure(tx_port, rx_port, seconds)
    pktgen.clr()
    pktgen.delay(200)
    local tx0, rx0 = tz.stats(tx_port).opackets, tz.stats(rx_port).ipackets
    pktgen.start(tostring(tx_port))
    local txr, rxr, n = 0, 0, 0
    for i = 1, seconds do
        pktgen.delay(1000)
        if i > 1 then
            txr = txr + tz.stats(tx_port, "rate").pkts_tx
            rxr = rxr + tz.stats(rx_port, "rate").pkts_rx
            n = n + 1
        end
    end
    pktgen.stop(tostring(tx_port))
    pktgen.delay(500)
    local tx = tz.stats(tx_port).opackets - tx0
    local rx = tz.stats(rx_port).ipackets - rx0
    return { tx = tx, rx = rx, tx_pps = n > 0 and txr / n or 0, rx_pps = n > 0 and rxr / n or 0 }
end

function tz.report(label, m)
    tz.log("%-34s tx %12d  rx %12d  lost %10d  tx %10.0f pps  rx %10.0f pps", label, m.tx, m.rx,
        m.tx - m.rx, m.tx_pps, m.rx_pps)
end

function tz.header(name)
    local p = io.popen("uptime")
    local up = p:read("l") or ""
    p:close()
    tz.log("== %s  %s  |%s", name, os.date("!%Y-%m-%dT%H:%M:%SZ"), up)
end

function tz.finish()
    if os.getenv("TZP_QUIT") ~= "no" then pktgen.quit() end
end

-- Run a script's body; on a Lua error, log it, stop the ports and still quit (so that an
-- unattended run never waits at the pktgen prompt).
function tz.main(body)
    local ok, err = pcall(body)
    if not ok then
        tz.log("ERROR: %s", tostring(err))
        pcall(pktgen.stop, "all")
    end
    tz.finish()
end

-- Range mode: one frame size (with CRC, as pktgen counts it) for every packet.
function tz.range_size(port, size)
    tz.cli({
        string.format("range %d size start %d", port, size),
        string.format("range %d size min %d", port, size),
        string.format("range %d size max %d", port, size),
        string.format("range %d size inc 0", port),
    })
end

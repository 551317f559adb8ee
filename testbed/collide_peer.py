#!/usr/bin/env python3
"""Crafted MPTCP peers for the token-collision test (testbed/e2e-collide.sh). Standard library only.

The server keys 0xc66f and 0xe658 give the same token, 0x7357966a (the first 32 bits of SHA-256
of the 8-byte key). Linux servers pick random keys, so a collision through real traffic needs a
crafted peer on one side:

responder   (NAT; run in tzc-resp, bridged onto the server segment) plays the two backends of the
            VIP collide4 (configs/testbed-collide.toml) over AF_PACKET: it answers the first
            MP_CAPABLE SYN each backend receives with an MP_CAPABLE SYN/ACK carrying that
            backend's key (fake1 0xc66f, fake2 0xe658), every other SYN (health probes, further
            connections) with a plain SYN/ACK (no MPTCP: no token), answers the client's third
            ACK with a DSS data ACK (the client's MPTCP connection becomes fully established and
            its path manager opens a join), and records every MP_JOIN SYN that reaches it (there
            must be none: the token is ambiguous). The kernel of tzc-resp holds the addresses (it
            answers ARP) and drops the port with nftables (no RST). State: --state JSON.
nat-client  (NAT; run in tz-client) real Linux MPTCP sockets to the VIP until both backends hold
            one MP_CAPABLE connection (a connection that lands on a backend already used is
            plain TCP, closed with a RST); then holds them (its in-kernel path manager keeps
            sending MP_JOIN SYNs with the token 0x7357966a) until SIGTERM/SIGINT or --hold, and
            prints a JSON report (per connection: backend, MPTCP, subflows).
dsr-client  (DSR; run in tz-client) raw MP_CAPABLE handshakes to a DSR VIP over AF_PACKET (sent
            on cli0 to the gateway, answers from the real servers read on cli1, the return link)
            from an address the client kernel does not own (so it never answers with RSTs). Which
            backend Maglev chose is read from the gateway's API (per-backend new_conns). The third
            ACK of the first connection claims the server key 0xc66f, the second (a connection
            Maglev sends to another backend) claims 0xe658: first owner wins, the second claim is
            refused (token_claim_refused). Then MP_JOIN SYNs with the token go to the first owner
            only (its server does not know the token: it answers RST). JSON report on stdout.
"""

import argparse
import hashlib
import hmac
import http.client
import json
import os
import pathlib
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
IPPROTO_MPTCP = 262
KEY_A, KEY_B = 0xC66F, 0xE658
COLLIDING_TOKEN = 0x7357966A

FIN, SYN, RST, PSH, ACK = 0x01, 0x02, 0x04, 0x08, 0x10


def token_of(key):
    return int.from_bytes(hashlib.sha256(key.to_bytes(8, "big")).digest()[:4], "big")


def idsn_of(key):
    return int.from_bytes(hashlib.sha256(key.to_bytes(8, "big")).digest()[24:32], "big")


assert token_of(KEY_A) == token_of(KEY_B) == COLLIDING_TOKEN


def log(*a):
    print("[collide_peer]", *a, file=sys.stderr, flush=True)


# --- packets -------------------------------------------------------------------------------

def csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def mac_bytes(m):
    return bytes(int(x, 16) for x in m.split(":"))


def mac_str(b):
    return ":".join("%02x" % x for x in b)


def if_mac(ifname):
    with open("/sys/class/net/%s/address" % ifname) as f:
        return f.read().strip()


def opt_mss(mss=1460):
    return struct.pack("!BBH", 2, 4, mss)


def opt_mpc_syn():
    return bytes([30, 4, 0x01, 0x01])  # MP_CAPABLE v1, flags H (HMAC-SHA256), no checksum


def opt_mpc_synack(key):
    return bytes([30, 12, 0x01, 0x01]) + key.to_bytes(8, "big")


def opt_mpc_ack(sender_key, receiver_key):
    return bytes([30, 20, 0x01, 0x01]) + sender_key.to_bytes(8, "big") + receiver_key.to_bytes(8, "big")


def opt_join_syn(token, nonce, addr_id=1):
    return bytes([30, 12, 0x10, addr_id]) + struct.pack("!II", token, nonce)


def opt_join_synack(trunc_hmac, nonce, addr_id=0):
    return bytes([30, 16, 0x10, addr_id]) + trunc_hmac + struct.pack("!I", nonce)


def join_hmac(key_1, key_2, nonce_1, nonce_2):
    """RFC 8684 3.2: HMAC-SHA256(Key=(key_1 || key_2), Msg=(nonce_1 || nonce_2)). The server's
    SYN/ACK carries its leftmost 64 bits with (server key, client key, server nonce, client
    nonce); the client's third ACK the leftmost 160 bits with the roles swapped."""
    return hmac.new(key_1.to_bytes(8, "big") + key_2.to_bytes(8, "big"),
                    struct.pack("!II", nonce_1, nonce_2), hashlib.sha256).digest()


def opt_dss_ack(data_ack32):
    return bytes([30, 8, 0x20, 0x01]) + struct.pack("!I", data_ack32)


def tcp_ipv4(src, dst, sport, dport, seq, ack, flags, options=b"", payload=b"", win=64240):
    while len(options) % 4:
        options += b"\x01"  # NOP padding
    doff = (20 + len(options)) // 4
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, doff << 4,
                      flags, win, 0, 0) + options + payload
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    pseudo = s + d + struct.pack("!BBH", 0, 6, len(tcp))
    c = csum(pseudo + tcp)
    tcp = tcp[:16] + struct.pack("!H", c) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randrange(65536), 0x4000, 64,
                     6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return ip + tcp


def eth(dst_mac, src_mac, payload, ethertype=ETH_P_IP):
    return mac_bytes(dst_mac) + mac_bytes(src_mac) + struct.pack("!H", ethertype) + payload


def parse_tcp_frame(frame):
    """IPv4/TCP in an Ethernet frame -> dict, or None."""
    if len(frame) < 14 + 20 or struct.unpack_from("!H", frame, 12)[0] != ETH_P_IP:
        return None
    ip = frame[14:]
    ihl = (ip[0] & 0x0F) * 4
    if ip[0] >> 4 != 4 or ip[9] != 6 or len(ip) < ihl + 20:
        return None
    total = struct.unpack_from("!H", ip, 2)[0]
    tcp = ip[ihl:total]
    if len(tcp) < 20:
        return None
    sport, dport, seq, ack, off, flags = struct.unpack_from("!HHIIBB", tcp, 0)
    doff = (off >> 4) * 4
    opts = tcp[20:doff]
    p = {"src": socket.inet_ntoa(ip[12:16]), "dst": socket.inet_ntoa(ip[16:20]),
         "sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags,
         "payload": len(tcp) - doff, "smac": mac_str(frame[6:12]), "dmac": mac_str(frame[0:6]),
         "mpc": None, "join": None, "mptcp_rst": False}
    i = 0
    while i < len(opts):
        k = opts[i]
        if k == 0:
            break
        if k == 1:
            i += 1
            continue
        if i + 1 >= len(opts) or opts[i + 1] < 2:
            break
        ln = opts[i + 1]
        o = opts[i:i + ln]
        if k == 30 and ln >= 3:
            sub = o[2] >> 4
            if sub == 0:
                m = {"version": o[2] & 0x0F, "keys": []}
                if ln >= 12:
                    m["keys"].append(int.from_bytes(o[4:12], "big"))
                if ln >= 20:
                    m["keys"].append(int.from_bytes(o[12:20], "big"))
                p["mpc"] = m
            elif sub == 1 and ln == 12 and flags & SYN and not flags & ACK:
                p["join"] = {"token": struct.unpack_from("!I", o, 4)[0],
                             "nonce": struct.unpack_from("!I", o, 8)[0]}
            elif sub == 1 and ln == 24 and flags & ACK and not flags & SYN:
                p["join_ack_hmac"] = bytes(o[4:24])
            elif sub == 8:
                p["mptcp_rst"] = True
        i += ln
    return p


def packet_socket(ifname, proto=ETH_P_IP):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    s.bind((ifname, 0))
    return s


def recv_incoming(sock, timeout):
    """One incoming frame (not our own outgoing ones), or None after timeout seconds."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([sock], [], [], left)
        if not r:
            return None
        frame, addr = sock.recvfrom(65535)
        if addr[2] == PACKET_OUTGOING:
            continue
        return frame


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


# --- NAT: the crafted backends --------------------------------------------------------------

def responder(a):
    keys = {}
    names = {}
    for spec in a.backend:  # NAME=ADDR=KEY
        name, addr, key = spec.split("=")
        keys[addr] = int(key, 0)
        names[addr] = name
    my_mac = if_mac(a.iface)
    sock = packet_socket(a.iface)
    conns = {}  # (client, cport, backend addr) -> state
    taken = {}  # backend addr -> conn id holding the colliding key
    held = {}  # backend addr -> its colliding connection, once its third ACK arrived
    joins = {}  # (client, cport, backend addr) -> join subflow state
    pending = []  # DSS ACKs withheld until every backend holds its colliding connection
    st = {"pid": os.getpid(), "backends": {names[x]: {"addr": x, "key": "0x%x" % k,
                                                      "token": "0x%08x" % token_of(k)}
                                           for x, k in keys.items()},
          "conns": [], "join_syns": [], "probes": 0, "plain_synacks": 0, "mpc_synacks": 0,
          "third_acks": 0, "key_echo_mismatch": 0, "dss_acks_sent": 0, "other": 0,
          "joins_established": [], "join_hmac_failures": 0, "join_synacks": [],
          "join_rsts": []}
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    write_json(a.state, st)
    if a.ready:
        open(a.ready, "w").close()
    dirty = False
    last_write = time.monotonic()
    while not stop:
        frame = recv_incoming(sock, 0.2)
        if dirty and (frame is None or time.monotonic() - last_write > 0.1):
            write_json(a.state, st)
            dirty, last_write = False, time.monotonic()
        if frame is None:
            continue
        p = parse_tcp_frame(frame)
        if p is None or p["dst"] not in keys or p["dport"] != a.port:
            continue
        dirty = True
        cid = (p["src"], p["sport"], p["dst"])
        fl = p["flags"]

        def send(flags, seq, ack, options=b"", q=p):  # q: this packet (bound now, not later)
            ipkt = tcp_ipv4(q["dst"], q["src"], q["dport"], q["sport"], seq, ack, flags, options)
            sock.send(eth(q["smac"], my_mac, ipkt))

        if fl & SYN and not fl & ACK and p["join"] is not None:
            # A join: answered as a Linux server would, for the connection this backend holds
            # with that token (SYN/ACK with its truncated HMAC), else a RST.
            tok = "0x%08x" % p["join"]["token"]
            st["join_syns"].append({"backend": names[p["dst"]], "client": p["src"],
                                    "cport": p["sport"], "token": tok, "time": time.time()})
            owner = held.get(p["dst"])
            if owner is None or tok != "0x%08x" % token_of(int(owner["key"], 16)):
                send(RST | ACK, 0, p["seq"] + 1)
                continue
            j = joins.get(cid)
            if j is None:
                # --wrong-hmac: answer as the *other* owner of the token would if the gateway
                # had guessed wrong: with the keys of the other backend's connection.
                conn = owner
                if a.wrong_hmac:
                    conn = next(c for x, c in held.items() if x != p["dst"])
                j = joins[cid] = {"conn": conn, "isn": random.randrange(1 << 32),
                                  "nonce_a": p["join"]["nonce"], "wrong": conn is not owner,
                                  "nonce_b": random.getrandbits(32), "done": False}
                st["join_synacks"].append({"backend": names[p["dst"]], "cport": p["sport"],
                                           "time": time.time(), "hmac_of": conn["backend"]})
            skey, ckey = int(j["conn"]["key"], 16), int(j["conn"]["client_key"], 16)
            mac = join_hmac(skey, ckey, j["nonce_b"], j["nonce_a"])[:8]
            send(SYN | ACK, j["isn"], p["seq"] + 1, opt_mss() + opt_join_synack(mac, j["nonce_b"]))
            continue
        if cid in joins and fl & RST:
            st["join_rsts"].append({"backend": names[p["dst"]], "cport": p["sport"],
                                    "time": time.time(), "mptcp_rst": p["mptcp_rst"]})
            continue
        if cid in joins and fl & ACK and not fl & SYN:
            j = joins[cid]
            if p.get("join_ack_hmac") is not None and not j["done"]:
                skey, ckey = int(j["conn"]["key"], 16), int(j["conn"]["client_key"], 16)
                want = join_hmac(ckey, skey, j["nonce_a"], j["nonce_b"])[:20]
                if p["join_ack_hmac"] != want:
                    st["join_hmac_failures"] += 1
                    send(RST | ACK, j["isn"] + 1, p["seq"])
                    continue
                j["done"] = True
                st["joins_established"].append({"backend": names[p["dst"]], "client": p["src"],
                                                "cport": p["sport"], "time": time.time(),
                                                "conn_cport": j["conn"]["cport"]})
                # The fourth ACK, which completes the join on the client.
                send(ACK, j["isn"] + 1, p["seq"], opt_dss_ack(j["conn"]["data_ack"]))
            continue
        if fl & SYN and not fl & ACK:
            c = conns.get(cid)
            if c is None:
                mpc = (p["mpc"] is not None and p["mpc"]["version"] == 1
                       and p["dst"] not in taken)
                c = {"id": len(st["conns"]), "backend": names[p["dst"]], "client": p["src"],
                     "cport": p["sport"], "isn": random.randrange(1 << 32),
                     "client_isn": p["seq"], "key": ("0x%x" % keys[p["dst"]]) if mpc else None,
                     "mpc_requested": p["mpc"] is not None, "syns": 0, "established": False,
                     "client_key": None, "probe": p["src"] == a.probe_source}
                conns[cid] = c
                if c["probe"]:
                    st["probes"] += 1
                else:
                    st["conns"].append(c)
                if mpc:
                    taken[p["dst"]] = c["id"]
            c["syns"] += 1
            opts = opt_mss()
            if c["key"] is not None:
                opts += opt_mpc_synack(int(c["key"], 16))
                st["mpc_synacks"] += 1
            else:
                st["plain_synacks"] += 1
            send(SYN | ACK, c["isn"], p["seq"] + 1, opts)
            continue
        c = conns.get(cid)
        if c is None or fl & RST:
            if c is None:
                st["other"] += 1
            continue
        if c["key"] is not None and not c["established"] and p["mpc"] is not None \
                and len(p["mpc"]["keys"]) == 2:
            st["third_acks"] += 1
            c["established"] = True
            c["client_key"] = "0x%x" % p["mpc"]["keys"][0]
            if p["mpc"]["keys"][1] != int(c["key"], 16):
                st["key_echo_mismatch"] += 1
            # A DSS data ACK (the client's IDSN + 1 + what it sent): the client's MPTCP connection
            # is fully established and its path manager opens its join.
            # Withheld until every backend holds its colliding connection, so that no join is
            # sent while the token still has a single owner (it would be routed, and its
            # retransmissions would follow that flow).
            c["data_ack"] = (idsn_of(p["mpc"]["keys"][0]) + 1 + p["payload"]) & 0xFFFFFFFF
            held[p["dst"]] = c
            pending.append((send, c["isn"] + 1, p["seq"] + p["payload"], c["data_ack"]))
            if len(held) == len(keys):
                for snd, seq, ack, dack in pending:
                    snd(ACK, seq, ack, opt_dss_ack(dack))
                    st["dss_acks_sent"] += 1
                pending.clear()
                st["dss_released"] = time.time()
            continue
        if p["payload"] or fl & FIN:
            # Keep the connection quiet: acknowledge what arrives (no data ever goes back).
            send(ACK, c["isn"] + 1, p["seq"] + p["payload"] + (1 if fl & FIN else 0))
    write_json(a.state, st)


def read_state(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def nat_client(a):
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    held = {}  # backend -> (sock, record)
    attempts = []
    deadline = time.monotonic() + a.setup_timeout
    want = set(a.want.split(","))
    while set(held) != want and time.monotonic() < deadline and not stop:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, IPPROTO_MPTCP)
        s.settimeout(3)
        try:
            s.connect((a.vip, a.port))
        except OSError as e:
            attempts.append({"error": str(e)})
            s.close()
            time.sleep(0.2)
            continue
        cport = s.getsockname()[1]
        rec = None
        for _ in range(40):
            st = read_state(a.state) or {}
            rec = next((c for c in st.get("conns", []) if c["cport"] == cport), None)
            if rec is not None:
                break
            time.sleep(0.05)
        att = {"cport": cport, "backend": rec and rec["backend"], "key": rec and rec["key"]}
        attempts.append(att)
        if rec is not None and rec["key"] is not None and rec["backend"] not in held:
            held[rec["backend"]] = (s, att)
            log("connection from port %d holds %s (server key %s)" % (cport, rec["backend"],
                                                                        rec["key"]))
        else:
            # plain TCP (the backend already holds its colliding connection): reset it
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from mptcp_server import established_subflows, mptcp_info, subflow_addrs
    report = {"attempts": attempts, "ready": set(held) == want, "conns": {}}
    if a.ready and report["ready"]:
        open(a.ready, "w").close()
    # SIGUSR1: --release's connection ends (closed with SO_LINGER 0: MP_FASTCLOSE with its server
    # key, so the gateway drops that owner); the other's pending join should now reach its server
    # and complete. The outcome goes to --released.
    release = []
    signal.signal(signal.SIGUSR1, lambda *_: release.append(1))
    end = time.monotonic() + a.hold
    released = None
    while report["ready"] and not stop and time.monotonic() < end:
        if release and released is None and a.release in held:
            s, att = held.pop(a.release)
            att["established_subflows_at_release"] = established_subflows(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            released = {"released": a.release, "time": time.time(), "conn": att, "others": {}}
            report["release"] = released
            rel_end = time.monotonic() + a.release_timeout
            while time.monotonic() < rel_end and not stop:
                est = {b: established_subflows(x) for b, (x, _) in held.items()}
                if all(n == 2 for n in est.values()):
                    break
                time.sleep(0.05)
            released["others"] = {b: {"established_subflows": established_subflows(x),
                                      "after_s": round(time.time() - released["time"], 3)}
                                  for b, (x, _) in held.items()}
            if a.released:
                write_json(a.released, released)
        time.sleep(0.05)
    for b, (s, att) in sorted(held.items()):
        info = mptcp_info(s)
        try:
            subs = subflow_addrs(s)
        except OSError:
            subs = None
        report["conns"][b] = dict(att, mptcp_info=info, subflows=subs,
                                  established_subflows=established_subflows(s))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    print(json.dumps(report, indent=1, sort_keys=True, default=str))
    return 0 if report["ready"] else 1


# --- DSR: the crafted client ----------------------------------------------------------------

class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("localhost", timeout=5)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(self.path)


def api_stats(path):
    c = UnixHTTP(path)
    c.request("GET", "/stats")
    r = c.getresponse()
    body = r.read()
    c.close()
    if r.status != 200:
        raise SystemExit("GET /stats: %d %s" % (r.status, body[:200]))
    return json.loads(body)


def backend_counts(stats, field):
    return {b["name"]: b.get(field, 0) for b in stats.get("backends", [])}


def event_count(stats, name):
    return sum((w.get("events") or {}).get(name, 0) + (w.get("drops") or {}).get(name, 0)
               for w in stats.get("workers", []))


def wait_backend_delta(api, before, field, timeout=2.0):
    """The backends whose `field` grew since `before` (the workers publish their counters every
    64 loops: poll)."""
    end = time.monotonic() + timeout
    while True:
        now = backend_counts(api_stats(api), field)
        grew = {b: now[b] - before.get(b, 0) for b in now if now[b] > before.get(b, 0)}
        if grew or time.monotonic() > end:
            return grew
        time.sleep(0.05)


def wait_event(api, name, at_least, timeout=2.0):
    end = time.monotonic() + timeout
    while True:
        n = event_count(api_stats(api), name)
        if n >= at_least or time.monotonic() > end:
            return n
        time.sleep(0.05)


def dsr_client(a):
    tx = packet_socket(a.tx_if)
    rx = packet_socket(a.rx_if)
    src_mac = if_mac(a.tx_if)
    rep = {"vip": "%s:%d" % (a.vip, a.port), "conns": [], "rejected": [], "joins": [],
           "errors": []}
    sent_ports = set()

    def new_port():
        while True:
            p = random.randrange(20000, 60000)
            if p not in sent_ports:
                sent_ports.add(p)
                return p

    def send(src, sport, seq, ack, flags, options=b""):
        tx.send(eth(a.gw_mac, src_mac, tcp_ipv4(src, a.vip, sport, a.port, seq, ack, flags,
                                                  options)))

    def await_answer(dst, dport, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            f = recv_incoming(rx, end - time.monotonic())
            if f is None:
                return None
            p = parse_tcp_frame(f)
            if p and p["src"] == a.vip and p["sport"] == a.port and p["dst"] == dst \
                    and p["dport"] == dport:
                return p
        return None

    def handshake(claim_key, avoid):
        """One MP_CAPABLE handshake; returns its record, or None when Maglev chose a backend in
        `avoid` (that attempt is reset)."""
        sport, isn, ckey = new_port(), random.randrange(1 << 32), random.getrandbits(64) | 1
        before = backend_counts(api_stats(a.api), "new_conns")
        syn_opts = opt_mss() + opt_mpc_syn()
        synack = None
        for _ in range(3):
            send(a.src, sport, isn, 0, SYN, syn_opts)
            synack = await_answer(a.src, sport, 1.0)
            if synack is not None:
                break
        grew = wait_backend_delta(a.api, before, "new_conns")
        if synack is None or not synack["flags"] & SYN or len(grew) != 1:
            rep["errors"].append("handshake from port %d: SYN/ACK %s, backends with a new "
                                 "connection %s" % (sport, synack and synack["flags"], grew))
            send(a.src, sport, isn + 1, 0, RST)
            return None
        backend = next(iter(grew))
        if backend in avoid:
            send(a.src, sport, isn + 1, 0, RST)
            rep["rejected"].append({"cport": sport, "backend": backend})
            return None
        real_key = synack["mpc"]["keys"][0] if synack["mpc"] and synack["mpc"]["keys"] else None
        # The third ACK: sequence SYN + 1 (the only segment the gateway learns from), both keys,
        # the receiver key being the claim, not what the server sent.
        send(a.src, sport, isn + 1, synack["seq"] + 1, ACK, opt_mpc_ack(ckey, claim_key))
        rec = {"cport": sport, "backend": backend, "client_key": "0x%x" % ckey,
               "claimed_server_key": "0x%x" % claim_key,
               "claimed_token": "0x%08x" % token_of(claim_key),
               "real_server_key": real_key and "0x%x" % real_key,
               "real_token": real_key and "0x%08x" % token_of(real_key)}
        rep["conns"].append(rec)
        return rec

    ev0 = {n: event_count(api_stats(a.api), n)
           for n in ("token_learned_from_client", "token_claim_refused", "join_routed")}
    first = None
    for _ in range(5):
        first = handshake(KEY_A, set())
        if first:
            break
    if first is None:
        print(json.dumps(rep, indent=1))
        return 1
    rep["learned_first"] = wait_event(a.api, "token_learned_from_client",
                                      ev0["token_learned_from_client"] + 1) \
        - ev0["token_learned_from_client"]
    second = None
    for _ in range(a.max_tries):
        second = handshake(KEY_B, {first["backend"]})
        if second:
            break
    if second is None:
        rep["errors"].append("no connection reached another backend than %s in %d tries"
                             % (first["backend"], a.max_tries))
        print(json.dumps(rep, indent=1))
        return 1
    rep["claim_refused"] = wait_event(a.api, "token_claim_refused",
                                      ev0["token_claim_refused"] + 1) \
        - ev0["token_claim_refused"]
    # MP_JOIN SYNs with the colliding token, from another address (as a second interface would):
    # each must go to the first owner, whose server does not know the token and resets it.
    for i in range(a.joins):
        sport, isn = new_port(), random.randrange(1 << 32)
        before = backend_counts(api_stats(a.api), "joins")
        send(a.join_src, sport, isn, 0, SYN,
             opt_mss() + opt_join_syn(COLLIDING_TOKEN, random.getrandbits(32), addr_id=2))
        ans = await_answer(a.join_src, sport, 1.5)
        grew = wait_backend_delta(a.api, before, "joins")
        rep["joins"].append({"cport": sport, "routed_to": grew,
                             "answer": None if ans is None else
                             ("rst" if ans["flags"] & RST else "synack" if ans["flags"] & SYN
                              else "other"),
                             "mptcp_rst_option": bool(ans and ans["mptcp_rst"])})
    # Leave the two crafted connections: a RST each (the servers drop their sockets; the
    # gateway's flows end, and with them the token).
    if not a.keep:
        for r in (first, second):
            send(a.src, r["cport"], 0, 0, RST)
    print(json.dumps(rep, indent=1, sort_keys=True))
    return 0


# --- verdict --------------------------------------------------------------------------------

def pcap_frames(path):
    """Ethernet frames of a classic pcap file (tcpdump -w)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 24:
        return
    magic = data[:4]
    end = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    i = 24
    while i + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from(end + "IIII", data, i)
        yield data[i + 16:i + 16 + incl]
        i += 16 + incl


def join_syns(path):
    """MP_JOIN SYNs in a capture: [(outer dst or None, dst, dport, token)]; IPIP is opened."""
    out = []
    for fr in pcap_frames(path):
        if len(fr) < 34 or struct.unpack_from("!H", fr, 12)[0] != ETH_P_IP:
            continue
        outer = None
        if fr[14 + 9] == 4:  # IPv4 in IPv4: the DSR tunnel
            outer = socket.inet_ntoa(fr[14 + 16:14 + 20])
            ihl = (fr[14] & 0x0F) * 4
            fr = fr[:14] + fr[14 + ihl:]
        p = parse_tcp_frame(fr)
        if p and p["join"]:
            out.append((outer, p["dst"], p["dport"], "0x%08x" % p["join"]["token"]))
    return out


def stat_total(stats, name):
    return event_count(stats, name)


def verify(a):
    """The verdict of an e2e-collide.sh run. Snapshots of GET /stats: stats0 (start), stats1
    (both NAT owners live, joins sent), stats2 (after the release of fake1's connection), stats3
    (NAT client gone), stats4 (after the DSR claims and joins), stats5 (end)."""
    ld = lambda f: json.loads(pathlib.Path(a.out, f).read_text())
    st = [ld("stats%d.json" % i) for i in range(6)]
    resp, nat, dsr = ld("responder.json"), ld("nat-client.json"), ld("dsr-client.json")
    n0, n1 = ld("nstat0.json"), ld("nstat1.json")
    fails, lines = [], []

    def check(ok, what):
        lines.append(("  ok   " if ok else "  FAIL ") + what)
        if not ok:
            fails.append(what)

    def d(i, j, name):
        return stat_total(st[j], name) - stat_total(st[i], name)

    tok = "0x%08x" % COLLIDING_TOKEN
    # NAT: both owners kept, the collision counted once, every join for the token refused.
    check(d(0, 1, "token_collision") == 1 and d(0, 1, "token_learned") == 1,
          "NAT: token_learned +%d, token_collision +%d for the two colliding connections "
          "(want 1, 1)" % (d(0, 1, "token_learned"), d(0, 1, "token_collision")))
    check((st[1].get("tokens") or {}).get("collisions", 0) >= 1,
          "NAT: GET /stats tokens.collisions %s (>= 1)" % (st[1].get("tokens") or {}).get(
              "collisions"))
    mpc = sorted(c["backend"] for c in resp["conns"] if c["key"])
    check(resp["third_acks"] == 2 and resp["key_echo_mismatch"] == 0
          and mpc == ["fake1", "fake2"],
          "NAT: responder: MP_CAPABLE connections on %s, third ACKs %d, key echo mismatches %d"
          % (mpc, resp["third_acks"], resp["key_echo_mismatch"]))
    check(d(0, 1, "join_token_ambiguous") >= 2,
          "NAT: join_token_ambiguous +%d while both owners live (want >= 2: each connection's "
          "join and its retransmissions)" % d(0, 1, "join_token_ambiguous"))
    rel = nat.get("release") or {}
    rel_t = rel.get("time", 0)
    early = [j for j in resp["join_syns"] if not rel_t or j["time"] < rel_t]
    check(not early, "NAT: MP_JOIN SYNs at the crafted backends while both owners lived: %d "
          "(want 0)" % len(early))
    cli_joins = [j for j in join_syns(os.path.join(a.out, "client-link.pcap"))
                 if j[1] == a.nat_vip]
    srv_joins = [j for j in join_syns(os.path.join(a.out, "server-link.pcap"))
                 if j[1] in a.fake_addr]
    amb = d(0, 5, "join_token_ambiguous")
    check(len(cli_joins) >= 2 and all(j[3] == tok for j in cli_joins),
          "NAT: the Linux client sent %d MP_JOIN SYNs to %s, tokens %s (want >= 2, all %s)"
          % (len(cli_joins), a.nat_vip, sorted({j[3] for j in cli_joins}), tok))
    check(amb + len(srv_joins) == len(cli_joins) and len(srv_joins) == len(resp["join_syns"]),
          "NAT: every MP_JOIN SYN on the client link (%d) was refused as ambiguous (+%d) or, "
          "after the release, forwarded (%d on the server link, %d at the responder)"
          % (len(cli_joins), amb, len(srv_joins), len(resp["join_syns"])))
    # ... and once one owner has gone (MP_FASTCLOSE with its key), the other's join gets through.
    others = rel.get("others") or {}
    late = [j for j in resp["join_syns"] if rel_t and j["time"] >= rel_t]
    est = resp.get("joins_established") or []
    f2 = others.get("fake2", {})
    check(d(1, 2, "fastclose") >= 1 and rel.get("released") == "fake1"
          and late and all(j["backend"] == "fake2" for j in late),
          "NAT: after fake1's connection ended (fastclose +%d), its MP_JOIN SYNs reached %s "
          "(want fake2 only)" % (d(1, 2, "fastclose"), sorted({j["backend"] for j in late})))
    if not a.wrong_owner:
        check(f2.get("established_subflows") == 2 and len(est) == 1
              and est[0]["backend"] == "fake2" and resp["join_hmac_failures"] == 0,
              "NAT: fake2's connection has %s established subflows %ss after the release "
              "(want 2), joins established at the responder (HMACs verified both ways) %s"
              % (f2.get("established_subflows"), f2.get("after_s"),
                 [j["backend"] for j in est]))
    else:
        # What a guessing gateway would get: the other owner answers the join with its own
        # connection's HMAC; the Linux client rejects it, resets the subflow, never retransmits.
        sa = [x for x in resp.get("join_synacks", []) if x["time"] >= rel_t]
        nc0, nc1 = ld("nstatc0.json"), ld("nstatc1.json")
        hf = (nc1.get("MPTcpExtMPJoinSynAckHMacFailure", 0)
              - nc0.get("MPTcpExtMPJoinSynAckHMacFailure", 0))
        first = min((x["time"] for x in sa), default=None)
        rsts = [x for x in resp.get("join_rsts", []) if first and x["time"] >= first]
        after = [j for j in late if first and j["time"] > first]
        check(len(sa) == 1 and sa[0]["hmac_of"] == "fake1" and hf >= 1 and len(rsts) >= 1
              and not after and not est and f2.get("established_subflows") == 1,
              "NAT (--wrong-owner): fake2 answered the join with fake1's connection's HMAC: the "
              "Linux client counted MPJoinSynAckHMacFailure +%d, sent %d RST(s) (MP_TCPRST %s), "
              "sent %d more MP_JOIN SYNs in the next %ss (want 0: no retransmission to retry "
              "on), fake2's connection has %s established subflows (want 1)"
              % (hf, len(rsts), [x["mptcp_rst"] for x in rsts], len(after), f2.get("after_s"),
                 f2.get("established_subflows")))
    nc = dict(nat.get("conns", {}))
    if rel.get("conn"):
        nc[rel["released"]] = rel["conn"]
    check(nat.get("ready") and len(nc) == 2 and all(
        c.get("mptcp_info") is None or not c["mptcp_info"]["fallback"] for c in nc.values()),
          "NAT: the client's two connections stayed MPTCP")
    check(d(2, 3, "fastclose") >= 1 and d(0, 3, "join_token_ambiguous") == amb,
          "NAT: the client's last connection ended (fastclose +%d)" % d(2, 3, "fastclose"))
    # DSR: first owner wins.
    conns = dsr.get("conns", [])
    check(len(conns) == 2 and conns[0]["backend"] != conns[1]["backend"]
          and conns[0]["claimed_token"] == conns[1]["claimed_token"] == tok,
          "DSR: crafted third ACKs claimed %s on %s"
          % ([c["claimed_server_key"] for c in conns], [c["backend"] for c in conns]))
    check(dsr.get("learned_first") == 1 and dsr.get("claim_refused") == 1
          and d(3, 4, "token_claim_refused") == 1,
          "DSR: token_learned_from_client +%s for the first claim, token_claim_refused +%s for "
          "the second (want 1, 1)" % (dsr.get("learned_first"), dsr.get("claim_refused")))
    if len(conns) == 2:
        owner, other = conns[0]["backend"], conns[1]["backend"]
        joins = dsr.get("joins", [])
        check(len(joins) == a.dsr_joins and all(j["routed_to"] == {owner: 1} for j in joins),
              "DSR: MP_JOIN SYNs with %s routed to %s (want the first owner, %s, each)"
              % (tok, [j["routed_to"] for j in joins], owner))
        check(all(j["answer"] == "rst" for j in joins),
              "DSR: answers to the crafted joins on the return link: %s (want rst: %s's real "
              "key is not 0xc66f)" % ([j["answer"] for j in joins], owner))
        addr = {"srv1": "10.91.0.11", "srv2": "10.91.0.12", "srv3": "10.91.0.13"}
        tun = [j for j in join_syns(os.path.join(a.out, "server-link.pcap"))
               if j[3] == tok and j[0] is not None]
        check(len(tun) == a.dsr_joins and all(j[0] == addr[owner] for j in tun),
              "DSR: tunnelled MP_JOIN SYNs with %s on the server link, outer destinations %s "
              "(want %d to %s)" % (tok, [j[0] for j in tun], a.dsr_joins, addr[owner]))
        dn = {s: {k: n1[s].get(k, 0) - n0[s].get(k, 0) for k in n1[s]} for s in n1}
        check(dn[owner].get("MPTcpExtMPJoinNoTokenFound", 0) == a.dsr_joins
              and all(dn[s].get("MPTcpExtMPJoinSynRx", 0) == 0 for s in dn if s != owner),
              "DSR: servers' nstat deltas MPJoinSynRx/MPJoinNoTokenFound %s (want %d/%d on %s, "
              "0 elsewhere: %s saw nothing)"
              % ({s: "%d/%d" % (v.get("MPTcpExtMPJoinSynRx", 0),
                                v.get("MPTcpExtMPJoinNoTokenFound", 0))
                  for s, v in sorted(dn.items())}, a.dsr_joins, a.dsr_joins, owner, other))
    print("\n".join(lines))
    return 1 if fails else 0

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("responder")
    r.add_argument("--iface", required=True)
    r.add_argument("--backend", action="append", required=True, help="NAME=ADDR=KEY")
    r.add_argument("--port", type=int, default=9090)
    r.add_argument("--probe-source", default="10.91.0.1", help="the gateway's health probes")
    r.add_argument("--state", required=True)
    r.add_argument("--ready")
    r.add_argument("--wrong-hmac", action="store_true",
                   help="answer joins with the other backend's connection's keys")
    n = sub.add_parser("nat-client")
    n.add_argument("--vip", required=True)
    n.add_argument("--port", type=int, default=80)
    n.add_argument("--state", required=True, help="the responder's state file")
    n.add_argument("--want", default="fake1,fake2")
    n.add_argument("--setup-timeout", type=float, default=15)
    n.add_argument("--hold", type=float, default=120)
    n.add_argument("--ready")
    n.add_argument("--release", default="fake1", help="the connection SIGUSR1 closes")
    n.add_argument("--release-timeout", type=float, default=8)
    n.add_argument("--released", help="JSON written once SIGUSR1's release is judged")
    d = sub.add_parser("dsr-client")
    d.add_argument("--vip", required=True)
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--src", default="10.90.0.50")
    d.add_argument("--join-src", default="10.90.0.51")
    d.add_argument("--tx-if", default="cli0")
    d.add_argument("--rx-if", default="cli1")
    d.add_argument("--gw-mac", default="02:90:00:00:00:01")
    d.add_argument("--api", required=True, help="the gateway's API Unix socket")
    d.add_argument("--joins", type=int, default=2)
    d.add_argument("--max-tries", type=int, default=12)
    d.add_argument("--keep", action="store_true", help="do not reset the crafted connections")
    v = sub.add_parser("verify", help="the verdict over a run's directory (e2e-collide.sh)")
    v.add_argument("--out", required=True)
    v.add_argument("--nat-vip", default="10.90.100.30")
    v.add_argument("--fake-addr", action="append", default=["10.91.0.31", "10.91.0.32"])
    v.add_argument("--dsr-joins", type=int, default=2)
    v.add_argument("--wrong-owner", action="store_true")
    a = ap.parse_args()
    return {"responder": responder, "nat-client": nat_client, "dsr-client": dsr_client,
            "verify": verify}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main() or 0)

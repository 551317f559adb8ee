#!/usr/bin/env python3
"""Make the Pktgen-DPDK pcap traces from the real Linux MPTCP captures.

Reads the client-side captures in dataplane/testdata/captures/ (real Linux MPTCP connections
through a Linux DNAT, see dataplane/testdata/README.md), keeps the client -> VIP direction only
(what a generator sends), and rewrites every frame to the addresses of
benches/pktgen/gateway-memif.toml:

  Ethernet  dst = the gateway's client port MAC, src = pktgen port 0's MAC
  IP        client addresses -> the bench client ranges, VIP -> the bench VIP
  TCP       client ports -> per-connection ports (first subflow 40000 + i, join 50000 + i)

Files named *_1conn.pcap hold one captured connection with its captured MPTCP keys. Files named
*_<N>conns.pcap hold N copies of it, each with its own client ports and addresses and its own
MPTCP keys (derived deterministically from the connection's index), so that one pass teaches the
gateway N tokens and routes N joins over the whole pool. Changing a key changes everything the
key determines, so every copy is a self-consistent MPTCP connection:

  * MP_CAPABLE keys in the third ACK and the first data segment,
  * the token in the MP_JOIN SYN (first 32 bits of SHA-256 of the server's key, RFC 8684 §3.1),
  * the HMAC in the MP_JOIN third ACK (HMAC-SHA256 keyed client key || server key over the
    client's || the server's nonce; the server's nonce is read from the captured SYN/ACK),
  * data sequence numbers and data ACKs in DSS options (they count from the IDSN, the last 64
    bits of SHA-256 of the key).

The tool checks these relations on the captured keys before rewriting anything (a capture whose
token or join HMAC does not match its keys is refused). IPv4 header and TCP checksums are
recomputed. Python 3 standard library only; output is byte-for-byte reproducible (timestamps are
synthetic). Run from anywhere:

  python3 benches/pktgen/make_traces.py            # writes benches/pktgen/traces/*.pcap
  python3 benches/pktgen/make_traces.py --check    # verifies the committed files are up to date
"""

import argparse
import hashlib
import hmac
import ipaddress
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", ".."))
CAPTURES = os.path.join(REPO, "dataplane", "testdata", "captures")
OUT = os.path.join(HERE, "traces")

# ---- The bench addressing (must agree with gateway-memif.toml and the Lua scripts) -----------
GW_CLIENT_MAC = "02:74:7a:00:00:01"  # the gateway's client port (ports[0].mac)
PKTGEN_P0_MAC = "02:74:7a:00:10:00"  # pktgen port 0 (memif mac= devarg; ports[0].gateway_mac)
VIP4 = "198.18.100.10"  # VIP dsr4 (DSR: tokens are learned from the client's third ACK)
VIP6 = "2001:2:0:100::10"  # VIP dsr6
VIP_PORT = 80
# Client n of a trace: first subflow from CLIENT4_A + n, join from CLIENT4_B + n.
CLIENT4_A = "198.19.0.0"
CLIENT4_B = "198.19.128.0"
CLIENT6_A = "2001:2:0:8000::"
CLIENT6_B = "2001:2:0:8001::"
PORT_A = 40000  # first subflow's source port + n
PORT_B = 50000  # join's source port + n

# The captured addresses (dataplane/testdata/README.md).
CAP_VIP4, CAP_VIP6 = "203.0.113.10", "2001:db8:ff::10"
CAP_CLI4 = {"192.0.2.10": "A", "192.0.2.11": "B"}
CAP_CLI6 = {"2001:db8:1::10": "A", "2001:db8:1::11": "B"}

# (output stem, capture, family, copies)
TRACES = [
    ("v4_mptcp_join_1conn", "v4_mptcp_join", 4, 1),
    ("v4_mptcp_join_64conns", "v4_mptcp_join", 4, 64),
    ("v6_mptcp_join_1conn", "v6_mptcp_join", 6, 1),
    ("v6_mptcp_join_16conns", "v6_mptcp_join", 6, 16),
    ("v4_plain_tcp_16conns", "v4_plain_tcp", 4, 16),
]

# ---- pcap ------------------------------------------------------------------------------------


def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, _, _, _, _, _, linktype = struct.unpack_from("<IHHiIII", data, 0)
    if magic != 0xA1B2C3D4 or linktype != 1:
        raise SystemExit(f"{path}: not a little-endian microsecond Ethernet pcap")
    off, frames = 24, []
    while off < len(data):
        _, _, incl, orig = struct.unpack_from("<IIII", data, off)
        if incl != orig:
            raise SystemExit(f"{path}: truncated frame")
        frames.append(bytearray(data[off + 16 : off + 16 + incl]))
        off += 16 + incl
    return frames


def pcap_bytes(frames):
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    for i, f in enumerate(frames):
        us = i * 100  # synthetic: 100 us apart (pktgen ignores them)
        out += struct.pack("<IIII", 1_700_000_000 + us // 1_000_000, us % 1_000_000, len(f), len(f))
        out += f
    return bytes(out)


# ---- checksums -------------------------------------------------------------------------------


def csum(data):
    if len(data) % 2:
        data = bytes(data) + b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def fix_checksums(f):
    et = struct.unpack_from("!H", f, 12)[0]
    if et == 0x0800:
        ihl = (f[14] & 0xF) * 4
        f[24:26] = b"\0\0"
        f[24:26] = struct.pack("!H", csum(f[14 : 14 + ihl]))
        tot = struct.unpack_from("!H", f, 16)[0]
        l4, l4len = 14 + ihl, tot - ihl
        pseudo = f[26:34] + struct.pack("!BBH", 0, 6, l4len)
    else:
        l4len = struct.unpack_from("!H", f, 18)[0]
        l4 = 54
        pseudo = f[22:54] + struct.pack("!IxxxB", l4len, 6)
    f[l4 + 16 : l4 + 18] = b"\0\0"
    f[l4 + 16 : l4 + 18] = struct.pack("!H", csum(bytes(pseudo) + bytes(f[l4 : l4 + l4len])))


# ---- MPTCP -----------------------------------------------------------------------------------


def token(key):
    return hashlib.sha256(struct.pack("!Q", key)).digest()[:4]


def idsn(key):
    return struct.unpack("!Q", hashlib.sha256(struct.pack("!Q", key)).digest()[24:])[0]


def join_hmac(key_a, key_b, nonce_a, nonce_b):
    return hmac.new(
        struct.pack("!QQ", key_a, key_b), struct.pack("!II", nonce_a, nonce_b), hashlib.sha256
    ).digest()[:20]


def derived_key(capture, role, n):
    """The MPTCP key of copy n (n = 0 keeps the captured key)."""
    h = hashlib.sha256(f"trapeze-pktgen/{capture}/{role}/{n}".encode()).digest()
    return struct.unpack("!Q", h[:8])[0]


def tcp_offsets(f):
    """(l4 offset, options start, options end, src IP, dst IP) of a TCP frame."""
    et = struct.unpack_from("!H", f, 12)[0]
    if et == 0x0800:
        l4 = 14 + (f[14] & 0xF) * 4
        src, dst = str(ipaddress.IPv4Address(bytes(f[26:30]))), str(ipaddress.IPv4Address(bytes(f[30:34])))
    elif et == 0x86DD:
        assert f[20] == 6, "IPv6 extension headers are not expected in these captures"
        l4 = 54
        src, dst = str(ipaddress.IPv6Address(bytes(f[22:38]))), str(ipaddress.IPv6Address(bytes(f[38:54])))
    else:
        raise ValueError("not IP")
    doff = (f[l4 + 12] >> 4) * 4
    return l4, l4 + 20, l4 + doff, src, dst


def mptcp_options(f, start, end):
    """Yield (offset, length, subtype) of every MPTCP option (kind 30) between start and end."""
    i = start
    while i < end:
        kind = f[i]
        if kind == 0:
            return
        if kind == 1:
            i += 1
            continue
        ln = f[i + 1]
        if ln < 2 or i + ln > end:
            return
        if kind == 30:
            yield i, ln, f[i + 2] >> 4
        i += ln


MP_CAPABLE, MP_JOIN, DSS = 0, 1, 2


def learn_keys(frames, client_addrs):
    """The captured client and server keys, the join nonces, and the frames' directions."""
    ck = sk = None
    nonce_a = nonce_b = token_seen = join_hmac_seen = None
    for f in frames:
        l4, o, e, src, _ = tcp_offsets(f)
        flags = f[l4 + 13]
        from_client = src in client_addrs
        for i, ln, st in mptcp_options(f, o, e):
            if st == MP_CAPABLE and ln >= 12:
                k1 = struct.unpack_from("!Q", f, i + 4)[0]
                if from_client and ln >= 20:
                    ck, k2 = k1, struct.unpack_from("!Q", f, i + 12)[0]
                    assert sk in (None, k2)
                    sk = k2
                elif not from_client:
                    sk = k1
            if st == MP_JOIN:
                if flags & 0x12 == 0x02:  # SYN
                    token_seen = bytes(f[i + 4 : i + 8])
                    nonce_a = struct.unpack_from("!I", f, i + 8)[0]
                elif flags & 0x12 == 0x12:  # SYN/ACK
                    nonce_b = struct.unpack_from("!I", f, i + 12)[0]
                elif from_client and ln == 24:
                    join_hmac_seen = bytes(f[i + 4 : i + 24])
    return ck, sk, nonce_a, nonce_b, token_seen, join_hmac_seen


def rewrite_mptcp(f, o, e, old, new, nonces):
    """Replace the keys (old/new = (client key, server key)) in a client -> server frame."""
    (ock, osk), (nck, nsk) = old, new
    for i, ln, st in list(mptcp_options(f, o, e)):
        if st == MP_CAPABLE and ln >= 20:
            f[i + 4 : i + 20] = struct.pack("!QQ", nck, nsk)
        elif st == MP_JOIN and ln == 12:  # SYN: token + nonce
            f[i + 4 : i + 8] = token(nsk)
        elif st == MP_JOIN and ln == 24:  # third ACK: HMAC
            f[i + 4 : i + 24] = join_hmac(nck, nsk, *nonces)
        elif st == DSS:
            fl, p = f[i + 3], i + 4
            if fl & 0x01:  # data ACK: counts the server's data, from the server's IDSN
                if fl & 0x02:
                    v = struct.unpack_from("!Q", f, p)[0]
                    f[p : p + 8] = struct.pack("!Q", (v - idsn(osk) + idsn(nsk)) % (1 << 64))
                    p += 8
                else:
                    v = struct.unpack_from("!I", f, p)[0]
                    f[p : p + 4] = struct.pack("!I", (v - idsn(osk) + idsn(nsk)) % (1 << 32))
                    p += 4
            if fl & 0x04:  # mapping: the client's data sequence number
                if fl & 0x08:
                    v = struct.unpack_from("!Q", f, p)[0]
                    f[p : p + 8] = struct.pack("!Q", (v - idsn(ock) + idsn(nck)) % (1 << 64))
                else:
                    v = struct.unpack_from("!I", f, p)[0]
                    f[p : p + 4] = struct.pack("!I", (v - idsn(ock) + idsn(nck)) % (1 << 32))


def mac(s):
    return bytes(int(x, 16) for x in s.split(":"))


def make_trace(capture, family, copies):
    frames = read_pcap(os.path.join(CAPTURES, capture + ".client.pcap"))
    cap_clients = CAP_CLI4 if family == 4 else CAP_CLI6
    cap_vip = CAP_VIP4 if family == 4 else CAP_VIP6
    ck, sk, na, nb, tok, jh = learn_keys(frames, cap_clients)
    mptcp = ck is not None
    if mptcp:
        # The relations the rewrite relies on, checked on what Linux produced.
        if tok is not None and tok != token(sk):
            raise SystemExit(f"{capture}: join token {tok.hex()} is not SHA-256(server key)")
        if jh is not None and jh != join_hmac(ck, sk, na, nb):
            raise SystemExit(f"{capture}: join HMAC does not match the keys and nonces")
    # The client -> VIP frames, and the captured source port of each client address.
    out_frames = []
    sent = []
    for f in frames:
        l4, o, e, src, dst = tcp_offsets(f)
        if src in cap_clients and dst == cap_vip:
            sent.append(f)
    if family == 4:
        base = {"A": ipaddress.IPv4Address(CLIENT4_A), "B": ipaddress.IPv4Address(CLIENT4_B)}
        vip = ipaddress.IPv4Address(VIP4).packed
    else:
        base = {"A": ipaddress.IPv6Address(CLIENT6_A), "B": ipaddress.IPv6Address(CLIENT6_B)}
        vip = ipaddress.IPv6Address(VIP6).packed
    for n in range(copies):
        if n == 0 or not mptcp:
            new = (ck, sk)
        else:
            new = (derived_key(capture, "client", n), derived_key(capture, "server", n))
        for f0 in sent:
            f = bytearray(f0)
            l4, o, e, src, _ = tcp_offsets(f)
            role = cap_clients[src]
            f[0:6], f[6:12] = mac(GW_CLIENT_MAC), mac(PKTGEN_P0_MAC)
            addr = (base[role] + n + 1).packed
            if family == 4:
                f[26:30], f[30:34] = addr, vip
            else:
                f[22:38], f[38:54] = addr, vip
            sport = (PORT_A if role == "A" else PORT_B) + n
            f[l4 : l4 + 4] = struct.pack("!HH", sport, VIP_PORT)
            if mptcp and n > 0:
                rewrite_mptcp(f, o, e, (ck, sk), new, (na, nb))
            fix_checksums(f)
            out_frames.append(bytes(f))
    return out_frames


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the files on disk")
    ap.add_argument("--out", default=OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    stale = 0
    for stem, capture, family, copies in TRACES:
        frames = make_trace(capture, family, copies)
        data = pcap_bytes(frames)
        path = os.path.join(args.out, stem + ".pcap")
        if args.check:
            try:
                with open(path, "rb") as fh:
                    same = fh.read() == data
            except FileNotFoundError:
                same = False
            print(f"{'ok   ' if same else 'STALE'} {path}")
            stale += not same
            continue
        with open(path, "wb") as fh:
            fh.write(data)
        print(f"{path}: {len(frames)} frames ({copies} connection(s) x {len(frames) // copies}), {len(data)} bytes")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())

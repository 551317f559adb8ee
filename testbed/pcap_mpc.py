#!/usr/bin/env python3
"""The MP_CAPABLE SYN/ACKs in a pcap (Ethernet, IPv4 or IPv6, no VLAN) from a given source port,
and how many carry the C flag ("do not join the initial address", RFC 8684 §3.1).

Usage: pcap_mpc.py FILE --vip-port P [--min N] [--c-flag | --no-c-flag]
Exit status 1 when fewer than N such SYN/ACKs were captured or one of them breaks the
expectation (every one with C, or none with C). The TCP checksum of each is verified.
"""

import argparse
import struct
import sys


def csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def segments(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        end = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        while True:
            rec = f.read(16)
            if len(rec) < 16:
                return
            _, _, incl, _ = struct.unpack(end + "IIII", rec)
            yield f.read(incl)


def mpc_syn_acks(path, port):
    for frame in segments(path):
        et = struct.unpack("!H", frame[12:14])[0]
        if et == 0x0800:
            ihl = (frame[14] & 15) * 4
            if frame[23] != 6:
                continue
            total = struct.unpack("!H", frame[16:18])[0]
            l4, end = 14 + ihl, 14 + total
            pseudo = frame[26:34] + struct.pack("!BBH", 0, 6, end - l4)
        elif et == 0x86DD:
            if frame[20] != 6:
                continue
            plen = struct.unpack("!H", frame[18:20])[0]
            l4, end = 54, 54 + plen
            pseudo = frame[22:54] + struct.pack("!IxxxB", end - l4, 6)
        else:
            continue
        tcp = frame[l4:end]
        if len(tcp) < 20 or struct.unpack("!H", tcp[0:2])[0] != port or tcp[13] & 0x12 != 0x12:
            continue
        ok = len(frame) >= end and csum(pseudo + tcp) == 0xFFFF
        opts, at = tcp[20 : (tcp[12] >> 4) * 4], 0
        while at < len(opts):
            kind = opts[at]
            if kind == 0:
                break
            if kind == 1:
                at += 1
                continue
            ln = opts[at + 1] if at + 1 < len(opts) else 0
            if ln < 2:
                break
            if kind == 30 and ln >= 4 and opts[at + 2] >> 4 == 0:
                yield ok, bool(opts[at + 3] & 0x20)
                break
            at += ln


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("pcap")
    ap.add_argument("--vip-port", type=int, required=True)
    ap.add_argument("--min", type=int, default=1)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--c-flag", action="store_true")
    g.add_argument("--no-c-flag", action="store_true")
    a = ap.parse_args()
    seen = list(mpc_syn_acks(a.pcap, a.vip_port))
    with_c = sum(c for _, c in seen)
    bad_sum = sum(not ok for ok, _ in seen)
    print("    client link: %d MP_CAPABLE SYN/ACKs from port %d, %d with the C flag, %d with a "
          "bad TCP checksum" % (len(seen), a.vip_port, with_c, bad_sum), file=sys.stderr)
    fail = len(seen) < a.min or bad_sum > 0
    if a.c_flag:
        fail |= with_c != len(seen)
    if a.no_c_flag:
        fail |= with_c != 0
    sys.exit(1 if fail else 0)


if __name__ == "__main__":
    main()

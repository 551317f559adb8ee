#!/usr/bin/env python3
"""A real Linux MPTCP echo server for the trapeze test bed (one per tz-srvN namespace).

It listens on 0.0.0.0:PORT and [::]:PORT with IPPROTO_MPTCP (262), for every --port given
(default 8080 only); plain TCP clients are accepted too (the kernel falls back). Per connection,
in its own thread, it:

* echoes every byte it receives as it arrives (so data flows both ways on every subflow),
* reads the client's first line, ``TZTB run=<run> conn=<n> bytes=<size>``, to name the connection,
* samples the connection's subflows with getsockopt(SOL_MPTCP, MPTCP_SUBFLOW_ADDRS) while it
  reads and once more at EOF (the union of what it saw is logged: the accepted socket's peer is
  only the first subflow's),
* after EOF: half-closes, lingers (--linger, 0.3 s), closes,
* appends one JSON line to the log file: server name, peer, local, proto (mptcp / tcp fallback),
  the server-side MPTCP token (the token every MP_JOIN of this connection carries), subflows,
  bytes and sha256 received and sent, timings, error.

The helpers at the top (MPTCP_INFO, MPTCP_SUBFLOW_ADDRS) are imported by transfers.py too.
"""

import argparse
import ctypes
import errno
import hashlib
import json
import os
import selectors
import signal
import socket
import struct
import sys
import threading
import time

IPPROTO_MPTCP = 262
SOL_MPTCP = 284
MPTCP_INFO = 1
MPTCP_SUBFLOW_ADDRS = 3
MPTCP_INFO_FLAG_FALLBACK = 1

_libc = ctypes.CDLL(None, use_errno=True)


def sockaddr_to_tuple(raw: bytes):
    """struct sockaddr_storage (native family, big-endian port) -> (addr, port) or None."""
    fam = struct.unpack_from("=H", raw, 0)[0]
    if fam == socket.AF_INET:
        port = struct.unpack_from("!H", raw, 2)[0]
        return (socket.inet_ntop(socket.AF_INET, raw[4:8]), port)
    if fam == socket.AF_INET6:
        port = struct.unpack_from("!H", raw, 2)[0]
        addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
        if addr.startswith("::ffff:") and "." in addr:
            addr = addr[len("::ffff:"):]
        return (addr, port)
    return None


def mptcp_info(sock):
    """(fallback, token, subflows) from MPTCP_INFO, or None when the socket is not MPTCP.

    On a connection that fell back to TCP the kernel refuses MPTCP_INFO (EOPNOTSUPP); that is
    reported as fallback=True."""
    try:
        raw = sock.getsockopt(SOL_MPTCP, MPTCP_INFO, 256)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENOPROTOOPT):
            return {"fallback": True, "token": None, "subflows": 0}
        raise
    if len(raw) < 16:
        return None
    # u8 subflows, 5 more u8, 2 bytes padding, u32 flags (offset 8), u32 token (offset 12)
    subflows = raw[0]
    flags, token = struct.unpack_from("=II", raw, 8)
    return {
        "fallback": bool(flags & MPTCP_INFO_FLAG_FALLBACK),
        "token": "0x%08x" % token,
        "subflows": subflows,
    }


def subflow_addrs(sock, max_subflows=8):
    """[(local, remote), ...] from MPTCP_SUBFLOW_ADDRS (a list of (addr, port) pairs), or None.

    Python's getsockopt cannot pass an input buffer, and the kernel reads the header
    (struct mptcp_subflow_data) from it, so this goes through libc."""
    hdr = 16
    elem = 256  # sizeof(struct mptcp_subflow_addrs): two sockaddr_storage
    buf = ctypes.create_string_buffer(hdr + elem * max_subflows)
    struct.pack_into("=IIII", buf, 0, hdr, 0, 0, elem)
    optlen = ctypes.c_uint32(len(buf))
    rc = _libc.getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_SUBFLOW_ADDRS, buf, ctypes.byref(optlen))
    if rc != 0:
        return None
    _, num, _, size_user = struct.unpack_from("=IIII", buf, 0)
    out = []
    for i in range(min(num, max_subflows)):
        off = hdr + i * size_user
        local = sockaddr_to_tuple(buf.raw[off:off + 128])
        remote = sockaddr_to_tuple(buf.raw[off + 128:off + 256])
        out.append((local, remote))
    return out


MPTCP_TCPINFO = 2
TCP_ESTABLISHED = 1


def established_subflows(sock, max_subflows=8):
    """How many of the connection's subflows are in TCP state ESTABLISHED (MPTCP_TCPINFO), or
    None. MPTCP_INFO's subflow count includes a join whose SYN is only just sent."""
    hdr = 16
    elem = 256  # room for one struct tcp_info; the kernel says how much it wrote (size_kernel)
    buf = ctypes.create_string_buffer(hdr + elem * max_subflows)
    struct.pack_into("=IIII", buf, 0, hdr, 0, 0, elem)
    optlen = ctypes.c_uint32(len(buf))
    rc = _libc.getsockopt(sock.fileno(), SOL_MPTCP, MPTCP_TCPINFO, buf, ctypes.byref(optlen))
    if rc != 0:
        return None
    _, num, _, size_user = struct.unpack_from("=IIII", buf, 0)
    return sum(1 for i in range(min(num, max_subflows)) if buf.raw[hdr + i * size_user] == TCP_ESTABLISHED)


class SubflowLog:
    """Union of the subflows seen on one connection, in order of first sighting."""

    def __init__(self):
        self.seen = []

    def sample(self, sock):
        got = subflow_addrs(sock)
        if not got:
            return
        for lr in got:
            key = [list(lr[0]) if lr[0] else None, list(lr[1]) if lr[1] else None]
            if key not in self.seen:
                self.seen.append(key)


def parse_header(line: bytes):
    out = {}
    for word in line.decode("ascii", "replace").split()[1:]:
        if "=" in word:
            k, v = word.split("=", 1)
            out[k] = v
    return out


class Server:
    def __init__(self, args):
        self.args = args
        self.log_lock = threading.Lock()
        self.stop = threading.Event()

    def log(self, rec):
        line = json.dumps(rec, sort_keys=True) + "\n"
        with self.log_lock, open(self.args.log, "a") as f:
            f.write(line)
            f.flush()

    def handle(self, conn, peer):
        args = self.args
        t0 = time.time()
        rx = hashlib.sha256()
        tx = hashlib.sha256()
        nrx = ntx = 0
        header = b""
        hdr = {}
        subflows = SubflowLog()
        info = None
        err = None
        try:
            conn.settimeout(args.timeout)
            info = mptcp_info(conn)
            subflows.sample(conn)
            last_sample = time.monotonic()
            while True:
                b = conn.recv(65536)
                if not b:
                    break
                nrx += len(b)
                rx.update(b)
                if not hdr and len(header) < 512:
                    header += b
                    if b"\n" in header:
                        hdr = parse_header(header.split(b"\n", 1)[0]) or {"raw": "?"}
                conn.sendall(b)
                ntx += len(b)
                tx.update(b)
                now = time.monotonic()
                if now - last_sample > 0.02:
                    subflows.sample(conn)
                    last_sample = now
            subflows.sample(conn)
            info = mptcp_info(conn) or info
            conn.shutdown(socket.SHUT_WR)
            # Linger before close(): data (or a DATA_FIN) the client retransmits on another
            # subflow after our close() would be answered with a RST.
            time.sleep(args.linger)
        except OSError as e:
            err = "%s: %s" % (type(e).__name__, e)
        finally:
            conn.close()
        proto = "tcp"
        if info is not None and not info["fallback"]:
            proto = "mptcp"
        self.log({
            "server": args.name,
            "run": hdr.get("run"),
            "conn": int(hdr["conn"]) if hdr.get("conn", "").isdigit() else None,
            "peer": list(peer[:2]),
            "proto": proto,
            "token": info["token"] if info else None,
            "subflows": subflows.seen,
            "bytes_rx": nrx,
            "sha256_rx": rx.hexdigest(),
            "bytes_tx": ntx,
            "sha256_tx": tx.hexdigest(),
            "t_start": round(t0, 6),
            "t_end": round(time.time(), 6),
            "error": err,
        })

    def run(self):
        sel = selectors.DefaultSelector()
        listeners = []
        for port in self.args.port:
            for fam, addr in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
                ls = socket.socket(fam, socket.SOCK_STREAM, IPPROTO_MPTCP)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if fam == socket.AF_INET6:
                    ls.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                ls.bind((addr, port))
                ls.listen(256)
                ls.setblocking(False)
                sel.register(ls, selectors.EVENT_READ)
                listeners.append(ls)
        if self.args.ready:
            with open(self.args.ready, "w") as f:
                f.write("%d\n" % os.getpid())
        print("%s: listening on %s (MPTCP), log %s"
              % (self.args.name, ", ".join("0.0.0.0:%d and [::]:%d" % (p, p)
                                          for p in self.args.port), self.args.log),
              file=sys.stderr, flush=True)
        while not self.stop.is_set():
            for key, _ in sel.select(timeout=0.5):
                try:
                    conn, peer = key.fileobj.accept()
                except BlockingIOError:
                    continue
                conn.setblocking(True)
                threading.Thread(target=self.handle, args=(conn, peer), daemon=True).start()
        for ls in listeners:
            ls.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--name", required=True)
    ap.add_argument("--port", type=int, action="append",
                    help="port to listen on (repeatable; default 8080)")
    ap.add_argument("--log", required=True, help="JSON-lines file, one line per connection")
    ap.add_argument("--ready", help="file created once listening")
    ap.add_argument("--timeout", type=float, default=30.0, help="per-connection socket timeout")
    ap.add_argument("--linger", type=float, default=0.3, help="seconds between shutdown and close")
    args = ap.parse_args()
    args.port = args.port or [8080]
    srv = Server(args)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: srv.stop.set())
    signal.signal(signal.SIGINT, lambda *_: srv.stop.set())
    srv.run()


if __name__ == "__main__":
    main()

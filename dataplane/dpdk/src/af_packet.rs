//! The kernel's side of an `net_af_packet` port: the frames the kernel dropped because the
//! packet socket's RX ring was full.
//!
//! DPDK 22.11's af_packet PMD never reads them (its `stats_get` fills packets and bytes only;
//! the library does not even import `getsockopt`), so `imissed` stays 0 however many frames the
//! kernel threw away. They are in the socket's `PACKET_STATISTICS` (`tpacket_stats.tp_drops`,
//! reset by every read). The PMD does not expose its sockets, so they are found the way `ss`
//! finds sockets: among this process's file descriptors, the `AF_PACKET` sockets bound to the
//! port's interface (one per queue pair).

use std::os::unix::ffi::OsStrExt;

/// Reads and thereby resets `tp_drops` of every `AF_PACKET` socket of this process bound to
/// interface `if_index`; returns their sum (frames the kernel dropped since the last call).
/// Descriptors that are not such sockets, or that close meanwhile, are skipped.
pub(crate) fn take_ring_drops(if_index: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return 0;
    };
    let mut drops = 0u64;
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        match std::fs::read_link(entry.path()) {
            Ok(t) if t.as_os_str().as_bytes().starts_with(b"socket:") => {}
            _ => continue,
        }
        // SAFETY: `sockaddr_ll` is plain integers and byte arrays; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `fd` is a descriptor number (at worst no longer open, or reused: the call
        // then fails or describes another socket, which the checks below skip); `addr` is a
        // writable buffer of `len` bytes, and the kernel writes at most `len`.
        let got = unsafe {
            libc::getsockname(
                fd,
                std::ptr::addr_of_mut!(addr).cast::<libc::sockaddr>(),
                &mut len,
            )
        };
        if got != 0
            || i32::from(addr.sll_family) != libc::AF_PACKET
            || addr.sll_ifindex as u32 != if_index
        {
            continue;
        }
        let mut st = libc::tpacket_stats {
            tp_packets: 0,
            tp_drops: 0,
        };
        let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
        // SAFETY: `fd` is an AF_PACKET socket (or the call fails); `st` is a writable
        // `tpacket_stats` of `len` bytes (the TPACKET_V2 layout the PMD's rings use; the kernel
        // writes at most `len`).
        let ok = unsafe {
            libc::getsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_STATISTICS,
                std::ptr::addr_of_mut!(st).cast::<libc::c_void>(),
                &mut len,
            )
        };
        if ok == 0 {
            drops += u64::from(st.tp_drops);
        }
    }
    drops
}

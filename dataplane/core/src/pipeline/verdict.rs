//! What the pipeline tells the worker to do with a frame, and why it drops one.
//!
//! [`DropReason`] and [`Event`] double as metric labels: every variant has a stable snake_case
//! name ([`DropReason::name`], [`Event::name`]) that the metrics endpoint exports.

use crate::pool::{BackendId, PortId, VipId};

/// The decision for one frame. The frame has been rewritten in place when the verdict sends it.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Send the (rewritten) frame on this port.
    Forward {
        /// Egress port.
        port: PortId,
    },
    /// Send the frame, turned into a reply (ARP, NDP, ICMP echo or an ICMP error), on this port.
    Reply {
        /// Egress port.
        port: PortId,
    },
    /// Free the frame; count the reason.
    Drop(DropReason),
    /// Hand the frame to the host stack / control plane (ARP replies for the neighbour cache,
    /// traffic for the gateway's own addresses).
    Punt,
    /// The flow belongs to another worker (its table holds the state): pass the frame over.
    Handoff {
        /// Index of the owning worker.
        worker: u16,
    },
}

macro_rules! labelled_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $label:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum $name { $($(#[$vm])* $v,)* }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$v,)*];
            /// Number of variants.
            pub const COUNT: usize = Self::ALL.len();
            /// Stable metric label.
            pub const fn name(self) -> &'static str {
                match self { $($name::$v => $label,)* }
            }
        }
    };
}

labelled_enum! {
    /// Why a frame was dropped. One counter per variant per worker.
    DropReason {
        /// Frame shorter than an Ethernet header, a complete 802.1Q tag, or the fixed IPv4/IPv6
        /// header its EtherType announces (catalogue L1). Also a frame from a port the pool does
        /// not know.
        Runt => "l2_runt",
        /// 802.1Q tag that does not match the port's VLAN, or QinQ (L3).
        VlanUnexpected => "vlan_unexpected",
        /// EtherType that is neither IPv4, IPv6 nor ARP (L2).
        UnknownEthertype => "unknown_ethertype",
        /// Malformed ARP (L4).
        ArpBad => "arp_bad",
        /// ARP request for an address that is not ours (L5).
        ArpNotOurs => "arp_not_ours",
        /// ARP reply claiming the gateway's own address or a VIP, or a backend's address on a
        /// port other than the backend's: not punted, so never learned (L5, no cache poisoning).
        ArpSpoof => "arp_spoof",
        /// IP to a broadcast/multicast MAC other than neighbour discovery's, or ARP to a multicast
        /// MAC other than broadcast (L9).
        L2Multicast => "l2_multicast",
        /// Unicast frame for another MAC than the ingress port's (a promiscuous port, a switch
        /// flooding an unknown destination): neither forwarded nor answered.
        L2NotOurs => "l2_not_ours",
        /// IP version field does not match the EtherType (4a, 6a).
        IpBadVersion => "ip_bad_version",
        /// IPv4 IHL < 5 (4b).
        IpBadHeaderLen => "ip_bad_header_len",
        /// IP length fields inconsistent with the frame (4d, 4e, 6b).
        IpBadLength => "ip_bad_length",
        /// IPv4 header checksum wrong (4f).
        IpBadChecksum => "ip_bad_checksum",
        /// Fragments (4h, 6f, 6g): not reassembled. TCP endpoints send with DF and discover the
        /// path MTU (ICMP errors reach the backends, I1); NAT never grows a packet. The gateway
        /// does no MSS clamping.
        Fragment => "frag_drop",
        /// IPv4 LSRR/SSRR or IPv6 routing header type 0 (4c, 6e).
        SourceRoute => "source_route",
        /// IPv6 extension-header chain too long, out of order, truncated, or holding a header the
        /// gateway does not cross (AH, Mobility, HIP, Shim6, experimental) (6c, 6d).
        Ipv6ExtHeader => "ipv6_eh_drop",
        /// Martian source address (4j, 6j), a VIP as source, or an IPv4-mapped address in an
        /// IPv6 header.
        MartianSource => "martian_source",
        /// TTL / hop limit exhausted (4g, 6i); an ICMP time exceeded may have been sent instead.
        TtlExpired => "ttl_expired",
        /// Not TCP (or ICMP) towards a TCP VIP (4k).
        NotTcp => "not_tcp",
        /// TCP header shorter than 20 bytes or than its data offset (T1, T3).
        TcpTruncated => "tcp_truncated",
        /// TCP data offset < 5 (T2).
        TcpBadHeaderLen => "tcp_bad_header_len",
        /// Source or destination port 0 (T7).
        PortZero => "port_zero",
        /// Impossible flag combination: SYN+FIN, SYN+RST, no flags (T8).
        TcpBadFlags => "tcp_bad_flags",
        /// Destination is neither a VIP, a backend return path nor the gateway.
        NoVip => "no_vip",
        /// The VIP has no backend taking new connections (all down or drained; F6: fail closed).
        NoBackend => "no_backend",
        /// The flow's backend has been removed from the pool (hard removal, F5).
        BackendGone => "backend_gone",
        /// The flow's VIP has been removed.
        VipGone => "vip_gone",
        /// No next-hop MAC known yet for the destination.
        NoNeighbour => "no_neighbour",
        /// MP_JOIN SYN whose token is not in the token table (M11).
        JoinNoToken => "join_no_token",
        /// MP_JOIN SYN whose token is owned by connections on two backends (M12).
        JoinTokenAmbiguous => "join_token_ambiguous",
        /// MP_JOIN SYN whose owner is down or removed (M14).
        JoinOwnerDown => "join_owner_down",
        /// MP_JOIN SYN arriving on a VIP whose family the owner has no address in, or a VIP the
        /// owner does not serve.
        JoinNoPath => "join_no_path",
        /// Packet for no VIP, arriving on a port no VIP takes clients on (the backend side), from
        /// an endpoint that is not a configured backend (I7, anti-spoofing).
        NotFromBackend => "not_from_backend",
        /// ICMP error quoting no known flow, or not quoting a VIP (I2).
        IcmpNoFlow => "icmp_no_flow",
        /// ICMP message malformed or with a bad checksum (I3).
        IcmpBad => "icmp_bad",
        /// ICMP error about an ICMP error (I3).
        IcmpErrorAboutError => "icmp_error_about_error",
        /// ICMP type the gateway does not handle for a VIP.
        IcmpUnsupported => "icmp_unsupported",
        /// A reply (echo, error) over its rate limit (I5).
        RateLimited => "rate_limited",
        /// The frame has no room to grow for a generated reply, a VLAN tag or a DSR tunnel
        /// header (a multi-segment or headroom-less buffer).
        NoRoom => "no_room",
        /// DSR: the packet with its tunnel headers would exceed the egress MTU. An ICMP
        /// fragmentation needed (IPv4 with DF) or packet too big (IPv6) went back to the client
        /// unless rate-limited; IPv4 without DF is dropped (the gateway does not fragment).
        DsrTooBig => "dsr_too_big",
    }
}

labelled_enum! {
    /// Things that happened to a packet besides its verdict (several may happen to one packet).
    Event {
        /// A SYN opened a new flow through Maglev.
        NewFlow => "new_flow",
        /// A non-SYN packet without flow state was forwarded by Maglev and adopted (T10).
        NonSynMiss => "nonsyn_miss",
        /// The flow table had no room: forwarded statelessly by Maglev (F10).
        FlowTableFull => "flow_table_full",
        /// A live half-open flow was evicted to make room.
        HalfOpenEvicted => "half_open_evicted",
        /// A retransmitted SYN kept its flow (T11).
        SynRetransmit => "syn_retransmit",
        /// A new SYN reused the 5-tuple of a closed flow and was re-balanced (T12).
        SynReuse => "syn_reuse",
        /// A token was learned from the backend's MP_CAPABLE SYN/ACK.
        TokenLearned => "token_learned",
        /// The learned token was confirmed by the client's third ACK.
        TokenConfirmed => "token_confirmed",
        /// Two backends' connections share a token (both kept; joins refused).
        TokenCollision => "token_collision",
        /// A backend reused a token of one of its old connections (old owner replaced).
        TokenReused => "token_reused",
        /// The token table was full: the connection works, its joins will be refused (F11).
        TokenTableFull => "token_table_full",
        /// The client's echoed server key differed from the one learned: token dropped.
        MpcKeyMismatch => "mpc_key_mismatch",
        /// The connection fell back to plain TCP after MP_CAPABLE: token dropped.
        MpcFallback => "mpc_fallback",
        /// MP_CAPABLE in a packet of a flow whose SYN had none: ignored (M7).
        MpcUnexpected => "mpc_unexpected",
        /// MP_CAPABLE version 0 (RFC 6824): handled as plain TCP (M4).
        MpcVersion0 => "mpc_v0",
        /// An MPTCP option broke the length/flag rules and was ignored (M1, M3, M6, M10, ...).
        MptcpOptionIgnored => "mptcp_opt_ignored",
        /// Conflicting MPTCP options (MP_CAPABLE + MP_JOIN, duplicates): plain TCP (M8, M9).
        MptcpConflict => "mptcp_conflict",
        /// A TCP option area ended in a malformed option (T4, T5).
        TcpOptionMalformed => "tcp_opt_malformed",
        /// An MP_JOIN SYN was routed to its connection's backend.
        JoinRouted => "join_routed",
        /// MP_FASTCLOSE with the learned key ended a connection's token.
        FastClose => "fastclose",
        /// MP_FASTCLOSE with a key other than the learned one: ignored (M19).
        FastCloseBadKey => "fastclose_bad_key",
        /// Backend reply without flow state, rewritten statelessly (after a restart, or state
        /// held by another worker was lost).
        ReturnStateless => "return_stateless",
        /// A flow ended or expired and released its token subflow reference.
        TokenReleased => "token_released",
        /// An ICMP error was forwarded to the backend of the flow it quotes (I1).
        IcmpForwarded => "icmp_fwd",
        /// An ICMP Packet Too Big / Fragmentation Needed with an MTU below the minimum (I4).
        IcmpSmallMtu => "icmp_ptb_small_mtu",
        /// ICMP time exceeded sent back to a sender.
        TimeExceededSent => "time_exceeded_sent",
        /// IPv4 packet with options (forwarded).
        Ipv4Options => "ipv4_options",
        /// IPv4 record-route or timestamp options overwritten with NOPs, so that no backend
        /// address reaches a client through them (and no client learns the path inside).
        Ipv4OptionsBlanked => "ipv4_options_blanked",
        /// TCP checksum wrong on a packet the gateway would learn from: not learned (T14).
        BadL4ChecksumNotLearned => "bad_l4_csum_not_learned",
        /// DSR: a token was learned from the client's MP_CAPABLE third ACK (or first data
        /// segment), the only MPTCP packet carrying both keys that the gateway sees.
        TokenLearnedFromClient => "token_learned_from_client",
        /// DSR: a client claimed a token that another backend's connection already owns; the
        /// claim is refused (first owner wins), so no client can take over or spoil another
        /// connection's joins. The claimant's joins follow the existing owner.
        TokenClaimRefused => "token_claim_refused",
        /// DSR: an MP_CAPABLE ACK that is not the first segment after the SYN (sequence number
        /// other than the SYN's + 1) or arrived after the flow was established: not learned.
        MpcAckOutOfSequence => "mpc_ack_out_of_sequence",
        /// DSR: a packet was encapsulated to its backend.
        DsrEncapsulated => "dsr_encapsulated",
        /// DSR: an ICMP fragmentation needed / packet too big was sent to a client.
        DsrTooBigSent => "dsr_too_big_sent",
        /// A new subflow to a stateless join port went to that port's backend (no state, no
        /// token lookup: the same on every instance and after a restart).
        JoinPortRouted => "join_port_routed",
        /// The gateway sent a client an ADD_ADDR for its connection (announce mode).
        AnnounceSent => "announce_sent",
        /// The client echoed the gateway's ADD_ADDR; the echo was absorbed (not forwarded).
        AnnounceEchoed => "announce_echoed",
        /// The client never echoed the gateway's ADD_ADDR (sent the maximum number of times).
        AnnounceUnechoed => "announce_unechoed",
        /// No room in the worker's announcement queue this burst: sent with a later packet.
        AnnounceQueueFull => "announce_queue_full",
        /// Off-path mode: the client was asked (MP_PRIO, B = 1) to keep the subflow through the
        /// gateway as a backup.
        PrioBackupSent => "prio_backup_sent",
        /// NAT: the C flag ("do not join the initial address", RFC 8684 §3.1) was set in the
        /// MP_CAPABLE of a backend's SYN/ACK on its way to the client (the VIP's
        /// `deny_join_initial`).
        DenyJoinInitialSet => "deny_join_initial_set",
    }
}

/// Counters of one worker, plain integers owned by that worker (no atomics on the packet path).
/// `rx` and `forwarded`, counted together on the established path, are kept apart in memory
/// (see [`VipCounters`]).
#[derive(Debug, Clone)]
#[repr(C)]
pub struct WorkerStats {
    /// Frames handed to `process`.
    pub rx: u64,
    /// Replies generated.
    pub replied: u64,
    /// Frames forwarded.
    pub forwarded: u64,
    /// Frames punted.
    pub punted: u64,
    /// Frames handed to another worker.
    pub handed_off: u64,
    /// Drops, by reason.
    pub drops: [u64; DropReason::COUNT],
    /// Events, by kind.
    pub events: [u64; Event::COUNT],
    /// Per VIP id: packets and bytes forwarded client -> backend, new connections, joins routed.
    pub vips: Box<[VipCounters]>,
    /// Per backend id.
    pub backends: Box<[BackendCounters]>,
    /// Migration: the pool version in use when this worker's last complete walk of its flow
    /// table began (0: none yet). Its [`BackendCounters::migrate_pending`] come from that walk:
    /// the control plane trusts a 0 only from a walk that began after the drain was published.
    pub migrate_pass: u64,
}

/// Per-VIP counters.
///
/// The fields counted together on the packet path (packets and bytes) are kept apart in memory
/// (`repr(C)`, in this order): side by side, the compiler packs the two increments into vector
/// instructions that cost more than two adds (`benches/budget.py` shows it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct VipCounters {
    /// Packets towards backends.
    pub packets: u64,
    /// New connections.
    pub new_conns: u64,
    /// Bytes towards backends (IP length).
    pub bytes: u64,
    /// Packets forwarded back towards clients (NAT return path; 0 for a DSR VIP, whose backends
    /// answer the clients directly).
    pub to_client_packets: u64,
    /// Joins routed.
    pub joins: u64,
    /// Bytes forwarded back towards clients (IP length).
    pub to_client_bytes: u64,
}

impl VipCounters {
    /// Adds another worker's counters.
    #[inline]
    pub fn add(&mut self, o: &Self) {
        self.packets += o.packets;
        self.bytes += o.bytes;
        self.new_conns += o.new_conns;
        self.joins += o.joins;
        self.to_client_packets += o.to_client_packets;
        self.to_client_bytes += o.to_client_bytes;
    }
}

/// Per-backend counters (packets and bytes kept apart, as in [`VipCounters`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct BackendCounters {
    /// Packets sent to the backend.
    pub packets: u64,
    /// Flows of this worker's table pinned to the backend now (a gauge).
    pub active_flows: u64,
    /// Bytes sent to the backend.
    pub bytes: u64,
    /// New connections given to it.
    pub new_conns: u64,
    /// Joins routed to it.
    pub joins: u64,
    /// Migration (a draining backend with a direct address): MPTCP connections sent its direct
    /// address (ADD_ADDR).
    pub migrate_announced: u64,
    /// Migration: connections whose traffic moved to the direct subflow (after the echo and the
    /// MP_PRIO, the client's DATA_ACK on the subflow through the gateway ran ahead of that
    /// subflow's own acknowledgment by more than `migration::LEAD` bytes).
    pub migrate_migrated: u64,
    /// Migration: connections left to the drain policy (plain TCP, or a client that never echoed
    /// the address).
    pub migrate_left_behind: u64,
    /// Migration: connections that closed (FIN, DATA_FIN or RST) while being migrated.
    pub migrate_closed: u64,
    /// Migration (a gauge, from the worker's last complete walk of its flow table): connections
    /// of the backend that still need the gateway (being migrated, or left behind and open).
    pub migrate_pending: u64,
}

impl WorkerStats {
    /// Counters for up to `max_vips` VIP ids and `max_backends` backend ids, allocated once.
    pub fn new(max_vips: usize, max_backends: usize) -> Self {
        Self {
            rx: 0,
            forwarded: 0,
            replied: 0,
            punted: 0,
            handed_off: 0,
            drops: [0; DropReason::COUNT],
            events: [0; Event::COUNT],
            vips: vec![VipCounters::default(); max_vips].into_boxed_slice(),
            backends: vec![BackendCounters::default(); max_backends].into_boxed_slice(),
            migrate_pass: 0,
        }
    }

    /// Counts an event.
    #[inline]
    pub fn event(&mut self, e: Event) {
        self.events[e as usize] += 1;
    }

    /// The count of an event.
    pub fn events_of(&self, e: Event) -> u64 {
        self.events[e as usize]
    }

    /// The count of a drop reason.
    pub fn drops_of(&self, r: DropReason) -> u64 {
        self.drops[r as usize]
    }

    /// Total drops.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    /// Counts the verdict of one frame: exactly one terminal counter moves per frame.
    #[inline]
    pub fn verdict(&mut self, v: &Verdict) {
        match v {
            Verdict::Forward { .. } => self.forwarded += 1,
            Verdict::Reply { .. } => self.replied += 1,
            Verdict::Drop(r) => self.drops[*r as usize] += 1,
            Verdict::Punt => self.punted += 1,
            Verdict::Handoff { .. } => self.handed_off += 1,
        }
    }

    /// Counts a packet of `bytes` (IP length) sent towards a backend of a VIP.
    #[inline(always)]
    pub fn count_to_backend(&mut self, vip: VipId, backend: BackendId, bytes: u64) {
        if let Some(c) = self.vips.get_mut(vip.0 as usize) {
            c.packets += 1;
            c.bytes += bytes;
        }
        if let Some(c) = self.backends.get_mut(backend.0 as usize) {
            c.packets += 1;
            c.bytes += bytes;
        }
    }

    /// Conservation check: every frame received got exactly one verdict.
    pub fn balanced(&self) -> bool {
        self.rx == self.forwarded + self.replied + self.punted + self.handed_off + self.dropped()
    }

    /// Copies another worker's counters into this one without allocating (the two were created
    /// with the same sizes; extra entries of either side are left alone). Used to publish a
    /// worker's counters to the control thread now and then.
    pub fn copy_from(&mut self, o: &Self) {
        self.rx = o.rx;
        self.forwarded = o.forwarded;
        self.replied = o.replied;
        self.punted = o.punted;
        self.handed_off = o.handed_off;
        self.drops = o.drops;
        self.events = o.events;
        self.migrate_pass = o.migrate_pass;
        let n = self.vips.len().min(o.vips.len());
        self.vips[..n].copy_from_slice(&o.vips[..n]);
        let n = self.backends.len().min(o.backends.len());
        self.backends[..n].copy_from_slice(&o.backends[..n]);
    }

    /// [`Self::copy_from`] for the first `vips` VIP and `backends` backend ids only: the live
    /// id slots of the pool in use (`PoolSnapshot::vips.len()`, `backends.len()`), a few
    /// entries, where the tables are sized for the most ids a deployment may ever use (4096
    /// backends: 229 KiB). A worker publishes its counters this way without copying large
    /// structures; the entries of ids beyond the pool keep their last published value.
    pub fn copy_live_from(&mut self, o: &Self, vips: usize, backends: usize) {
        self.rx = o.rx;
        self.forwarded = o.forwarded;
        self.replied = o.replied;
        self.punted = o.punted;
        self.handed_off = o.handed_off;
        self.drops = o.drops;
        self.events = o.events;
        self.migrate_pass = o.migrate_pass;
        let n = vips.min(self.vips.len()).min(o.vips.len());
        self.vips[..n].copy_from_slice(&o.vips[..n]);
        let n = backends.min(self.backends.len()).min(o.backends.len());
        self.backends[..n].copy_from_slice(&o.backends[..n]);
    }

    /// Adds another worker's counters (for totals).
    pub fn merge(&mut self, o: &Self) {
        self.rx += o.rx;
        self.forwarded += o.forwarded;
        self.replied += o.replied;
        self.punted += o.punted;
        self.handed_off += o.handed_off;
        for (a, b) in self.drops.iter_mut().zip(o.drops.iter()) {
            *a += b;
        }
        for (a, b) in self.events.iter_mut().zip(o.events.iter()) {
            *a += b;
        }
        for (a, b) in self.vips.iter_mut().zip(o.vips.iter()) {
            a.add(b);
        }
        for (a, b) in self.backends.iter_mut().zip(o.backends.iter()) {
            a.active_flows += b.active_flows;
            a.packets += b.packets;
            a.bytes += b.bytes;
            a.new_conns += b.new_conns;
            a.joins += b.joins;
            a.migrate_announced += b.migrate_announced;
            a.migrate_migrated += b.migrate_migrated;
            a.migrate_left_behind += b.migrate_left_behind;
            a.migrate_closed += b.migrate_closed;
            a.migrate_pending += b.migrate_pending;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_live_from_copies_the_live_ids_and_every_total() {
        let mut w = WorkerStats::new(8, 64);
        w.rx = 5;
        w.forwarded = 4;
        w.drops[DropReason::NoVip as usize] = 1;
        w.events[Event::NewFlow as usize] = 3;
        w.vips[1].packets = 4;
        w.backends[2].packets = 4;
        w.backends[40].packets = 9; // beyond the live ids
        let mut p = WorkerStats::new(8, 64);
        p.copy_live_from(&w, 2, 3);
        assert_eq!((p.rx, p.forwarded), (5, 4));
        assert_eq!(p.drops_of(DropReason::NoVip), 1);
        assert_eq!(p.events_of(Event::NewFlow), 3);
        assert_eq!((p.vips[1].packets, p.backends[2].packets), (4, 4));
        assert_eq!(p.backends[40].packets, 0, "not copied");
        assert!(p.balanced());
        // Bounds larger than either table are clamped.
        p.copy_live_from(&w, 1000, 1000);
        assert_eq!(p.backends[40].packets, 9);
    }

    #[test]
    fn labels_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for r in DropReason::ALL {
            assert!(seen.insert(r.name()));
            assert!(r
                .name()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()));
        }
        for e in Event::ALL {
            assert!(seen.insert(e.name()));
        }
    }

    #[test]
    fn verdict_counting_balances() {
        let mut s = WorkerStats::new(1, 1);
        for v in [
            Verdict::Forward { port: PortId(0) },
            Verdict::Drop(DropReason::Runt),
            Verdict::Punt,
            Verdict::Reply { port: PortId(1) },
            Verdict::Handoff { worker: 1 },
        ] {
            s.rx += 1;
            s.verdict(&v);
        }
        assert!(s.balanced());
        assert_eq!(s.drops_of(DropReason::Runt), 1);
    }
}

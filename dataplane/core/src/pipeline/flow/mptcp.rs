//! MPTCP (RFC 8684): what the gateway learns from a connection's handshake, and how it routes the
//! connection's joins. Both forwarding modes learn here, under the rules of each.
//!
//! ## NAT: the server's key, from the trusted side
//!
//! * Client SYN with a valid MP_CAPABLE (v1): the flow is marked; nothing is learned yet.
//! * Backend SYN/ACK with MP_CAPABLE: the server's key is read **from the trusted side** (only
//!   a configured backend's packets reach this code), its token computed (SHA-256) and entered
//!   in the token table, owned by this backend and this connection.
//! * Client third ACK (or first data segment): its MP_CAPABLE echoes the server's key as the
//!   receiver key. Equal: the token is confirmed. Different: the token is dropped (a client can
//!   only spoil its own joins). No MP_CAPABLE: the connection fell back to TCP; the token goes.
//!
//! ## Joins and the end of a connection
//!
//! * MP_JOIN SYN: the token names the backend. Unknown or ambiguous (two backends' connections
//!   share it): dropped and counted, no state. Its owner down or removed: refused.
//! * The token stays while any subflow of its connection lives: each flow entry holding it counts
//!   as a reference; MP_FASTCLOSE with the right key ends it at once; the idle timeout is the
//!   backstop.
//!
//! ## DSR: both keys from the client, without the server's packets
//!
//! In NAT mode the token comes from the backend's SYN/ACK, the trusted side. In DSR the gateway
//! never sees the server's packets: the first MPTCP packet with the server's key is the client's
//! MP_CAPABLE third ACK (or, if that was lost, its first data segment), which carries both keys.
//! A client can put any key there, so learning is tightened:
//!
//! 1. Only from the first segment after the SYN: its sequence number must be the SYN's + 1 (plus
//!    any Fast Open data; the flow entry keeps it in `pending` while the handshake runs), and only while the
//!    flow is half-open. A segment with another sequence number is counted and leaves the flow
//!    half-open, so an off-path attacker can neither inject a key into someone else's handshake
//!    nor close its learning window without guessing the client's initial sequence number.
//! 2. Only from a segment whose TCP checksum verifies (T14), with both keys present.
//! 3. **First owner wins** ([`TokenTable::claim`](crate::tables::token::TokenTable::claim)): a
//!    token already owned by another backend's connection is refused and counted
//!    (`token_claim_refused`). A client that searches a key whose token matches a live
//!    connection's (2^32 SHA-256 evaluations) can neither steal that connection's joins nor make
//!    its token ambiguous; it can only spoil its own joins, which then follow the first owner.
//!
//! A genuine collision (two servers picking keys with equal tokens, ~1e-4 per million live
//! connections) therefore keeps the first connection's joins working and sends the second's to
//! the first owner. That server knows the token, so it answers with its own connection's HMAC;
//! the client rejects it (`MPJoinSynAckHMacFailure`) and resets that join (measured through the
//! daemon by `testbed/e2e-collide.sh --wrong-owner`). The second connection goes on over its
//! first subflow.

use trapeze_wire::checksum;
use trapeze_wire::mptcp::{self, MptcpError, MptcpSummary, SynRequest};
use trapeze_wire::tcp::{option_kind, TcpFlags, TcpOptions};

use super::announcing;
use crate::crypto;
use crate::pipeline::context::{Ctx, Shared};
use crate::pipeline::frame::Frame;
use crate::pipeline::parse::{self, Ip, Seg, TcpNumbers};
use crate::pipeline::verdict::{DropReason, Event, WorkerStats};
use crate::pool::{BackendId, ForwardingMode, PoolSnapshot, Vip, VipId};
use crate::tables::flow_table::{flags, FlowEntry};
use crate::tables::token::{ConfirmOutcome, JoinOutcome, LearnOutcome, Owner};
use crate::time::Ticks;

/// NAT: the backend's SYN/ACK on a half-open flow. Returns whether it moves the handshake on
/// (false: a corrupted SYN/ACK of an MPTCP connection; the flow waits for the retransmission).
pub(super) fn server_syn_ack<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    e: &mut FlowEntry,
) -> bool {
    first_subflow_learns(cx, frame, seg, e, |cx, e| {
        learn_token(cx, frame, ip, seg, e)
    })
}

/// NAT: the client's third ACK, after the backend's SYN/ACK. Returns whether it completes the
/// handshake (false: a corrupted third ACK of an MPTCP connection, T14: it neither confirms nor
/// drops the token; the endpoint discards it too, and the retransmission is judged instead).
pub(super) fn third_ack<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) -> bool {
    let learns = e.has(flags::MPC_SYN) && !e.has(flags::CONFIRMED);
    if learns && e.has(flags::TOKEN_REF) && !parse::tcp_checksum_ok(frame.data(), ip) {
        cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        return false;
    }
    if learns {
        e.flags |= flags::CONFIRMED;
        confirm_token(cx, frame, seg, t, e);
    } else if !e.has(flags::MPC_SYN | flags::JOIN) {
        unexpected_mpc(cx, frame, seg);
    }
    true
}

/// DSR: the client's first ACK. The SYN/ACK went straight to the client, so this ACK completes
/// the handshake as far as the gateway can tell, and an MPTCP connection's keys are learned from
/// it. Returns whether it completes the handshake (false: not the segment the keys may come
/// from, or a corrupted one; the flow stays half-open).
pub(super) fn dsr_first_ack<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) -> bool {
    first_subflow_learns(cx, frame, seg, e, |cx, e| {
        learn_from_client(cx, frame, ip, seg, t, e)
    })
}

/// The handshake step at which an MPTCP connection's first subflow learns its keys (`learn`,
/// whose answer is the step's); any other flow takes the step as it is, counting an MP_CAPABLE
/// its SYN did not have (M7).
fn first_subflow_learns<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    e: &mut FlowEntry,
    learn: impl FnOnce(&mut Ctx<'_>, &mut FlowEntry) -> bool,
) -> bool {
    if e.has(flags::MPC_SYN) && !e.has(flags::JOIN) {
        return learn(cx, e);
    }
    if !e.has(flags::MPC_SYN | flags::JOIN) {
        unexpected_mpc(cx, frame, seg);
    }
    true
}

/// NAT: sets the C flag ("do not join the initial address", RFC 8684 §3.1) in the MP_CAPABLE of
/// a backend's SYN/ACK when the VIP asks for it, updating the TCP checksum by the delta of the
/// one 16-bit word that changes (a segment that arrived corrupted stays corrupted). Nothing else
/// in the option changes. A client that honours the flag never opens a subflow to the VIP's
/// address and port, so the announced address (join port, server, migration target) is the
/// only one it joins.
pub(super) fn deny_join_initial<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &mut F,
    ip: &Ip,
    seg: &Seg,
    vip: VipId,
) {
    if !cx.pool.vip(vip).is_some_and(|v| v.deny_join_initial) {
        return;
    }
    let Some(at) = find_mp_capable(frame.data(), seg) else {
        return;
    };
    let flags_at = at + 3;
    let buf = frame.data_mut();
    if buf[flags_at] & mptcp::MpcFlags::DENY_JOIN_ID0.0 != 0 {
        return;
    }
    // The 16-bit word of the TCP segment holding the flags byte.
    let word_at = ip.l4 + ((flags_at - ip.l4) & !1);
    let old = u16::from_be_bytes([buf[word_at], buf[word_at + 1]]);
    buf[flags_at] |= mptcp::MpcFlags::DENY_JOIN_ID0.0;
    let new = u16::from_be_bytes([buf[word_at], buf[word_at + 1]]);
    let csum_at = ip.l4 + 16;
    let c = u16::from_be_bytes([buf[csum_at], buf[csum_at + 1]]);
    let c = checksum::update16(c, old, new);
    buf[csum_at..csum_at + 2].copy_from_slice(&c.to_be_bytes());
    cx.w.stats.event(Event::DenyJoinInitialSet);
}

/// Offset in `data` of the segment's MP_CAPABLE option (kind 30, subtype 0, at least the 4 bytes
/// up to its flags), if it has one.
fn find_mp_capable(data: &[u8], seg: &Seg) -> Option<usize> {
    let (mut at, end) = (seg.opt_at, seg.opt_at + seg.opt_len);
    while at < end {
        match data[at] {
            0 => return None,
            1 => at += 1,
            kind => {
                let len = *data.get(at + 1)? as usize;
                if len < 2 || at + len > end {
                    return None;
                }
                if kind == 30 && len >= 4 && data[at + 2] >> 4 == 0 {
                    return Some(at);
                }
                at += len;
            }
        }
    }
    None
}

/// What an opening SYN (no ACK) asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Syn {
    /// MP_JOIN: a new subflow of the connection with this token.
    Join {
        /// The receiver's token.
        token: u32,
    },
    /// MP_CAPABLE (v1): a new MPTCP connection; its keys may be learned.
    Capable,
    /// Plain TCP (or MPTCP options that do not count).
    Plain,
}

/// Reads what an opening SYN (no ACK) asks for, counting what [`scan`] counts: one walk over
/// the options that decodes nothing but an MP_JOIN's token ([`mptcp::scan_syn`]).
#[inline(always)]
pub(super) fn syn<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg) -> Syn {
    let area = frame
        .data()
        .get(seg.opt_at..seg.opt_at + seg.opt_len)
        .unwrap_or_default();
    syn_scanned(&mut cx.w.stats, area, seg)
}

/// What a first look at an opening SYN's options finds, counting nothing (so that the
/// new-connection fast path can still step aside): the walk of [`mptcp::scan`], stopped at the
/// first MP_JOIN.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SynOptions {
    /// No MPTCP option: the scan would find nothing, and count only a broken option area.
    Plain {
        /// The walk stopped at a broken option (T4, T5).
        malformed: bool,
    },
    /// MPTCP options, none of them an MP_JOIN, the first at `at` in the area. Everything
    /// before it is well-formed options of other kinds, which the scan passes over without a
    /// trace, so [`syn_scanned`] of the area from `at` says what it says of the whole area.
    Mptcp {
        /// Offset of the first MPTCP option (an option area is at most 40 bytes).
        at: u8,
    },
    /// An MP_JOIN (well-formed or not): the join's path decides.
    Join,
}

/// The first look at an opening SYN's option area (see [`SynOptions`]).
#[inline]
pub(super) fn syn_options(area: &[u8]) -> SynOptions {
    // Linux's SYN options, in the order it writes them (MSS, SACK permitted, timestamps, NOP,
    // window scale: 20 bytes), are well-formed options of other kinds: passed in one look.
    // An MP_JOIN alone (its SYN form, 12 bytes): what the walk's first step would return.
    if let [option_kind::MPTCP, 12, b2, _, _, _, _, _, _, _, _, _] = *area {
        if b2 >> 4 == mptcp::subtype::MP_JOIN {
            return SynOptions::Join;
        }
    }
    let skip = match area.first_chunk::<20>() {
        Some(a)
            if [a[0], a[1]] == [2, 4]
                && [a[4], a[5], a[6], a[7]] == [4, 2, 8, 10]
                && [a[16], a[17], a[18]] == [1, 3, 3] =>
        {
            20
        }
        _ => 0,
    };
    let mut walk = TcpOptions::new(area.get(skip..).unwrap_or_default());
    let mut first = None;
    while let Some((kind, raw)) = walk.next_raw() {
        if kind == option_kind::MPTCP {
            if raw
                .get(2)
                .is_some_and(|b| b >> 4 == mptcp::subtype::MP_JOIN)
            {
                return SynOptions::Join;
            }
            // The option's offset in the area (`raw` is a piece of it).
            first.get_or_insert((raw.as_ptr() as usize - area.as_ptr() as usize) as u8);
        }
    }
    match first {
        Some(at) => SynOptions::Mptcp { at },
        None => SynOptions::Plain {
            malformed: walk.malformed(),
        },
    }
}

/// The token of an MP_JOIN SYN ([`SynOptions::Join`]) when [`mptcp::scan_syn`] of its option
/// area finds that one MP_JOIN, well-formed, and nothing it counts (no other MPTCP option,
/// nothing ignored, no conflict, no broken option); `None` otherwise. Counts nothing.
///
/// The two shapes a client sends, an MP_JOIN alone and Linux's (MSS, SACK permitted,
/// timestamps, NOP, window scale, then the MP_JOIN: MPTCP options come last), are read in
/// place: the MP_JOIN's 12 bytes (its SYN form) end the area, and before them there is
/// nothing or the 20 bytes [`syn_options`] recognises, well-formed options of other kinds that
/// the scan passes over without a trace. Anything else takes the scan itself.
#[inline(always)]
pub(super) fn join_options(area: &[u8]) -> Option<u32> {
    let join = match area.len() {
        12 => area.first_chunk::<12>(),
        32 => match area.first_chunk::<20>() {
            Some(a)
                if [a[0], a[1]] == [2, 4]
                    && [a[4], a[5], a[6], a[7]] == [4, 2, 8, 10]
                    && [a[16], a[17], a[18]] == [1, 3, 3] =>
            {
                area.last_chunk::<12>()
            }
            _ => None,
        },
        _ => None,
    };
    match join {
        Some(&[option_kind::MPTCP, 12, b2, _, t0, t1, t2, t3, ..])
            if b2 >> 4 == mptcp::subtype::MP_JOIN =>
        {
            Some(u32::from_be_bytes([t0, t1, t2, t3]))
        }
        _ => join_options_scanned(area),
    }
}

/// [`join_options`] of any other option area: the scan, out of line.
#[cold]
#[inline(never)]
fn join_options_scanned(area: &[u8]) -> Option<u32> {
    let s = mptcp::scan_syn(area, false);
    match s.request {
        SynRequest::Join { token } if s.ignored == 0 && !s.conflict && !s.tcp_options_malformed => {
            Some(token)
        }
        _ => None,
    }
}

/// A SYN without MPTCP options: what [`scan`] would count of it (a malformed option area).
#[inline]
pub(super) fn plain_syn(stats: &mut WorkerStats, malformed: bool) -> Syn {
    if malformed {
        stats.event(Event::TcpOptionMalformed);
    }
    Syn::Plain
}

/// What an opening SYN with MPTCP options asks for, counting what [`scan`] counts: one walk
/// over the options that decodes nothing but an MP_JOIN's token ([`mptcp::scan_syn`]).
#[inline(always)]
pub(super) fn syn_scanned(stats: &mut WorkerStats, area: &[u8], seg: &Seg) -> Syn {
    let s = mptcp::scan_syn(area, seg.has(TcpFlags::RST.0));
    count_scan(
        stats,
        s.ignored,
        s.last_error,
        s.conflict,
        s.tcp_options_malformed,
    );
    match s.request {
        SynRequest::Join { token } => Syn::Join { token },
        SynRequest::Capable => Syn::Capable,
        SynRequest::Plain => Syn::Plain,
    }
}

/// MP_JOIN SYN: the backend that owns the token's connection, or why the join is refused. The
/// owner must take joins, be reachable in this packet's family and serve this VIP, or (NAT) the
/// return path could not be mapped back. An admitted join is counted as a subflow of its owner's
/// connection in the same step ([`TokenTable::join`](crate::tables::token::TokenTable::join):
/// one lock, one probe); the answer says whether it was (`referenced`: a local owner).
#[inline]
pub(super) fn route_join(
    cx: &Ctx<'_>,
    ip: &Ip,
    token: u32,
    vip: &Vip,
) -> Result<(BackendId, bool), DropReason> {
    route_join_in(cx.pool, cx.shared, cx.now, ip.v6, token, vip)
}

/// [`route_join`] from its parts (`v6`: the join's family), for the fast path that has no
/// [`Ctx`].
#[inline]
pub(super) fn route_join_in(
    pool: &PoolSnapshot,
    shared: &Shared,
    now: Ticks,
    v6: bool,
    token: u32,
    vip: &Vip,
) -> Result<(BackendId, bool), DropReason> {
    let admit = move |b: BackendId| {
        // An id that never existed accepts none (`join_reach`'s default).
        let Some(reach) = pool.join_reach_of(b).filter(|r| r.accepts) else {
            return Err(DropReason::JoinOwnerDown);
        };
        let family = usize::from(v6);
        let reachable = match vip.mode {
            ForwardingMode::Nat => reach.nat_vip[family] == Some(vip.id),
            ForwardingMode::Dsr(_) => reach.has_addr[family] && vip.has_member(b),
        };
        if reachable {
            Ok(())
        } else {
            Err(DropReason::JoinNoPath)
        }
    };
    routed(shared.tokens.join(token, now, admit))
}

/// [`route_join_in`] of an IPv4 join towards `vip`, a NAT VIP of the same snapshot (what
/// [`classify::to_vip_v4`](crate::pipeline::classify::to_vip_v4) found): the same answer, with
/// the VIP's record left unread (its mode is known, its id is `vip`).
#[inline]
pub(super) fn route_join_nat_v4(
    pool: &PoolSnapshot,
    shared: &Shared,
    now: Ticks,
    token: u32,
    vip: VipId,
) -> Result<(BackendId, bool), DropReason> {
    let admit = move |b: BackendId| {
        // An id that never existed accepts none (`join_reach`'s default).
        let Some(reach) = pool.join_reach_of(b).filter(|r| r.accepts) else {
            return Err(DropReason::JoinOwnerDown);
        };
        if reach.nat_vip[0] == Some(vip) {
            Ok(())
        } else {
            Err(DropReason::JoinNoPath)
        }
    };
    routed(shared.tokens.join(token, now, admit))
}

/// The token table's answer to a join as the pipeline takes it: the backend and whether the
/// subflow holds a reference, or the drop reason.
#[inline(always)]
fn routed(o: JoinOutcome<DropReason>) -> Result<(BackendId, bool), DropReason> {
    match o {
        JoinOutcome::Routed {
            backend,
            referenced,
        } => Ok((backend, referenced)),
        refused => Err(join_refused(refused)),
    }
}

/// Why [`route_join_in`] refuses a join (out of line: the routed join is the one to keep short).
#[cold]
#[inline(never)]
fn join_refused(o: JoinOutcome<DropReason>) -> DropReason {
    match o {
        JoinOutcome::Unknown => DropReason::JoinNoToken,
        JoinOutcome::Ambiguous => DropReason::JoinTokenAmbiguous,
        JoinOutcome::NotAdmitted(r) => r,
        // Not a refusal: not reached.
        JoinOutcome::Routed { .. } => DropReason::JoinNoToken,
    }
}

/// The backend's SYN/ACK carries its key: learn the token (see the module documentation).
/// Returns false, learning nothing, when the segment's checksum fails (T14).
fn learn_token<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    e: &mut FlowEntry,
) -> bool {
    let s = scan(cx, frame, seg);
    let Some(server_key) = s.capable.and_then(|c| c.sender_key) else {
        // The server declined MPTCP: plain TCP from here on.
        e.flags &= !flags::MPC_SYN;
        return true;
    };
    // T14: never learn from a segment whose checksum fails.
    if !parse::tcp_checksum_ok(frame.data(), ip) {
        cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        return false;
    }
    let token = crypto::token_from_key(server_key);
    let owner = Owner::new(e.backend, e.key, server_key, None, cx.now);
    let ev = match cx.shared.tokens.learn(token, owner) {
        // AlreadyKnown: the table counted this entry as one more reference.
        LearnOutcome::Inserted | LearnOutcome::AlreadyKnown => Event::TokenLearned,
        LearnOutcome::Collision => Event::TokenCollision,
        LearnOutcome::Reused => Event::TokenReused,
        LearnOutcome::TableFull | LearnOutcome::OwnersFull | LearnOutcome::Refused => {
            cx.w.stats.event(Event::TokenTableFull);
            return true;
        }
    };
    cx.w.stats.event(ev);
    e.token = token;
    e.flags |= flags::TOKEN_REF;
    true
}

/// The client's third ACK (or first data segment) echoes the server key: cross-check it.
fn confirm_token<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) {
    if !e.has(flags::TOKEN_REF) {
        return;
    }
    let s = scan(cx, frame, seg);
    let keys = s
        .capable
        .and_then(|c| Some((c.sender_key?, c.receiver_key?)));
    let outcome = match keys {
        Some((client_key, server_key)) => cx
            .shared
            .tokens
            .confirm(e.token, e.backend, &e.key, server_key, client_key, cx.now),
        None => {
            // RFC 8684 §3.1: without MP_CAPABLE in the third ACK the connection is plain TCP.
            cx.w.stats.event(Event::MpcFallback);
            ConfirmOutcome::KeyMismatch
        }
    };
    match outcome {
        ConfirmOutcome::Confirmed => {
            cx.w.stats.event(Event::TokenConfirmed);
            announcing::start(cx, t, e);
        }
        ConfirmOutcome::KeyMismatch | ConfirmOutcome::Unknown => {
            if keys.is_some() {
                cx.w.stats.event(Event::MpcKeyMismatch);
            }
            cx.shared.tokens.remove(e.token, e.backend);
            e.flags &= !flags::TOKEN_REF;
        }
    }
}

/// The client's MP_CAPABLE third ACK (or first data segment) on a half-open DSR flow: learn the
/// token from the keys it carries, under the rules in the module documentation (`e.pending`
/// holds the sequence number expected after the SYN). Returns false, changing nothing, when the
/// segment is not that one (an injected or reordered segment must not end the learning window)
/// or its checksum fails (the endpoint discards it too; the retransmission is judged); the flow
/// then stays half-open.
fn learn_from_client<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    ip: &Ip,
    seg: &Seg,
    t: &TcpNumbers,
    e: &mut FlowEntry,
) -> bool {
    if t.seq != e.pending {
        cx.w.stats.event(Event::MpcAckOutOfSequence);
        return false;
    }
    let s = scan(cx, frame, seg);
    let Some(capable) = s.capable else {
        // RFC 8684 §3.1: no MP_CAPABLE in the third ACK: the connection is plain TCP.
        cx.w.stats.event(Event::MpcFallback);
        e.flags &= !flags::MPC_SYN;
        e.pending = 0;
        return true;
    };
    let (Some(client_key), Some(server_key)) = (capable.sender_key, capable.receiver_key) else {
        cx.w.stats.event(Event::MpcFallback);
        e.pending = 0;
        return true;
    };
    if !parse::tcp_checksum_ok(frame.data(), ip) {
        cx.w.stats.event(Event::BadL4ChecksumNotLearned);
        return false;
    }
    let token = crypto::token_from_key(server_key);
    let owner = Owner::new(e.backend, e.key, server_key, Some(client_key), cx.now);
    e.pending = 0;
    let ev = match cx.shared.tokens.claim(token, owner) {
        // AlreadyKnown: the table counted this entry as one more reference.
        LearnOutcome::Inserted | LearnOutcome::AlreadyKnown => Event::TokenLearnedFromClient,
        LearnOutcome::Reused => Event::TokenReused,
        LearnOutcome::Refused | LearnOutcome::Collision => {
            cx.w.stats.event(Event::TokenClaimRefused);
            return true;
        }
        LearnOutcome::TableFull | LearnOutcome::OwnersFull => {
            cx.w.stats.event(Event::TokenTableFull);
            return true;
        }
    };
    cx.w.stats.event(ev);
    e.token = token;
    e.flags |= flags::TOKEN_REF | flags::CONFIRMED;
    announcing::start(cx, t, e);
    true
}

/// MP_FASTCLOSE (RFC 8684 §3.5) carries the receiver's key: from the client that is the server
/// key, from the server the client key. With the right key the connection's token goes now.
pub(super) fn fastclose<F: Frame>(
    cx: &mut Ctx<'_>,
    frame: &F,
    seg: &Seg,
    e: &mut FlowEntry,
    from_client: bool,
) {
    let s = scan(cx, frame, seg);
    let Some(fc) = s.fastclose else { return };
    let known = cx.shared.tokens.owners(e.token).as_slice().iter().any(|o| {
        o.backend == e.backend
            && if from_client {
                o.server_key == fc.receiver_key
            } else {
                o.client_key == Some(fc.receiver_key)
            }
    });
    if known {
        cx.shared.tokens.remove(e.token, e.backend);
        e.flags &= !flags::TOKEN_REF;
        cx.w.stats.event(Event::FastClose);
    } else {
        cx.w.stats.event(Event::FastCloseBadKey);
    }
}

/// M7: MP_CAPABLE in the handshake of a flow whose SYN had none. Nothing is learned from it (a
/// client cannot plant keys, a server cannot upgrade a plain connection); it is counted. Runs
/// once per connection at most (the third ACK, the SYN/ACK), never on the established path.
pub(super) fn unexpected_mpc<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg) {
    if seg.opt_len > 0 && scan(cx, frame, seg).capable.is_some() {
        cx.w.stats.event(Event::MpcUnexpected);
    }
}

/// The MPTCP options of this segment, counted into the worker's events.
fn scan<F: Frame>(cx: &mut Ctx<'_>, frame: &F, seg: &Seg) -> MptcpSummary {
    scan_area(
        &mut cx.w.stats,
        &frame.data()[seg.opt_at..seg.opt_at + seg.opt_len],
        seg,
    )
}

/// The MPTCP options of a segment's option `area`, counted into `stats`.
fn scan_area(stats: &mut WorkerStats, area: &[u8], seg: &Seg) -> MptcpSummary {
    let s = mptcp::scan(area, seg.segment());
    count_scan(
        stats,
        s.ignored,
        s.last_error,
        s.conflict,
        s.tcp_options_malformed,
    );
    s
}

/// What a scan of the options found that is counted: options ignored (the last one's error
/// names the event), conflicting options, a malformed option area.
#[inline(always)]
fn count_scan(
    stats: &mut WorkerStats,
    ignored: u8,
    last_error: Option<MptcpError>,
    conflict: bool,
    malformed: bool,
) {
    if ignored > 0 {
        let e = if last_error == Some(MptcpError::Version0) {
            Event::MpcVersion0
        } else {
            Event::MptcpOptionIgnored
        };
        stats.event(e);
    }
    if conflict {
        stats.event(Event::MptcpConflict);
    }
    if malformed {
        stats.event(Event::TcpOptionMalformed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::verdict::WorkerStats;
    use trapeze_wire::tcp::TcpFlags;

    /// What the new-connection fast path reads of an option area: the first look
    /// ([`syn_options`]), then, only when there are MPTCP options, the scan from the first of
    /// them.
    fn syn_of(stats: &mut WorkerStats, area: &[u8], seg: &Seg) -> Syn {
        match syn_options(area) {
            SynOptions::Plain { malformed } => plain_syn(stats, malformed),
            SynOptions::Mptcp { at } => {
                let rest = area.get(usize::from(at)..).unwrap_or_default();
                syn_scanned(stats, rest, seg)
            }
            SynOptions::Join => syn_scanned(stats, area, seg),
        }
    }

    /// What the gateway read of an opening SYN before the first look: the scan of the whole
    /// option area, counted.
    fn syn_by_full_scan(stats: &mut WorkerStats, area: &[u8], seg: &Seg) -> Syn {
        let s = scan_area(stats, area, seg);
        if let Some(trapeze_wire::mptcp::MpJoin::Syn { receiver_token, .. }) = s.join {
            Syn::Join {
                token: receiver_token,
            }
        } else if s.capable.is_some() {
            Syn::Capable
        } else {
            Syn::Plain
        }
    }

    /// Option areas from pieces: the options of Linux SYNs, every MPTCP shape a SYN may carry,
    /// kind-30 junk, EOL, and broken framing (a missing, short or overlong length).
    fn areas() -> Vec<Vec<u8>> {
        let pieces: Vec<Vec<u8>> = vec![
            vec![
                2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3, 7,
            ],
            vec![2, 4, 5, 0xb4, 4, 2, 8, 10, 1, 2, 3, 4, 0, 0, 0, 0, 1, 3, 3],
            vec![2, 4, 5, 0xb4],
            vec![4, 2],
            vec![8, 10, 1, 2, 3, 4, 0, 0, 0, 0],
            vec![1],
            vec![3, 3, 7],
            vec![30, 4, 0x01, 0x81],
            vec![30, 4, 0x00, 0x81],
            vec![30, 12, 0x01, 0x81, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![30, 12, 0x10, 0x00, 9, 9, 9, 9, 1, 2, 3, 4],
            vec![30, 12, 0x11, 0x02, 7, 7, 7, 7, 1, 2, 3, 4],
            vec![30, 16, 0x10, 0x00, 9, 9, 9, 9, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![30, 12, 0x70, 0x00, 1, 2, 3, 4, 5, 6, 7, 8],
            vec![30, 8, 0x30, 0x01, 10, 0, 0, 1],
            vec![30, 3, 0x10],
            vec![30, 2],
            vec![30, 5, 0x70, 1, 2],
            vec![0],
            vec![0, 30, 4, 0x01, 0x81],
            vec![99, 1],
            vec![99, 0],
            vec![99, 30],
            vec![5],
            vec![30],
        ];
        let mut out = vec![Vec::new()];
        let mut x = 0x9e37_79b9u32;
        for _ in 0..4000 {
            let mut a = Vec::new();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            if x & 0x8000_0000 != 0 {
                a.extend_from_slice(&pieces[(x >> 30) as usize & 1]);
            }
            for k in 0..(x % 6) {
                let p = &pieces[((x >> (4 * k + 3)) as usize) % pieces.len()];
                if a.len() + p.len() <= 40 {
                    a.extend_from_slice(p);
                }
            }
            out.push(a);
        }
        out
    }

    #[test]
    fn the_first_look_and_the_scan_from_the_first_mptcp_option_say_what_the_full_scan_says() {
        let (mut joins, mut mptcp, mut malformed, mut clean_joins) = (0, 0, 0, 0);
        for area in areas() {
            for flags in [0x02u8, 0x0a] {
                let seg = Seg {
                    src_port: 1,
                    dst_port: 2,
                    flags: TcpFlags(flags),
                    opt_at: 0,
                    opt_len: area.len(),
                    has_payload: flags == 0x0a,
                };
                let (mut a, mut b) = (WorkerStats::new(1, 1), WorkerStats::new(1, 1));
                let got = syn_of(&mut a, &area, &seg);
                let want = syn_by_full_scan(&mut b, &area, &seg);
                assert_eq!(got, want, "{area:?}");
                assert_eq!(a.events, b.events, "{area:?}");
                // The walk agrees with the wire crate's.
                let mut walk = TcpOptions::new(&area);
                let mut kinds = Vec::new();
                while let Some((kind, raw)) = walk.next_raw() {
                    kinds.push((kind, raw.get(2).copied()));
                }
                match syn_options(&area) {
                    SynOptions::Join => {
                        joins += 1;
                        assert!(kinds
                            .iter()
                            .any(|&(k, s)| k == 30 && s.is_some_and(|s| s >> 4 == 1)));
                        // The join's path: what the scan of the whole area says, counting
                        // nothing.
                        let s = trapeze_wire::mptcp::scan_syn(&area, false);
                        let want = match s.request {
                            SynRequest::Join { token }
                                if s.ignored == 0 && !s.conflict && !s.tcp_options_malformed =>
                            {
                                clean_joins += 1;
                                Some(token)
                            }
                            _ => None,
                        };
                        assert_eq!(join_options(&area), want, "{area:?}");
                    }
                    SynOptions::Mptcp { .. } => {
                        mptcp += 1;
                        assert!(kinds.iter().any(|&(k, _)| k == 30));
                    }
                    SynOptions::Plain { malformed: m } => {
                        malformed += usize::from(m);
                        assert!(!kinds.iter().any(|&(k, _)| k == 30));
                        assert_eq!(m, walk.malformed(), "{area:?}");
                    }
                }
            }
        }
        assert!(
            joins > 100 && mptcp > 100 && malformed > 100 && clean_joins > 50,
            "{joins} {mptcp} {malformed} {clean_joins}"
        );
    }
}

//! The flow state machine: every transition of a flow's [`FlowState`], in one table.
//!
//! The gateway tracks TCP only as far as it needs to: to pick a timeout, to know when the
//! handshake carries MPTCP keys, and to tell a retransmitted SYN from a new connection on a closed
//! 5-tuple. An input reaches the table only once its guard (a checksum, a sequence number, a
//! learned key; `mptcp`) let it through; a refused segment leaves the flow where it was.
//!
//! | state | input | next |
//! |---|---|---|
//! | (no flow) | client SYN | `SynSent` |
//! | (no flow) | any other client packet (state was lost: adopted) | `Established` |
//! | `SynSent` | the backend's SYN/ACK (NAT; its key learned, if MPTCP) | `SynAckSeen` |
//! | `SynSent` | a client ACK: DSR (keys learned from it, if MPTCP), or NAT without MP_JOIN (the SYN/ACK went another way) | `Established` |
//! | `SynAckSeen` | the client's third ACK (its key echo checked, if MPTCP) | `Established` |
//! | `SynSent` .. `Established` | client SYN | unchanged (a retransmission) |
//! | `Closing`, `Closed` | client SYN | the flow ends; the SYN opens a new one |
//! | any | RST, either way | `Closed` |
//! | any | FIN, the other side's FIN seen before | `Closed` |
//! | any | FIN, the first | `Closing` |
//!
//! Besides its state, a flow's `flags` record what the table reads (which side's FIN came) and
//! what the MPTCP steps need ([`flags`](crate::tables::flow_table::flags)).
//! [`FlowEntry::pending`](crate::tables::flow_table::FlowEntry::pending) belongs to two phases
//! that never overlap: a half-open DSR MPTCP flow keeps there the sequence number its keys must
//! come with; once those keys are known, an announcing flow keeps its announcement's reference.

use crate::tables::flow_table::FlowState;

/// What a segment means to the state machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Input {
    /// A client SYN on a known flow.
    ClientSyn,
    /// A client ACK that completes the handshake as far as the gateway can tell.
    HandshakeAck,
    /// The backend's SYN/ACK.
    ServerSynAck,
    /// A FIN; `other_side_fin`: the other direction's FIN was seen before.
    Fin {
        /// The other direction has sent its FIN.
        other_side_fin: bool,
    },
    /// A RST, either way.
    Rst,
}

/// The outcome of an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// The flow stays in its state.
    Stay,
    /// The flow moves to this state.
    To(FlowState),
    /// The flow ends; the segment opens a new one (a new connection on a closed 5-tuple).
    Reopen,
}

/// The state of a new flow: half-open from a SYN, else adopted as established.
#[inline]
pub(crate) fn first(syn: bool) -> FlowState {
    if syn {
        FlowState::SynSent
    } else {
        FlowState::Established
    }
}

/// The transition table (see the module documentation).
#[inline]
pub(crate) fn next(state: FlowState, input: Input) -> Next {
    use FlowState::*;
    match (state, input) {
        (Closing | Closed, Input::ClientSyn) => Next::Reopen,
        (_, Input::ClientSyn) => Next::Stay,
        (SynSent | SynAckSeen, Input::HandshakeAck) => Next::To(Established),
        (SynSent, Input::ServerSynAck) => Next::To(SynAckSeen),
        (_, Input::Rst) => Next::To(Closed),
        (_, Input::Fin { other_side_fin }) => {
            Next::To(if other_side_fin { Closed } else { Closing })
        }
        (Established | Closing | Closed, Input::HandshakeAck)
        | (SynAckSeen | Established | Closing | Closed, Input::ServerSynAck) => Next::Stay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table() {
        use FlowState::*;
        let all = [SynSent, SynAckSeen, Established, Closing, Closed];
        for s in all {
            let syn = next(s, Input::ClientSyn);
            assert_eq!(syn == Next::Reopen, s >= Closing, "{s:?}");
            assert_eq!(next(s, Input::Rst), Next::To(Closed));
            for other in [false, true] {
                let fin = next(
                    s,
                    Input::Fin {
                        other_side_fin: other,
                    },
                );
                assert_eq!(fin, Next::To(if other { Closed } else { Closing }));
            }
            let done = next(s, Input::HandshakeAck);
            assert_eq!(done != Next::Stay, s < Established, "{s:?}");
            assert_eq!(next(s, Input::ServerSynAck) != Next::Stay, s == SynSent);
        }
        assert_eq!((first(true), first(false)), (SynSent, Established));
    }
}

//! The three tables of the gateway.
//!
//! | table | owner | written | read |
//! |---|---|---|---|
//! | [`maglev::MaglevTable`] | control thread, inside each pool snapshot | on pool change | every new connection |
//! | [`flow_table::FlowTable`] | one per worker, no lock | every new flow | every packet |
//! | [`token::TokenTable`] | shared by all workers, sharded locks | once per MPTCP connection | once per MP_JOIN |

pub mod flow_table;
pub mod maglev;
pub mod mem;
pub mod token;

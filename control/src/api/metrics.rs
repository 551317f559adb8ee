//! Metrics: the plain data the daemon gathers ([`MetricsInput`]), rendered as Prometheus /
//! OpenMetrics text with `prometheus-client` ([`render`]) and as the JSON of `GET /stats`
//! ([`MetricsInput::stats_view`]).
//!
//! The daemon fills a [`MetricsInput`] from copies of the workers' [`WorkerStats`] (plain
//! integers each worker owns: nothing on the packet path is atomic), the pool snapshot's names
//! and states, the token table's size and its own control counters; [`MetricsInput::from_pool`]
//! takes the names and states from a [`PoolSnapshot`]. Rendering happens on a scrape only, from
//! that copy, so it never touches a worker.
//!
//! ## Families
//!
//! Counters end in `_total` (the encoder appends it). Every drop reason and event is exported,
//! zeros included, so that `rate()` sees a series from its first scrape.
//!
//! | family | type | labels |
//! |---|---|---|
//! | `trapeze_worker_rx_packets_total` | counter | `worker` |
//! | `trapeze_worker_tx_packets_total` | counter | `worker` |
//! | `trapeze_worker_verdicts_total` | counter | `worker`, `verdict` (`forward`, `reply`, `punt`, `handoff`) |
//! | `trapeze_worker_drops_total` | counter | `worker`, `reason` ([`DropReason::name`]) |
//! | `trapeze_worker_events_total` | counter | `worker`, `event` ([`Event::name`]) |
//! | `trapeze_worker_flows` | gauge | `worker` |
//! | `trapeze_worker_flow_capacity` | gauge | `worker` |
//! | `trapeze_vip_packets_total`, `_bytes_total`, `_new_connections_total`, `_joins_total`, `_to_client_packets_total`, `_to_client_bytes_total` | counter | `vip` |
//! | `trapeze_backend_packets_total`, `_bytes_total`, `_new_connections_total`, `_joins_total` | counter | `backend` |
//! | `trapeze_backend_migrate_announced_total`, `_migrate_migrated_total`, `_migrate_left_behind_total`, `_migrate_closed_total` | counter | `backend` |
//! | `trapeze_backend_migrate_pending` | gauge | `backend` |
//! | `trapeze_backend_drain_completed_total` | counter | `backend`, `how` (`early`, `deadline`) |
//! | `trapeze_backend_state` | gauge (1 for the current state, 0 otherwise) | `backend`, `state` |
//! | `trapeze_backend_weight` | gauge | `backend` |
//! | `trapeze_backend_active_flows` | gauge (when the daemon counts them) | `backend` |
//! | `trapeze_backend_info` | gauge (always 1: membership) | `backend`, `vip` |
//! | `trapeze_port_rx_packets_total`, `_tx_packets_total`, `_tx_unsent_total` | counter | `port` |
//! | `trapeze_port_tx_staged_total` | counter | `port`, `kind` (`forward`, `reply`, `control`) |
//! | `trapeze_port_device_rx_packets_total`, `_tx_packets_total`, `_rx_bytes_total`, `_tx_bytes_total`, `_rx_missed_total`, `_rx_errors_total`, `_tx_errors_total`, `_rx_nombuf_total` | counter (when the device reports them) | `port` |
//! | `trapeze_tokens` | gauge | |
//! | `trapeze_token_capacity` | gauge | |
//! | `trapeze_token_collisions_total` | counter | |
//! | `trapeze_join_unknown_token_total` | counter | |
//! | `trapeze_cluster_datagrams_sent_total`, `_records_sent_total`, `_send_errors_total`, `_refreshes_total`, `_datagrams_received_total`, `_records_received_total`, `_records_applied_total`, `_remote_shadowed_total`, `_remote_collisions_total`, `_journal_dropped_total` | counter (with `[cluster]`) | |
//! | `trapeze_cluster_rejected_total` | counter | `reason` (`auth`, `sequence`, `malformed`, `unknown_peer`) |
//! | `trapeze_cluster_records_ignored_total` | counter | `reason` (`unknown_backend`, `full`) |
//! | `trapeze_cluster_remote_tokens` | gauge | |
//! | `trapeze_cluster_propagation_delay_us_total`, `_propagation_delays_total`, `_propagation_delay_bucket_total` | counter: sum (µs), count, cumulative buckets | `le` (seconds) for the buckets |
//! | `trapeze_cluster_propagation_delay_max_us` | gauge | |
//! | `trapeze_control_reloads_total` | counter | `result` (`ok`, `error`) |
//! | `trapeze_control_pool_changes_total` | counter | |
//! | `trapeze_control_watchdog_stalls_total` | counter | |
//! | `trapeze_control_drains_completed_total` | counter | `how` (`early`, `deadline`) |
//! | `trapeze_control_version` | gauge | |
//!
//! Backend counters are labelled by backend only: a backend's counters are per backend, not
//! per (VIP, backend); `trapeze_backend_info` joins them to their VIPs
//! (`... * on(backend) group_left(vip) trapeze_backend_info`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use trapeze_core::pipeline::{BackendCounters, DropReason, Event, VipCounters, WorkerStats};
use trapeze_core::pool::{BackendId, ForwardingMode, PoolSnapshot, PortId, VipId};

use super::types::{
    BackendView, ClusterStatsView, ControlStatsView, DsrBody, MigrationView, Mode, PortStatsView,
    State, StatsView, TokenStatsView, TrafficView, VipView, WorkerStatsView,
};

/// Content type of [`render`]'s output for Prometheus' classic text format (the output is
/// also valid there: `# EOF` reads as a comment).
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of [`render`]'s output for scrapers that ask for OpenMetrics.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One worker's sample.
#[derive(Debug, Clone)]
pub struct WorkerSample {
    /// Frames received from the NIC queues.
    pub rx: u64,
    /// Frames transmitted.
    pub tx: u64,
    /// Flows in its flow table.
    pub flows: u64,
    /// Its flow table's capacity.
    pub flow_capacity: u64,
    /// A copy of its counters.
    pub stats: WorkerStats,
}

/// A VIP's identity for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipMeta {
    /// Stable id (index into [`WorkerStats::vips`]).
    pub id: VipId,
    /// Name (the `vip` label).
    pub name: String,
}

/// A backend's identity and state for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendMeta {
    /// Stable id (index into [`WorkerStats::backends`]).
    pub id: BackendId,
    /// Name (the `backend` label).
    pub name: String,
    /// Names of the VIPs it is a member of.
    pub vips: Vec<String>,
    /// State.
    pub state: State,
    /// Maglev weight.
    pub weight: u32,
    /// Flows pinned to it in the workers' flow tables, when the daemon counts them.
    pub active_flows: Option<u64>,
    /// Its drains with a deadline that ended early and at the deadline.
    pub drains: (u64, u64),
}

/// The token table's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TokenSample {
    /// Tokens held.
    pub entries: u64,
    /// Capacity.
    pub capacity: u64,
}

/// Everything [`render`] and [`MetricsInput::stats_view`] show: plain data, owned (so it can be
/// built on the control thread and rendered anywhere).
#[derive(Debug, Clone, Default)]
pub struct MetricsInput {
    /// One per worker, in worker order.
    pub workers: Vec<WorkerSample>,
    /// The VIPs of the serving pool.
    pub vips: Vec<VipMeta>,
    /// The backends of the serving pool.
    pub backends: Vec<BackendMeta>,
    /// The token table.
    pub tokens: TokenSample,
    /// Control-plane counters.
    pub control: ControlStatsView,
    /// Per dataplane port, in port order (empty when the daemon does not count them).
    pub ports: Vec<PortStatsView>,
    /// Token sharing, when configured.
    pub cluster: Option<ClusterStatsView>,
}

impl MetricsInput {
    /// Names, memberships, states and weights from `pool`; `workers`, `tokens` and `control` as
    /// given; no active-flow counts (set [`BackendMeta::active_flows`] to add them).
    pub fn from_pool(
        pool: &PoolSnapshot,
        workers: Vec<WorkerSample>,
        tokens: TokenSample,
        control: ControlStatsView,
    ) -> Self {
        let vips: Vec<VipMeta> = pool
            .vips
            .iter()
            .flatten()
            .map(|v| VipMeta {
                id: v.id,
                name: v.name.clone(),
            })
            .collect();
        let backends = pool
            .backends
            .iter()
            .flatten()
            .map(|b| BackendMeta {
                id: b.id,
                name: b.name.clone(),
                vips: pool
                    .vips
                    .iter()
                    .flatten()
                    .filter(|v| v.backends.contains(&b.id))
                    .map(|v| v.name.clone())
                    .collect(),
                state: b.state.into(),
                weight: b.weight,
                active_flows: None,
                drains: (0, 0),
            })
            .collect();
        Self {
            workers,
            vips,
            backends,
            tokens,
            control,
            ports: Vec::new(),
            cluster: None,
        }
    }

    /// A VIP's counters summed over the workers.
    pub fn vip_totals(&self, id: VipId) -> VipCounters {
        let mut t = VipCounters::default();
        for w in &self.workers {
            if let Some(c) = w.stats.vips.get(id.0 as usize) {
                t.add(c);
            }
        }
        t
    }

    /// A backend's counters summed over the workers.
    pub fn backend_totals(&self, id: BackendId) -> BackendCounters {
        let mut t = BackendCounters::default();
        for w in &self.workers {
            if let Some(c) = w.stats.backends.get(id.0 as usize) {
                t.packets += c.packets;
                t.bytes += c.bytes;
                t.new_conns += c.new_conns;
                t.joins += c.joins;
                t.migrate_announced += c.migrate_announced;
                t.migrate_migrated += c.migrate_migrated;
                t.migrate_left_behind += c.migrate_left_behind;
                t.migrate_closed += c.migrate_closed;
                t.migrate_pending += c.migrate_pending;
            }
        }
        t
    }

    /// An event summed over the workers.
    pub fn event_total(&self, e: Event) -> u64 {
        self.workers.iter().map(|w| w.stats.events_of(e)).sum()
    }

    /// A drop reason summed over the workers.
    pub fn drop_total(&self, r: DropReason) -> u64 {
        self.workers.iter().map(|w| w.stats.drops_of(r)).sum()
    }

    /// The token table's figures (collisions and unknown-token joins summed from the workers).
    pub fn token_view(&self) -> TokenStatsView {
        TokenStatsView {
            entries: self.tokens.entries,
            capacity: self.tokens.capacity,
            collisions: self.event_total(Event::TokenCollision),
            unknown_token_joins: self.drop_total(DropReason::JoinNoToken),
        }
    }

    /// The JSON of `GET /stats`.
    pub fn stats_view(&self) -> StatsView {
        let workers = self
            .workers
            .iter()
            .enumerate()
            .map(|(i, w)| WorkerStatsView {
                worker: i,
                rx: w.rx,
                tx: w.tx,
                forwarded: w.stats.forwarded,
                replied: w.stats.replied,
                punted: w.stats.punted,
                handed_off: w.stats.handed_off,
                dropped: w.stats.dropped(),
                drops: DropReason::ALL
                    .iter()
                    .filter(|r| w.stats.drops_of(**r) > 0)
                    .map(|r| (r.name().to_string(), w.stats.drops_of(*r)))
                    .collect(),
                events: Event::ALL
                    .iter()
                    .filter(|e| w.stats.events_of(**e) > 0)
                    .map(|e| (e.name().to_string(), w.stats.events_of(*e)))
                    .collect(),
                flows: w.flows,
                flow_capacity: w.flow_capacity,
            })
            .collect();
        let vips = self
            .vips
            .iter()
            .map(|v| {
                let t = self.vip_totals(v.id);
                TrafficView {
                    name: v.name.clone(),
                    packets: t.packets,
                    bytes: t.bytes,
                    new_conns: t.new_conns,
                    joins: t.joins,
                    active_flows: None,
                    state: None,
                    to_client_packets: Some(t.to_client_packets),
                    to_client_bytes: Some(t.to_client_bytes),
                    migration: None,
                }
            })
            .collect();
        let backends = self
            .backends
            .iter()
            .map(|b| {
                let t = self.backend_totals(b.id);
                TrafficView {
                    name: b.name.clone(),
                    packets: t.packets,
                    bytes: t.bytes,
                    new_conns: t.new_conns,
                    joins: t.joins,
                    active_flows: b.active_flows,
                    state: Some(b.state),
                    to_client_packets: None,
                    to_client_bytes: None,
                    migration: MigrationView::of(&t, b.drains),
                }
            })
            .collect();
        StatsView {
            workers,
            vips,
            backends,
            tokens: self.token_view(),
            control: self.control,
            ports: self.ports.clone(),
            cluster: self.cluster.map(Box::new),
        }
    }
}

/// The VIPs of `pool` as `GET /vips` shows them (`GET /vips/{name}`: pick one), with the
/// counters of `input` (its [`BackendMeta::active_flows`] included). `port_name` names a
/// dataplane port (`GatewayConfig::ports[id].name`).
pub fn vip_views(
    pool: &PoolSnapshot,
    port_name: &dyn Fn(PortId) -> String,
    input: &MetricsInput,
) -> Vec<VipView> {
    pool.vips
        .iter()
        .flatten()
        .map(|v| {
            let t = input.vip_totals(v.id);
            let backends = v
                .backends
                .iter()
                .filter_map(|id| pool.backends.get(id.0 as usize).and_then(Option::as_ref))
                .map(|b| {
                    let c = input.backend_totals(b.id);
                    BackendView {
                        name: b.name.clone(),
                        address: b.addr(v.addr.is_ipv6()),
                        ipv4: b.ipv4,
                        ipv6: b.ipv6,
                        port: b.port,
                        weight: b.weight,
                        state: b.state.into(),
                        active_flows: input
                            .backends
                            .iter()
                            .find(|m| m.id == b.id)
                            .and_then(|m| m.active_flows),
                        new_conns: c.new_conns,
                        joins: c.joins,
                        packets: c.packets,
                        bytes: c.bytes,
                        direct: b.direct,
                        migration: MigrationView::of(
                            &c,
                            input
                                .backends
                                .iter()
                                .find(|m| m.id == b.id)
                                .map_or((0, 0), |m| m.drains),
                        ),
                    }
                })
                .collect();
            VipView {
                name: v.name.clone(),
                address: v.addr,
                port: v.port,
                protocol: Default::default(),
                mode: match v.mode {
                    ForwardingMode::Nat => Mode::Nat,
                    ForwardingMode::Dsr(_) => Mode::Dsr,
                },
                dsr: crate::config::dsr::describe(&v.mode)
                    .1
                    .map(|(encap, gue_port, outer)| DsrBody {
                        encap: Some(encap.into()),
                        gue_port,
                        outer_source: Some(outer),
                    }),
                client_port: port_name(v.client_port),
                backends,
                join_ports: v
                    .join_ports
                    .iter()
                    .filter_map(|&(b, p)| Some((pool.backend(b)?.name.clone(), p)))
                    .collect(),
                announce: v.announce.into(),
                deny_join_initial: v.deny_join_initial,
                new_conns: t.new_conns,
                joins: t.joins,
                packets: t.packets,
                bytes: t.bytes,
            }
        })
        .collect()
}

type Labels = Vec<(&'static str, String)>;

/// One metric family, ready to encode.
#[derive(Debug)]
struct Family {
    name: &'static str,
    help: &'static str,
    counter: bool,
    samples: Vec<(Labels, u64)>,
}

impl Family {
    fn counter(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            counter: true,
            samples: Vec::new(),
        }
    }

    fn gauge(name: &'static str, help: &'static str) -> Self {
        Self {
            counter: false,
            ..Self::counter(name, help)
        }
    }

    fn with(mut self, labels: Labels, v: u64) -> Self {
        self.samples.push((labels, v));
        self
    }

    fn push(&mut self, labels: Labels, v: u64) {
        self.samples.push((labels, v));
    }
}

/// The families, in output order (a `Collector`, so the order is ours and fixed).
#[derive(Debug)]
struct Families(Vec<Family>);

impl Collector for Families {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        for f in &self.0 {
            let ty = if f.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut me = encoder.encode_descriptor(f.name, f.help, None, ty)?;
            for (labels, v) in &f.samples {
                if labels.is_empty() {
                    // One unlabelled sample: the family is a single metric.
                    if f.counter {
                        ConstCounter::new(*v).encode(me)?;
                    } else {
                        ConstGauge::new(*v).encode(me)?;
                    }
                    break;
                }
                let fe = me.encode_family(labels)?;
                if f.counter {
                    ConstCounter::new(*v).encode(fe)?;
                } else {
                    ConstGauge::new(*v).encode(fe)?;
                }
            }
        }
        Ok(())
    }
}

fn families(input: &MetricsInput) -> Vec<Family> {
    let mut out = Vec::new();
    let w = |i: usize| vec![("worker", i.to_string())];

    let mut rx = Family::counter(
        "trapeze_worker_rx_packets",
        "Frames received from the NIC queues.",
    );
    let mut tx = Family::counter("trapeze_worker_tx_packets", "Frames transmitted.");
    let mut verdicts = Family::counter(
        "trapeze_worker_verdicts",
        "Frames by verdict other than drop (forward, reply, punt, handoff).",
    );
    let mut drops = Family::counter("trapeze_worker_drops", "Frames dropped, by reason.");
    let mut events = Family::counter(
        "trapeze_worker_events",
        "Things that happened to packets besides their verdict, by kind.",
    );
    let mut flows = Family::gauge("trapeze_worker_flows", "Flows in the worker's flow table.");
    let mut cap = Family::gauge(
        "trapeze_worker_flow_capacity",
        "Capacity of the worker's flow table.",
    );
    for (i, s) in input.workers.iter().enumerate() {
        rx.push(w(i), s.rx);
        tx.push(w(i), s.tx);
        for (name, v) in [
            ("forward", s.stats.forwarded),
            ("reply", s.stats.replied),
            ("punt", s.stats.punted),
            ("handoff", s.stats.handed_off),
        ] {
            verdicts.push(
                vec![("worker", i.to_string()), ("verdict", name.to_string())],
                v,
            );
        }
        for r in DropReason::ALL {
            drops.push(
                vec![("worker", i.to_string()), ("reason", r.name().to_string())],
                s.stats.drops_of(*r),
            );
        }
        for e in Event::ALL {
            events.push(
                vec![("worker", i.to_string()), ("event", e.name().to_string())],
                s.stats.events_of(*e),
            );
        }
        flows.push(w(i), s.flows);
        cap.push(w(i), s.flow_capacity);
    }
    out.extend([rx, tx, verdicts, drops, events, flows, cap]);

    let mut vp = Family::counter(
        "trapeze_vip_packets",
        "Packets forwarded from clients towards the VIP's backends.",
    );
    let mut vb = Family::counter(
        "trapeze_vip_bytes",
        "Bytes (IP length) forwarded from clients towards the VIP's backends.",
    );
    let mut vn = Family::counter(
        "trapeze_vip_new_connections",
        "New connections balanced by Maglev.",
    );
    let mut vj = Family::counter("trapeze_vip_joins", "MP_JOIN subflows routed by token.");
    let mut vcp = Family::counter(
        "trapeze_vip_to_client_packets",
        "Packets forwarded back towards clients (NAT return path; 0 for DSR).",
    );
    let mut vcb = Family::counter(
        "trapeze_vip_to_client_bytes",
        "Bytes (IP length) forwarded back towards clients.",
    );
    for v in &input.vips {
        let t = input.vip_totals(v.id);
        let l = || vec![("vip", v.name.clone())];
        vp.push(l(), t.packets);
        vb.push(l(), t.bytes);
        vn.push(l(), t.new_conns);
        vj.push(l(), t.joins);
        vcp.push(l(), t.to_client_packets);
        vcb.push(l(), t.to_client_bytes);
    }
    out.extend([vp, vb, vn, vj, vcp, vcb]);

    let mut bp = Family::counter("trapeze_backend_packets", "Packets sent to the backend.");
    let mut bb = Family::counter(
        "trapeze_backend_bytes",
        "Bytes (IP length) sent to the backend.",
    );
    let mut bn = Family::counter(
        "trapeze_backend_new_connections",
        "New connections given to the backend.",
    );
    let mut bj = Family::counter(
        "trapeze_backend_joins",
        "MP_JOIN subflows routed to the backend.",
    );
    let mut bs = Family::gauge(
        "trapeze_backend_state",
        "Backend state: 1 for the current state, 0 for the others.",
    );
    let mut bw = Family::gauge("trapeze_backend_weight", "Backend Maglev weight.");
    let mut ba = Family::gauge(
        "trapeze_backend_active_flows",
        "Flows pinned to the backend in the workers' flow tables.",
    );
    let mut bma = Family::counter(
        "trapeze_backend_migrate_announced",
        "Migration: MPTCP connections sent the draining backend's direct address (ADD_ADDR).",
    );
    let mut bmm = Family::counter(
        "trapeze_backend_migrate_migrated",
        "Migration: connections whose client took the direct address (echoed it).",
    );
    let mut bml = Family::counter(
        "trapeze_backend_migrate_left_behind",
        "Migration: connections left to the drain policy (plain TCP, or no echo).",
    );
    let mut bmc = Family::counter(
        "trapeze_backend_migrate_closed",
        "Migration: connections that closed while being migrated.",
    );
    let mut bmp = Family::gauge(
        "trapeze_backend_migrate_pending",
        "Migration: connections that still need the gateway (from each worker's last walk).",
    );
    let mut bdc = Family::counter(
        "trapeze_backend_drain_completed",
        "Drains with a deadline that ended, by how: early (every connection migrated or \
         closed) or at the deadline.",
    );
    let mut bi = Family::gauge(
        "trapeze_backend_info",
        "Backend membership: 1 for each VIP the backend serves.",
    );
    for b in &input.backends {
        let t = input.backend_totals(b.id);
        let l = || vec![("backend", b.name.clone())];
        bp.push(l(), t.packets);
        bb.push(l(), t.bytes);
        bn.push(l(), t.new_conns);
        bj.push(l(), t.joins);
        bma.push(l(), t.migrate_announced);
        bmm.push(l(), t.migrate_migrated);
        bml.push(l(), t.migrate_left_behind);
        bmc.push(l(), t.migrate_closed);
        bmp.push(l(), t.migrate_pending);
        for (how, n) in [("early", b.drains.0), ("deadline", b.drains.1)] {
            bdc.push(
                vec![("backend", b.name.clone()), ("how", how.to_string())],
                n,
            );
        }
        for s in State::ALL {
            bs.push(
                vec![
                    ("backend", b.name.clone()),
                    ("state", s.as_str().to_string()),
                ],
                u64::from(s == b.state),
            );
        }
        bw.push(l(), u64::from(b.weight));
        if let Some(a) = b.active_flows {
            ba.push(l(), a);
        }
        for v in &b.vips {
            bi.push(vec![("backend", b.name.clone()), ("vip", v.clone())], 1);
        }
    }
    out.extend([bp, bb, bn, bj, bma, bmm, bml, bmc, bmp, bdc, bs, bw, ba, bi]);

    out.extend(port_families(&input.ports));

    let tv = input.token_view();
    out.push(
        Family::gauge("trapeze_tokens", "MPTCP tokens in the token table.")
            .with(vec![], tv.entries),
    );
    out.push(
        Family::gauge("trapeze_token_capacity", "Capacity of the token table.")
            .with(vec![], tv.capacity),
    );
    out.push(
        Family::counter(
            "trapeze_token_collisions",
            "Tokens owned by connections on two backends (joins for them are refused).",
        )
        .with(vec![], tv.collisions),
    );
    out.push(
        Family::counter(
            "trapeze_join_unknown_token",
            "MP_JOIN SYNs dropped because their token is unknown.",
        )
        .with(vec![], tv.unknown_token_joins),
    );

    if let Some(c) = &input.cluster {
        out.extend(cluster_families(c));
    }

    let c = &input.control;
    out.push(
        Family::counter(
            "trapeze_control_reloads",
            "Configuration reloads, by result (on error the old configuration kept serving).",
        )
        .with(vec![("result", "ok".into())], c.reloads_ok)
        .with(vec![("result", "error".into())], c.reloads_error),
    );
    out.push(
        Family::counter(
            "trapeze_control_pool_changes",
            "Pool changes applied (API changes and reloads).",
        )
        .with(vec![], c.pool_changes),
    );
    out.push(
        Family::counter(
            "trapeze_control_watchdog_stalls",
            "Forwarding workers found stalled by the watchdog (the instance turned stopping).",
        )
        .with(vec![], c.watchdog_stalls),
    );
    out.push(
        Family::counter(
            "trapeze_control_drains_completed",
            "Drains with a deadline that ended, every backend's, by how: early (a migrating \
             backend whose connections had all left the gateway) or at the deadline.",
        )
        .with(vec![("how", "early".into())], c.drains_completed_early)
        .with(
            vec![("how", "deadline".into())],
            c.drains_completed_at_deadline,
        ),
    );
    out.push(
        Family::gauge(
            "trapeze_control_version",
            "Version of the configuration serving.",
        )
        .with(vec![], c.version),
    );
    out
}

fn cluster_families(c: &ClusterStatsView) -> Vec<Family> {
    let mut v = vec![
        Family::counter(
            "trapeze_cluster_datagrams_sent",
            "Token-sync datagrams sent to peers.",
        )
        .with(vec![], c.datagrams_sent),
        Family::counter(
            "trapeze_cluster_records_sent",
            "Token learns/removals sent (summed over peers).",
        )
        .with(vec![], c.records_sent),
        Family::counter(
            "trapeze_cluster_send_errors",
            "Token-sync datagrams the socket refused.",
        )
        .with(vec![], c.send_errors),
        Family::counter(
            "trapeze_cluster_refreshes",
            "Full re-announcements of the local tokens.",
        )
        .with(vec![], c.refreshes),
        Family::counter(
            "trapeze_cluster_datagrams_received",
            "Token-sync datagrams received.",
        )
        .with(vec![], c.datagrams_received),
        Family::counter(
            "trapeze_cluster_records_received",
            "Records in accepted token-sync datagrams.",
        )
        .with(vec![], c.records_received),
        Family::counter(
            "trapeze_cluster_records_applied",
            "Remote owners inserted, refreshed or removed.",
        )
        .with(vec![], c.records_applied),
        Family::counter(
            "trapeze_cluster_rejected",
            "Token-sync datagrams refused, by reason.",
        )
        .with(vec![("reason", "auth".into())], c.rejected_auth)
        .with(vec![("reason", "sequence".into())], c.rejected_sequence)
        .with(vec![("reason", "malformed".into())], c.rejected_malformed)
        .with(
            vec![("reason", "unknown_peer".into())],
            c.rejected_unknown_peer,
        )
        .with(vec![("reason", "epoch".into())], c.rejected_epoch),
        Family::counter(
            "trapeze_cluster_sessions",
            "Token-sync sessions opened (a peer's epoch confirmed by a challenge and response).",
        )
        .with(vec![], c.sessions),
        Family::counter(
            "trapeze_cluster_records_ignored",
            "Remote records not applied, by reason.",
        )
        .with(
            vec![("reason", "unknown_backend".into())],
            c.unknown_backend,
        )
        .with(vec![("reason", "full".into())], c.remote_full),
        Family::counter(
            "trapeze_cluster_remote_shadowed",
            "Remote learns for a token with a local owner (the local owner routes).",
        )
        .with(vec![], c.remote_shadowed),
        Family::counter(
            "trapeze_cluster_remote_collisions",
            "Remote learns that made a token's remote owners ambiguous.",
        )
        .with(vec![], c.remote_collisions),
        Family::counter(
            "trapeze_cluster_journal_dropped",
            "Local token changes lost because the export journal was full.",
        )
        .with(vec![], c.journal_dropped),
        Family::gauge(
            "trapeze_cluster_remote_tokens",
            "Tokens with remote owners.",
        )
        .with(vec![], c.remote_tokens),
        Family::counter(
            "trapeze_cluster_propagation_delay_us",
            "Sum of propagation delays (learn on a peer -> applied here), microseconds.",
        )
        .with(vec![], c.delay_sum_us),
        Family::counter(
            "trapeze_cluster_propagation_delays",
            "Propagation delays measured.",
        )
        .with(vec![], c.delay_count),
        Family::gauge(
            "trapeze_cluster_propagation_delay_max_us",
            "Largest propagation delay measured, microseconds.",
        )
        .with(vec![], c.delay_max_us),
    ];
    let mut b = Family::counter(
        "trapeze_cluster_propagation_delay_bucket",
        "Propagation delays at most `le` seconds (cumulative).",
    );
    for (i, &n) in c.delay_buckets.iter().enumerate() {
        let le = super::types::DELAY_BUCKETS_US
            .get(i)
            .map_or_else(|| "+Inf".to_string(), |us| format!("{}", *us as f64 / 1e6));
        b.push(vec![("le", le)], n);
    }
    v.push(b);
    v
}

fn port_families(ports: &[PortStatsView]) -> Vec<Family> {
    let mut rx = Family::counter("trapeze_port_rx_packets", "Frames the workers received.");
    let mut tx = Family::counter(
        "trapeze_port_tx_packets",
        "Frames the device accepted for transmission.",
    );
    let mut unsent = Family::counter(
        "trapeze_port_tx_unsent",
        "Frames the device did not accept (freed).",
    );
    let mut staged = Family::counter(
        "trapeze_port_tx_staged",
        "Frames staged for transmission, by kind: forward (traffic passed on), reply (ARP/NDP, \
         echo, ICMP errors the pipeline generated), control (ARP/NDP requests, health probes).",
    );
    let mut dev = [
        Family::counter("trapeze_port_device_rx_packets", "Device: frames received."),
        Family::counter("trapeze_port_device_tx_packets", "Device: frames sent."),
        Family::counter("trapeze_port_device_rx_bytes", "Device: bytes received."),
        Family::counter("trapeze_port_device_tx_bytes", "Device: bytes sent."),
        Family::counter(
            "trapeze_port_device_rx_missed",
            "Device: frames dropped because the RX queues were full.",
        ),
        Family::counter(
            "trapeze_port_device_rx_errors",
            "Device: erroneous frames received.",
        ),
        Family::counter(
            "trapeze_port_device_tx_errors",
            "Device: failed transmissions.",
        ),
        Family::counter(
            "trapeze_port_device_rx_nombuf",
            "Device: RX mbuf allocation failures.",
        ),
    ];
    for p in ports {
        let l = || vec![("port", p.name.clone())];
        rx.push(l(), p.rx_packets);
        tx.push(l(), p.tx_packets);
        unsent.push(l(), p.tx_unsent);
        for (kind, v) in [
            ("forward", p.tx_forwarded),
            ("reply", p.tx_replies),
            ("control", p.tx_control),
        ] {
            staged.push(
                vec![("port", p.name.clone()), ("kind", kind.to_string())],
                v,
            );
        }
        if let Some(d) = p.device {
            let values = [
                d.rx_packets,
                d.tx_packets,
                d.rx_bytes,
                d.tx_bytes,
                d.rx_missed,
                d.rx_errors,
                d.tx_errors,
                d.rx_nombuf,
            ];
            for (f, v) in dev.iter_mut().zip(values) {
                f.push(l(), v);
            }
        }
    }
    let mut out = vec![rx, tx, unsent, staged];
    out.extend(dev);
    out
}

/// Renders the metrics as OpenMetrics text (also read by Prometheus as its classic text format;
/// see [`CONTENT_TYPE_TEXT`] and [`CONTENT_TYPE_OPENMETRICS`]). The output ends in `# EOF`.
pub fn render(input: &MetricsInput) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Families(families(input))));
    let mut out = String::new();
    // Writing into a String cannot fail; an encoder error would leave a truncated text, which
    // a scraper rejects as a whole.
    let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_unlabelled_and_labelled() {
        let mut stats = WorkerStats::new(1, 1);
        stats.drops[DropReason::Runt as usize] = 3;
        let input = MetricsInput {
            workers: vec![WorkerSample {
                rx: 5,
                tx: 2,
                flows: 1,
                flow_capacity: 8,
                stats,
            }],
            tokens: TokenSample {
                entries: 4,
                capacity: 16,
            },
            ..Default::default()
        };
        let t = render(&input);
        assert!(
            t.contains("trapeze_worker_rx_packets_total{worker=\"0\"} 5\n"),
            "{t}"
        );
        assert!(t.contains("trapeze_worker_drops_total{worker=\"0\",reason=\"l2_runt\"} 3\n"));
        assert!(t.contains("\ntrapeze_tokens 4\n"), "{t}");
        assert!(t.contains("# TYPE trapeze_token_collisions counter\n"));
        assert!(t.ends_with("# EOF\n"));
    }

    #[test]
    fn renders_cluster_counters_only_when_configured() {
        let none = render(&MetricsInput::default());
        assert!(!none.contains("trapeze_cluster_"));
        assert!(MetricsInput::default().stats_view().cluster.is_none());
        let input = MetricsInput {
            cluster: Some(ClusterStatsView {
                datagrams_sent: 7,
                rejected_auth: 2,
                rejected_sequence: 3,
                remote_tokens: 5,
                delay_count: 4,
                delay_sum_us: 1200,
                delay_max_us: 600,
                delay_buckets: [0, 1, 2, 4, 4, 4, 4, 4, 4, 4],
                ..Default::default()
            }),
            ..Default::default()
        };
        let t = render(&input);
        assert!(
            t.contains("\ntrapeze_cluster_datagrams_sent_total 7\n"),
            "{t}"
        );
        assert!(
            t.contains("trapeze_cluster_rejected_total{reason=\"auth\"} 2\n"),
            "{t}"
        );
        assert!(t.contains("trapeze_cluster_rejected_total{reason=\"sequence\"} 3\n"));
        assert!(t.contains("\ntrapeze_cluster_remote_tokens 5\n"));
        assert!(t.contains("\ntrapeze_cluster_propagation_delay_us_total 1200\n"));
        assert!(t.contains("\ntrapeze_cluster_propagation_delay_max_us 600\n"));
        assert!(
            t.contains("trapeze_cluster_propagation_delay_bucket_total{le=\"0.00025\"} 1\n"),
            "{t}"
        );
        assert!(t.contains("trapeze_cluster_propagation_delay_bucket_total{le=\"+Inf\"} 4\n"));
        let v = input.stats_view();
        let json = serde_json::to_string(&v).unwrap();
        let back: StatsView = serde_json::from_str(&json).unwrap();
        assert_eq!(back.cluster.unwrap().rejected_sequence, 3);
    }

    #[test]
    fn renders_ports_by_kind_and_device() {
        let input = MetricsInput {
            ports: vec![PortStatsView {
                name: "client".into(),
                rx_packets: 10,
                tx_packets: 7,
                tx_unsent: 1,
                tx_forwarded: 5,
                tx_replies: 2,
                tx_control: 1,
                device: Some(super::super::types::DeviceStatsView {
                    rx_missed: 3,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        };
        let t = render(&input);
        for line in [
            "trapeze_port_rx_packets_total{port=\"client\"} 10\n",
            "trapeze_port_tx_packets_total{port=\"client\"} 7\n",
            "trapeze_port_tx_unsent_total{port=\"client\"} 1\n",
            "trapeze_port_tx_staged_total{port=\"client\",kind=\"forward\"} 5\n",
            "trapeze_port_tx_staged_total{port=\"client\",kind=\"reply\"} 2\n",
            "trapeze_port_tx_staged_total{port=\"client\",kind=\"control\"} 1\n",
            "trapeze_port_device_rx_missed_total{port=\"client\"} 3\n",
        ] {
            assert!(t.contains(line), "{line} missing from:\n{t}");
        }
        let v = input.stats_view();
        assert_eq!(v.ports, input.ports);
    }
}

//! The control thread's answers to API requests (`crate::api::serve` forwards them here, one at
//! a time, so changes are serialised). The API thread only parses and forwards; if it fails,
//! forwarding goes on and the control thread simply receives nothing.

#![warn(clippy::arithmetic_side_effects)]

use std::time::UNIX_EPOCH;

use trapeze_core::pipeline::Shared;
use trapeze_core::pool::{BackendState, PortId};

use crate::api::types::Mode;
use crate::api::{
    self, ControlStatsView, MetricsInput, PortStatsView, ReloadReport, RemoveMode, Request,
    Response, StatusView, TokenSample,
};
use crate::cluster::Counters as ClusterCounters;
use crate::dataplane::{Dataplane, PortCounters};
use crate::instance::Instance;
use crate::pool::{NewBackend, NewVip, PoolManager, Refused};
use crate::publish::Published;

/// What a request needs besides the pool manager.
#[allow(missing_debug_implementations)]
pub struct Env<'a> {
    /// The serving pool.
    pub published: &'a Published,
    /// The token table.
    pub shared: &'a Shared,
    /// The counters come from here.
    pub dataplane: &'a dyn Dataplane,
    /// The instance's announcement state.
    pub instance: &'a Instance,
    /// The token-sync counters, when `[cluster]` is configured.
    pub cluster: Option<&'a ClusterCounters>,
}

fn refused(r: Refused) -> Response {
    match r.field {
        Some(field) if r.status == 422 => Response::invalid(field, r.reason),
        Some(field) => Response::Error {
            status: r.status,
            reason: r.reason,
            field: Some(field),
        },
        None => Response::error(r.status, r.reason),
    }
}

fn applied(r: Result<u64, Refused>) -> Response {
    match r {
        Ok(version) => Response::Applied {
            version,
            warning: None,
        },
        Err(e) => refused(e),
    }
}

fn metrics_input(cp: &PoolManager, env: &Env<'_>) -> MetricsInput {
    let counters = env.dataplane.counters();
    let tokens = TokenSample {
        entries: env.shared.tokens.len() as u64,
        capacity: env.shared.tokens.capacity() as u64,
    };
    let control = ControlStatsView {
        version: cp.version(),
        reloads_ok: cp.counters.reloads_ok,
        reloads_error: cp.counters.reloads_failed,
        pool_changes: cp.counters.pool_changes,
        watchdog_stalls: cp.counters.watchdog_stalls,
        drains_completed_early: cp.drain_completions.values().map(|d| d.early).sum(),
        drains_completed_at_deadline: cp.drain_completions.values().map(|d| d.deadline).sum(),
    };
    let mut input =
        MetricsInput::from_pool(&env.published.load(), counters.workers, tokens, control);
    input.ports = port_views(cp, &counters.ports);
    input.cluster = env.cluster.map(|c| c.view(&env.shared.tokens));
    // Active flows per backend: the workers' gauges, summed.
    for b in &mut input.backends {
        if let Some(d) = cp.drain_completions.get(&b.name) {
            b.drains = (d.early, d.deadline);
        }
        let i = b.id.0 as usize;
        b.active_flows = Some(
            input
                .workers
                .iter()
                .filter_map(|w| w.stats.backends.get(i))
                .map(|c| c.active_flows)
                .sum(),
        );
    }
    input
}

/// The ports' counters, named.
fn port_views(cp: &PoolManager, ports: &[PortCounters]) -> Vec<PortStatsView> {
    ports
        .iter()
        .enumerate()
        .map(|(i, c)| PortStatsView {
            name: cp
                .cfg
                .ports
                .get(i)
                .map(|p| p.name.clone())
                .unwrap_or_default(),
            rx_packets: c.rx,
            tx_packets: c.tx,
            tx_unsent: c.tx_unsent,
            tx_forwarded: c.forwarded,
            tx_replies: c.replies,
            tx_control: c.control,
            device: c.device,
        })
        .collect()
}

/// Answers one request.
pub fn dispatch(cp: &mut PoolManager, req: Request, env: &Env<'_>) -> Response {
    let change = req.is_change();
    let r = match req {
        Request::ListVips | Request::GetVip { .. } => {
            let input = metrics_input(cp, env);
            let snap = env.published.load();
            let names: Vec<String> = cp.cfg.ports.iter().map(|p| p.name.clone()).collect();
            let port_name = |p: PortId| names.get(p.0 as usize).cloned().unwrap_or_default();
            let views = api::vip_views(&snap, &port_name, &input);
            return match req {
                Request::GetVip { name } => views
                    .into_iter()
                    .find(|v| v.name == name)
                    .map_or_else(|| Response::not_found("vip", &name), Response::Vip),
                _ => Response::Vips(views),
            };
        }
        Request::Instance | Request::InstanceDrain { .. } => {
            if let Request::InstanceDrain { drain } = req {
                env.instance.set_draining(drain);
            }
            let view = env
                .instance
                .view(&env.published.load(), std::time::Instant::now());
            return Response::Instance(view);
        }
        Request::Stats => return Response::Stats(metrics_input(cp, env).stats_view()),
        Request::Metrics => return Response::Metrics(api::render(&metrics_input(cp, env))),
        Request::Status => {
            let last_good = match cp.last_reload.as_ref().map(|r| &r.result) {
                Some(Ok(v)) => *v,
                _ => cp.version(),
            };
            let last_reload = cp.last_reload.as_ref().map(|r| ReloadReport {
                ok: r.result.is_ok(),
                path: r.path.display().to_string(),
                unix_time_s: r.at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                version: cp.version(),
                error: r.result.as_ref().err().cloned(),
                warning: r.warning.clone(),
            });
            return Response::Status(StatusView {
                version: cp.version(),
                last_good_version: last_good,
                uptime_s: cp.started.elapsed().as_secs(),
                workers: u64::from(cp.cfg.workers.count.max(1)),
                config_path: Some(cp.config_path.display().to_string()),
                last_reload,
            });
        }
        Request::AddVip { spec, if_version } => {
            let mode = match spec.mode {
                Mode::Nat => "nat",
                Mode::Dsr => "dsr",
            };
            let dsr = spec.dsr.as_ref().map(|d| {
                (
                    d.encap.as_deref(),
                    d.gue_port.map(i64::from),
                    d.outer_source.as_deref(),
                )
            });
            match crate::config::dsr::forwarding_mode(spec.address, mode, dsr) {
                Ok(mode) => cp.add_vip(
                    NewVip {
                        name: spec.name,
                        addr: spec.address,
                        port: spec.port,
                        mode,
                        client_port: spec.client_port,
                        backends: spec.backends,
                        join_ports: spec.join_ports,
                        announce: spec.announce.unwrap_or_default().into(),
                        deny_join_initial: spec.deny_join_initial,
                    },
                    if_version,
                    env.published,
                ),
                Err((field, msg)) => Err(Refused::invalid_field(field, format!("{field}: {msg}"))),
            }
        }
        Request::RemoveVip { name, if_version } => cp.remove_vip(&name, if_version, env.published),
        Request::AddBackend {
            vip,
            backend,
            if_version,
        } => {
            let mac = match backend.mac_bytes().transpose() {
                Ok(m) => m,
                Err(e) => return Response::invalid("mac", e),
            };
            cp.add_backend(
                &vip,
                NewBackend {
                    name: backend.name,
                    ipv4: backend.ipv4,
                    ipv6: backend.ipv6,
                    port: backend.port,
                    weight: backend.weight,
                    egress: backend.egress_port,
                    mac,
                    direct: backend.direct,
                },
                if_version,
                env.published,
                env.shared,
            )
        }
        Request::RemoveBackend {
            name,
            mode,
            if_version,
        } => cp.remove_backend(
            &name,
            mode == RemoveMode::Hard,
            if_version,
            env.published,
            env.shared,
        ),
        Request::Drain {
            name,
            deadline_s,
            if_version,
        } => cp.set_state(
            &name,
            BackendState::Draining,
            deadline_s.map(std::time::Duration::from_secs),
            if_version,
            env.published,
        ),
        Request::Undrain { name, if_version } => {
            cp.set_state(&name, BackendState::Active, None, if_version, env.published)
        }
        Request::SetWeight {
            name,
            weight,
            if_version,
        } => cp.set_weight(&name, weight, if_version, env.published),
        Request::Reload { path, if_version } => {
            if let Some(v) = if_version.filter(|&v| v != cp.version()) {
                return Response::version_conflict(v, cp.version());
            }
            let r = cp.reload(
                path.as_deref().map(std::path::Path::new),
                env.published,
                env.shared,
            );
            cp.outcome(&r);
            return match r {
                Ok(r) => Response::Applied {
                    version: r.version,
                    warning: r.warning,
                },
                Err(e) => refused(e),
            };
        }
    };
    if change {
        cp.outcome(&r);
    }
    applied(r)
}

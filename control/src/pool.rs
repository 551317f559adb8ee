//! The running pool and the changes applied to it ([`PoolManager`]).
//!
//! Every change follows one path: check the expected version (if given), apply the change to a
//! copy of the pool spec, **build the snapshot** (which validates everything, Maglev tables
//! included), and only then publish it and bump the version. Any error leaves the running pool
//! untouched, byte for byte (the same `Arc<PoolSnapshot>` keeps serving), and is returned with a
//! reason. Changes are applied one at a time by the control thread, so they are serialised.
//!
//! Identities are stable: a backend or VIP keeps its id for its life, a removed one leaves a
//! hole, and ids are never reused, so no flow or token can ever point at the wrong server. A
//! reloaded configuration is matched to the running one by name.
//!
//! Removal policies:
//! * **drain** (`Draining`): no new connections; its flows and the joins of its connections keep
//!   reaching it. With a deadline, it is removed (hard) when the deadline passes.
//! * **hard remove**: the backend leaves every VIP and the snapshot; packets of its remaining
//!   flows are dropped and counted (`backend_gone`), its tokens are purged from the token table
//!   (joins for its connections are refused: `join_no_token`), new connections go elsewhere.
//! * **graceful remove**: drain, then hard remove after the drain deadline (default 60 s).
//!
//! **A backend that comes back resumes its flows.** A removed backend (hard, at its drain
//! deadline, or gone from a reloaded file) is remembered for [`REMOVED_MEMORY`] (10 min, the
//! idle timeout of an established flow: as long as any of its flows can still be in a flow
//! table). Its flows stay in the flow tables and its tokens in the token table, but while it is
//! out its packets are dropped (`backend_gone`) and its joins refused (`join_owner_down`): `--hard`
//! keeps its meaning. Added again within that time under the same name, addresses and port (by
//! the API or a reload), it gets **the same id** back, with its join ports that are still free:
//! its flows are forwarded again and its connections' joins routed again. After that time its
//! tokens are purged, and a later add is a new server with a new id. A backend that comes back
//! with another address or port is another server: the old one is forgotten (tokens purged).

#![warn(clippy::arithmetic_side_effects)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use trapeze_core::pipeline::Shared;
use trapeze_core::pool::{
    Backend, BackendId, BackendState, ForwardingMode, PoolSnapshot, PoolSpec, PortId, VipId,
    VipSpec,
};

use crate::api::types::version_conflict_reason;
use crate::config::{self, GatewayConfig, Overrides};
use crate::publish::Published;

/// Default time a graceful removal waits for the backend's flows to end.
pub const GRACEFUL_REMOVE_DEADLINE: Duration = Duration::from_secs(60);

/// How long a removed backend is remembered, so that added back it resumes its flows (the module
/// documentation): the flow tables' default idle timeout of an established flow.
pub const REMOVED_MEMORY: Duration = Duration::from_secs(600);

/// A removed backend, remembered for [`REMOVED_MEMORY`].
#[derive(Debug, Clone)]
struct Removed {
    /// As it was (its id included).
    backend: Backend,
    /// The VIPs it served and its join port on each.
    vips: Vec<(VipId, Option<u16>)>,
    /// When it was removed.
    at: Instant,
}

impl Removed {
    fn same_server(
        &self,
        name: &str,
        ipv4: Option<Ipv4Addr>,
        ipv6: Option<Ipv6Addr>,
        port: u16,
    ) -> bool {
        self.backend.name == name
            && self.backend.ipv4 == ipv4
            && self.backend.ipv6 == ipv6
            && self.backend.port == port
    }
}

/// Why a request changed nothing: an HTTP-like status (`docs/API.md`: 404 unknown name, 409
/// version conflict, 422 refused by validation), a reason for the operator, and the request's
/// field at fault when there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// 404, 409 or 422.
    pub status: u16,
    /// What is wrong, for the operator.
    pub reason: String,
    /// The field of the request (or of the reloaded file) at fault.
    pub field: Option<String>,
}

impl Refused {
    fn not_found(what: &str, name: &str) -> Self {
        Self {
            status: 404,
            reason: format!("no {what} named {name:?}"),
            field: None,
        }
    }

    fn conflict(expected: u64, current: u64) -> Self {
        Self {
            status: 409,
            reason: version_conflict_reason(expected, current),
            field: None,
        }
    }

    /// Refused by validation (422).
    pub fn invalid(reason: impl Into<String>) -> Self {
        Self {
            status: 422,
            reason: reason.into(),
            field: None,
        }
    }

    /// Refused by validation (422), naming the field at fault.
    pub fn invalid_field(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            status: 422,
            reason: reason.into(),
            field: Some(field.into()),
        }
    }
}

/// A backend as a request describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewBackend {
    pub name: String,
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
    pub port: u16,
    pub weight: u32,
    /// Egress port by name; `None`: the port of the VIP's other backends, or the only port.
    pub egress: Option<String>,
    pub mac: Option<[u8; 6]>,
    /// Its direct address (migration).
    pub direct: Option<IpAddr>,
}

/// A VIP as a request describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewVip {
    pub name: String,
    pub addr: IpAddr,
    pub port: u16,
    /// Forwarding mode.
    pub mode: ForwardingMode,
    /// Client-side port by name; `None`: the first port.
    pub client_port: Option<String>,
    pub backends: Vec<String>,
    /// Stateless join ports by member name.
    pub join_ports: std::collections::BTreeMap<String, u16>,
    /// What the gateway announces.
    pub announce: trapeze_core::pool::Announce,
    /// The C flag in the MP_CAPABLE SYN/ACK; `None`: where an announcement depends on it.
    pub deny_join_initial: Option<bool>,
}

/// Counters of the control plane itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ControlCounters {
    pub reloads_ok: u64,
    pub reloads_failed: u64,
    pub pool_changes: u64,
    pub refused: u64,
    /// Workers found stalled by the watchdog.
    pub watchdog_stalls: u64,
}

/// A reload that was applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    /// The version now serving.
    pub version: u64,
    /// Something the operator should know: a change that takes effect only at the next start
    /// (`[eal]`).
    pub warning: Option<String>,
}

/// What the last reload did, for `GET /status`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadRecord {
    /// `Ok(version)` or why it was refused.
    pub result: Result<u64, String>,
    /// The file actually read.
    pub path: std::path::PathBuf,
    /// When it happened.
    pub at: std::time::SystemTime,
    /// The warning of an applied reload.
    pub warning: Option<String>,
}

/// The running configuration and what happened to it: owned by the control thread.
#[derive(Debug)]
pub struct PoolManager {
    pub cfg: GatewayConfig,
    pub overrides: Overrides,
    pub config_path: std::path::PathBuf,
    pub counters: ControlCounters,
    /// The outcome of the last reload.
    pub last_reload: Option<ReloadRecord>,
    /// Backends to remove (hard) when their drain deadline passes, with the pool version that
    /// published the drain (a migration may end earlier: [`Self::complete_migrations`]).
    deadlines: Vec<(BackendId, Instant, u64)>,
    /// How each backend's drains with a deadline ended, by name (a removed backend's too).
    pub drain_completions: std::collections::BTreeMap<String, DrainCompletions>,
    /// Backends failing their health checks: published as `Down` whatever their configured
    /// state (which `cfg.pool` keeps, so an operator's drain survives a health flap).
    health_down: Vec<BackendId>,
    /// Removed backends still remembered (see the module documentation).
    removed: Vec<Removed>,
    pub started: Instant,
    /// Reads the reloaded files (one stuck read at most).
    reader: config::read::ConfigReader,
}

impl PoolManager {
    pub fn new(cfg: GatewayConfig, overrides: Overrides, config_path: std::path::PathBuf) -> Self {
        Self {
            cfg,
            overrides,
            config_path,
            counters: ControlCounters::default(),
            last_reload: None,
            deadlines: Vec::new(),
            drain_completions: std::collections::BTreeMap::new(),
            health_down: Vec::new(),
            removed: Vec::new(),
            started: Instant::now(),
            reader: config::read::ConfigReader::default(),
        }
    }

    /// The running version.
    pub fn version(&self) -> u64 {
        self.cfg.pool.version
    }

    fn backend_id(&self, name: &str) -> Result<BackendId, Refused> {
        self.cfg
            .pool
            .backends
            .iter()
            .flatten()
            .find(|b| b.name == name)
            .map(|b| b.id)
            .ok_or_else(|| Refused::not_found("backend", name))
    }

    fn vip_id(&self, name: &str) -> Result<VipId, Refused> {
        self.cfg
            .pool
            .vips
            .iter()
            .flatten()
            .find(|v| v.name == name)
            .map(|v| v.id)
            .ok_or_else(|| Refused::not_found("vip", name))
    }

    fn port_id(&self, name: &str) -> Result<PortId, Refused> {
        self.cfg
            .ports
            .iter()
            .find(|p| p.name == name)
            .map(|p| p.id)
            .ok_or_else(|| Refused::invalid(format!("no port named {name:?}")))
    }

    /// The common path of every change (see the module documentation).
    /// Counts the outcome of a change request (the dispatcher calls it once per request).
    pub fn outcome<T>(&mut self, r: &Result<T, Refused>) {
        match r {
            Ok(_) => self.counters.pool_changes = self.counters.pool_changes.saturating_add(1),
            Err(_) => self.counters.refused = self.counters.refused.saturating_add(1),
        }
    }

    fn change(
        &mut self,
        if_version: Option<u64>,
        published: &Published,
        f: impl FnOnce(&mut PoolSpec) -> Result<(), Refused>,
    ) -> Result<u64, Refused> {
        if let Some(v) = if_version {
            if v != self.version() {
                return Err(Refused::conflict(v, self.version()));
            }
        }
        let mut next = self.cfg.pool.clone();
        f(&mut next)?;
        // The same rules as the configuration file, over the whole candidate pool.
        config::rules::check_pool(&self.cfg.ports, &next)
            .map_err(|(field, reason)| Refused::invalid_field(field, reason))?;
        next.version = self
            .version()
            .checked_add(1)
            .ok_or_else(|| Refused::invalid("the configuration version is at its maximum"))?;
        let snapshot = PoolSnapshot::build(self.effective(&next))
            .map_err(|e| Refused::invalid(e.to_string()))?;
        self.cfg.pool = next;
        published.publish(snapshot);
        Ok(self.version())
    }

    /// The spec as published: health-down backends are `Down`.
    fn effective(&self, spec: &PoolSpec) -> PoolSpec {
        let mut e = spec.clone();
        for id in &self.health_down {
            if let Some(Some(b)) = e.backends.get_mut(id.0 as usize) {
                b.state = BackendState::Down;
            }
        }
        e
    }

    /// A change the gateway makes itself (resolved MACs): the same validation and publication,
    /// not counted as an operator's change.
    pub fn internal_change(
        &mut self,
        published: &Published,
        f: impl FnOnce(&mut PoolSpec),
    ) -> Result<u64, Refused> {
        self.change(None, published, |p| {
            f(p);
            Ok(())
        })
    }

    /// Records a backend's health (from the health checker) and republishes when it changed.
    pub fn set_health(
        &mut self,
        id: BackendId,
        up: bool,
        published: &Published,
    ) -> Result<u64, Refused> {
        let was_down = self.health_down.contains(&id);
        if up != was_down {
            return Ok(self.version());
        }
        if up {
            self.health_down.retain(|&b| b != id);
        } else {
            self.health_down.push(id);
        }
        let r = self.change(None, published, |_| Ok(()));
        if r.is_err() {
            // Keep the overlay consistent with what is published.
            if up {
                self.health_down.push(id);
            } else {
                self.health_down.retain(|&b| b != id);
            }
        }
        r
    }

    /// Adds a backend to a VIP (a new one, or one that already serves other VIPs).
    pub fn add_backend(
        &mut self,
        vip: &str,
        b: NewBackend,
        if_version: Option<u64>,
        published: &Published,
        shared: &Shared,
    ) -> Result<u64, Refused> {
        let vip_id = self.vip_id(vip)?;
        if b.ipv4.is_none() && b.ipv6.is_none() {
            return Err(Refused::invalid_field(
                "ipv4",
                "a backend needs an IPv4 or an IPv6 address",
            ));
        }
        config::rules::service_port(b.port).map_err(|e| Refused::invalid_field("port", e))?;
        config::rules::weight(b.weight).map_err(|e| Refused::invalid_field("weight", e))?;
        let existing = self
            .cfg
            .pool
            .backends
            .iter()
            .flatten()
            .find(|x| x.name == b.name)
            .cloned();
        // A remembered backend with this name: the same server resumes its id (and its flows);
        // another server under the name makes the old one forgotten.
        let remembered = self.removed.iter().position(|r| r.backend.name == b.name);
        let resumed = match remembered {
            Some(i) if self.removed[i].same_server(&b.name, b.ipv4, b.ipv6, b.port) => {
                Some(self.removed[i].clone())
            }
            _ => None,
        };
        let egress = match (&b.egress, &existing) {
            (Some(p), _) => self.port_id(p)?,
            (None, Some(x)) => x.egress,
            (None, None) => self
                .vip_members(vip_id)
                .first()
                .copied()
                .or_else(|| self.cfg.ports.last().map(|p| p.id))
                .ok_or_else(|| Refused::invalid("the gateway has no port"))?,
        };
        let v = self.change(if_version, published, |pool| {
            let id = match existing {
                Some(x) => {
                    if x.ipv4 != b.ipv4 || x.ipv6 != b.ipv6 || x.port != b.port {
                        return Err(Refused::invalid_field(
                            "name",
                            format!("backend {:?} exists with other addresses or port", b.name),
                        ));
                    }
                    x.id
                }
                None => {
                    let id = match &resumed {
                        Some(r) => r.backend.id,
                        None => {
                            // The id is the new slot's index: checked before the slot is pushed.
                            let id = u16::try_from(pool.backends.len())
                                .map_err(|_| Refused::invalid("too many backends"))?;
                            pool.backends.push(None);
                            BackendId(id)
                        }
                    };
                    pool.backends[id.0 as usize] = Some(Backend {
                        id,
                        name: b.name.clone(),
                        ipv4: b.ipv4,
                        ipv6: b.ipv6,
                        port: b.port,
                        weight: b.weight,
                        state: BackendState::Active,
                        egress,
                        mac: b.mac.or(resumed.as_ref().and_then(|r| r.backend.mac)),
                        direct: b.direct,
                    });
                    id
                }
            };
            let v = pool.vips[vip_id.0 as usize]
                .as_mut()
                .ok_or_else(|| Refused::not_found("vip", vip))?;
            if v.backends.contains(&id) {
                return Err(Refused::invalid_field(
                    "name",
                    format!("{:?} already serves {vip:?}", b.name),
                ));
            }
            v.backends.push(id);
            // Its join port on this VIP comes back with it, if no one took it meanwhile.
            let port = resumed
                .as_ref()
                .and_then(|r| r.vips.iter().find(|(x, _)| *x == vip_id))
                .and_then(|&(_, p)| p);
            if let Some(p) = port {
                if !v.join_ports.iter().any(|&(_, q)| q == p) {
                    v.join_ports.push((id, p));
                }
            }
            Ok(())
        })?;
        if let Some(i) = remembered {
            let r = self.removed.remove(i);
            if resumed.is_none() {
                shared.tokens.remove_backend(r.backend.id);
            }
        }
        Ok(v)
    }

    /// Remembers a backend that leaves the pool (its flows and tokens stay; see the module
    /// documentation). Any older memory of the name is forgotten, its tokens purged.
    fn remember(&mut self, pool: &PoolSpec, id: BackendId, shared: &Shared) {
        let Some(Some(b)) = pool.backends.get(id.0 as usize) else {
            return;
        };
        if let Some(i) = self.removed.iter().position(|r| r.backend.name == b.name) {
            let old = self.removed.remove(i);
            shared.tokens.remove_backend(old.backend.id);
        }
        let vips = pool
            .vips
            .iter()
            .flatten()
            .filter(|v| v.backends.contains(&id))
            .map(|v| {
                let jp = v.join_ports.iter().find(|(x, _)| *x == id).map(|&(_, p)| p);
                (v.id, jp)
            })
            .collect();
        self.removed.push(Removed {
            backend: b.clone(),
            vips,
            at: Instant::now(),
        });
    }

    /// The removed backends still remembered: name and id.
    pub fn remembered(&self) -> impl Iterator<Item = (&str, BackendId)> {
        self.removed
            .iter()
            .map(|r| (r.backend.name.as_str(), r.backend.id))
    }

    fn vip_members(&self, vip: VipId) -> Vec<PortId> {
        let Some(Some(v)) = self.cfg.pool.vips.get(vip.0 as usize) else {
            return Vec::new();
        };
        v.backends
            .iter()
            .filter_map(|id| {
                self.cfg
                    .pool
                    .backends
                    .get(id.0 as usize)
                    .and_then(Option::as_ref)
            })
            .map(|b| b.egress)
            .collect()
    }

    /// Sets a backend's state (drain / undrain / down from health checks).
    pub fn set_state(
        &mut self,
        name: &str,
        state: BackendState,
        deadline: Option<Duration>,
        if_version: Option<u64>,
        published: &Published,
    ) -> Result<u64, Refused> {
        let id = self.backend_id(name)?;
        // Checked before anything changes: a deadline past the end of the clock is refused
        // (it used to panic after the drain was published, half-applied).
        let due = match (state, deadline) {
            (BackendState::Draining, Some(d)) => {
                config::rules::drain_deadline(d.as_secs())
                    .map_err(|e| Refused::invalid_field("deadline_s", e))?;
                Some(Instant::now().checked_add(d).ok_or_else(|| {
                    Refused::invalid_field(
                        "deadline_s",
                        format!("a deadline of {} s is too far away", d.as_secs()),
                    )
                })?)
            }
            _ => None,
        };
        let v = self.change(if_version, published, |pool| {
            if let Some(Some(b)) = pool.backends.get_mut(id.0 as usize) {
                b.state = state;
            }
            Ok(())
        })?;
        self.deadlines.retain(|(b, ..)| *b != id);
        if let Some(t) = due {
            self.deadlines.push((id, t, v));
        }
        Ok(v)
    }

    /// Sets a backend's weight.
    pub fn set_weight(
        &mut self,
        name: &str,
        weight: u32,
        if_version: Option<u64>,
        published: &Published,
    ) -> Result<u64, Refused> {
        if weight > config::MAX_WEIGHT {
            return Err(Refused::invalid_field(
                "weight",
                format!("weight {weight} is above {}", config::MAX_WEIGHT),
            ));
        }
        let id = self.backend_id(name)?;
        self.change(if_version, published, |pool| {
            if let Some(Some(b)) = pool.backends.get_mut(id.0 as usize) {
                b.weight = weight;
            }
            Ok(())
        })
    }

    /// Removes a backend: `hard` at once (its tokens purged), otherwise drain then remove after
    /// [`GRACEFUL_REMOVE_DEADLINE`].
    pub fn remove_backend(
        &mut self,
        name: &str,
        hard: bool,
        if_version: Option<u64>,
        published: &Published,
        shared: &Shared,
    ) -> Result<u64, Refused> {
        if !hard {
            return self.set_state(
                name,
                BackendState::Draining,
                Some(GRACEFUL_REMOVE_DEADLINE),
                if_version,
                published,
            );
        }
        let id = self.backend_id(name)?;
        let before = self.cfg.pool.clone();
        let v = self.change(if_version, published, |pool| {
            pool.backends[id.0 as usize] = None;
            for v in pool.vips.iter_mut().flatten() {
                v.backends.retain(|&b| b != id);
                // Its join port goes with it (a later backend may get the port).
                v.join_ports.retain(|&(b, _)| b != id);
            }
            Ok(())
        })?;
        self.deadlines.retain(|(b, ..)| *b != id);
        // Its tokens stay while it is remembered (its joins are refused while it is out).
        self.remember(&before, id, shared);
        Ok(v)
    }

    /// Adds a VIP.
    pub fn add_vip(
        &mut self,
        v: NewVip,
        if_version: Option<u64>,
        published: &Published,
    ) -> Result<u64, Refused> {
        if self
            .cfg
            .pool
            .vips
            .iter()
            .flatten()
            .any(|x| x.name == v.name)
        {
            return Err(Refused::invalid_field(
                "name",
                format!("a vip named {:?} exists", v.name),
            ));
        }
        let client_port = match &v.client_port {
            Some(p) => self.port_id(p)?,
            None => self
                .cfg
                .ports
                .first()
                .map(|p| p.id)
                .ok_or_else(|| Refused::invalid("no port"))?,
        };
        config::rules::vip_members(v.backends.len())
            .map_err(|e| Refused::invalid_field("backends", e))?;
        // Members are named in the body: an unknown one is a refused body (422), not a 404.
        let member = |field: String, n: &str| {
            self.backend_id(n)
                .map_err(|_| Refused::invalid_field(field, format!("unknown backend {n:?}")))
        };
        let members = v
            .backends
            .iter()
            .enumerate()
            .map(|(i, n)| member(format!("backends[{i}]"), n))
            .collect::<Result<Vec<_>, _>>()?;
        let join_ports = v
            .join_ports
            .iter()
            .map(|(n, &p)| Ok((member(format!("join_ports.{n}"), n)?, p)))
            .collect::<Result<Vec<_>, Refused>>()?;
        self.change(if_version, published, |pool| {
            let id = VipId(
                u16::try_from(pool.vips.len()).map_err(|_| Refused::invalid("too many vips"))?,
            );
            pool.vips.push(Some(VipSpec {
                id,
                name: v.name.clone(),
                addr: v.addr,
                port: v.port,
                proto: 6,
                mode: v.mode,
                backends: members,
                client_port,
                join_ports,
                announce: v.announce,
                deny_join_initial: v.deny_join_initial,
            }));
            Ok(())
        })
    }

    /// Removes a VIP (its flows' packets are then dropped and counted as `vip_gone`).
    pub fn remove_vip(
        &mut self,
        name: &str,
        if_version: Option<u64>,
        published: &Published,
    ) -> Result<u64, Refused> {
        let id = self.vip_id(name)?;
        self.change(if_version, published, |pool| {
            pool.vips[id.0 as usize] = None;
            Ok(())
        })
    }

    /// Reloads the configuration file: validated, matched to the running pool by name (ids stay),
    /// applied atomically; on any error the running pool is untouched and the error reported.
    pub fn reload(
        &mut self,
        path: Option<&std::path::Path>,
        published: &Published,
        shared: &Shared,
    ) -> Result<Reloaded, Refused> {
        let (path, result) = match self.reload_path(path) {
            Ok(p) => {
                let r = self.try_reload(&p, published, shared);
                (p, r)
            }
            Err(e) => (
                path.map_or_else(|| self.config_path.clone(), Into::into),
                Err(e),
            ),
        };
        let mut record = ReloadRecord {
            result: Err(String::new()),
            path,
            at: std::time::SystemTime::now(),
            warning: None,
        };
        match result {
            Ok(r) => {
                self.counters.reloads_ok = self.counters.reloads_ok.saturating_add(1);
                record.result = Ok(r.version);
                record.warning.clone_from(&r.warning);
                self.last_reload = Some(record);
                Ok(r)
            }
            Err(mut e) => {
                self.counters.reloads_failed = self.counters.reloads_failed.saturating_add(1);
                record.result = Err(e.reason.clone());
                self.last_reload = Some(record);
                e.reason = format!(
                    "reload refused: {}; version {} keeps serving",
                    e.reason,
                    self.version()
                );
                Err(e)
            }
        }
    }

    /// The file a reload may read: the configured file when none is named or the configured
    /// file is named; otherwise a file under `--reload-dir` (a relative path is taken from
    /// there), after resolving symbolic links, so that a link pointing out of the directory is
    /// refused too. `403` for anything else.
    fn reload_path(&self, asked: Option<&std::path::Path>) -> Result<std::path::PathBuf, Refused> {
        let Some(asked) = asked else {
            return Ok(self.config_path.clone());
        };
        if asked == self.config_path {
            return Ok(self.config_path.clone());
        }
        let forbidden = |why: String| Refused {
            status: 403,
            reason: why,
            field: Some("path".into()),
        };
        let Some(dir) = &self.overrides.reload_dir else {
            return Err(forbidden(format!(
                "{}: a reload reads only the configured file {} (start the daemon with \
                 --reload-dir DIR to allow files under DIR)",
                asked.display(),
                self.config_path.display()
            )));
        };
        let joined = dir.join(asked);
        let unreadable = |e: std::io::Error| Refused {
            status: 422,
            reason: format!("{}: {e}", joined.display()),
            field: Some("path".into()),
        };
        let real_dir = dir.canonicalize().map_err(unreadable)?;
        let real = joined.canonicalize().map_err(unreadable)?;
        if !real.starts_with(&real_dir) || real == real_dir {
            return Err(forbidden(format!(
                "{}: not a file under the reload directory {} (symbolic links resolved: {})",
                asked.display(),
                dir.display(),
                real.display()
            )));
        }
        Ok(real)
    }

    fn try_reload(
        &mut self,
        path: &std::path::Path,
        published: &Published,
        shared: &Shared,
    ) -> Result<Reloaded, Refused> {
        let text = self
            .reader
            .read(
                path,
                config::read::MAX_CONFIG_BYTES,
                config::read::READ_TIMEOUT,
            )
            .map_err(|e| Refused {
                status: if e == config::read::ReadError::Busy {
                    429
                } else {
                    422
                },
                reason: format!("{}: {e}", path.display()),
                field: Some("path".into()),
            })?;
        let new = config::from_toml(&text, &self.overrides).map_err(|e| Refused {
            status: 422,
            reason: crate::cli::error_report(path, &e),
            field: e.fields().first().map(|f| f.to_string()),
        })?;
        if new.ports.len() != self.cfg.ports.len()
            || new
                .ports
                .iter()
                .zip(&self.cfg.ports)
                .any(|(a, b)| a.name != b.name || a.device != b.device)
        {
            return Err(Refused::invalid(
                "ports and devices cannot change while running (restart the gateway)",
            ));
        }
        // Match backends and VIPs by name: known names keep their ids, new names get new ones,
        // names gone from the file leave holes.
        let mut backends = self.cfg.pool.backends.clone();
        let mut removed: Vec<BackendId> = Vec::new();
        for slot in backends.iter_mut() {
            if let Some(b) = slot {
                if !new.pool.backends.iter().flatten().any(|n| n.name == b.name) {
                    removed.push(b.id);
                    *slot = None;
                }
            }
        }
        let mut map_b = std::collections::HashMap::new();
        let mut resumed: Vec<BackendId> = Vec::new();
        for n in new.pool.backends.iter().flatten() {
            let back = self
                .removed
                .iter()
                .find(|r| r.same_server(&n.name, n.ipv4, n.ipv6, n.port))
                .map(|r| r.backend.id)
                .filter(|id| backends.get(id.0 as usize).is_some_and(Option::is_none));
            let id = match backends.iter().flatten().find(|b| b.name == n.name) {
                Some(b) => b.id,
                None if back.is_some() => {
                    resumed.extend(back);
                    back.unwrap_or_default()
                }
                None => {
                    let id = BackendId(
                        u16::try_from(backends.len())
                            .map_err(|_| Refused::invalid("too many backends"))?,
                    );
                    backends.push(None);
                    id
                }
            };
            let mut b = n.clone();
            b.id = id;
            // A resolved MAC survives a reload unless the file sets one.
            if b.mac.is_none() {
                b.mac = self
                    .cfg
                    .pool
                    .backends
                    .get(id.0 as usize)
                    .and_then(Option::as_ref)
                    .and_then(|o| o.mac);
            }
            map_b.insert(n.id, id);
            backends[id.0 as usize] = Some(b);
        }
        let mut vips = self.cfg.pool.vips.clone();
        for slot in vips.iter_mut() {
            if slot
                .as_ref()
                .is_some_and(|v| !new.pool.vips.iter().flatten().any(|n| n.name == v.name))
            {
                *slot = None;
            }
        }
        for n in new.pool.vips.iter().flatten() {
            let id = match vips.iter().flatten().find(|v| v.name == n.name) {
                Some(v) => v.id,
                None => {
                    let id = VipId(
                        u16::try_from(vips.len()).map_err(|_| Refused::invalid("too many vips"))?,
                    );
                    vips.push(None);
                    id
                }
            };
            let mut v = n.clone();
            v.id = id;
            v.backends = n
                .backends
                .iter()
                .filter_map(|b| map_b.get(b).copied())
                .collect();
            v.join_ports = n
                .join_ports
                .iter()
                .filter_map(|(b, p)| Some((*map_b.get(b)?, *p)))
                .collect();
            vips[id.0 as usize] = Some(v);
        }
        let mut ports = new.pool.ports.clone();
        for (p, old) in ports.iter_mut().zip(&self.cfg.pool.ports) {
            if new.ports[p.id.0 as usize].mac.is_none() {
                p.mac = old.mac;
            }
        }
        let before = self.cfg.pool.clone();
        let v = self.change(None, published, |pool| {
            pool.backends = backends;
            pool.vips = vips;
            pool.ports = ports;
            pool.maglev_size = new.pool.maglev_size;
            Ok(())
        })?;
        self.removed.retain(|r| !resumed.contains(&r.backend.id));
        for id in removed {
            self.remember(&before, id, shared);
        }
        let warning = (new.eal_args != self.cfg.eal_args
            || new.allow_pci != self.cfg.allow_pci
            || new.pci != self.cfg.pci)
            .then(|| {
                "[eal] changed: the EAL is set up once, so the new [eal] takes effect at the next \
                 start (the running daemon keeps its EAL arguments)"
                    .to_string()
            });
        Ok(Reloaded {
            version: v,
            warning,
        })
    }

    /// Removes drained backends whose deadline passed (returns their names), and forgets removed
    /// backends remembered for [`REMOVED_MEMORY`] (their tokens purged).
    pub fn tick(&mut self, now: Instant, published: &Published, shared: &Shared) -> Vec<String> {
        self.removed.retain(|r| {
            let keep = now.saturating_duration_since(r.at) < REMOVED_MEMORY;
            if !keep {
                shared.tokens.remove_backend(r.backend.id);
            }
            keep
        });
        let due: Vec<BackendId> = self
            .deadlines
            .iter()
            .filter(|(_, t, _)| *t <= now)
            .map(|(b, ..)| *b)
            .collect();
        due.into_iter()
            .filter_map(|id| self.end_drain(id, false, published, shared))
            .collect()
    }

    /// Ends a drain with a deadline: removes the backend (gracefully) and counts how the drain
    /// ended, `early` or at its deadline. Returns the backend's name when it was removed.
    fn end_drain(
        &mut self,
        id: BackendId,
        early: bool,
        published: &Published,
        shared: &Shared,
    ) -> Option<String> {
        let name = self
            .cfg
            .pool
            .backends
            .get(id.0 as usize)
            .and_then(Option::as_ref)
            .map(|b| b.name.clone())?;
        self.remove_backend(&name, true, None, published, shared)
            .ok()?;
        let c = self.drain_completions.entry(name.clone()).or_default();
        let n = if early { &mut c.early } else { &mut c.deadline };
        *n = n.saturating_add(1);
        Some(name)
    }

    /// Whether a backend with a drain deadline migrates (drains with a direct address, as
    /// published): [`Self::complete_migrations`] may then end its drain early.
    pub fn migrating_deadlines(&self, published: &Published) -> bool {
        let pool = published.load();
        self.deadlines
            .iter()
            .any(|(b, ..)| pool.backend(*b).is_some_and(Backend::migrates))
    }

    /// Ends early the migrating drains whose connections all left the gateway: every worker
    /// reports 0 pending for the backend from a complete walk of its flow table that began under
    /// the drain's pool version or later (`pipeline/flow/migration.rs`), so a worker that has
    /// not yet walked its whole table since cannot end it too early. Returns the names removed
    /// and the time each had left.
    pub fn complete_migrations(
        &mut self,
        workers: &[crate::api::WorkerSample],
        now: Instant,
        published: &Published,
        shared: &Shared,
    ) -> Vec<(String, Duration)> {
        if workers.is_empty() {
            return Vec::new();
        }
        let pool = published.load();
        let done: Vec<(BackendId, Duration)> = self
            .deadlines
            .iter()
            .filter(|(b, _, v)| {
                pool.backend(*b).is_some_and(Backend::migrates)
                    && workers.iter().all(|w| {
                        w.stats.migrate_pass >= *v
                            && w.stats
                                .backends
                                .get(b.0 as usize)
                                .is_none_or(|c| c.migrate_pending == 0)
                    })
            })
            .map(|(b, t, _)| (*b, t.saturating_duration_since(now)))
            .collect();
        drop(pool);
        done.into_iter()
            .filter_map(|(id, left)| {
                self.end_drain(id, true, published, shared)
                    .map(|name| (name, left))
            })
            .collect()
    }
}

/// How a backend's drains with a deadline ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainCompletions {
    /// Before the deadline: every connection of a migrating backend had left the gateway.
    pub early: u64,
    /// At the deadline.
    pub deadline: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use trapeze_core::tables::token::{Owner, TokenTableConfig};
    use trapeze_core::{FlowKey, Ticks};

    const CONFIG: &str = include_str!("../../configs/testbed.toml");

    fn setup() -> (PoolManager, Published, Shared) {
        let cfg = config::from_toml(CONFIG, &Overrides::default()).expect("testbed config");
        let published = Published::new(cfg.snapshot().unwrap());
        let shared = Shared::new(TokenTableConfig {
            capacity: 64,
            shards: 1,
        });
        (
            PoolManager::new(cfg, Overrides::default(), "configs/testbed.toml".into()),
            published,
            shared,
        )
    }

    fn nb(name: &str, last: u8) -> NewBackend {
        NewBackend {
            name: name.into(),
            ipv4: Some(Ipv4Addr::new(10, 91, 0, last)),
            ipv6: None,
            port: 8080,
            weight: 1,
            egress: None,
            mac: None,
            direct: None,
        }
    }

    #[test]
    fn adding_a_backend_moves_about_one_in_n_plus_one_slots_and_keeps_ids() {
        let (mut cp, published, shared) = setup();
        let before = published.load();
        // web4 is IPv4: a v4-only backend may join it.
        let v = cp
            .add_backend("web4", nb("srv4", 14), None, &published, &shared)
            .unwrap();
        assert_eq!(v, cp.version());
        let after = published.load();
        let (a, b) = (
            &before.vip(VipId(0)).unwrap().maglev,
            &after.vip(VipId(0)).unwrap().maglev,
        );
        let moved = a.diff(b) as f64 / a.size() as f64;
        assert!(
            (0.2..0.3).contains(&moved),
            "1/(N+1) = 0.25 of the slots move, got {moved}"
        );
        assert_eq!(after.backend(BackendId(3)).unwrap().name, "srv4");
        // The old backends keep their ids.
        for i in 0..3 {
            assert_eq!(
                after.backend(BackendId(i)).unwrap().name,
                before.backend(BackendId(i)).unwrap().name
            );
        }
    }

    #[test]
    fn a_refused_change_leaves_the_running_pool_identical() {
        let (mut cp, published, shared) = setup();
        let before = published.load();
        let fp = before.maglev_fingerprint();
        // web6 is IPv6: a v4-only backend cannot serve it (the snapshot refuses).
        let r = cp.add_backend("web6", nb("srv4", 14), None, &published, &shared);
        cp.outcome(&r);
        let e = r.unwrap_err();
        assert_eq!(e.status, 422, "{e:?}");
        assert!(
            std::sync::Arc::ptr_eq(&before, &published.load()),
            "the same snapshot keeps serving"
        );
        assert_eq!(published.load().maglev_fingerprint(), fp);
        assert_eq!(cp.version(), before.version);
        // Version conflicts are refused, with the API's one message for them.
        let r = cp.set_weight("srv1", 5, Some(cp.version() + 7), &published);
        cp.outcome(&r);
        let e = r.unwrap_err();
        assert_eq!(e.status, 409);
        assert_eq!(
            e.reason,
            version_conflict_reason(cp.version() + 7, cp.version())
        );
        // Unknown names: 404.
        let r = cp.set_weight("nope", 5, None, &published);
        cp.outcome(&r);
        assert_eq!(r.unwrap_err().status, 404);
        assert_eq!(cp.counters.refused, 3);
        assert_eq!(cp.counters.pool_changes, 0);
    }

    /// A worker's sample: its last complete walk began under pool version `pass`, with
    /// `pending[i]` pending connections for backend id i.
    fn walked(pass: u64, pending: &[u64]) -> crate::api::WorkerSample {
        let mut stats = trapeze_core::pipeline::WorkerStats::new(4, 8);
        stats.migrate_pass = pass;
        for (c, &p) in stats.backends.iter_mut().zip(pending) {
            c.migrate_pending = p;
        }
        crate::api::WorkerSample {
            rx: 0,
            tx: 0,
            flows: 0,
            flow_capacity: 0,
            stats,
        }
    }

    #[test]
    fn a_migrating_drain_ends_early_once_every_worker_walked_its_table_and_found_none_pending() {
        let (mut cp, published, shared) = setup();
        for (i, b) in cp.cfg.pool.backends.iter_mut().flatten().enumerate() {
            // srv1 and srv2 migrate (a direct address); srv3 drains without one.
            if i < 2 {
                b.direct = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1 + i as u8)));
            }
        }
        let deadline = Some(GRACEFUL_REMOVE_DEADLINE);
        let drain = |cp: &mut PoolManager, name| {
            cp.set_state(name, BackendState::Draining, deadline, None, &published)
                .unwrap()
        };
        let v1 = drain(&mut cp, "srv1");
        let v2 = drain(&mut cp, "srv2");
        let v3 = drain(&mut cp, "srv3");
        assert!(cp.migrating_deadlines(&published));
        let now = Instant::now();
        let early = |cp: &mut PoolManager, w: &[crate::api::WorkerSample]| {
            cp.complete_migrations(w, now, &published, &shared)
                .into_iter()
                .map(|(n, left)| {
                    assert!(left > Duration::from_secs(50), "{left:?}");
                    n
                })
                .collect::<Vec<_>>()
        };
        // No worker has reported: nothing ends.
        assert!(early(&mut cp, &[]).is_empty());
        // A walk that began before the drains: its zeros prove nothing.
        assert!(early(&mut cp, &[walked(v1 - 1, &[0; 3]), walked(v3, &[0; 3])]).is_empty());
        // Every worker walked since srv1's drain, one still has a pending connection of srv1;
        // srv2's drain came after the first worker's walk began.
        assert!(early(&mut cp, &[walked(v1, &[0; 3]), walked(v3, &[1, 0, 0])]).is_empty());
        // srv1: 0 everywhere, from walks since its drain; srv2 still waits for worker 0's next.
        assert_eq!(
            early(&mut cp, &[walked(v1, &[0; 3]), walked(v3, &[0; 3])]),
            ["srv1"]
        );
        assert!(published.load().backend(BackendId(0)).is_none(), "removed");
        assert!(cp.remembered().any(|(n, _)| n == "srv1"));
        assert_eq!(
            early(&mut cp, &[walked(v2, &[0; 3]), walked(v3, &[0; 3])]),
            ["srv2"]
        );
        // srv3 does not migrate: it waits for its deadline whatever the workers report.
        assert!(!cp.migrating_deadlines(&published));
        assert!(early(&mut cp, &[walked(v3 + 5, &[0; 3])]).is_empty());
        assert!(published.load().backend(BackendId(2)).is_some());
        assert_eq!(
            cp.tick(now + GRACEFUL_REMOVE_DEADLINE, &published, &shared),
            ["srv3"]
        );
        let how = |n: &str| cp.drain_completions.get(n).copied().unwrap_or_default();
        assert_eq!(
            how("srv1"),
            DrainCompletions {
                early: 1,
                deadline: 0
            }
        );
        assert_eq!(
            how("srv2"),
            DrainCompletions {
                early: 1,
                deadline: 0
            }
        );
        assert_eq!(
            how("srv3"),
            DrainCompletions {
                early: 0,
                deadline: 1
            }
        );
    }

    #[test]
    fn a_migrating_drain_with_pending_connections_ends_at_its_deadline() {
        let (mut cp, published, shared) = setup();
        if let Some(Some(b)) = cp.cfg.pool.backends.get_mut(0) {
            b.direct = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        }
        let v = cp
            .set_state(
                "srv1",
                BackendState::Draining,
                Some(Duration::from_secs(3)),
                None,
                &published,
            )
            .unwrap();
        let now = Instant::now();
        let w = [walked(v, &[2, 0, 0])];
        assert!(cp
            .complete_migrations(&w, now, &published, &shared)
            .is_empty());
        assert_eq!(
            cp.tick(now + Duration::from_secs(3), &published, &shared),
            ["srv1"]
        );
        assert_eq!(
            cp.drain_completions["srv1"],
            DrainCompletions {
                early: 0,
                deadline: 1
            }
        );
        // Undrained before its deadline: no completion either way.
        let (mut cp, published, shared) = setup();
        if let Some(Some(b)) = cp.cfg.pool.backends.get_mut(0) {
            b.direct = Some(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        }
        let v = cp
            .set_state(
                "srv1",
                BackendState::Draining,
                Some(Duration::from_secs(3)),
                None,
                &published,
            )
            .unwrap();
        cp.set_state("srv1", BackendState::Active, None, None, &published)
            .unwrap();
        assert!(!cp.migrating_deadlines(&published));
        assert!(cp
            .complete_migrations(&[walked(v + 1, &[0; 3])], now, &published, &shared)
            .is_empty());
        assert!(cp
            .tick(now + Duration::from_secs(3), &published, &shared)
            .is_empty());
        assert!(cp.drain_completions.is_empty());
    }

    #[test]
    fn drain_with_a_deadline_ends_in_removal_and_purges_tokens() {
        let (mut cp, published, shared) = setup();
        let owner = Owner {
            backend: BackendId(1),
            conn: FlowKey::default(),
            server_key: 1,
            client_key: None,
            learned_at: Ticks::ZERO,
            last_seen: Ticks::ZERO,
            subflows: 1,
        };
        let _ = shared.tokens.learn(7, owner);
        cp.set_state(
            "srv2",
            BackendState::Draining,
            Some(Duration::from_millis(1)),
            None,
            &published,
        )
        .unwrap();
        assert_eq!(
            published.load().backend(BackendId(1)).unwrap().state,
            BackendState::Draining
        );
        assert_eq!(
            shared.tokens.len(),
            1,
            "draining keeps the tokens: joins still reach it"
        );
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            cp.tick(Instant::now(), &published, &shared),
            vec!["srv2".to_string()]
        );
        assert!(published.load().backend(BackendId(1)).is_none());
        assert_eq!(shared.tokens.len(), 1, "remembered: its tokens stay");
        assert_eq!(
            cp.remembered().collect::<Vec<_>>(),
            [("srv2", BackendId(1))]
        );
        // Forgotten after REMOVED_MEMORY: its tokens purged.
        cp.tick(Instant::now() + REMOVED_MEMORY, &published, &shared);
        assert_eq!(shared.tokens.len(), 0, "forgotten: its tokens are purged");
        assert_eq!(cp.remembered().count(), 0);
        // Ids are not reused: a new backend gets a fresh one.
        cp.add_backend("web4", nb("srv9", 19), None, &published, &shared)
            .unwrap();
        assert_eq!(published.load().backend(BackendId(3)).unwrap().name, "srv9");
    }

    #[test]
    fn a_hard_removed_backend_added_back_gets_its_id_join_port_and_tokens_back() {
        let (mut cp, published, shared) = setup();
        let owner = Owner {
            backend: BackendId(1),
            conn: FlowKey::default(),
            server_key: 1,
            client_key: None,
            learned_at: Ticks::ZERO,
            last_seen: Ticks::ZERO,
            subflows: 1,
        };
        let _ = shared.tokens.learn(7, owner);
        let srv2 = published.load().backend(BackendId(1)).unwrap().clone();
        let jp = |p: &PoolSnapshot| p.vips[0].as_ref().unwrap().join_port(BackendId(1));
        assert_eq!(jp(&published.load()), Some(18082));
        cp.remove_backend("srv2", true, None, &published, &shared)
            .unwrap();
        // Out: not in the snapshot (its flows' packets are dropped, its joins refused), but its
        // tokens stay.
        assert!(published.load().backend(BackendId(1)).is_none());
        assert_eq!(shared.tokens.len(), 1);
        // Back with the same name, addresses and port: the same id, its join port on web4.
        let back = NewBackend {
            name: "srv2".into(),
            ipv4: srv2.ipv4,
            ipv6: srv2.ipv6,
            port: srv2.port,
            weight: 1,
            egress: None,
            mac: None,
            direct: None,
        };
        cp.add_backend("web4", back.clone(), None, &published, &shared)
            .unwrap();
        let p = published.load();
        assert_eq!(p.backend(BackendId(1)).unwrap().name, "srv2");
        assert_eq!(p.backend(BackendId(1)).unwrap().mac, srv2.mac);
        assert_eq!(jp(&p), Some(18082));
        assert_eq!(shared.tokens.len(), 1, "its connections' joins route again");
        assert_eq!(cp.remembered().count(), 0);
        // Removed again and back with another address: another server, a new id; the old one's
        // tokens are purged.
        cp.remove_backend("srv2", true, None, &published, &shared)
            .unwrap();
        let other = NewBackend {
            ipv4: Some(Ipv4Addr::new(10, 91, 0, 99)),
            ipv6: None,
            ..back
        };
        cp.add_backend("web4", other, None, &published, &shared)
            .unwrap();
        let p = published.load();
        assert!(p.backend(BackendId(1)).is_none());
        assert_eq!(p.backend(BackendId(3)).unwrap().name, "srv2");
        assert_eq!(shared.tokens.len(), 0);
    }

    #[test]
    fn a_backend_gone_from_a_reloaded_file_and_back_in_the_next_keeps_its_id() {
        let (mut cp, published, shared) = setup();
        let dir = std::env::temp_dir().join(format!("tzm-reload-back-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        cp.overrides.reload_dir = Some(dir.clone());
        let without = dir.join("without.toml");
        std::fs::write(
            &without,
            CONFIG
                .replace(
                    "backends = [\"srv1\", \"srv2\", \"srv3\"]",
                    "backends = [\"srv1\", \"srv3\"]",
                )
                .replace("srv2 = 18082\n", "")
                .replace("name = \"srv2\"", "name = \"gone\""),
        )
        .unwrap();
        // The file must still be valid without srv2 (renamed "gone", a member of no vip).
        cp.reload(Some(&without), &published, &shared).unwrap();
        assert!(cp
            .remembered()
            .any(|(n, id)| n == "srv2" && id == BackendId(1)));
        cp.reload(Some(&dir.join("none.toml")), &published, &shared)
            .unwrap_err();
        let with = dir.join("with.toml");
        std::fs::write(&with, CONFIG).unwrap();
        cp.reload(Some(&with), &published, &shared).unwrap();
        assert_eq!(published.load().backend(BackendId(1)).unwrap().name, "srv2");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn reload_matches_by_name_and_a_bad_file_changes_nothing() {
        let (mut cp, published, shared) = setup();
        let dir = std::env::temp_dir().join(format!("tzc-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        cp.overrides.reload_dir = Some(dir.clone());
        // Same file without srv2: srv1 and srv3 keep ids 0 and 2.
        let text = CONFIG
            .replace("\"srv1\", \"srv2\", \"srv3\"", "\"srv1\", \"srv3\"")
            .replace("srv2 = 18082\n", "");
        let cut = text.find("name = \"srv2\"").unwrap();
        let start = text[..cut].rfind("[[backends]]").unwrap();
        let end = text[cut..]
            .find("[[backends]]")
            .map_or(text.len(), |e| cut + e);
        let without = format!("{}{}", &text[..start], &text[end..]);
        let good = dir.join("good.toml");
        std::fs::write(&good, &without).unwrap();
        let v = cp.reload(Some(&good), &published, &shared).unwrap().version;
        let snap = published.load();
        assert_eq!(snap.version, v);
        assert_eq!(snap.backend(BackendId(0)).unwrap().name, "srv1");
        assert!(snap.backend(BackendId(1)).is_none());
        assert_eq!(snap.backend(BackendId(2)).unwrap().name, "srv3");
        // Join ports follow their backends by name, not by position in the file.
        let web4 = snap.vip(VipId(0)).unwrap();
        assert_eq!(web4.join_port(BackendId(2)), Some(18083));
        assert_eq!(web4.join_port(BackendId(1)), None);
        // A broken file: the error is reported, the running pool stays as it is.
        let bad = dir.join("bad.toml");
        std::fs::write(&bad, "this is not toml [").unwrap();
        let before = published.load();
        let e = cp.reload(Some(&bad), &published, &shared).unwrap_err();
        assert_eq!(e.status, 422);
        assert!(e.reason.contains("bad.toml"), "{}", e.reason);
        assert!(
            e.reason.ends_with(&format!("; version {v} keeps serving")),
            "the answer names the version still serving: {}",
            e.reason
        );
        assert!(std::sync::Arc::ptr_eq(&before, &published.load()));
        let Some(Err(last)) = cp.last_reload.as_ref().map(|r| &r.result) else {
            panic!("{:?}", cp.last_reload)
        };
        assert_eq!(
            e.reason,
            format!("reload refused: {last}; version {v} keeps serving")
        );
        // A file that parses but does not validate names the field at fault.
        let port0 = dir.join("port0.toml");
        std::fs::write(&port0, CONFIG.replacen("port = 80", "port = 0", 1)).unwrap();
        let e = cp.reload(Some(&port0), &published, &shared).unwrap_err();
        assert_eq!(
            (e.status, e.field.as_deref()),
            (422, Some("vips[0].port")),
            "{e:?}"
        );
        assert_eq!((cp.counters.reloads_ok, cp.counters.reloads_failed), (1, 2));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Issue 12, defect 1: `POST /backends/srv2/drain {"deadline_s":18446744073709551615}`
    /// panicked the control thread ("overflow when adding duration to instant") after the drain
    /// was published. It is refused before anything changes.
    #[test]
    fn a_drain_deadline_past_the_end_of_the_clock_is_refused_and_changes_nothing() {
        let (mut cp, published, _) = setup();
        let before = published.load();
        let e = cp
            .set_state(
                "srv2",
                BackendState::Draining,
                Some(Duration::from_secs(u64::MAX)),
                None,
                &published,
            )
            .unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("deadline_s")));
        assert!(std::sync::Arc::ptr_eq(&before, &published.load()));
        assert_eq!(
            cp.cfg.pool.backends[1].as_ref().unwrap().state,
            BackendState::Active,
            "not half-applied"
        );
        assert_eq!(cp.version(), before.version);
        // The longest deadline of the documented range works (one second more does not).
        let e = cp
            .set_state(
                "srv2",
                BackendState::Draining,
                Some(Duration::from_secs(config::rules::MAX_DRAIN_DEADLINE_S + 1)),
                None,
                &published,
            )
            .unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("deadline_s")));
        cp.set_state(
            "srv2",
            BackendState::Draining,
            Some(Duration::from_secs(config::rules::MAX_DRAIN_DEADLINE_S)),
            None,
            &published,
        )
        .unwrap();
    }

    #[test]
    fn unknown_and_duplicate_names_in_a_body_are_refused_naming_the_field() {
        let (mut cp, published, shared) = setup();
        let vip = |name: &str, backends: &[&str]| NewVip {
            name: name.into(),
            addr: "10.90.100.99".parse().unwrap(),
            port: 80,
            mode: ForwardingMode::Nat,
            client_port: None,
            backends: backends.iter().map(|b| b.to_string()).collect(),
            join_ports: Default::default(),
            announce: Default::default(),
            deny_join_initial: None,
        };
        let e = cp
            .add_vip(vip("v", &["srv1", "ghost"]), None, &published)
            .unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("backends[1]")));
        let e = cp
            .add_vip(vip("web4", &["srv1"]), None, &published)
            .unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("name")));
        let e = cp
            .add_backend("web4", nb("srv1", 11), None, &published, &shared)
            .unwrap_err();
        assert_eq!((e.status, e.field.as_deref()), (422, Some("name")), "{e:?}");
        assert_eq!(cp.version(), 1, "nothing changed");
    }
}

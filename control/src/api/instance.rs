//! The instance as a BGP speaker sees it (issue 6: several instances behind ECMP): whether this
//! gateway instance wants its VIPs announced, and which VIP addresses can take new connections.
//!
//! The daemon never speaks BGP itself. An existing speaker (ExaBGP) runs a small feeder,
//! `trapezectl bgp-feed` ([`feed`]), which polls `GET /instance` and turns the answer into
//! ExaBGP API lines: a VIP address is announced while the instance is `serving` and at least one
//! VIP on that address has a backend that takes new connections; it is withdrawn when the
//! instance drains (`POST /instance/drain`), when the VIP fails health, when the daemon stops
//! (SIGTERM: `stopping` during the stop grace, while it still forwards), and when the API is gone
//! (the daemon died: connection refused).

use std::collections::BTreeSet;
use std::io::{self, BufRead, Write};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use trapeze_core::pool::{BackendState, PoolSnapshot};

use super::ctl::{http_request_auth, ApiTarget};

/// What the instance wants of its announcements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceState {
    /// Forwarding and announced.
    #[default]
    Serving,
    /// Drained by the operator: still forwarding whatever arrives, but withdrawn.
    Draining,
    /// SIGTERM received: withdrawn, forwarding until the stop grace ends, then exiting.
    Stopping,
}

impl InstanceState {
    /// Label (`serving`, `draining`, `stopping`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Serving => "serving",
            Self::Draining => "draining",
            Self::Stopping => "stopping",
        }
    }
}

/// One VIP in `GET /instance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnnounceView {
    /// VIP name.
    pub name: String,
    /// Address.
    pub address: IpAddr,
    /// Port.
    pub port: u16,
    /// At least one of its backends takes new connections (active, weight > 0, healthy).
    pub serving: bool,
}

/// The body of `GET /instance` (and of `POST /instance/drain|undrain`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InstanceView {
    /// Serving, draining or stopping.
    pub state: InstanceState,
    /// How long the daemon keeps forwarding after SIGTERM (milliseconds).
    pub stop_grace_ms: u64,
    /// Milliseconds left before the daemon exits (only while stopping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_in_ms: Option<u64>,
    /// Every VIP.
    pub vips: Vec<AnnounceView>,
}

impl InstanceView {
    /// Builds the view from the serving pool.
    pub fn from_pool(
        pool: &PoolSnapshot,
        state: InstanceState,
        stop_grace: Duration,
        stop_in: Option<Duration>,
    ) -> Self {
        let vips = pool
            .vips
            .iter()
            .flatten()
            .map(|v| AnnounceView {
                name: v.name.clone(),
                address: v.addr,
                port: v.port,
                serving: v.backends.iter().any(|id| {
                    pool.backends
                        .get(id.0 as usize)
                        .and_then(Option::as_ref)
                        .is_some_and(|b| b.state == BackendState::Active && b.weight > 0)
                }),
            })
            .collect();
        Self {
            state,
            stop_grace_ms: stop_grace.as_millis().try_into().unwrap_or(u64::MAX),
            stop_in_ms: stop_in.map(|d| d.as_millis().try_into().unwrap_or(u64::MAX)),
            vips,
        }
    }

    /// The VIP addresses to announce: none unless serving; otherwise every address with at
    /// least one serving VIP (several VIPs, e.g. ports, may share an address), restricted to
    /// `only` (VIP names) when it is not empty.
    pub fn announce(&self, only: &[String]) -> BTreeSet<IpAddr> {
        if self.state != InstanceState::Serving {
            return BTreeSet::new();
        }
        self.vips
            .iter()
            .filter(|v| v.serving && (only.is_empty() || only.contains(&v.name)))
            .map(|v| v.address)
            .collect()
    }
}

/// The text of `trapezectl instance`.
pub fn format_instance(v: &InstanceView) -> String {
    let mut s = format!("state: {}", v.state.as_str());
    if let Some(ms) = v.stop_in_ms {
        s.push_str(&format!(" (exits in {ms} ms)"));
    }
    s.push_str(&format!("\nstop grace: {} ms\n", v.stop_grace_ms));
    let announced = v.announce(&[]);
    for vip in &v.vips {
        s.push_str(&format!(
            "vip {} {}: {}{}\n",
            vip.name,
            match vip.address {
                IpAddr::V4(a) => format!("{a}:{}", vip.port),
                IpAddr::V6(a) => format!("[{a}]:{}", vip.port),
            },
            if vip.serving { "serving" } else { "no backend" },
            if announced.contains(&vip.address) {
                ", announced"
            } else {
                ", withdrawn"
            }
        ));
    }
    s
}

/// Options of `trapezectl bgp-feed`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedOptions {
    /// Next hop of IPv4 VIPs (this instance's address towards the router).
    pub next_hop4: Option<IpAddr>,
    /// Next hop of IPv6 VIPs.
    pub next_hop6: Option<IpAddr>,
    /// The BGP neighbour IPv4 routes go to (`neighbor X announce ...`; none: every neighbour).
    pub neighbor4: Option<IpAddr>,
    /// The BGP neighbour IPv6 routes go to.
    pub neighbor6: Option<IpAddr>,
    /// Poll period.
    pub interval: Duration,
    /// Consecutive failed polls (timeouts, errors) before withdrawing; a refused connection
    /// (nothing listens: the daemon is gone) withdraws at once.
    pub fail_after: u32,
    /// Only these VIP names (empty: all).
    pub only: Vec<String>,
    /// The API's bearer token, if it needs one.
    pub token: Option<String>,
}

/// The ExaBGP API line announcing (`true`) or withdrawing one VIP address.
pub fn exabgp_line(o: &FeedOptions, addr: IpAddr, announce: bool) -> Option<String> {
    let (nh, nbr, len) = match addr {
        IpAddr::V4(_) => (o.next_hop4, o.neighbor4, 32),
        IpAddr::V6(_) => (o.next_hop6, o.neighbor6, 128),
    };
    let nh = nh?;
    let prefix = nbr.map_or(String::new(), |n| format!("neighbor {n} "));
    Some(format!(
        "{prefix}{} route {addr}/{len} next-hop {nh}",
        if announce { "announce" } else { "withdraw" }
    ))
}

/// The lines that take the announcements from `old` to `new` (withdrawals first).
pub fn feed_diff(o: &FeedOptions, old: &BTreeSet<IpAddr>, new: &BTreeSet<IpAddr>) -> Vec<String> {
    old.difference(new)
        .filter_map(|a| exabgp_line(o, *a, false))
        .chain(new.difference(old).filter_map(|a| exabgp_line(o, *a, true)))
        .collect()
}

/// One poll: `Ok(view)`, or `Err(refused)` (`true` when nothing listens on the API: the daemon
/// is gone, withdraw at once).
fn poll(target: &ApiTarget, token: Option<&str>, timeout: Duration) -> Result<InstanceView, bool> {
    match http_request_auth(target, token, "GET", "/instance", None, None, timeout) {
        Ok(r) if r.status == 200 => serde_json::from_slice(&r.body).map_err(|_| false),
        Ok(_) => Err(false),
        Err(e) => Err(matches!(
            e.kind(),
            io::ErrorKind::ConnectionRefused | io::ErrorKind::NotFound
        )),
    }
}

/// `trapezectl bgp-feed`: run under ExaBGP (`process ... { run trapezectl ... bgp-feed ...;
/// encoder text; }`): polls the instance and writes ExaBGP API lines to `out` on every change.
/// Standard input (ExaBGP's acknowledgements) is read and discarded; its end (ExaBGP gone)
/// ends the feeder. Logs go to `err`. Never returns unless writing fails.
pub fn feed(target: &ApiTarget, o: &FeedOptions, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    std::thread::spawn(|| {
        let stdin = io::stdin();
        let mut line = String::new();
        let mut lock = stdin.lock();
        while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
        std::process::exit(0);
    });
    let mut announced = BTreeSet::new();
    let mut failures = 0u32;
    let mut last_state = None;
    let timeout = o.interval.max(Duration::from_millis(500));
    loop {
        let t0 = Instant::now();
        let want = match poll(target, o.token.as_deref(), timeout) {
            Ok(v) => {
                failures = 0;
                if last_state != Some(v.state) {
                    let _ = writeln!(err, "bgp-feed: instance {}", v.state.as_str());
                    last_state = Some(v.state);
                }
                Some(v.announce(&o.only))
            }
            Err(refused) => {
                failures += 1;
                if refused || failures >= o.fail_after.max(1) {
                    if last_state.take().is_some() || failures == 1 {
                        let _ = writeln!(
                            err,
                            "bgp-feed: the API at {target} does not answer ({}): withdrawing",
                            if refused { "refused" } else { "failed" }
                        );
                    }
                    Some(BTreeSet::new())
                } else {
                    None
                }
            }
        };
        if let Some(want) = want {
            let lines = feed_diff(o, &announced, &want);
            if !lines.is_empty() {
                for l in &lines {
                    if writeln!(out, "{l}").is_err() {
                        return super::ctl::EXIT_ERROR;
                    }
                    let _ = writeln!(err, "bgp-feed: {l}");
                }
                if out.flush().is_err() {
                    return super::ctl::EXIT_ERROR;
                }
            }
            announced = want;
        }
        std::thread::sleep(o.interval.saturating_sub(t0.elapsed()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> FeedOptions {
        FeedOptions {
            next_hop4: Some("10.81.1.2".parse().unwrap()),
            next_hop6: Some("fd81:1::2".parse().unwrap()),
            neighbor4: Some("10.81.1.1".parse().unwrap()),
            neighbor6: None,
            interval: Duration::from_millis(200),
            fail_after: 3,
            only: vec![],
            token: None,
        }
    }

    fn view(state: InstanceState, serving: &[bool]) -> InstanceView {
        let addrs = ["10.90.100.20", "fd90:100::20", "10.90.100.20"];
        InstanceView {
            state,
            stop_grace_ms: 0,
            stop_in_ms: None,
            vips: serving
                .iter()
                .zip(addrs)
                .enumerate()
                .map(|(i, (s, a))| AnnounceView {
                    name: format!("v{i}"),
                    address: a.parse().unwrap(),
                    port: 8080 + i as u16,
                    serving: *s,
                })
                .collect(),
        }
    }

    #[test]
    fn announced_only_while_serving_and_healthy() {
        let v = view(InstanceState::Serving, &[true, true, false]);
        assert_eq!(v.announce(&[]).len(), 2);
        // One of two VIPs on an address still serves: the address stays announced.
        let v = view(InstanceState::Serving, &[false, false, true]);
        let a = v.announce(&[]);
        assert_eq!(a.len(), 1);
        assert!(a.contains(&"10.90.100.20".parse().unwrap()));
        assert!(v.announce(&["v1".into()]).is_empty());
        for s in [InstanceState::Draining, InstanceState::Stopping] {
            assert!(view(s, &[true, true, true]).announce(&[]).is_empty());
        }
    }

    #[test]
    fn exabgp_lines() {
        let o = opts();
        let all = view(InstanceState::Serving, &[true, true, true]).announce(&[]);
        let up = feed_diff(&o, &BTreeSet::new(), &all);
        assert_eq!(
            up,
            vec![
                "neighbor 10.81.1.1 announce route 10.90.100.20/32 next-hop 10.81.1.2",
                "announce route fd90:100::20/128 next-hop fd81:1::2",
            ]
        );
        assert!(feed_diff(&o, &all, &all).is_empty());
        let down = feed_diff(&o, &all, &BTreeSet::new());
        assert_eq!(down.len(), 2);
        assert!(down.iter().all(|l| l.contains("withdraw route")));
        // No next hop for a family: nothing is said about it.
        let o4 = FeedOptions {
            next_hop6: None,
            ..opts()
        };
        assert_eq!(feed_diff(&o4, &BTreeSet::new(), &all).len(), 1);
    }

    #[test]
    fn view_serialises() {
        let v = view(InstanceState::Stopping, &[true]);
        let j = serde_json::to_string(&v).unwrap();
        assert!(j.contains("\"state\":\"stopping\""), "{j}");
        let back: InstanceView = serde_json::from_str(&j).unwrap();
        assert_eq!(back, v);
        assert!(format_instance(&v).contains("withdrawn"));
    }
}

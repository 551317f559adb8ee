//! The REST API over real sockets, against a stand-in control thread.
//!
//! The real control thread lives in the DPDK daemon; here a small in-memory pool answers the
//! requests with the same rules (version check, unknown names, validation), which is what the
//! server, the client and `trapezectl` need to be exercised end to end. Every route is called
//! over TCP (and the Unix socket), with good and bad requests.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::process::Command;
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trapeze_control::api::ctl::{http_request, ApiTarget, HttpReply};
use trapeze_control::api::instance::{AnnounceView, InstanceState, InstanceView};
use trapeze_control::api::types::{
    check_version, AppliedBody, BackendView, ErrorBody, Mode, Protocol, ReloadReport, State,
    StatsView, StatusView, VipView,
};
use trapeze_control::api::{
    self, render, serve_with, ApiHandle, BackendMeta, BindAddr, ControlMsg, ControlStatsView,
    MetricsInput, Request, Response, ServeOptions, TokenSample, VipMeta, WorkerSample,
};
use trapeze_core::pipeline::{DropReason, Event, WorkerStats};
use trapeze_core::pool::{BackendId, VipId};

// ---------------------------------------------------------------- the stand-in control thread

struct Fake {
    version: u64,
    vips: Vec<VipView>,
    reloads_ok: u64,
    reloads_error: u64,
    pool_changes: u64,
    last_reload: Option<ReloadReport>,
    instance_draining: bool,
}

fn backend(name: &str, last: u8, weight: u32) -> BackendView {
    BackendView {
        name: name.into(),
        address: Some(IpAddr::V4(Ipv4Addr::new(10, 1, 0, last))),
        ipv4: Some(Ipv4Addr::new(10, 1, 0, last)),
        ipv6: None,
        port: 8080,
        weight,
        state: State::Active,
        active_flows: Some(u64::from(last)),
        new_conns: 10 * u64::from(last),
        joins: u64::from(last),
        packets: 100,
        bytes: 10_000,
    }
}

impl Fake {
    fn new() -> Self {
        Self {
            version: 1,
            vips: vec![VipView {
                name: "web".into(),
                address: IpAddr::V4(Ipv4Addr::new(10, 0, 0, 10)),
                port: 80,
                protocol: Protocol::Tcp,
                mode: Mode::Nat,
                dsr: None,
                client_port: "client".into(),
                backends: vec![backend("srv1", 1, 1), backend("srv2", 2, 2)],
                join_ports: Default::default(),
                announce: Default::default(),
                new_conns: 30,
                joins: 3,
                packets: 200,
                bytes: 20_000,
            }],
            reloads_ok: 0,
            reloads_error: 0,
            pool_changes: 0,
            last_reload: None,
            instance_draining: false,
        }
    }

    fn backend_mut(&mut self, name: &str) -> Option<&mut BackendView> {
        self.vips
            .iter_mut()
            .flat_map(|v| v.backends.iter_mut())
            .find(|b| b.name == name)
    }

    fn find_backend(&self, name: &str) -> Option<&BackendView> {
        self.vips
            .iter()
            .flat_map(|v| v.backends.iter())
            .find(|b| b.name == name)
    }

    fn applied(&mut self) -> Response {
        self.version += 1;
        self.pool_changes += 1;
        Response::Applied {
            version: self.version,
        }
    }

    fn metrics_input(&self) -> MetricsInput {
        let mut workers = Vec::new();
        for w in 0..2u64 {
            let mut s = WorkerStats::new(4, 4);
            s.rx = 100 + w;
            s.forwarded = 90;
            s.drops[DropReason::NoVip as usize] = 5;
            s.drops[DropReason::JoinNoToken as usize] = 5 + w;
            s.events[Event::TokenCollision as usize] = 1;
            s.events[Event::NewFlow as usize] = 7;
            s.vips[0].packets = 50;
            s.vips[0].new_conns = 7;
            s.backends[0].packets = 20;
            s.backends[1].joins = 2;
            workers.push(WorkerSample {
                rx: 100 + w,
                tx: 90,
                flows: 7,
                flow_capacity: 1024,
                stats: s,
            });
        }
        let mut vips = Vec::new();
        let mut backends = Vec::new();
        for (i, v) in self.vips.iter().enumerate() {
            vips.push(VipMeta {
                id: VipId(i as u16),
                name: v.name.clone(),
            });
            for b in &v.backends {
                backends.push(BackendMeta {
                    id: BackendId(backends.len() as u16),
                    name: b.name.clone(),
                    vips: vec![v.name.clone()],
                    state: b.state,
                    weight: b.weight,
                    active_flows: b.active_flows,
                });
            }
        }
        MetricsInput {
            workers,
            vips,
            backends,
            tokens: TokenSample {
                entries: 12,
                capacity: 4096,
            },
            control: ControlStatsView {
                version: self.version,
                reloads_ok: self.reloads_ok,
                reloads_error: self.reloads_error,
                pool_changes: self.pool_changes,
            },
            ports: Vec::new(),
            cluster: None,
        }
    }

    fn handle(&mut self, req: Request) -> Response {
        if let Some(conflict) = check_version(req.if_version(), self.version) {
            return conflict;
        }
        match req {
            Request::ListVips => Response::Vips(self.vips.clone()),
            Request::GetVip { name } => match self.vips.iter().find(|v| v.name == name) {
                Some(v) => Response::Vip(v.clone()),
                None => Response::not_found("vip", &name),
            },
            Request::AddVip { spec, .. } => {
                if self.vips.iter().any(|v| v.name == spec.name) {
                    return Response::invalid("name", format!("duplicate vip {:?}", spec.name));
                }
                if spec.port == 0 {
                    return Response::invalid("port", "port 0");
                }
                let mut members = Vec::new();
                for (i, b) in spec.backends.iter().enumerate() {
                    match self.find_backend(b) {
                        Some(b) => members.push(b.clone()),
                        None => {
                            return Response::invalid(
                                format!("backends[{i}]"),
                                format!("unknown backend {b:?}"),
                            )
                        }
                    }
                }
                self.vips.push(VipView {
                    name: spec.name,
                    address: spec.address,
                    port: spec.port,
                    protocol: spec.protocol,
                    mode: spec.mode,
                    dsr: spec.dsr.clone(),
                    client_port: spec.client_port.unwrap_or_else(|| "client".into()),
                    backends: members,
                    join_ports: spec.join_ports.clone(),
                    announce: spec.announce.unwrap_or_default(),
                    new_conns: 0,
                    joins: 0,
                    packets: 0,
                    bytes: 0,
                });
                self.applied()
            }
            Request::RemoveVip { name, .. } => {
                let Some(i) = self.vips.iter().position(|v| v.name == name) else {
                    return Response::not_found("vip", &name);
                };
                self.vips.remove(i);
                self.applied()
            }
            Request::AddBackend { vip, backend, .. } => {
                if self.find_backend(&backend.name).is_some() {
                    return Response::invalid(
                        "name",
                        format!("duplicate backend {:?}", backend.name),
                    );
                }
                let Some(v) = self.vips.iter_mut().find(|v| v.name == vip) else {
                    return Response::not_found("vip", &vip);
                };
                v.backends.push(BackendView {
                    name: backend.name,
                    address: backend.ipv4.map(IpAddr::V4),
                    ipv4: backend.ipv4,
                    ipv6: backend.ipv6,
                    port: backend.port,
                    weight: backend.weight,
                    state: State::Active,
                    active_flows: None,
                    new_conns: 0,
                    joins: 0,
                    packets: 0,
                    bytes: 0,
                });
                self.applied()
            }
            Request::RemoveBackend { name, mode, .. } => {
                if self.find_backend(&name).is_none() {
                    return Response::not_found("backend", &name);
                }
                match mode {
                    api::RemoveMode::Hard => {
                        for v in &mut self.vips {
                            v.backends.retain(|b| b.name != name);
                        }
                    }
                    api::RemoveMode::Graceful => {
                        if let Some(b) = self.backend_mut(&name) {
                            b.state = State::Draining;
                        }
                    }
                }
                self.applied()
            }
            Request::Drain { name, .. } | Request::Undrain { name, .. }
                if self.find_backend(&name).is_none() =>
            {
                Response::not_found("backend", &name)
            }
            Request::Drain { name, .. } => {
                if let Some(b) = self.backend_mut(&name) {
                    b.state = State::Draining;
                }
                self.applied()
            }
            Request::Undrain { name, .. } => {
                if let Some(b) = self.backend_mut(&name) {
                    b.state = State::Active;
                }
                self.applied()
            }
            Request::SetWeight { name, weight, .. } => match self.backend_mut(&name) {
                Some(b) => {
                    b.weight = weight;
                    self.applied()
                }
                None => Response::not_found("backend", &name),
            },
            Request::Reload { path, .. } => {
                let path = path.unwrap_or_else(|| "/etc/trapeze.toml".into());
                if path.contains("bad") {
                    self.reloads_error += 1;
                    let error = "vips[0].port: 0 is not a valid port".to_string();
                    self.last_reload = Some(ReloadReport {
                        ok: false,
                        path,
                        unix_time_s: 1,
                        version: self.version,
                        error: Some(error.clone()),
                    });
                    return Response::invalid(
                        "vips[0].port",
                        format!(
                            "reload refused: {error}; version {} keeps serving",
                            self.version
                        ),
                    );
                }
                self.reloads_ok += 1;
                let r = self.applied();
                self.last_reload = Some(ReloadReport {
                    ok: true,
                    path,
                    unix_time_s: 1,
                    version: self.version,
                    error: None,
                });
                r
            }
            Request::Stats => Response::Stats(self.metrics_input().stats_view()),
            Request::Metrics => Response::Metrics(render(&self.metrics_input())),
            Request::Status => Response::Status(StatusView {
                version: self.version,
                last_good_version: self.version,
                uptime_s: 5,
                workers: 2,
                config_path: Some("/etc/trapeze.toml".into()),
                last_reload: self.last_reload.clone(),
            }),
            Request::Instance | Request::InstanceDrain { .. } => {
                if let Request::InstanceDrain { drain } = req {
                    self.instance_draining = drain;
                }
                Response::Instance(InstanceView {
                    state: if self.instance_draining {
                        InstanceState::Draining
                    } else {
                        InstanceState::Serving
                    },
                    stop_grace_ms: 2000,
                    stop_in_ms: None,
                    vips: self
                        .vips
                        .iter()
                        .map(|v| AnnounceView {
                            name: v.name.clone(),
                            address: v.address,
                            port: v.port,
                            serving: v
                                .backends
                                .iter()
                                .any(|b| b.state == State::Active && b.weight > 0),
                        })
                        .collect(),
                })
            }
        }
    }
}

/// How the stand-in control thread behaves.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Answers from the in-memory pool.
    Serve,
    /// Drops every reply channel without answering.
    DropReplies,
    /// Panics on the first request.
    Panic,
}

struct Harness {
    api: Option<ApiHandle>,
    control: Option<JoinHandle<()>>,
}

impl Harness {
    fn start(bind: BindAddr, behaviour: Behaviour) -> Self {
        let (tx, rx) = mpsc::sync_channel::<ControlMsg>(16);
        let api = serve_with(
            bind,
            tx,
            ServeOptions {
                reply_timeout: Duration::from_millis(400),
                ..ServeOptions::default()
            },
        )
        .expect("bind");
        let control = std::thread::spawn(move || control_loop(&rx, behaviour));
        Self {
            api: Some(api),
            control: Some(control),
        }
    }

    fn tcp() -> Self {
        Self::start(
            BindAddr::Tcp("127.0.0.1:0".parse().unwrap()),
            Behaviour::Serve,
        )
    }

    fn api(&self) -> &ApiHandle {
        self.api.as_ref().expect("running")
    }

    fn target(&self) -> ApiTarget {
        match self.api().local_addr() {
            BindAddr::Tcp(a) => ApiTarget::Tcp(a.to_string()),
            BindAddr::Unix(p) => ApiTarget::Unix(p.clone()),
        }
    }

    fn url(&self) -> String {
        self.api().local_addr().to_string()
    }

    fn call(&self, method: &str, path: &str, body: Option<&str>) -> HttpReply {
        self.call_if(method, path, body, None)
    }

    fn call_if(&self, method: &str, path: &str, body: Option<&str>, v: Option<u64>) -> HttpReply {
        http_request(
            &self.target(),
            method,
            path,
            body.map(str::as_bytes),
            v,
            Duration::from_secs(5),
        )
        .expect("HTTP exchange")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Stopping the server drops its sender, which ends the control loop.
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
    }
}

fn control_loop(rx: &Receiver<ControlMsg>, behaviour: Behaviour) {
    let mut fake = Fake::new();
    while let Ok((req, reply)) = rx.recv() {
        match behaviour {
            Behaviour::Serve => api::answer(&reply, fake.handle(req)),
            Behaviour::DropReplies => drop(reply),
            Behaviour::Panic => panic!("stand-in control thread fails on purpose"),
        }
    }
}

fn error_of(r: &HttpReply) -> ErrorBody {
    assert_eq!(
        r.content_type.as_deref(),
        Some("application/json"),
        "{}",
        r.text()
    );
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", r.text()))
}

fn version_of(r: &HttpReply) -> u64 {
    assert!(
        r.status == 200 || r.status == 201,
        "{} {}",
        r.status,
        r.text()
    );
    serde_json::from_slice::<AppliedBody>(&r.body)
        .unwrap()
        .version
}

fn vips(h: &Harness) -> Vec<VipView> {
    let r = h.call("GET", "/vips", None);
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn backend_in<'a>(v: &'a [VipView], name: &str) -> Option<&'a BackendView> {
    v.iter()
        .flat_map(|v| v.backends.iter())
        .find(|b| b.name == name)
}

// ---------------------------------------------------------------- routes

#[test]
fn read_routes() {
    let h = Harness::tcp();
    let r = h.call("GET", "/", None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/backends/{name}/drain"));

    let v = vips(&h);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].backends.len(), 2);

    let r = h.call("GET", "/vips/web", None);
    assert_eq!(r.status, 200);
    let one: VipView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(one, v[0]);

    let r = h.call("GET", "/vips/nosuch", None);
    assert_eq!(r.status, 404);
    assert!(error_of(&r).reason.contains("unknown vip \"nosuch\""));

    let r = h.call("GET", "/stats", None);
    assert_eq!(r.status, 200);
    let s: StatsView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(s.workers.len(), 2);
    assert_eq!(s.workers[1].rx, 101);
    assert_eq!(s.workers[0].drops["no_vip"], 5);
    assert_eq!(s.tokens.entries, 12);
    assert_eq!(s.tokens.collisions, 2);
    assert_eq!(s.tokens.unknown_token_joins, 11);
    assert_eq!(s.vips[0].packets, 100);
    assert_eq!(s.backends[1].joins, 4);

    let r = h.call("GET", "/status", None);
    assert_eq!(r.status, 200);
    let st: StatusView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!((st.version, st.workers), (1, 2));

    let r = h.call("GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_exposition(&r.text());

    let r = h.call("GET", "/nosuch", None);
    assert_eq!(r.status, 404);
    assert!(error_of(&r).reason.contains("no route GET /nosuch"));
    let r = h.call("PATCH", "/vips", None);
    assert_eq!(r.status, 405);
    error_of(&r);
}

#[test]
fn metrics_content_negotiation() {
    let h = Harness::tcp();
    let a = match h.api().local_addr() {
        BindAddr::Tcp(a) => *a,
        BindAddr::Unix(_) => unreachable!(),
    };
    let raw = raw_exchange(
        a,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    );
    let r = trapeze_control::api::ctl::parse_reply(&raw).unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .content_type
        .unwrap()
        .starts_with("application/openmetrics-text"));
}

fn raw_exchange(a: std::net::SocketAddr, req: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(a).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // The server may answer (and close) before it has read everything: ignore write errors.
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn changes_apply_and_bump_the_version() {
    let h = Harness::tcp();
    // Add a backend to web.
    let r = h.call(
        "POST",
        "/vips/web/backends",
        Some(r#"{"name":"srv3","ipv4":"10.1.0.3","port":8080,"weight":5}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(version_of(&r), 2);
    let v = vips(&h);
    let b = backend_in(&v, "srv3").unwrap();
    assert_eq!((b.weight, b.state), (5, State::Active));

    // A VIP with an existing member.
    let r = h.call(
        "POST",
        "/vips",
        Some(r#"{"name":"web6","address":"fd00::10","port":443,"backends":["srv1"]}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(version_of(&r), 3);
    let r = h.call("GET", "/vips/web6", None);
    let web6: VipView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(web6.port, 443);
    assert_eq!(web6.backends[0].name, "srv1");

    // Drain (with and without a body), undrain, weight.
    let r = h.call("POST", "/backends/srv2/drain", Some(r#"{"deadline_s":30}"#));
    assert_eq!(version_of(&r), 4);
    assert_eq!(
        backend_in(&vips(&h), "srv2").unwrap().state,
        State::Draining
    );
    let r = h.call("POST", "/backends/srv2/undrain", None);
    assert_eq!(version_of(&r), 5);
    assert_eq!(backend_in(&vips(&h), "srv2").unwrap().state, State::Active);
    let r = h.call("POST", "/backends/srv2/drain", None);
    assert_eq!(version_of(&r), 6);
    let r = h.call("PUT", "/backends/srv1/weight", Some(r#"{"weight":9}"#));
    assert_eq!(version_of(&r), 7);
    assert_eq!(backend_in(&vips(&h), "srv1").unwrap().weight, 9);

    // Graceful removal drains; hard removal removes.
    let r = h.call("DELETE", "/backends/srv3", None);
    assert_eq!(version_of(&r), 8);
    assert_eq!(
        backend_in(&vips(&h), "srv3").unwrap().state,
        State::Draining
    );
    let r = h.call("DELETE", "/backends/srv3?mode=hard", None);
    assert_eq!(version_of(&r), 9);
    assert!(backend_in(&vips(&h), "srv3").is_none());

    let r = h.call("DELETE", "/vips/web6", None);
    assert_eq!(version_of(&r), 10);
    assert_eq!(vips(&h).len(), 1);

    // ETag carries the version.
    let r = h.call("GET", "/status", None);
    let st: StatusView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(st.version, 10);
}

#[test]
fn reload_reports_errors_and_keeps_the_version() {
    let h = Harness::tcp();
    let r = h.call("POST", "/reload", None);
    assert_eq!(version_of(&r), 2);
    let r = h.call("POST", "/reload", Some(r#"{"path":"/tmp/bad.toml"}"#));
    assert_eq!(r.status, 422);
    let e = error_of(&r);
    assert_eq!(e.field.as_deref(), Some("vips[0].port"));
    assert!(e.reason.contains("version 2 keeps serving"), "{}", e.reason);
    let st: StatusView = serde_json::from_slice(&h.call("GET", "/status", None).body).unwrap();
    assert_eq!(st.version, 2);
    let last = st.last_reload.unwrap();
    assert!(!last.ok);
    assert_eq!(last.version, 2);
    let m = h.call("GET", "/metrics", None).text();
    assert!(
        m.contains("trapeze_control_reloads_total{result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("trapeze_control_reloads_total{result=\"error\"} 1\n"));
    assert!(m.contains("\ntrapeze_control_version 2\n"));
    let r = h.call("POST", "/reload", Some(r#"{"path":""}"#));
    assert_eq!(r.status, 422);
}

#[test]
fn version_conflicts_are_409_and_change_nothing() {
    let h = Harness::tcp();
    // Header form.
    let r = h.call_if(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4}"#),
        Some(7),
    );
    assert_eq!(r.status, 409);
    assert!(error_of(&r)
        .reason
        .contains("configuration is at version 1"));
    // Body form.
    let r = h.call(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4,"if_version":0}"#),
    );
    assert_eq!(r.status, 409);
    // Query form (DELETE has no body).
    let r = h.call("DELETE", "/backends/srv1?mode=hard&if_version=5", None);
    assert_eq!(r.status, 409);
    let r = h.call("DELETE", "/vips/web?if_version=5", None);
    assert_eq!(r.status, 409);
    assert_eq!(backend_in(&vips(&h), "srv1").unwrap().weight, 1);
    // Header and body disagreeing is a bad request.
    let r = h.call_if(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4,"if_version":1}"#),
        Some(2),
    );
    assert_eq!(r.status, 400);
    // The right version applies.
    let r = h.call_if(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4}"#),
        Some(1),
    );
    assert_eq!(version_of(&r), 2);
    // Concurrent read-modify-write: of two clients holding version 2, one wins.
    let t = h.target();
    let racers: Vec<_> = (0..2)
        .map(|i| {
            let t = t.clone();
            std::thread::spawn(move || {
                http_request(
                    &t,
                    "PUT",
                    "/backends/srv2/weight",
                    Some(format!(r#"{{"weight":{}}}"#, 10 + i).as_bytes()),
                    Some(2),
                    Duration::from_secs(5),
                )
                .unwrap()
                .status
            })
        })
        .collect();
    let mut codes: Vec<u16> = racers.into_iter().map(|r| r.join().unwrap()).collect();
    codes.sort_unstable();
    assert_eq!(codes, vec![200, 409]);
}

#[test]
fn bad_requests_are_refused_before_the_control_thread() {
    let h = Harness::tcp();
    let cases: &[(&str, &str, Option<&str>, u16, &str)] = &[
        ("POST", "/vips", Some("{"), 400, "malformed JSON"),
        ("POST", "/vips", Some("[1,2]"), 400, "JSON object"),
        ("POST", "/vips", None, 400, "needs a JSON body"),
        (
            "POST",
            "/vips",
            Some(r#"{"name":"x","address":"10.0.0.1","port":80,"colour":"red"}"#),
            400,
            "unknown field `colour`",
        ),
        (
            "POST",
            "/vips",
            Some(r#"{"name":"x","address":"10.0.0.1","port":"80"}"#),
            400,
            "port: invalid type: string \"80\", expected u16",
        ),
        (
            "POST",
            "/vips",
            Some(r#"{"name":"x","address":"10.0.0.300","port":80}"#),
            400,
            "address",
        ),
        (
            "POST",
            "/vips",
            Some(r#"{"name":"x","address":"10.0.0.1","port":70000}"#),
            400,
            "port",
        ),
        (
            "POST",
            "/vips",
            Some(r#"{"name":"a b","address":"10.0.0.1","port":80}"#),
            422,
            "not a valid name",
        ),
        (
            "POST",
            "/vips",
            Some(r#"{"name":"x","address":"10.0.0.1","port":80,"protocol":"udp"}"#),
            400,
            "unknown variant `udp`",
        ),
        (
            "POST",
            "/vips/web/backends",
            Some(r#"{"name":"s9","port":80}"#),
            422,
            "ipv4, ipv6 or both",
        ),
        (
            "POST",
            "/vips/web/backends",
            Some(r#"{"name":"s9","ipv4":"10.1.0.9","port":80,"weight":70000}"#),
            422,
            "above the maximum",
        ),
        (
            "POST",
            "/vips/web/backends",
            Some(r#"{"name":"s9","ipv4":"10.1.0.9","port":80,"mac":"02:00:00:00:00"}"#),
            422,
            "is not a MAC address",
        ),
        (
            "PUT",
            "/backends/srv1/weight",
            Some(r#"{"weight":-1}"#),
            400,
            "weight: invalid value",
        ),
        (
            "PUT",
            "/backends/srv1/weight",
            Some(r#"{}"#),
            400,
            "missing field `weight`",
        ),
        (
            "PUT",
            "/backends/srv1/weight",
            Some(r#"{"weight":1,"if_version":"x"}"#),
            400,
            "if_version",
        ),
        (
            "POST",
            "/backends/srv1/drain",
            Some(r#"{"deadline":5}"#),
            400,
            "unknown field `deadline`",
        ),
        (
            "POST",
            "/backends/srv1/undrain",
            Some(r#"{"x":1}"#),
            400,
            "unknown field",
        ),
        ("DELETE", "/backends/srv1?mode=soft", None, 400, "neither"),
        (
            "DELETE",
            "/backends/srv1?force=1",
            None,
            400,
            "unknown query parameter",
        ),
        ("DELETE", "/vips/web?if_version=x", None, 400, "if_version"),
        ("GET", "/vips/a%20b", None, 400, "not a valid name"),
        (
            "POST",
            "/reload",
            Some(r#"{"file":"x"}"#),
            400,
            "unknown field `file`",
        ),
    ];
    for (method, path, body, status, needle) in cases {
        let r = h.call(method, path, *body);
        assert_eq!(r.status, *status, "{method} {path} {body:?}: {}", r.text());
        let e = error_of(&r);
        assert_eq!(e.status, *status);
        assert!(
            e.reason.contains(needle),
            "{method} {path} {body:?}: {:?} lacks {needle:?}",
            e.reason
        );
    }
    // Bad If-Match.
    let r = http_raw_if_match(&h, "nope");
    assert_eq!(r.status, 400);
    // Nothing changed.
    let st: StatusView = serde_json::from_slice(&h.call("GET", "/status", None).body).unwrap();
    assert_eq!(st.version, 1);
    assert_eq!(vips(&h), Fake::new().vips);
}

fn http_raw_if_match(h: &Harness, v: &str) -> HttpReply {
    let BindAddr::Tcp(a) = h.api().local_addr() else {
        unreachable!()
    };
    let body = r#"{"weight":3}"#;
    let req = format!(
        "PUT /backends/srv1/weight HTTP/1.1\r\nHost: x\r\nIf-Match: {v}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    trapeze_control::api::ctl::parse_reply(&raw_exchange(*a, req.as_bytes())).unwrap()
}

#[test]
fn unknown_names_are_404() {
    let h = Harness::tcp();
    for (method, path, body) in [
        ("DELETE", "/vips/nosuch", None),
        (
            "POST",
            "/vips/nosuch/backends",
            Some(r#"{"name":"s9","ipv4":"10.1.0.9","port":80}"#),
        ),
        ("DELETE", "/backends/nosuch?mode=hard", None),
        ("POST", "/backends/nosuch/drain", None),
        ("POST", "/backends/nosuch/undrain", None),
        ("PUT", "/backends/nosuch/weight", Some(r#"{"weight":2}"#)),
    ] {
        let r = h.call(method, path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert!(error_of(&r).reason.contains("\"nosuch\""));
    }
    // Validation by the control thread: 422 with the field.
    let r = h.call(
        "POST",
        "/vips",
        Some(r#"{"name":"v2","address":"10.0.0.2","port":80,"backends":["ghost"]}"#),
    );
    assert_eq!(r.status, 422);
    assert_eq!(error_of(&r).field.as_deref(), Some("backends[0]"));
}

#[test]
fn oversize_body_is_413() {
    let h = Harness::tcp();
    let BindAddr::Tcp(a) = h.api().local_addr() else {
        unreachable!()
    };
    let big = format!(r#"{{"weight":1,"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let req = format!(
        "PUT /backends/srv1/weight HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let r = trapeze_control::api::ctl::parse_reply(&raw_exchange(*a, req.as_bytes())).unwrap();
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(error_of(&r).status, 413);
    // Also through the client (the server may answer before reading it all).
    let r = http_request(
        &h.target(),
        "POST",
        "/vips",
        Some(big.as_bytes()),
        None,
        Duration::from_secs(5),
    );
    if let Ok(r) = r {
        assert_eq!(r.status, 413);
    }
    assert_eq!(vips(&h), Fake::new().vips);
}

// ---------------------------------------------------------------- failures of the control thread

#[test]
fn control_thread_silent_is_503() {
    // A control thread that never reads: the first request waits out the timeout, the queue
    // (capacity 1) then stays full and the next is refused at once.
    let (tx, rx) = mpsc::sync_channel::<ControlMsg>(1);
    let api = serve_with(
        BindAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        tx,
        ServeOptions {
            reply_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    let BindAddr::Tcp(a) = api.local_addr().clone() else {
        unreachable!()
    };
    let t = ApiTarget::Tcp(a.to_string());
    let start = Instant::now();
    let r = http_request(&t, "GET", "/vips", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert!(String::from_utf8_lossy(&r.body).contains("did not answer within 300 ms"));
    let start = Instant::now();
    let r = http_request(&t, "GET", "/vips", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("busy"));
    assert!(start.elapsed() < Duration::from_millis(300));
    // The control thread gone: 503 too, and the server still runs.
    drop(rx);
    let r = http_request(&t, "GET", "/status", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("not running"));
    assert!(api.is_running());
    api.shutdown();
    // Stopped: the port no longer answers.
    assert!(http_request(&t, "GET", "/vips", None, None, Duration::from_secs(1)).is_err());
}

#[test]
fn dropped_replies_and_a_panicking_control_thread_are_503() {
    let h = Harness::start(
        BindAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        Behaviour::DropReplies,
    );
    let r = h.call("GET", "/vips", None);
    assert_eq!(r.status, 503);
    assert!(error_of(&r).reason.contains("dropped the request"));
    drop(h);

    let h = Harness::start(
        BindAddr::Tcp("127.0.0.1:0".parse().unwrap()),
        Behaviour::Panic,
    );
    let r = h.call("POST", "/reload", None);
    assert_eq!(r.status, 503);
    // The API thread survives the control thread's death.
    let r = h.call("GET", "/status", None);
    assert_eq!(r.status, 503);
    assert!(h.api().is_running());
}

// ---------------------------------------------------------------- Unix socket

#[test]
fn unix_socket() {
    let dir = std::env::temp_dir().join(format!("trapeze-api-test-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("api.sock");
    let h = Harness::start(BindAddr::Unix(path.clone()), Behaviour::Serve);
    assert_eq!(h.url(), format!("unix:{}", path.display()));
    assert_eq!(vips(&h).len(), 1);
    // A second server on the live socket is refused.
    let (tx, _rx) = mpsc::sync_channel::<ControlMsg>(1);
    let e = api::serve(BindAddr::Unix(path.clone()), tx).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    // trapezectl over the socket.
    let out = ctl(&h.url(), &["drain", "srv1"]);
    assert_eq!(out.0, Some(0), "{out:?}");
    assert_eq!(out.1, "ok: version 2\n");
    drop(h);
    assert!(!path.exists(), "socket file removed on shutdown");
    // A stale socket file is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let h = Harness::start(BindAddr::Unix(path.clone()), Behaviour::Serve);
    assert_eq!(vips(&h).len(), 1);
    drop(h);
    let _ = std::fs::remove_dir_all(&dir);
}

// ---------------------------------------------------------------- trapezectl

fn ctl(api_url: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_trapezectl"))
        .arg("--api")
        .arg(api_url)
        .args(args)
        .env_remove("TRAPEZE_API")
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn trapezectl_against_the_server() {
    let h = Harness::tcp();
    let u = h.url();

    let (code, out, err) = ctl(&u, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Prot LocalAddress:Port"));
    assert!(lines[1].starts_with("  -> RemoteAddress:Port"));
    assert!(lines[2].starts_with("TCP  10.0.0.10:80 "), "{out}");
    assert!(lines[2].contains(" web "));
    assert!(lines[3].starts_with("  -> 10.1.0.1:8080 "), "{out}");
    let cols: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(
        cols,
        ["->", "10.1.0.2:8080", "srv2", "2", "active", "2", "20", "2"]
    );

    let (code, out, _) = ctl(
        &u,
        &[
            "add-backend",
            "web",
            "srv3",
            "--ipv4",
            "10.1.0.3",
            "--port",
            "8080",
            "--weight",
            "4",
        ],
    );
    assert_eq!((code, out.as_str()), (Some(0), "ok: version 2\n"));
    let (code, _, _) = ctl(
        &u,
        &["add-vip", "web6", "[fd00::10]:443", "--backend", "srv3"],
    );
    assert_eq!(code, Some(0));
    let (code, out, _) = ctl(&u, &["show", "web6"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("TCP  [fd00::10]:443"), "{out}");
    let (code, _, _) = ctl(&u, &["drain", "srv3", "--deadline", "60"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = ctl(&u, &["undrain", "srv3"]);
    assert_eq!(code, Some(0));
    let (code, out, _) = ctl(&u, &["set-weight", "srv3", "7", "--if-version", "5"]);
    assert_eq!((code, out.as_str()), (Some(0), "ok: version 6\n"));
    let (code, _, err) = ctl(&u, &["set-weight", "srv3", "8", "--if-version", "5"]);
    assert_eq!(code, Some(1));
    assert!(
        err.contains("version conflict") && err.contains("HTTP 409"),
        "{err}"
    );
    let (code, _, _) = ctl(&u, &["remove-backend", "srv3"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = ctl(&u, &["remove-backend", "srv3", "--hard"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = ctl(&u, &["remove-vip", "web6"]);
    assert_eq!(code, Some(0));
    let (code, _, err) = ctl(&u, &["drain", "nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("unknown backend \"nosuch\"") && err.contains("HTTP 404"));
    let (code, _, err) = ctl(&u, &["set-weight", "srv1", "70000"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: weight: "), "{err}");

    let (code, out, _) = ctl(&u, &["reload"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ok: version "));
    let (code, _, err) = ctl(&u, &["reload", "/etc/bad.toml"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("keeps serving"), "{err}");

    let (code, out, _) = ctl(&u, &["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("last reload: FAILED"), "{out}");
    let (code, out, _) = ctl(&u, &["stats"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("worker 1: rx 101"), "{out}");
    assert!(out.contains("tokens: entries 12"));
    let (code, out, _) = ctl(&u, &["metrics"]);
    assert_eq!(code, Some(0));
    check_exposition(&out);
    let (code, out, _) = ctl(&u, &["--json", "list"]);
    assert_eq!(code, Some(0));
    let v: Vec<VipView> = serde_json::from_str(&out).unwrap();
    assert_eq!(v.len(), 1);
}

#[test]
fn trapezectl_usage_and_unreachable() {
    let (code, _, err) = ctl("http://127.0.0.1:1", &["frobnicate"]);
    assert_eq!(code, Some(2), "{err}");
    let (code, _, _) = ctl("http://127.0.0.1:1", &["set-weight", "srv1", "heavy"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = ctl("http://127.0.0.1:1", &["add-vip", "v", "10.0.0.1"]);
    assert_eq!(code, Some(2));
    let (code, _, _) = ctl("ftp://x", &["list"]);
    assert_eq!(code, Some(2));
    let (code, out, _) = ctl("http://127.0.0.1:1", &["--help"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("set-weight"));
    // Nothing listens on port 1.
    let (code, _, err) = ctl("http://127.0.0.1:1", &["list"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("cannot reach the API"), "{err}");
}

// ---------------------------------------------------------------- metrics text

/// Checks every line of a Prometheus/OpenMetrics exposition and the families the issue names.
fn check_exposition(text: &str) {
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().enumerate().all(|(i, c)| {
                c == '_' || c == ':' || c.is_ascii_alphabetic() || (i > 0 && c.is_ascii_digit())
            })
    };
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples: Vec<(String, BTreeMap<String, String>, u64)> = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"));
    for l in &lines[..lines.len() - 1] {
        if let Some(rest) = l.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect(l);
            assert!(ident(name) && !help.is_empty(), "{l}");
        } else if let Some(rest) = l.strip_prefix("# TYPE ") {
            let (name, ty) = rest.split_once(' ').expect(l);
            assert!(ident(name), "{l}");
            assert!(ty == "counter" || ty == "gauge", "{l}");
            assert!(
                types.insert(name.to_string(), ty.to_string()).is_none(),
                "{l}"
            );
        } else {
            assert!(!l.starts_with('#'), "unexpected comment {l}");
            let (series, value) = l.rsplit_once(' ').expect(l);
            let value: u64 = value.parse().unwrap_or_else(|_| panic!("{l}"));
            let (name, labels) = match series.split_once('{') {
                Some((n, rest)) => {
                    let body = rest.strip_suffix('}').expect(l);
                    let mut m = BTreeMap::new();
                    for pair in body.split("\",") {
                        let (k, v) = pair.split_once("=\"").expect(l);
                        assert!(ident(k), "{l}");
                        let v = v.strip_suffix('"').unwrap_or(v);
                        assert!(!v.contains('"'), "{l}");
                        m.insert(k.to_string(), v.to_string());
                    }
                    (n, m)
                }
                None => (series, BTreeMap::new()),
            };
            assert!(ident(name), "{l}");
            let family = match name.strip_suffix("_total") {
                Some(f) if types.get(f).map(String::as_str) == Some("counter") => f,
                _ => name,
            };
            let ty = types
                .get(family)
                .unwrap_or_else(|| panic!("no TYPE for {l}"));
            assert_eq!(ty == "counter", name.ends_with("_total"), "{l}");
            samples.push((name.to_string(), labels, value));
        }
    }
    let find = |name: &str, labels: &[(&str, &str)]| -> Option<u64> {
        samples
            .iter()
            .find(|(n, l, _)| {
                n == name
                    && l.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
    };
    let expect = |name: &str, labels: &[(&str, &str)], v: u64| {
        assert_eq!(find(name, labels), Some(v), "{name}{labels:?} in\n{text}");
    };
    expect("trapeze_worker_rx_packets_total", &[("worker", "1")], 101);
    expect("trapeze_worker_tx_packets_total", &[("worker", "0")], 90);
    expect(
        "trapeze_worker_drops_total",
        &[("worker", "0"), ("reason", "no_vip")],
        5,
    );
    expect(
        "trapeze_worker_drops_total",
        &[("worker", "0"), ("reason", "frag_drop")],
        0,
    );
    expect(
        "trapeze_worker_events_total",
        &[("worker", "1"), ("event", "new_flow")],
        7,
    );
    expect(
        "trapeze_worker_verdicts_total",
        &[("worker", "1"), ("verdict", "forward")],
        90,
    );
    expect("trapeze_worker_flows", &[("worker", "0")], 7);
    expect("trapeze_worker_flow_capacity", &[("worker", "1")], 1024);
    expect("trapeze_vip_packets_total", &[("vip", "web")], 100);
    expect("trapeze_vip_bytes_total", &[("vip", "web")], 0);
    expect("trapeze_vip_new_connections_total", &[("vip", "web")], 14);
    expect("trapeze_vip_joins_total", &[("vip", "web")], 0);
    expect("trapeze_backend_packets_total", &[("backend", "srv1")], 40);
    expect("trapeze_backend_bytes_total", &[("backend", "srv1")], 0);
    expect(
        "trapeze_backend_new_connections_total",
        &[("backend", "srv2")],
        0,
    );
    expect("trapeze_backend_joins_total", &[("backend", "srv2")], 4);
    expect(
        "trapeze_backend_state",
        &[("backend", "srv1"), ("state", "active")],
        1,
    );
    expect(
        "trapeze_backend_state",
        &[("backend", "srv1"), ("state", "draining")],
        0,
    );
    expect("trapeze_backend_active_flows", &[("backend", "srv2")], 2);
    expect("trapeze_backend_weight", &[("backend", "srv2")], 2);
    expect(
        "trapeze_backend_info",
        &[("backend", "srv2"), ("vip", "web")],
        1,
    );
    expect("trapeze_tokens", &[], 12);
    expect("trapeze_token_capacity", &[], 4096);
    expect("trapeze_token_collisions_total", &[], 2);
    expect("trapeze_join_unknown_token_total", &[], 11);
    assert!(find("trapeze_control_reloads_total", &[("result", "ok")]).is_some());
    assert!(find("trapeze_control_reloads_total", &[("result", "error")]).is_some());
    assert!(find("trapeze_control_pool_changes_total", &[]).is_some());
    assert!(find("trapeze_control_version", &[]).is_some());
    // Every drop reason and event of every worker is there.
    for w in ["0", "1"] {
        for r in DropReason::ALL {
            assert!(find(
                "trapeze_worker_drops_total",
                &[("worker", w), ("reason", r.name())]
            )
            .is_some());
        }
        for e in Event::ALL {
            assert!(find(
                "trapeze_worker_events_total",
                &[("worker", w), ("event", e.name())]
            )
            .is_some());
        }
    }
}

#[test]
fn render_is_well_formed_and_deterministic() {
    let f = Fake::new();
    let a = render(&f.metrics_input());
    check_exposition(&a);
    assert_eq!(a, render(&f.metrics_input()));
    // Label values are escaped.
    let mut input = f.metrics_input();
    input.vips[0].name = "we\"b\\x".into();
    let t = render(&input);
    assert!(
        t.contains(r#"trapeze_vip_packets_total{vip="we\"b\\x"} 100"#),
        "{t}"
    );
    // Nothing at all still renders.
    let empty = render(&MetricsInput::default());
    assert!(empty.contains("# TYPE trapeze_tokens gauge\ntrapeze_tokens 0\n"));
    assert!(empty.ends_with("# EOF\n"));
}

// ---------------------------------------------------------------- the instance and bgp-feed

#[test]
fn instance_drain_and_the_bgp_feeder() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let h = Harness::tcp();
    let r = h.call("GET", "/instance", None);
    assert_eq!(r.status, 200, "{}", r.text());
    let v: InstanceView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v.state, InstanceState::Serving);
    assert_eq!(v.announce(&[]).len(), 1);

    // The feeder announces the VIP, withdraws it when the instance drains, when the VIP has no
    // serving backend, and when the API is gone.
    let mut feed = Command::new(env!("CARGO_BIN_EXE_trapezectl"))
        .args(["--api", &h.url(), "bgp-feed", "--next-hop4", "10.81.1.2"])
        .args(["--neighbor4", "10.81.1.1", "--interval-ms", "20"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(feed.stdout.take().unwrap()).lines();
    let mut next = || lines.next().unwrap().unwrap();
    let announce = "neighbor 10.81.1.1 announce route 10.0.0.10/32 next-hop 10.81.1.2";
    let withdraw = "neighbor 10.81.1.1 withdraw route 10.0.0.10/32 next-hop 10.81.1.2";
    assert_eq!(next(), announce);

    let out = ctl(&h.url(), &["instance-drain"]);
    assert_eq!(out.0, Some(0), "{out:?}");
    assert!(out.1.starts_with("state: draining"), "{}", out.1);
    assert!(out.1.contains("withdrawn"), "{}", out.1);
    assert_eq!(next(), withdraw);
    let out = ctl(&h.url(), &["instance-undrain"]);
    assert_eq!(out.0, Some(0), "{out:?}");
    assert_eq!(next(), announce);

    for b in ["srv1", "srv2"] {
        assert_eq!(ctl(&h.url(), &["drain", b]).0, Some(0));
    }
    assert_eq!(next(), withdraw, "no backend takes new connections");
    assert_eq!(ctl(&h.url(), &["undrain", "srv2"]).0, Some(0));
    assert_eq!(next(), announce);

    drop(h); // the API is gone (the daemon died)
    assert_eq!(next(), withdraw);
    drop(feed.stdin.take()); // ExaBGP gone: the feeder ends
    let t0 = Instant::now();
    while feed.try_wait().unwrap().is_none() {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "bgp-feed did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

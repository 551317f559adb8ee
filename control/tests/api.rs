//! The REST API over real sockets, against the real control plane.
//!
//! Each test starts the control thread of `trapeze_control::thread` as the daemon does (a
//! configuration file, its pool published to the workers, the token table, the instance state,
//! the API server's channel) over the control crate's dataplane stand-in,
//! `trapeze_control::testkit::Net`: the core's pipeline decides every frame with the snapshot the
//! control thread published, and the backends are hosts on the wire whose own pipeline answers
//! the resolver's ARP/NDP and whose TCP answers the health probes and the clients' SYNs. So a
//! drain, a weight, a reload or a health change is observed where it matters: in which backend
//! the next connection reaches. The counters the API shows are the pipeline's.
//!
//! Every route is called over TCP (and the Unix socket), with good and bad requests, directly
//! and through `trapezectl`. Only the tests of a broken control thread (silent, dropping its
//! replies, panicking) use a bare channel end: the real one does none of these.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use trapeze_control::api::ctl::{http_request, ApiTarget, HttpReply};
use trapeze_control::api::instance::{InstanceState, InstanceView};
use trapeze_control::api::types::{
    AppliedBody, BackendView, ErrorBody, State, StatsView, StatusView, VipView,
};
use trapeze_control::api::{
    self, render, serve_with, ApiHandle, BindAddr, ControlMsg, ControlStatsView, MetricsInput,
    ServeOptions, TokenSample,
};
use trapeze_control::cli::LogLevel;
use trapeze_control::config::{self, Overrides};
use trapeze_control::dataplane::Dataplane;
use trapeze_control::instance::Instance;
use trapeze_control::log::Log;
use trapeze_control::pool::PoolManager;
use trapeze_control::publish::Published;
use trapeze_control::testkit::{Host, Listen, Net};
use trapeze_control::thread::{ControlThread, Links};
use trapeze_core::pipeline::{DropReason, Event, Shared};
use trapeze_core::pool::PortId;

// ---------------------------------------------------------------- the gateway under test

/// Two ports (clients, servers), one VIP over two dual-stack backends of weights 1 and 2, two
/// workers, health checks every 50 ms.
const CONFIG: &str = r#"
[eal]
args = ["--no-pci", "--file-prefix=tzc-api", "--vdev=net_null0", "--vdev=net_null1", "-l", "0-2"]

[[ports]]
name = "client"
device = "net_null0"
ipv4 = ["10.0.0.1/24"]
ipv6 = ["fd00::1/64"]

[[ports]]
name = "server"
device = "net_null1"
ipv4 = ["10.1.0.254/24"]
ipv6 = ["fd01::fe/64"]

[[vips]]
name = "web"
address = "10.0.0.10"
port = 80
client_port = "client"
backends = ["srv1", "srv2"]

[[backends]]
name = "srv1"
ipv4 = "10.1.0.1"
ipv6 = "fd01::1"
port = 8080
weight = 1
egress_port = "server"

[[backends]]
name = "srv2"
ipv4 = "10.1.0.2"
ipv6 = "fd01::2"
port = 8080
weight = 2
egress_port = "server"

[tables]
flow_capacity = 4096
token_capacity = 4096

[workers]
count = 2

[health]
interval = "50ms"
timeout = "40ms"
rise = 2
fall = 3
"#;

/// [`CONFIG`] without health checks: once the backends are resolved nothing moves on the wire
/// unless the test sends it, so counters can be compared exactly between two reads.
fn quiet_config() -> String {
    CONFIG.replace("[health]\n", "[health]\nenabled = false\n")
}

const CLIENT_PORT: PortId = PortId(0);
const SERVER_PORT: PortId = PortId(1);
const CLIENT4: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 100));
const CLIENT6: IpAddr = IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 0x100));
/// How long a test waits for something the control thread does within a few rounds before it
/// calls it a hang (a hang detector, never a measure of speed).
const HANG: Duration = Duration::from_secs(30);

fn sock(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

/// The web VIP.
fn web() -> SocketAddr {
    sock("10.0.0.10:80")
}

struct Harness {
    api: Option<ApiHandle>,
    control: Option<JoinHandle<PoolManager>>,
    stop: Arc<AtomicBool>,
    net: Net,
    published: Arc<Published>,
    dir: PathBuf,
    next_client_port: u16,
}

impl Harness {
    fn tcp() -> Self {
        Self::with_config(BindAddr::Tcp(sock("127.0.0.1:0")), CONFIG)
    }

    fn quiet() -> Self {
        Self::with_config(BindAddr::Tcp(sock("127.0.0.1:0")), &quiet_config())
    }

    /// The gateway of `text`, written to a file of its own (for `POST /reload`), with the
    /// devices' MACs set as the runtime sets them; ready (every backend resolved) when it
    /// returns.
    fn with_config(bind: BindAddr, text: &str) -> Self {
        Self::with_options(bind, text, ServeOptions::default())
    }

    /// [`Harness::with_config`] with the API server's options.
    fn with_options(bind: BindAddr, text: &str, opts: ServeOptions) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tzc-api-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("gateway.toml");
        std::fs::write(&path, text).unwrap();
        let mut cfg = config::load(&path, &Overrides::default()).expect("test configuration");
        for i in 0..cfg.ports.len() {
            cfg.set_device_mac(PortId(i as u8), [2, 0, 0, 0, 0, i as u8 + 1]);
        }
        let published = Arc::new(Published::new(cfg.snapshot().unwrap()));
        let shared = Arc::new(Shared::new(cfg.tokens));
        let instance = Arc::new(Instance::new(Duration::from_millis(2000)));
        let net = Net::new(&cfg, Arc::clone(&published), Arc::clone(&shared));
        let (tx, rx) = mpsc::sync_channel::<ControlMsg>(16);
        let api = serve_with(bind, tx, opts).expect("bind");
        let control = ControlThread::new(
            cfg,
            Overrides {
                reload_dir: Some(dir.clone()),
                ..Overrides::default()
            },
            path,
            net.clone(),
            Links {
                published: Arc::clone(&published),
                shared,
                instance,
                cluster: None,
                requests: rx,
                reload: Arc::new(AtomicBool::new(false)),
                heartbeats: None,
            },
            Log::new(LogLevel::Error),
        );
        let stop = Arc::new(AtomicBool::new(false));
        let s = Arc::clone(&stop);
        let control = std::thread::Builder::new()
            .name("tz-control".into())
            .spawn(move || control.run(&s))
            .unwrap();
        let h = Self {
            api: Some(api),
            control: Some(control),
            stop,
            net,
            published,
            dir,
            next_client_port: 40_000,
        };
        h.wait_resolved();
        h
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

    fn status(&self) -> StatusView {
        let r = self.call("GET", "/status", None);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    fn version(&self) -> u64 {
        self.status().version
    }

    fn stats(&self) -> StatsView {
        let r = self.call("GET", "/stats", None);
        assert_eq!(r.status, 200, "{}", r.text());
        serde_json::from_slice(&r.body).unwrap()
    }

    /// Waits until `done` holds (checked every 5 ms); fails the test after [`HANG`].
    fn wait(&self, what: &str, done: impl Fn(&Self) -> bool) {
        let t0 = Instant::now();
        while !done(self) {
            assert!(t0.elapsed() < HANG, "{what}: not after {HANG:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until every backend of the serving pool has a MAC (resolved by the control thread
    /// from its host's answer).
    fn wait_resolved(&self) {
        self.wait("every backend resolved", |h| {
            h.published
                .load()
                .backends
                .iter()
                .flatten()
                .all(|b| b.mac.is_some())
        });
    }

    /// Attaches a backend host to the server wire: MAC `02:00:00:be:01:<n>`.
    fn add_host(&self, name: &str, n: u8, ipv4: Option<&str>, ipv6: Option<&str>) {
        self.net.add_host(Host::new(
            name,
            SERVER_PORT,
            [2, 0, 0, 0xbe, 1, n],
            ipv4.map(|a| a.parse().unwrap()),
            ipv6.map(|a| a.parse().unwrap()),
        ));
    }

    /// A new connection from the client (IPv4 or IPv6, as `vip`) to `vip`: the backend host
    /// that answered it, if the answer came back to the client.
    fn connect_to(&mut self, vip: SocketAddr) -> Option<String> {
        self.next_client_port += 1;
        let client = if vip.is_ipv6() { CLIENT6 } else { CLIENT4 };
        self.net
            .connect(CLIENT_PORT, client, self.next_client_port, vip)
    }

    /// `n` new connections to `vip`: how many each backend answered (`None`: unanswered).
    fn spread(&mut self, vip: SocketAddr, n: usize) -> BTreeMap<Option<String>, u64> {
        let mut got = BTreeMap::new();
        for _ in 0..n {
            *got.entry(self.connect_to(vip)).or_insert(0) += 1;
        }
        got
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(api) = self.api.take() {
            api.shutdown();
        }
        self.stop.store(true, Ordering::Relaxed);
        if let Some(c) = self.control.take() {
            let _ = c.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
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

fn state_of(h: &Harness, name: &str) -> Option<State> {
    backend_in(&vips(h), name).map(|b| b.state)
}

// ---------------------------------------------------------------- routes

#[test]
fn read_routes_show_the_pipelines_counters() {
    let mut h = Harness::quiet();
    let r = h.call("GET", "/", None);
    assert_eq!(r.status, 200);
    assert!(r.text().contains("/backends/{name}/drain"));

    // Thirty connections through the real pipeline: every one answered, by either backend.
    let spread = h.spread(web(), 30);
    assert_eq!(
        spread.get(&None),
        None,
        "every connection answered: {spread:?}"
    );
    let answered = |name: &str| spread.get(&Some(name.to_string())).copied().unwrap_or(0);
    assert!(
        answered("srv1") > 0 && answered("srv2") > answered("srv1"),
        "weights 1:2: {spread:?}"
    );

    let v = vips(&h);
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].name.as_str(), v[0].address, v[0].port),
        ("web", web().ip(), 80)
    );
    assert_eq!(v[0].client_port, "client");
    assert_eq!(v[0].new_conns, 30);
    for b in &v[0].backends {
        assert_eq!(b.new_conns, answered(&b.name), "{b:?}");
        assert_eq!(b.state, State::Active);
        assert_eq!(
            b.active_flows,
            Some(answered(&b.name)),
            "half-open flows pinned"
        );
    }
    assert_eq!(backend_in(&v, "srv2").unwrap().weight, 2);

    let r = h.call("GET", "/vips/web", None);
    assert_eq!(r.status, 200);
    let one: VipView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(one, v[0]);

    let r = h.call("GET", "/vips/nosuch", None);
    assert_eq!(r.status, 404);
    assert!(error_of(&r).reason.contains("unknown vip \"nosuch\""));

    let s = h.stats();
    assert_eq!(s.workers.len(), 2);
    let sum = |f: fn(&trapeze_control::api::types::WorkerStatsView) -> u64| -> u64 {
        s.workers.iter().map(f).sum()
    };
    // Each connection: the client's SYN forwarded, the backend's SYN/ACK forwarded back.
    assert_eq!(sum(|w| w.forwarded), 60);
    assert_eq!(sum(|w| w.events["new_flow"]), 30);
    assert_eq!(s.vips[0].new_conns, 30);
    assert_eq!(s.tokens.entries, 0, "plain TCP teaches no token");
    assert_eq!(s.tokens.capacity, 4096);
    // The ports: what the workers received is what came in; the control thread's ARP requests
    // went out of the server port.
    assert_eq!(s.ports.len(), 2);
    assert_eq!(s.ports[0].name, "client");
    assert_eq!(s.ports[0].rx_packets, 30);
    assert_eq!(s.ports[0].tx_forwarded, 30);
    assert!(s.ports[1].tx_control >= 2, "{:?}", s.ports[1]);
    assert_eq!(
        s.ports.iter().map(|p| p.rx_packets).sum::<u64>(),
        sum(|w| w.rx)
    );

    let st = h.status();
    assert_eq!(st.workers, 2);
    assert_eq!(st.version, h.published.load().version);
    assert!(st.config_path.unwrap().ends_with("gateway.toml"));

    let r = h.call("GET", "/metrics", None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.content_type.as_deref(),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    check_exposition(&r.text(), &h.stats());

    let r = h.call("GET", "/nosuch", None);
    assert_eq!(r.status, 404);
    assert!(error_of(&r).reason.contains("no route GET /nosuch"));
    let r = h.call("PATCH", "/vips", None);
    assert_eq!(r.status, 405);
    error_of(&r);
}

#[test]
fn metrics_content_negotiation() {
    let h = Harness::quiet();
    let a = match h.api().local_addr() {
        BindAddr::Tcp(a) => *a,
        BindAddr::Unix(_) => unreachable!(),
    };
    let raw = raw_exchange(
        a,
        b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: application/openmetrics-text; version=1.0.0\r\nConnection: close\r\n\r\n",
    );
    let r = parse_reply(&raw).unwrap();
    assert_eq!(r.status, 200);
    assert!(r
        .content_type
        .unwrap()
        .starts_with("application/openmetrics-text"));
}

/// Parses the answer of a raw exchange (the tests that send hand-made requests on purpose) with
/// `httparse`: status, `Content-Type`, and the body after the headers (the server's answers carry
/// a `Content-Length` and the connection closes after them).
fn parse_reply(raw: &[u8]) -> Result<HttpReply, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    let n = match resp.parse(raw).map_err(|e| e.to_string())? {
        httparse::Status::Complete(n) => n,
        httparse::Status::Partial => return Err("incomplete answer".into()),
    };
    let content_type = resp
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("content-type"))
        .map(|h| String::from_utf8_lossy(h.value).into_owned());
    Ok(HttpReply {
        status: resp.code.ok_or("no status")?,
        content_type,
        body: raw[n..].to_vec(),
    })
}

fn raw_exchange(a: SocketAddr, req: &[u8]) -> Vec<u8> {
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
fn changes_apply_bump_the_version_and_steer_new_connections() {
    let mut h = Harness::tcp();
    let v0 = h.version();
    // A third server: a host on the wire, then the backend. The control thread resolves it
    // (its ARP request answered by the host) and probes it before connections reach it.
    h.add_host("srv3", 3, Some("10.1.0.3"), Some("fd01::3"));
    let r = h.call(
        "POST",
        "/vips/web/backends",
        Some(r#"{"name":"srv3","ipv4":"10.1.0.3","ipv6":"fd01::3","port":8080,"weight":5}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(version_of(&r), v0 + 1);
    let v = vips(&h);
    let b = backend_in(&v, "srv3").unwrap();
    assert_eq!((b.weight, b.state), (5, State::Active));
    h.wait_resolved(); // one more version: the resolved MAC
    let spread = h.spread(web(), 40);
    assert!(
        spread.get(&Some("srv3".into())).is_some_and(|&n| n > 10),
        "weight 5 of 8: {spread:?}"
    );
    let v1 = h.version();

    // A VIP with an existing member, over IPv6 end to end.
    let r = h.call(
        "POST",
        "/vips",
        Some(r#"{"name":"web6","address":"fd00::10","port":443,"backends":["srv1"]}"#),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(version_of(&r), v1 + 1);
    let r = h.call("GET", "/vips/web6", None);
    let web6: VipView = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(web6.port, 443);
    assert_eq!(web6.backends[0].name, "srv1");
    assert_eq!(
        h.connect_to(sock("[fd00::10]:443")).as_deref(),
        Some("srv1")
    );

    // Drain (with and without a body): no new connection reaches srv2; undrain; weight.
    let r = h.call("POST", "/backends/srv2/drain", Some(r#"{"deadline_s":30}"#));
    assert_eq!(version_of(&r), v1 + 2);
    assert_eq!(state_of(&h, "srv2"), Some(State::Draining));
    let spread = h.spread(web(), 20);
    assert!(!spread.contains_key(&Some("srv2".into())), "{spread:?}");
    assert!(!spread.contains_key(&None), "{spread:?}");
    let r = h.call("POST", "/backends/srv2/undrain", None);
    assert_eq!(version_of(&r), v1 + 3);
    assert_eq!(state_of(&h, "srv2"), Some(State::Active));
    let r = h.call("POST", "/backends/srv2/drain", None);
    assert_eq!(version_of(&r), v1 + 4);
    let r = h.call("PUT", "/backends/srv1/weight", Some(r#"{"weight":9}"#));
    assert_eq!(version_of(&r), v1 + 5);
    assert_eq!(backend_in(&vips(&h), "srv1").unwrap().weight, 9);

    // Graceful removal drains; hard removal removes.
    let r = h.call("DELETE", "/backends/srv3", None);
    assert_eq!(version_of(&r), v1 + 6);
    assert_eq!(state_of(&h, "srv3"), Some(State::Draining));
    let r = h.call("DELETE", "/backends/srv3?mode=hard", None);
    assert_eq!(version_of(&r), v1 + 7);
    assert!(backend_in(&vips(&h), "srv3").is_none());
    let spread = h.spread(web(), 10);
    assert_eq!(
        spread,
        BTreeMap::from([(Some("srv1".into()), 10)]),
        "srv2 drained, srv3 gone"
    );

    let r = h.call("DELETE", "/vips/web6", None);
    assert_eq!(version_of(&r), v1 + 8);
    assert_eq!(vips(&h).len(), 1);
    assert_eq!(
        h.connect_to(sock("[fd00::10]:443")),
        None,
        "the VIP is gone"
    );

    assert_eq!(h.version(), v1 + 8);
}

#[test]
fn reload_applies_the_file_and_reports_errors_keeping_the_version() {
    let mut h = Harness::quiet();
    let v = h.version();
    let r = h.call("POST", "/reload", None);
    assert_eq!(version_of(&r), v + 1, "the same file, applied again");

    // A file that does not validate: refused, naming the field and the version still serving.
    let bad = h.dir.join("bad.toml");
    std::fs::write(&bad, quiet_config().replacen("port = 80", "port = 0", 1)).unwrap();
    let body = format!(r#"{{"path":{:?}}}"#, bad.display().to_string());
    let r = h.call("POST", "/reload", Some(&body));
    assert_eq!(r.status, 422);
    let e = error_of(&r);
    assert_eq!(e.field.as_deref(), Some("vips[0].port"));
    assert!(
        e.reason
            .contains(&format!("version {} keeps serving", v + 1)),
        "{}",
        e.reason
    );
    let st = h.status();
    assert_eq!(st.version, v + 1);
    let last = st.last_reload.unwrap();
    assert!(!last.ok);
    assert_eq!(last.version, v + 1);
    let m = h.call("GET", "/metrics", None).text();
    assert!(
        m.contains("trapeze_control_reloads_total{result=\"ok\"} 1\n"),
        "{m}"
    );
    assert!(m.contains("trapeze_control_reloads_total{result=\"error\"} 1\n"));
    assert!(m.contains(&format!("\ntrapeze_control_version {}\n", v + 1)));
    let r = h.call("POST", "/reload", Some(r#"{"path":""}"#));
    assert_eq!(r.status, 422);

    // A good file without srv2: applied, and srv2 takes no new connection.
    let cut = quiet_config().replace("backends = [\"srv1\", \"srv2\"]", "backends = [\"srv1\"]");
    let start = cut.find("[[backends]]\nname = \"srv2\"").unwrap();
    let end = cut[start..].find("[tables]").unwrap() + start;
    let without = format!("{}{}", &cut[..start], &cut[end..]);
    let good = h.dir.join("good.toml");
    std::fs::write(&good, without).unwrap();
    let body = format!(r#"{{"path":{:?}}}"#, good.display().to_string());
    let r = h.call("POST", "/reload", Some(&body));
    assert_eq!(version_of(&r), v + 2);
    assert!(backend_in(&vips(&h), "srv2").is_none());
    assert_eq!(
        h.spread(web(), 10),
        BTreeMap::from([(Some("srv1".into()), 10)])
    );
}

#[test]
fn version_conflicts_are_409_and_change_nothing() {
    let h = Harness::tcp();
    let v = h.version();
    // Header form.
    let r = h.call_if(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4}"#),
        Some(v + 7),
    );
    assert_eq!(r.status, 409);
    assert!(error_of(&r)
        .reason
        .contains(&format!("configuration is at version {v}")));
    // Body form.
    let r = h.call(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4,"if_version":0}"#),
    );
    assert_eq!(r.status, 409);
    // Query form (DELETE has no body).
    let r = h.call(
        "DELETE",
        &format!("/backends/srv1?mode=hard&if_version={}", v + 5),
        None,
    );
    assert_eq!(r.status, 409);
    let r = h.call("DELETE", &format!("/vips/web?if_version={}", v + 5), None);
    assert_eq!(r.status, 409);
    assert_eq!(backend_in(&vips(&h), "srv1").unwrap().weight, 1);
    assert_eq!(h.version(), v);
    // Header and body disagreeing is a bad request.
    let r = h.call_if(
        "PUT",
        "/backends/srv1/weight",
        Some(&format!(r#"{{"weight":4,"if_version":{v}}}"#)),
        Some(v + 1),
    );
    assert_eq!(r.status, 400);
    // The right version applies.
    let r = h.call_if(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":4}"#),
        Some(v),
    );
    assert_eq!(version_of(&r), v + 1);
    // Concurrent read-modify-write: of two clients holding the same version, one wins.
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
                    Some(v + 1),
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
    assert_eq!(h.version(), v + 2);
}

#[test]
fn bad_requests_are_refused_before_the_control_thread() {
    let h = Harness::quiet();
    let before = vips(&h);
    let v = h.version();
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
    assert_eq!(h.version(), v);
    assert_eq!(vips(&h), before);
}

fn http_raw_if_match(h: &Harness, v: &str) -> HttpReply {
    let BindAddr::Tcp(a) = h.api().local_addr() else {
        unreachable!()
    };
    let body = r#"{"weight":3}"#;
    let req = format!(
        "PUT /backends/srv1/weight HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nIf-Match: {v}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    parse_reply(&raw_exchange(*a, req.as_bytes())).unwrap()
}

#[test]
fn unknown_names_are_404_and_unknown_members_422() {
    let h = Harness::quiet();
    let v = h.version();
    for (method, path, body) in [
        ("DELETE", "/vips/nosuch", None),
        (
            "POST",
            "/vips/nosuch/backends",
            Some(r#"{"name":"s9","ipv4":"10.1.0.9","port":80}"#),
        ),
        ("DELETE", "/backends/nosuch?mode=hard", None),
        ("DELETE", "/backends/nosuch", None),
        ("POST", "/backends/nosuch/drain", None),
        ("POST", "/backends/nosuch/undrain", None),
        ("PUT", "/backends/nosuch/weight", Some(r#"{"weight":2}"#)),
    ] {
        let r = h.call(method, path, body);
        assert_eq!(r.status, 404, "{method} {path}: {}", r.text());
        assert!(error_of(&r).reason.contains("\"nosuch\""));
    }
    // A body naming what does not exist is refused by validation: 422 with the field.
    let r = h.call(
        "POST",
        "/vips",
        Some(r#"{"name":"v2","address":"10.0.0.2","port":80,"backends":["srv1","ghost"]}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(error_of(&r).field.as_deref(), Some("backends[1]"));
    // So is a name that exists already.
    let r = h.call(
        "POST",
        "/vips",
        Some(r#"{"name":"web","address":"10.0.0.2","port":80,"backends":["srv1"]}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(error_of(&r).field.as_deref(), Some("name"));
    assert_eq!(h.version(), v);
}

/// Issue 12, defect 1: `{"deadline_s":18446744073709551615}` panicked the control thread after
/// publishing the drain (half-applied); from then on every request was a 503.
#[test]
fn a_drain_deadline_past_the_end_of_the_clock_is_refused_and_the_control_thread_lives_on() {
    let mut h = Harness::tcp();
    let v = h.version();
    let r = h.call(
        "POST",
        "/backends/srv2/drain",
        Some(r#"{"deadline_s":18446744073709551615}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(error_of(&r).field.as_deref(), Some("deadline_s"));
    // Nothing changed: srv2 still takes new connections.
    assert_eq!(h.version(), v);
    assert_eq!(state_of(&h, "srv2"), Some(State::Active));
    let spread = h.spread(web(), 20);
    assert!(spread.contains_key(&Some("srv2".into())), "{spread:?}");
    // The control thread still applies changes.
    let r = h.call(
        "POST",
        "/backends/srv2/drain",
        Some(r#"{"deadline_s":3600}"#),
    );
    assert_eq!(version_of(&r), v + 1);
    assert_eq!(state_of(&h, "srv2"), Some(State::Draining));
}

#[test]
fn oversize_body_is_413() {
    let h = Harness::quiet();
    let before = vips(&h);
    let BindAddr::Tcp(a) = h.api().local_addr() else {
        unreachable!()
    };
    let big = format!(r#"{{"weight":1,"pad":"{}"}}"#, "x".repeat(100 * 1024));
    let req = format!(
        "PUT /backends/srv1/weight HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{big}",
        big.len()
    );
    let r = parse_reply(&raw_exchange(*a, req.as_bytes())).unwrap();
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
    assert_eq!(vips(&h), before);
}

// ---------------------------------------------------------------- health and neighbours

#[test]
fn health_checks_are_answered_through_the_pipeline() {
    let mut h = Harness::tcp();
    // Every backend is probed (a SYN from the gateway's server-side address) and answers; the
    // half-open connection each probe leaves is reset.
    h.wait("probes answered and reset", |h| {
        h.net.with(|w| w.hosts.iter().all(|x| x.log.resets >= 2))
    });
    h.net.with(|w| {
        for x in &w.hosts {
            assert!(
                x.log
                    .syns
                    .iter()
                    .any(|s| s.0 == "10.1.0.254".parse::<IpAddr>().unwrap()),
                "{}: {:?}",
                x.name,
                x.log
            );
        }
    });

    // srv2 refuses (RST): down after `fall` failures; new connections avoid it.
    h.net.listen("srv2", Listen::Refuse);
    h.wait("srv2 down", |h| state_of(h, "srv2") == Some(State::Down));
    assert_eq!(
        h.spread(web(), 10),
        BTreeMap::from([(Some("srv1".into()), 10)])
    );
    // An operator's drain survives a health flap: srv1 drained, then silent (a firewall:
    // probes time out), down, then back: draining again, not active.
    let r = h.call("POST", "/backends/srv1/drain", None);
    version_of(&r);
    h.net.listen("srv1", Listen::Silent);
    h.wait("srv1 down", |h| state_of(h, "srv1") == Some(State::Down));
    // No backend takes new connections: the VIP is withdrawn and new connections fail closed.
    let r = h.call("GET", "/instance", None);
    let inst: InstanceView = serde_json::from_slice(&r.body).unwrap();
    assert!(!inst.vips[0].serving, "{inst:?}");
    assert_eq!(h.connect_to(web()), None);

    h.net.listen("srv1", Listen::Accept);
    h.net.listen("srv2", Listen::Accept);
    h.wait("srv2 up", |h| state_of(h, "srv2") == Some(State::Active));
    h.wait("srv1 back to its drain", |h| {
        state_of(h, "srv1") == Some(State::Draining)
    });
    let r = h.call("GET", "/instance", None);
    let inst: InstanceView = serde_json::from_slice(&r.body).unwrap();
    assert!(inst.vips[0].serving, "{inst:?}");
    assert_eq!(h.connect_to(web()).as_deref(), Some("srv2"));
}

#[test]
fn neighbours_are_resolved_from_the_hosts_own_answers() {
    let mut h = Harness::quiet();
    // The file names no MAC: each comes from its host's answer to the resolver's ARP request.
    let pool = h.published.load();
    for (i, name) in ["srv1", "srv2"].iter().enumerate() {
        let b = pool
            .backends
            .iter()
            .flatten()
            .find(|b| b.name == *name)
            .unwrap();
        assert_eq!(b.mac, Some([2, 0, 0, 0xbe, 0, i as u8 + 1]), "{name}");
    }
    h.net.with(|w| {
        for x in &w.hosts {
            assert!(x.log.neighbour_answers >= 1, "{}: {:?}", x.name, x.log);
        }
    });
    // An IPv6-only backend: resolved by a neighbour solicitation its host's NDP answers.
    let r = h.call(
        "POST",
        "/vips",
        Some(r#"{"name":"web6","address":"fd00::10","port":80,"backends":["srv1"]}"#),
    );
    version_of(&r);
    h.add_host("srv6", 6, None, Some("fd01::6"));
    let r = h.call(
        "POST",
        "/vips/web6/backends",
        Some(r#"{"name":"srv6","ipv6":"fd01::6","port":8080,"weight":100}"#),
    );
    version_of(&r);
    h.wait_resolved();
    let pool = h.published.load();
    let b = pool
        .backends
        .iter()
        .flatten()
        .find(|b| b.name == "srv6")
        .unwrap();
    assert_eq!(b.mac, Some([2, 0, 0, 0xbe, 1, 6]));
    let spread = h.spread(sock("[fd00::10]:80"), 10);
    assert!(
        spread.get(&Some("srv6".into())).is_some_and(|&n| n > 5),
        "{spread:?}"
    );
}

#[test]
fn old_snapshots_are_freed_by_the_control_thread_once_the_workers_moved_on() {
    let mut h = Harness::quiet();
    h.spread(web(), 10); // both workers hold the current snapshot
    for w in 2..12 {
        let r = h.call(
            "PUT",
            "/backends/srv1/weight",
            Some(&format!(r#"{{"weight":{w}}}"#)),
        );
        version_of(&r);
    }
    // Ten snapshots published while no frame moved: each worker still holds the one it read,
    // and only those are kept; the others were freed as they were replaced.
    assert!(h.published.retired() <= 2, "{}", h.published.retired());
    // Traffic: the workers move on; the control thread frees what they left at its next round.
    h.spread(web(), 20);
    h.wait("retired snapshots freed", |h| h.published.retired() == 0);
}

// ---------------------------------------------------------------- failures of the control thread

/// How a broken control thread behaves (the real one does neither).
#[derive(Clone, Copy)]
enum Broken {
    /// Drops every reply channel without answering.
    DropReplies,
    /// Panics on the first request.
    Panic,
}

fn broken(behaviour: Broken) -> (ApiHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::sync_channel::<ControlMsg>(16);
    let api = serve_with(
        BindAddr::Tcp(sock("127.0.0.1:0")),
        tx,
        ServeOptions {
            reply_timeout: Duration::from_millis(400),
            ..ServeOptions::default()
        },
    )
    .expect("bind");
    let t = std::thread::spawn(move || broken_loop(&rx, behaviour));
    (api, t)
}

fn broken_loop(rx: &Receiver<ControlMsg>, behaviour: Broken) {
    while let Ok((_, reply)) = rx.recv() {
        match behaviour {
            Broken::DropReplies => drop(reply),
            Broken::Panic => panic!("a control thread that fails on purpose"),
        }
    }
}

fn target_of(api: &ApiHandle) -> ApiTarget {
    let BindAddr::Tcp(a) = api.local_addr() else {
        unreachable!()
    };
    ApiTarget::Tcp(a.to_string())
}

#[test]
fn control_thread_silent_is_503() {
    // A control thread that never reads: the first request waits out the timeout, the queue
    // (capacity 1) then stays full and the next is refused at once.
    let (tx, rx) = mpsc::sync_channel::<ControlMsg>(1);
    let api = serve_with(
        BindAddr::Tcp(sock("127.0.0.1:0")),
        tx,
        ServeOptions {
            reply_timeout: Duration::from_millis(300),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    let t = target_of(&api);
    let r = http_request(&t, "GET", "/vips", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("did not answer within 300 ms"));
    let r = http_request(&t, "GET", "/vips", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 503);
    assert!(String::from_utf8_lossy(&r.body).contains("busy"));
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
    let (api, t) = broken(Broken::DropReplies);
    let r = http_request(
        &target_of(&api),
        "GET",
        "/vips",
        None,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert!(error_of(&r).reason.contains("dropped the request"));
    api.shutdown();
    t.join().unwrap();

    let (api, t) = broken(Broken::Panic);
    let target = target_of(&api);
    let r = http_request(
        &target,
        "POST",
        "/reload",
        None,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 503);
    // The API thread survives the control thread's death.
    let r = http_request(
        &target,
        "GET",
        "/status",
        None,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(r.status, 503);
    assert!(api.is_running());
    api.shutdown();
    assert!(t.join().is_err(), "it panicked");
}

// ---------------------------------------------------------------- Unix socket

#[test]
fn unix_socket() {
    let dir = std::env::temp_dir().join(format!("tzc-api-unix-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("api.sock");
    let h = Harness::with_config(BindAddr::Unix(path.clone()), &quiet_config());
    assert_eq!(h.url(), format!("unix:{}", path.display()));
    assert_eq!(vips(&h).len(), 1);
    // A second server on the live socket is refused.
    let (tx, _rx) = mpsc::sync_channel::<ControlMsg>(1);
    let e = api::serve(BindAddr::Unix(path.clone()), tx).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::AddrInUse);
    // trapezectl over the socket.
    let v = h.version();
    let out = ctl(&h.url(), &["drain", "srv1"]);
    assert_eq!(out.0, Some(0), "{out:?}");
    assert_eq!(out.1, format!("ok: version {}\n", v + 1));
    assert_eq!(state_of(&h, "srv1"), Some(State::Draining));
    drop(h);
    assert!(!path.exists(), "socket file removed on shutdown");
    // A stale socket file is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    let h = Harness::with_config(BindAddr::Unix(path.clone()), &quiet_config());
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
    let mut h = Harness::quiet();
    let u = h.url();
    h.spread(web(), 12);

    let (code, out, err) = ctl(&u, &["list"]);
    assert_eq!(code, Some(0), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("Prot LocalAddress:Port"));
    assert!(lines[1].starts_with("  -> RemoteAddress:Port"));
    assert!(lines[2].starts_with("TCP  10.0.0.10:80 "), "{out}");
    assert!(lines[2].contains(" web "));
    assert!(lines[3].starts_with("  -> 10.1.0.1:8080 "), "{out}");
    // The columns are the control plane's numbers: weight, state, active flows, new
    // connections, joins.
    let srv2 = backend_in(&vips(&h), "srv2").unwrap().clone();
    let cols: Vec<&str> = lines[4].split_whitespace().collect();
    assert_eq!(
        cols,
        [
            "->".to_string(),
            "10.1.0.2:8080".into(),
            "srv2".into(),
            "2".into(),
            "active".into(),
            srv2.active_flows.unwrap().to_string(),
            srv2.new_conns.to_string(),
            "0".into()
        ]
    );
    assert!(srv2.new_conns > 0);

    let v = h.version();
    h.add_host("srv3", 3, Some("10.1.0.3"), Some("fd01::3"));
    let (code, out, _) = ctl(
        &u,
        &[
            "add-backend",
            "web",
            "srv3",
            "--ipv4",
            "10.1.0.3",
            "--ipv6",
            "fd01::3",
            "--port",
            "8080",
            "--weight",
            "4",
        ],
    );
    assert_eq!((code, out), (Some(0), format!("ok: version {}\n", v + 1)));
    h.wait_resolved();
    let (code, _, err) = ctl(
        &u,
        &["add-vip", "web6", "[fd00::10]:443", "--backend", "srv3"],
    );
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(
        h.connect_to(sock("[fd00::10]:443")).as_deref(),
        Some("srv3")
    );
    let (code, out, _) = ctl(&u, &["show", "web6"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("TCP  [fd00::10]:443"), "{out}");
    let (code, _, _) = ctl(&u, &["drain", "srv3", "--deadline", "60"]);
    assert_eq!(code, Some(0));
    let (code, _, _) = ctl(&u, &["undrain", "srv3"]);
    assert_eq!(code, Some(0));
    let v = h.version().to_string();
    let (code, out, _) = ctl(&u, &["set-weight", "srv3", "7", "--if-version", &v]);
    assert_eq!(
        (code, out),
        (Some(0), format!("ok: version {}\n", h.version()))
    );
    let (code, _, err) = ctl(&u, &["set-weight", "srv3", "8", "--if-version", &v]);
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
    assert!(
        err.contains("\"nosuch\"") && err.contains("HTTP 404"),
        "{err}"
    );
    let (code, _, err) = ctl(&u, &["set-weight", "srv1", "70000"]);
    assert_eq!(code, Some(1));
    assert!(err.starts_with("error: weight: "), "{err}");

    let (code, out, _) = ctl(&u, &["reload"]);
    assert_eq!(code, Some(0));
    assert!(out.starts_with("ok: version "));
    let missing = h.dir.join("missing.toml");
    let (code, _, err) = ctl(&u, &["reload", &missing.display().to_string()]);
    assert_eq!(code, Some(1));
    assert!(err.contains("keeps serving"), "{err}");

    let (code, out, _) = ctl(&u, &["status"]);
    assert_eq!(code, Some(0));
    assert!(out.contains("last reload: FAILED"), "{out}");
    let s = h.stats();
    let (code, out, _) = ctl(&u, &["stats"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains(&format!("worker 1: rx {}", s.workers[1].rx)),
        "{out}"
    );
    assert!(out.contains("tokens: entries 0"), "{out}");
    let (code, out, _) = ctl(&u, &["metrics"]);
    assert_eq!(code, Some(0));
    check_exposition(&out, &h.stats());
    let (code, out, _) = ctl(&u, &["--json", "list"]);
    assert_eq!(code, Some(0));
    let v: Vec<VipView> = serde_json::from_str(&out).unwrap();
    assert_eq!(v, vips(&h));
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

/// Checks every line of a Prometheus/OpenMetrics exposition, and that it shows the same numbers
/// as `stats` (`GET /stats` read while nothing moved).
fn check_exposition(text: &str, stats: &StatsView) {
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
    for w in &stats.workers {
        let id = w.worker.to_string();
        let id = id.as_str();
        expect("trapeze_worker_rx_packets_total", &[("worker", id)], w.rx);
        expect("trapeze_worker_tx_packets_total", &[("worker", id)], w.tx);
        expect(
            "trapeze_worker_verdicts_total",
            &[("worker", id), ("verdict", "forward")],
            w.forwarded,
        );
        expect("trapeze_worker_flows", &[("worker", id)], w.flows);
        expect(
            "trapeze_worker_flow_capacity",
            &[("worker", id)],
            w.flow_capacity,
        );
        // Every drop reason and event, each the number /stats shows.
        for r in DropReason::ALL {
            expect(
                "trapeze_worker_drops_total",
                &[("worker", id), ("reason", r.name())],
                w.drops.get(r.name()).copied().unwrap_or(0),
            );
        }
        for e in Event::ALL {
            expect(
                "trapeze_worker_events_total",
                &[("worker", id), ("event", e.name())],
                w.events.get(e.name()).copied().unwrap_or(0),
            );
        }
    }
    for v in &stats.vips {
        let l = [("vip", v.name.as_str())];
        expect("trapeze_vip_packets_total", &l, v.packets);
        expect("trapeze_vip_bytes_total", &l, v.bytes);
        expect("trapeze_vip_new_connections_total", &l, v.new_conns);
        expect("trapeze_vip_joins_total", &l, v.joins);
    }
    for b in &stats.backends {
        let l = [("backend", b.name.as_str())];
        expect("trapeze_backend_packets_total", &l, b.packets);
        expect("trapeze_backend_bytes_total", &l, b.bytes);
        expect("trapeze_backend_new_connections_total", &l, b.new_conns);
        expect("trapeze_backend_joins_total", &l, b.joins);
        expect("trapeze_backend_active_flows", &l, b.active_flows.unwrap());
        let state = b.state.unwrap();
        for s in State::ALL {
            expect(
                "trapeze_backend_state",
                &[("backend", b.name.as_str()), ("state", s.as_str())],
                u64::from(s == state),
            );
        }
    }
    expect("trapeze_tokens", &[], stats.tokens.entries);
    expect("trapeze_token_capacity", &[], stats.tokens.capacity);
    expect(
        "trapeze_token_collisions_total",
        &[],
        stats.tokens.collisions,
    );
    expect(
        "trapeze_join_unknown_token_total",
        &[],
        stats.tokens.unknown_token_joins,
    );
    expect(
        "trapeze_control_reloads_total",
        &[("result", "ok")],
        stats.control.reloads_ok,
    );
    expect(
        "trapeze_control_reloads_total",
        &[("result", "error")],
        stats.control.reloads_error,
    );
    expect(
        "trapeze_control_pool_changes_total",
        &[],
        stats.control.pool_changes,
    );
    expect("trapeze_control_version", &[], stats.control.version);
}

#[test]
fn render_is_well_formed_and_deterministic() {
    let mut h = Harness::quiet();
    h.spread(web(), 5);
    let counters = h.net.counters();
    let input = MetricsInput::from_pool(
        &h.published.load(),
        counters.workers,
        TokenSample::default(),
        ControlStatsView::default(),
    );
    let a = render(&input);
    assert_eq!(a, render(&input));
    assert!(
        a.contains("trapeze_vip_new_connections_total{vip=\"web\"} 5\n"),
        "{a}"
    );
    // Label values are escaped.
    let mut odd = input.clone();
    odd.vips[0].name = "we\"b\\x".into();
    let t = render(&odd);
    assert!(
        t.contains(r#"trapeze_vip_new_connections_total{vip="we\"b\\x"} 5"#),
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
    assert_eq!(v.stop_grace_ms, 2000);
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
    // A backend failing its health checks counts as not serving too.
    h.net.listen("srv2", Listen::Refuse);
    assert_eq!(next(), withdraw, "srv2 down, srv1 drained");
    h.net.listen("srv2", Listen::Accept);
    assert_eq!(next(), announce);

    drop(h); // the API is gone (the daemon died)
    assert_eq!(next(), withdraw);
    drop(feed.stdin.take()); // ExaBGP gone: the feeder ends
    let t0 = Instant::now();
    while feed.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < HANG, "bgp-feed did not exit");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Issue 12, defect 7: duplicate JSON keys were accepted (the last one won); `/status` showed
/// the time of the query and the startup file for the last reload; a reload changing `[eal]`
/// answered 200 without a word.
#[test]
fn duplicate_keys_reload_report_and_the_eal_warning() {
    let h = Harness::quiet();
    let v = h.version();
    let r = h.call(
        "PUT",
        "/backends/srv1/weight",
        Some(r#"{"weight":1,"weight":65535}"#),
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(
        error_of(&r).reason.contains("duplicate key"),
        "{}",
        r.text()
    );
    assert_eq!(h.version(), v, "nothing changed");

    // A reload of another file with another [eal]: applied, with a warning, and /status names
    // that file and the time of the reload (not of the query).
    let other = h.dir.join("other.toml");
    std::fs::write(
        &other,
        quiet_config().replace("--file-prefix=tzc-api", "--file-prefix=tzc-api2"),
    )
    .unwrap();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let body = format!(r#"{{"path":{:?}}}"#, other.display().to_string());
    let r = h.call("POST", "/reload", Some(&body));
    assert_eq!(r.status, 200, "{}", r.text());
    let applied: AppliedBody = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(applied.version, v + 1);
    assert!(
        applied.warning.as_deref().unwrap_or("").contains("[eal]"),
        "{}",
        r.text()
    );
    std::thread::sleep(Duration::from_millis(2100));
    let last = h.status().last_reload.unwrap();
    assert!(last.ok);
    assert_eq!(last.path, other.display().to_string());
    let after = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (before..after.saturating_sub(1)).contains(&last.unix_time_s),
        "the reload's time {} is not between {before} and the query's {after} - 2",
        last.unix_time_s
    );
    assert!(last.warning.is_some());
    // The running EAL's arguments are still the first file's: the same warning again, and none
    // for the startup file.
    let r = h.call("POST", "/reload", Some(&body));
    let applied: AppliedBody = serde_json::from_slice(&r.body).unwrap();
    assert!(applied.warning.is_some(), "{}", r.text());
    let r = h.call("POST", "/reload", None);
    let applied: AppliedBody = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(applied.warning, None, "{}", r.text());
}

/// Issue 12, defect 2: `POST /reload {"path":"/dev/zero"}` had the daemon OOM-killed and a FIFO
/// blocked the control thread for good. A reload reads the configured file or a regular file
/// under `--reload-dir` (here the harness's directory), of at most 1 MiB: everything else is a
/// 4xx with a reason, and nothing changes.
#[test]
fn reload_reads_only_regular_files_of_bounded_size_under_the_reload_dir() {
    let h = Harness::quiet();
    let v = h.version();
    let fifo = h.dir.join("reload.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let big = h.dir.join("big.toml");
    std::fs::write(&big, quiet_config() + &"#".repeat(1 << 20)).unwrap();
    let outside = std::env::temp_dir().join(format!("tzc-outside-{}.toml", std::process::id()));
    std::fs::write(&outside, quiet_config()).unwrap();
    let link = h.dir.join("link.toml");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    let sub = h.dir.join("sub");
    std::fs::create_dir(&sub).unwrap();
    let zero_link = h.dir.join("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero_link).unwrap();
    let cases: [(&str, u16, &str); 9] = [
        ("/dev/zero", 403, "not a file under the reload directory"),
        (fifo.to_str().unwrap(), 422, "not a regular file (a FIFO)"),
        ("reload.fifo", 422, "not a regular file (a FIFO)"),
        (
            sub.to_str().unwrap(),
            422,
            "not a regular file (a directory)",
        ),
        (h.dir.to_str().unwrap(), 403, "not a file under"),
        (
            big.to_str().unwrap(),
            422,
            "larger than the limit of 1048576 bytes",
        ),
        (outside.to_str().unwrap(), 403, "not a file under"),
        ("link.toml", 403, "not a file under"),
        ("../../etc/passwd", 403, "not a file under"),
    ];
    for (path, status, reason) in cases {
        let body = serde_json::json!({ "path": path }).to_string();
        let r = h.call("POST", "/reload", Some(&body));
        assert_eq!(r.status, status, "{path}: {}", r.text());
        let e = error_of(&r);
        assert!(e.reason.contains(reason), "{path}: {}", e.reason);
        assert_eq!(e.field.as_deref(), Some("path"), "{path}");
    }
    let body = serde_json::json!({ "path": zero_link }).to_string();
    assert_eq!(h.call("POST", "/reload", Some(&body)).status, 403);
    assert_eq!(h.version(), v, "nothing was applied");
    let st = h.status();
    let last = st.last_reload.unwrap();
    assert!(!last.ok);
    // A file under the directory, by a relative name: applied.
    std::fs::write(h.dir.join("next.toml"), quiet_config()).unwrap();
    let r = h.call("POST", "/reload", Some(r#"{"path":"next.toml"}"#));
    assert_eq!(version_of(&r), v + 1);
    assert_eq!(
        h.status().last_reload.unwrap().path,
        h.dir
            .canonicalize()
            .unwrap()
            .join("next.toml")
            .display()
            .to_string()
    );
    let _ = std::fs::remove_file(&outside);
}

/// Issue 12, defect 3: backends and VIPs added by the API skipped the address checks of the
/// configuration file. They now share its rules (`config::rules`): each of these is a 422
/// naming the field, and the pool is unchanged (same version, same VIPs).
#[test]
fn api_changes_follow_the_configuration_files_address_rules() {
    let h = Harness::quiet();
    let v = h.version();
    let before = vips(&h);
    let backend =
        |ipv4: &str| serde_json::json!({"name": "bad", "ipv4": ipv4, "port": 8080}).to_string();
    for (addr, reason) in [
        ("0.0.0.0", "unspecified"),
        ("255.255.255.255", "broadcast"),
        ("224.0.0.5", "multicast"),
        ("127.0.0.1", "loopback"),
        ("10.1.0.254", "the gateway's own address"),
    ] {
        let r = h.call("POST", "/vips/web/backends", Some(&backend(addr)));
        assert_eq!(r.status, 422, "{addr}: {}", r.text());
        let e = error_of(&r);
        assert_eq!(e.field.as_deref(), Some("ipv4"), "{addr}");
        assert!(e.reason.contains(reason), "{addr}: {}", e.reason);
    }
    let r = h.call(
        "POST",
        "/vips/web/backends",
        Some(r#"{"name":"bad","ipv6":"::ffff:10.1.0.9","port":8080}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(error_of(&r).reason.contains("IPv4-mapped"));
    let vip = |addr: &str, backends: &[&str]| {
        serde_json::json!({"name": "v2", "address": addr, "port": 81, "backends": backends})
            .to_string()
    };
    for (addr, members, field) in [
        ("0.0.0.0", &["srv1"][..], "address"),
        ("255.255.255.255", &["srv1"][..], "address"),
        ("ff02::1", &["srv1"][..], "address"),
        ("::1", &["srv1"][..], "address"),
        ("10.0.0.1", &["srv1"][..], "address"),
        ("10.0.0.11", &[][..], "backends"),
    ] {
        let r = h.call("POST", "/vips", Some(&vip(addr, members)));
        assert_eq!(r.status, 422, "{addr}: {}", r.text());
        assert_eq!(error_of(&r).field.as_deref(), Some(field), "{addr}");
    }
    // Ranges of request values (docs/API.md): a drain deadline over 7 days, a weight over 65535.
    let r = h.call(
        "POST",
        "/backends/srv2/drain",
        Some(r#"{"deadline_s":604801}"#),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(error_of(&r).field.as_deref(), Some("deadline_s"));
    let r = h.call("PUT", "/backends/srv1/weight", Some(r#"{"weight":65536}"#));
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(h.version(), v, "nothing was applied");
    assert_eq!(vips(&h), before);
    // A good one still goes through.
    let r = h.call("POST", "/vips/web/backends", Some(&backend("10.1.0.3")));
    assert_eq!(version_of(&r), v + 1);
}

fn raw(h: &Harness, req: &str) -> (u16, String) {
    let BindAddr::Tcp(a) = h.api().local_addr() else {
        panic!("TCP")
    };
    let bytes = raw_exchange(*a, req.as_bytes());
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

/// Issue 12, defect 4: a `text/plain` POST with `Origin: http://evil` drained a backend, and a
/// foreign `Host` was accepted. Now: a foreign Origin or Host is a 403, a body that is not JSON
/// a 415, before anything reaches the control thread; the backend stays active.
#[test]
fn cross_site_requests_and_foreign_hosts_are_refused() {
    let h = Harness::quiet();
    let v = h.version();
    let port = match h.api().local_addr() {
        BindAddr::Tcp(a) => a.port(),
        BindAddr::Unix(_) => unreachable!(),
    };
    let drain = |host: &str, extra: &str| {
        format!(
            "POST /backends/srv2/drain HTTP/1.1\r\nHost: {host}\r\n{extra}Content-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        )
    };
    let cases = [
        (
            drain(
                &format!("127.0.0.1:{port}"),
                "Content-Type: text/plain\r\nOrigin: http://evil\r\n",
            ),
            403,
            "Origin",
        ),
        (
            drain(&format!("127.0.0.1:{port}"), "Content-Type: text/plain\r\n"),
            415,
            "application/json",
        ),
        (
            drain(&format!("127.0.0.1:{port}"), ""),
            415,
            "application/json",
        ),
        (
            drain(
                &format!("127.0.0.1:{port}"),
                "Content-Type: application/json\r\nOrigin: http://localhost:8000\r\n",
            ),
            403,
            "Origin",
        ),
        (
            drain(
                &format!("127.0.0.1:{port}"),
                "Content-Type: application/json\r\nOrigin: null\r\n",
            ),
            403,
            "Origin",
        ),
        (
            drain("evil.example:80", "Content-Type: application/json\r\n"),
            403,
            "Host",
        ),
        (
            drain("rebind.attacker.test", "Content-Type: application/json\r\n"),
            403,
            "Host",
        ),
    ];
    for (req, status, needle) in &cases {
        let (got, text) = raw(&h, req);
        assert_eq!(got, *status, "{req}\n{text}");
        assert!(text.contains(needle), "{text}");
    }
    assert_eq!(h.version(), v, "nothing changed");
    assert_eq!(state_of(&h, "srv2"), Some(State::Active));
    // The API's own origin, with JSON: applied.
    let (got, text) = raw(
        &h,
        &drain(
            &format!("127.0.0.1:{port}"),
            &format!("Content-Type: application/json; charset=utf-8\r\nOrigin: http://127.0.0.1:{port}\r\n"),
        ),
    );
    assert_eq!(got, 200, "{text}");
    assert_eq!(state_of(&h, "srv2"), Some(State::Draining));
}

/// The bearer token: required on every route when configured (401 with `WWW-Authenticate`),
/// accepted when right; and a non-loopback address without a token is refused at start.
#[test]
fn the_bearer_token_is_required_when_configured() {
    let token = "0123456789abcdef-secret";
    let h = Harness::with_options(
        BindAddr::Tcp(sock("127.0.0.1:0")),
        &quiet_config(),
        ServeOptions {
            token: Some(token.into()),
            ..ServeOptions::default()
        },
    );
    let (got, text) = raw(
        &h,
        "GET /status HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(got, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{text}"
    );
    let (got, _) = raw(&h, "GET /status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer wrong-token-0123456\r\nConnection: close\r\n\r\n");
    assert_eq!(got, 401);
    let (got, text) = raw(
        &h,
        &format!("GET /status HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"),
    );
    assert_eq!(got, 200, "{text}");
    // trapezectl (hyper's client) with and without the token file.
    let file = h.dir.join("api.token");
    std::fs::write(&file, format!("{token}\n")).unwrap();
    let out = ctl(&h.url(), &["status"]);
    assert_eq!(out.0, Some(1), "{out:?}");
    assert!(
        out.2.contains("401") || out.2.contains("bearer token"),
        "{out:?}"
    );
    let out = ctl(
        &h.url(),
        &["--api-token-file", file.to_str().unwrap(), "status"],
    );
    assert_eq!(out.0, Some(0), "{out:?}");
    assert!(out.1.contains("version"), "{out:?}");
    let (tx, _rx) = mpsc::sync_channel::<ControlMsg>(1);
    let e = serve_with(
        BindAddr::Tcp(sock("0.0.0.0:0")),
        tx,
        ServeOptions::default(),
    )
    .unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
    assert!(e.to_string().contains("--api-token-file"), "{e}");
}

/// Issue 12, defect 5: slow-header connections stayed open 70 s and ~1000 idle connections
/// made the API time out. A connection that has not sent its headers within the header
/// timeout is closed, and connections over the limit are closed at once, so 1000 idle ones
/// cost the server at most `max_connections` descriptors and the API keeps answering (a reload
/// too, which opens a file).
#[test]
fn slow_headers_and_idle_connections_are_closed() {
    use std::io::{Read, Write};
    let h = Harness::with_options(
        BindAddr::Tcp(sock("127.0.0.1:0")),
        &quiet_config(),
        ServeOptions {
            header_timeout: Duration::from_millis(300),
            idle_timeout: Duration::from_millis(600),
            max_connections: 16,
            ..ServeOptions::default()
        },
    );
    let BindAddr::Tcp(a) = *h.api().local_addr() else {
        unreachable!()
    };
    // Slow headers: half a request line, then nothing. The server closes the connection.
    let mut slow = std::net::TcpStream::connect(a).unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: loc")
        .unwrap();
    slow.set_read_timeout(Some(HANG)).unwrap();
    let mut buf = Vec::new();
    let n = slow.read_to_end(&mut buf);
    assert!(
        n.is_ok() || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the server closed the connection (EOF), not the hang detector: {n:?}"
    );
    // 1000 idle connections: the API still answers, and a reload still reads its file.
    let idle: Vec<std::net::TcpStream> = (0..1000)
        .map(|_| std::net::TcpStream::connect(a).unwrap())
        .collect();
    // While the limit's worth of them holds every slot (at most the header timeout), new
    // connections are closed at once: a client retries.
    let call = |method: &str, path: &str| {
        let t0 = Instant::now();
        loop {
            match http_request(
                &h.target(),
                method,
                path,
                None,
                None,
                Duration::from_secs(5),
            ) {
                Ok(r) => return r,
                Err(e) => assert!(t0.elapsed() < HANG, "{method} {path}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let r = call("GET", "/status");
    assert_eq!(r.status, 200, "{}", r.text());
    let v: StatusView = serde_json::from_slice(&r.body).unwrap();
    let r = call("POST", "/reload");
    assert_eq!(version_of(&r), v.version + 1);
    // And each of them is closed by the server (over the limit at once, the others idle).
    for mut c in idle {
        c.set_read_timeout(Some(HANG)).unwrap();
        let mut b = [0u8; 64];
        let n = c.read(&mut b);
        assert!(
            matches!(n, Ok(0))
                || matches!(&n, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{n:?}"
        );
    }
}

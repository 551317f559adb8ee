//! `trapezectl`: the operator's command line over the REST API, through hyper's HTTP/1.1 client
//! over a TCP or Unix stream (one request per connection). `--api-token-file FILE` sends the
//! daemon's bearer token.
//!
//! ```text
//! trapezectl [--api http://127.0.0.1:9180 | --api unix:/run/trapeze.sock] [--json] COMMAND
//!   list                                   VIPs and backends, like ipvsadm -Ln
//!   show VIP                               one VIP
//!   add-vip NAME ADDR:PORT [--backend B]... [--client-port PORT]
//!           [--dsr [--encap ipip|gue] [--gue-port N] [--outer-source gateway|PREFIX]]
//!   remove-vip NAME
//!   add-backend VIP NAME [--ipv4 A] [--ipv6 A] --port P [--weight W] [--egress PORT] [--mac MAC]
//!   remove-backend NAME [--hard]
//!   drain NAME [--deadline SECS]
//!   undrain NAME
//!   set-weight NAME W
//!   reload [PATH]
//!   stats | metrics | status
//!   instance | instance-drain | instance-undrain
//!   bgp-feed [--next-hop4 A] [--next-hop6 A] [--neighbor4 A] [--neighbor6 A]
//!            [--interval-ms MS] [--fail-after N] [--vip NAME]...   (run by ExaBGP)
//! ```
//!
//! Every change takes `--if-version V` (applied only if the configuration is at version `V`).
//! Exit status: [`EXIT_OK`] on success, [`EXIT_ERROR`] when the API refuses (the reason is
//! printed) or cannot be reached, [`EXIT_USAGE`] for a bad command line.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde::de::DeserializeOwned;

use super::server::DEFAULT_PORT;
use super::types::{
    AnnounceMode, AppliedBody, BackendBody, DsrBody, ErrorBody, Mode, StatsView, StatusView,
    VipBody, VipView,
};

/// Exit status of a successful command.
pub const EXIT_OK: u8 = 0;
/// Exit status when the API refused the request or could not be reached.
pub const EXIT_ERROR: u8 = 1;
/// Exit status of a bad command line.
pub const EXIT_USAGE: u8 = 2;

/// Options of `trapezectl`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "trapezectl",
    version,
    about = "Control a running trapeze gateway through its REST API",
    after_help = "Exit status: 0 success, 1 refused by the API or API unreachable, 2 bad command line.\nThe API reference is docs/API.md."
)]
pub struct CtlArgs {
    /// API address: http://HOST:PORT or unix:/PATH.
    #[arg(
        long,
        global = true,
        env = "TRAPEZE_API",
        value_name = "URL",
        default_value = "http://127.0.0.1:9180"
    )]
    pub api: String,
    /// A file whose first line is the API's bearer token (the daemon's --api-token-file).
    #[arg(
        long,
        global = true,
        env = "TRAPEZE_API_TOKEN_FILE",
        value_name = "FILE"
    )]
    pub api_token_file: Option<PathBuf>,
    /// Print the API's JSON answer instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    /// Seconds to wait for the API.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 10)]
    pub timeout: u64,
    /// What to do.
    #[command(subcommand)]
    pub cmd: Cmd,
}

/// `--if-version`.
#[derive(Debug, Clone, Copy, Args)]
pub struct IfVersion {
    /// Apply only if the configuration is at this version (else: refused, 409).
    #[arg(long, value_name = "V")]
    pub if_version: Option<u64>,
}

/// The commands.
#[derive(Debug, Clone, Subcommand)]
pub enum Cmd {
    /// List the VIPs and their backends (like ipvsadm -Ln).
    #[command(visible_alias = "ls")]
    List,
    /// Show one VIP and its backends.
    Show {
        /// VIP name.
        name: String,
    },
    /// Add a VIP.
    AddVip {
        /// VIP name.
        name: String,
        /// Address and port, e.g. 10.0.0.10:80 (an IPv6 address in brackets).
        #[arg(value_name = "ADDR:PORT")]
        endpoint: SocketAddr,
        /// A member backend (an existing one; repeat for more).
        #[arg(long = "backend", value_name = "NAME")]
        backends: Vec<String>,
        /// Dataplane port where the clients arrive (default: the one the VIPs share).
        #[arg(long, value_name = "PORT")]
        client_port: Option<String>,
        /// Direct server return: tunnel to the backends, which answer the clients directly
        /// (default: NAT).
        #[arg(long)]
        dsr: bool,
        /// DSR tunnel: `ipip` (default) or `gue`.
        #[arg(long, requires = "dsr", value_name = "ipip|gue")]
        encap: Option<String>,
        /// DSR with GUE: the servers' GUE UDP port (default 6080).
        #[arg(long, requires = "dsr", value_name = "N")]
        gue_port: Option<u16>,
        /// DSR outer source: `gateway` (default) or a prefix of the VIP's family to hash it
        /// from per flow (so the servers' RSS spreads flows), e.g. 10.91.1.0/24.
        #[arg(long, requires = "dsr", value_name = "gateway|PREFIX")]
        outer_source: Option<String>,
        /// A stateless join port: subflows to ADDR:PORT go to backend NAME (repeatable).
        #[arg(long = "join-port", value_name = "NAME=PORT", value_parser = parse_join_port)]
        join_ports: Vec<(String, u16)>,
        /// What the gateway announces to MPTCP clients: off (default), join-ports, backend.
        #[arg(long, value_name = "off|join-ports|backend", value_parser = parse_announce)]
        announce: Option<AnnounceMode>,
        /// Set the C flag ("do not join the initial address") in the MP_CAPABLE SYN/ACK
        /// (NAT). Default: on where an announcement depends on it.
        #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
        deny_join_initial: Option<bool>,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Remove a VIP (its flows are dropped).
    RemoveVip {
        /// VIP name.
        name: String,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Add a backend to a VIP.
    AddBackend {
        /// VIP name.
        vip: String,
        /// Backend name.
        name: String,
        /// IPv4 address.
        #[arg(long, value_name = "ADDR")]
        ipv4: Option<std::net::Ipv4Addr>,
        /// IPv6 address.
        #[arg(long, value_name = "ADDR")]
        ipv6: Option<std::net::Ipv6Addr>,
        /// Service port on the backend.
        #[arg(long, value_name = "PORT")]
        port: u16,
        /// Maglev weight (0..=65535).
        #[arg(long, value_name = "W", default_value_t = 1)]
        weight: u32,
        /// Dataplane port towards the backend (default: the one the backends share).
        #[arg(long, value_name = "PORT")]
        egress: Option<String>,
        /// Static MAC of the backend or next hop (default: ARP/NDP).
        #[arg(long, value_name = "MAC")]
        mac: Option<String>,
        /// An address the clients can reach it on directly: draining it (or a graceful
        /// removal) moves its MPTCP connections there.
        #[arg(long, value_name = "ADDR")]
        direct: Option<std::net::IpAddr>,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Remove a backend: graceful (drain, then remove) unless --hard.
    RemoveBackend {
        /// Backend name.
        name: String,
        /// Remove now: its flows are dropped and its joins refused while it is out (added back
        /// within 10 min with the same addresses and port, they resume).
        #[arg(long)]
        hard: bool,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Drain a backend: no new connections; flows and joins continue.
    Drain {
        /// Backend name.
        name: String,
        /// Drop the remaining flows after this many seconds.
        #[arg(long, value_name = "SECS")]
        deadline: Option<u64>,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Make a draining backend take new connections again.
    Undrain {
        /// Backend name.
        name: String,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Set a backend's Maglev weight.
    SetWeight {
        /// Backend name.
        name: String,
        /// New weight (0..=65535; 0: no new connections).
        weight: u32,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Reload the configuration file (validated first; on error the old one keeps serving).
    Reload {
        /// File to load (default: the daemon's).
        path: Option<String>,
        #[command(flatten)]
        v: IfVersion,
    },
    /// Counters per worker, VIP, backend, token table and control plane.
    Stats,
    /// The Prometheus metrics text.
    Metrics,
    /// Version, last reload, uptime.
    Status,
    /// The instance's announcement state: serving, draining or stopping, and which VIPs serve.
    Instance,
    /// Withdraw this instance's VIPs from BGP (forwarding goes on: ECMP moves the flows away).
    InstanceDrain,
    /// Announce this instance's VIPs again.
    InstanceUndrain,
    /// Run under ExaBGP (`process` ... `run trapezectl --api ... bgp-feed ...`): poll the
    /// instance and print ExaBGP announce/withdraw lines whenever what should be announced
    /// changes; withdraw everything when the API is gone (the daemon died).
    BgpFeed {
        /// Next hop of the IPv4 VIPs (IPv4 VIPs are not announced without it).
        #[arg(long, value_name = "ADDR")]
        next_hop4: Option<IpAddr>,
        /// Next hop of the IPv6 VIPs.
        #[arg(long, value_name = "ADDR")]
        next_hop6: Option<IpAddr>,
        /// Send IPv4 routes to this BGP neighbour only (default: every neighbour).
        #[arg(long, value_name = "ADDR")]
        neighbor4: Option<IpAddr>,
        /// Send IPv6 routes to this BGP neighbour only.
        #[arg(long, value_name = "ADDR")]
        neighbor6: Option<IpAddr>,
        /// Poll period in milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 200)]
        interval_ms: u64,
        /// Failed polls in a row before withdrawing (a refused connection withdraws at once).
        #[arg(long, value_name = "N", default_value_t = 3)]
        fail_after: u32,
        /// Announce only these VIPs (by name; repeat; default: all).
        #[arg(long = "vip", value_name = "NAME")]
        vips: Vec<String>,
    },
}

/// Where the API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiTarget {
    /// TCP: `host:port` (also the `Host` header).
    Tcp(String),
    /// A Unix socket.
    Unix(PathBuf),
}

impl ApiTarget {
    /// `http://HOST[:PORT][/]`, `HOST:PORT`, `unix:/PATH` or `/PATH`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            let p = p.strip_prefix("//").unwrap_or(p);
            if p.is_empty() {
                return Err("--api unix: needs a socket path".into());
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        if s.starts_with("https://") {
            return Err("--api: https is not supported (the API listens on a local address or a Unix socket)".into());
        }
        let host = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        if host.is_empty() || host.contains('/') {
            return Err(format!(
                "--api: {s:?} is not http://HOST:PORT or unix:/PATH"
            ));
        }
        // A port is present unless the text ends in the host (`localhost`, `[::1]`, `1.2.3.4`).
        let has_port = match host.rfind(':') {
            Some(i) => host.starts_with('[') == host[..i].ends_with(']'),
            None => false,
        };
        Ok(Self::Tcp(if has_port {
            host.to_string()
        } else {
            format!("{host}:{DEFAULT_PORT}")
        }))
    }
}

impl std::fmt::Display for ApiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Tcp(h) => write!(f, "http://{h}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpReply {
    /// Status code.
    pub status: u16,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body (chunked encoding undone).
    pub body: Vec<u8>,
}

impl HttpReply {
    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole answer. `body` is sent as JSON. `if_match` adds an
/// `If-Match` header.
pub fn http_request(
    target: &ApiTarget,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    if_match: Option<u64>,
    timeout: Duration,
) -> io::Result<HttpReply> {
    http_request_auth(target, None, method, path, body, if_match, timeout)
}

/// [`http_request`] with a bearer token (`Authorization: Bearer TOKEN`). The HTTP is hyper's
/// client (HTTP/1.1 over a tokio TCP or Unix stream, one connection per request); `timeout`
/// bounds the whole exchange. A connection refused (or a missing socket file) keeps its
/// [`io::ErrorKind`], so callers can tell "nothing listens" from other failures.
pub fn http_request_auth(
    target: &ApiTarget,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    if_match: Option<u64>,
    timeout: Duration,
) -> io::Result<HttpReply> {
    use hyper::header;
    let host = match target {
        ApiTarget::Tcp(h) => h.as_str(),
        ApiTarget::Unix(_) => "localhost",
    };
    let method = hyper::Method::from_bytes(method.as_bytes()).map_err(io::Error::other)?;
    let mut req = hyper::Request::builder()
        .method(method.clone())
        .uri(path)
        .header(header::HOST, host)
        .header(
            header::USER_AGENT,
            concat!("trapezectl/", env!("CARGO_PKG_VERSION")),
        )
        .header(header::ACCEPT, "application/json, text/plain");
    if let Some(v) = if_match {
        req = req.header(header::IF_MATCH, format!("\"{v}\""));
    }
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let body = body.unwrap_or_default();
    if !body.is_empty() || method == hyper::Method::POST || method == hyper::Method::PUT {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    let req = req
        .body(http_body_util::Full::new(
            hyper::body::Bytes::copy_from_slice(body),
        ))
        .map_err(io::Error::other)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    rt.block_on(async {
        let exchange = async {
            match target {
                ApiTarget::Tcp(h) => {
                    send(tokio::net::TcpStream::connect(h.as_str()).await?, req).await
                }
                #[cfg(unix)]
                ApiTarget::Unix(p) => send(tokio::net::UnixStream::connect(p).await?, req).await,
                #[cfg(not(unix))]
                ApiTarget::Unix(_) => Err(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "Unix sockets need a Unix system",
                )),
            }
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", timeout.as_millis()),
                ))
            })
    })
}

async fn send<S>(
    stream: S,
    req: hyper::Request<http_body_util::Full<hyper::body::Bytes>>,
) -> io::Result<HttpReply>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use http_body_util::BodyExt;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(io::Error::other)?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(io::Error::other)?;
    let status = resp.status().as_u16();
    let content_type = resp
        .headers()
        .get(hyper::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes()
        .to_vec();
    drop(sender);
    conn.abort();
    Ok(HttpReply {
        status,
        content_type,
        body,
    })
}

/// Percent-encodes a path segment (names are plain already; anything else is escaped).
fn seg(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            o.push(b as char);
        } else {
            let _ = write!(o, "%{b:02X}");
        }
    }
    o
}

fn parse_join_port(s: &str) -> Result<(String, u16), String> {
    let (name, port) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=PORT"))?;
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("{port:?}: not a port (1..=65535)"))?;
    Ok((name.to_string(), port))
}

fn parse_announce(s: &str) -> Result<AnnounceMode, String> {
    match s {
        "off" => Ok(AnnounceMode::Off),
        "join-ports" => Ok(AnnounceMode::JoinPorts),
        "backend" => Ok(AnnounceMode::Backend),
        _ => Err(format!("{s:?}: expected off, join-ports or backend")),
    }
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{s:?}: expected on or off")),
    }
}

/// The HTTP request of a command: method, path, JSON body, `If-Match`.
pub fn request_of(cmd: &Cmd) -> (&'static str, String, Option<String>, Option<u64>) {
    let json = |v: serde_json::Value| Some(v.to_string());
    match cmd {
        Cmd::List => ("GET", "/vips".into(), None, None),
        Cmd::Show { name } => ("GET", format!("/vips/{}", seg(name)), None, None),
        Cmd::AddVip {
            name,
            endpoint,
            backends,
            client_port,
            dsr,
            encap,
            gue_port,
            outer_source,
            join_ports,
            announce,
            deny_join_initial,
            v,
        } => {
            let body = VipBody {
                name: name.clone(),
                address: endpoint.ip(),
                port: endpoint.port(),
                protocol: Default::default(),
                mode: if *dsr { Mode::Dsr } else { Mode::Nat },
                dsr: dsr.then(|| DsrBody {
                    encap: encap.clone(),
                    gue_port: *gue_port,
                    outer_source: outer_source.clone(),
                }),
                client_port: client_port.clone(),
                backends: backends.clone(),
                join_ports: join_ports.iter().cloned().collect(),
                announce: *announce,
                deny_join_initial: *deny_join_initial,
            };
            (
                "POST",
                "/vips".into(),
                serde_json::to_string(&body).ok(),
                v.if_version,
            )
        }
        Cmd::RemoveVip { name, v } => {
            ("DELETE", format!("/vips/{}", seg(name)), None, v.if_version)
        }
        Cmd::AddBackend {
            vip,
            name,
            ipv4,
            ipv6,
            port,
            weight,
            egress,
            mac,
            direct,
            v,
        } => {
            let body = BackendBody {
                name: name.clone(),
                ipv4: *ipv4,
                ipv6: *ipv6,
                port: *port,
                weight: *weight,
                egress_port: egress.clone(),
                mac: mac.clone(),
                direct: *direct,
            };
            (
                "POST",
                format!("/vips/{}/backends", seg(vip)),
                serde_json::to_string(&body).ok(),
                v.if_version,
            )
        }
        Cmd::RemoveBackend { name, hard, v } => (
            "DELETE",
            format!(
                "/backends/{}?mode={}",
                seg(name),
                if *hard { "hard" } else { "graceful" }
            ),
            None,
            v.if_version,
        ),
        Cmd::Drain { name, deadline, v } => (
            "POST",
            format!("/backends/{}/drain", seg(name)),
            match deadline {
                Some(d) => json(serde_json::json!({ "deadline_s": d })),
                None => None,
            },
            v.if_version,
        ),
        Cmd::Undrain { name, v } => (
            "POST",
            format!("/backends/{}/undrain", seg(name)),
            None,
            v.if_version,
        ),
        Cmd::SetWeight { name, weight, v } => (
            "PUT",
            format!("/backends/{}/weight", seg(name)),
            json(serde_json::json!({ "weight": weight })),
            v.if_version,
        ),
        Cmd::Reload { path, v } => (
            "POST",
            "/reload".into(),
            path.as_ref()
                .and_then(|p| json(serde_json::json!({ "path": p }))),
            v.if_version,
        ),
        Cmd::Stats => ("GET", "/stats".into(), None, None),
        Cmd::Metrics => ("GET", "/metrics".into(), None, None),
        Cmd::Status => ("GET", "/status".into(), None, None),
        Cmd::Instance | Cmd::BgpFeed { .. } => ("GET", "/instance".into(), None, None),
        Cmd::InstanceDrain => ("POST", "/instance/drain".into(), None, None),
        Cmd::InstanceUndrain => ("POST", "/instance/undrain".into(), None, None),
    }
}

fn endpoint(addr: Option<IpAddr>, port: u16) -> String {
    match addr {
        Some(IpAddr::V4(a)) => format!("{a}:{port}"),
        Some(IpAddr::V6(a)) => format!("[{a}]:{port}"),
        None => format!("-:{port}"),
    }
}

/// The ipvsadm -Ln-like table of `list` and `show`.
pub fn format_vips(vips: &[VipView]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Prot LocalAddress:Port                 Name             Mode   NewConns   Joins"
    );
    let _ = writeln!(
        s,
        "  -> RemoteAddress:Port               Name             Weight State    ActiveFlows NewConns   Joins"
    );
    for v in vips {
        let _ = writeln!(
            s,
            "TCP  {:<32} {:<16} {:<6} {:<10} {}",
            endpoint(Some(v.address), v.port),
            v.name,
            match v.mode {
                Mode::Nat => "nat",
                Mode::Dsr => "dsr",
            },
            v.new_conns,
            v.joins
        );
        if !v.join_ports.is_empty() || v.announce != AnnounceMode::Off || v.deny_join_initial {
            let ports: Vec<String> = v
                .join_ports
                .iter()
                .map(|(n, p)| format!("{n}={p}"))
                .collect();
            let _ = writeln!(
                s,
                "     join ports: {}  announce: {}  C flag: {}",
                if ports.is_empty() {
                    "-".to_string()
                } else {
                    ports.join(" ")
                },
                match v.announce {
                    AnnounceMode::Off => "off",
                    AnnounceMode::JoinPorts => "join-ports",
                    AnnounceMode::Backend => "backend",
                },
                if v.deny_join_initial { "on" } else { "off" }
            );
        }
        for b in &v.backends {
            let _ = writeln!(
                s,
                "  -> {:<32} {:<16} {:<6} {:<8} {:<11} {:<10} {}",
                endpoint(b.address, b.port),
                b.name,
                b.weight,
                b.state.as_str(),
                b.active_flows.map_or("-".to_string(), |a| a.to_string()),
                b.new_conns,
                b.joins
            );
        }
    }
    s
}

/// The text of `stats`.
pub fn format_stats(st: &StatsView) -> String {
    let mut s = String::new();
    for w in &st.workers {
        let _ = writeln!(
            s,
            "worker {}: rx {} tx {} forwarded {} replied {} punted {} handed_off {} dropped {} flows {}/{}",
            w.worker, w.rx, w.tx, w.forwarded, w.replied, w.punted, w.handed_off, w.dropped,
            w.flows, w.flow_capacity
        );
        for (r, n) in &w.drops {
            let _ = writeln!(s, "  drop {r} {n}");
        }
        for (e, n) in &w.events {
            let _ = writeln!(s, "  event {e} {n}");
        }
    }
    for p in &st.ports {
        let _ = write!(
            s,
            "port {}: rx {} tx {} tx_forwarded {} tx_replies {} tx_control {} tx_unsent {}",
            p.name,
            p.rx_packets,
            p.tx_packets,
            p.tx_forwarded,
            p.tx_replies,
            p.tx_control,
            p.tx_unsent
        );
        if let Some(d) = p.device {
            let _ = write!(
                s,
                " device_rx {} device_tx {} rx_missed {} rx_errors {} tx_errors {} rx_nombuf {}",
                d.rx_packets, d.tx_packets, d.rx_missed, d.rx_errors, d.tx_errors, d.rx_nombuf
            );
        }
        let _ = writeln!(s);
    }
    for v in &st.vips {
        let _ = write!(
            s,
            "vip {}: packets {} bytes {} new_conns {} joins {}",
            v.name, v.packets, v.bytes, v.new_conns, v.joins
        );
        if let (Some(p), Some(b)) = (v.to_client_packets, v.to_client_bytes) {
            let _ = write!(s, " to_client_packets {p} to_client_bytes {b}");
        }
        let _ = writeln!(s);
    }
    for b in &st.backends {
        let _ = write!(
            s,
            "backend {}: packets {} bytes {} new_conns {} joins {}",
            b.name, b.packets, b.bytes, b.new_conns, b.joins
        );
        if let Some(st) = b.state {
            let _ = write!(s, " state {st}");
        }
        if let Some(a) = b.active_flows {
            let _ = write!(s, " active_flows {a}");
        }
        if let Some(m) = b.migration {
            let _ = write!(
                s,
                " migration announced {} migrated {} closed {} left_behind {} pending {} \
                 drains_completed early {} deadline {}",
                m.announced,
                m.migrated,
                m.closed,
                m.left_behind,
                m.pending,
                m.completed_early,
                m.completed_at_deadline
            );
        }
        let _ = writeln!(s);
    }
    let t = &st.tokens;
    let _ = writeln!(
        s,
        "tokens: entries {} capacity {} collisions {} unknown_token_joins {}",
        t.entries, t.capacity, t.collisions, t.unknown_token_joins
    );
    if let Some(c) = &st.cluster {
        let _ = writeln!(
            s,
            "cluster: sent {} datagrams {} records, received {} datagrams {} records, applied {}, rejected auth {} sequence {} malformed {} unknown_peer {} epoch {}, sessions {}, remote_tokens {}, propagation n {} mean {} us max {} us",
            c.datagrams_sent,
            c.records_sent,
            c.datagrams_received,
            c.records_received,
            c.records_applied,
            c.rejected_auth,
            c.rejected_sequence,
            c.rejected_malformed,
            c.rejected_unknown_peer,
            c.rejected_epoch,
            c.sessions,
            c.remote_tokens,
            c.delay_count,
            c.delay_sum_us.checked_div(c.delay_count).unwrap_or(0),
            c.delay_max_us
        );
    }
    let c = &st.control;
    let _ = writeln!(
        s,
        "control: version {} reloads_ok {} reloads_error {} pool_changes {} \
         drains_completed early {} deadline {}",
        c.version,
        c.reloads_ok,
        c.reloads_error,
        c.pool_changes,
        c.drains_completed_early,
        c.drains_completed_at_deadline
    );
    s
}

/// The text of `status`.
pub fn format_status(st: &StatusView) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "version: {}", st.version);
    let _ = writeln!(s, "last good version: {}", st.last_good_version);
    let _ = writeln!(s, "uptime: {}s", st.uptime_s);
    let _ = writeln!(s, "workers: {}", st.workers);
    if let Some(p) = &st.config_path {
        let _ = writeln!(s, "config: {p}");
    }
    match &st.last_reload {
        None => {
            let _ = writeln!(s, "last reload: none");
        }
        Some(r) if r.ok => {
            let _ = writeln!(
                s,
                "last reload: ok ({}, at {} s since the epoch, version {})",
                r.path, r.unix_time_s, r.version
            );
        }
        Some(r) => {
            let _ = writeln!(
                s,
                "last reload: FAILED ({}, at {} s since the epoch; version {} kept serving)",
                r.path, r.unix_time_s, r.version
            );
            for l in r.error.as_deref().unwrap_or_default().lines() {
                let _ = writeln!(s, "  {l}");
            }
        }
    }
    s
}

fn decode<T: DeserializeOwned>(r: &HttpReply) -> Result<T, String> {
    serde_json::from_slice(&r.body)
        .map_err(|e| format!("unexpected answer from the API ({e}): {}", r.text()))
}

/// Runs a parsed command, printing to `out` / `err`; returns the exit status.
pub fn run(args: &CtlArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let target = match ApiTarget::parse(&args.api) {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            return EXIT_USAGE;
        }
    };
    let token = match args
        .api_token_file
        .as_deref()
        .map(super::server::read_token_file)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            let _ = writeln!(err, "error: --api-token-file: {e}");
            return EXIT_USAGE;
        }
    };
    if let Cmd::BgpFeed {
        next_hop4,
        next_hop6,
        neighbor4,
        neighbor6,
        interval_ms,
        fail_after,
        vips,
    } = &args.cmd
    {
        let o = super::instance::FeedOptions {
            next_hop4: *next_hop4,
            next_hop6: *next_hop6,
            neighbor4: *neighbor4,
            neighbor6: *neighbor6,
            interval: Duration::from_millis((*interval_ms).max(10)),
            fail_after: *fail_after,
            only: vips.clone(),
            token: token.clone(),
        };
        return super::instance::feed(&target, &o, out, err);
    }
    let (method, path, body, if_match) = request_of(&args.cmd);
    let timeout = Duration::from_secs(args.timeout.max(1));
    let reply = match http_request_auth(
        &target,
        token.as_deref(),
        method,
        &path,
        body.as_deref().map(str::as_bytes),
        if_match,
        timeout,
    ) {
        Ok(r) => r,
        Err(e) => {
            let _ = writeln!(err, "error: cannot reach the API at {target}: {e}");
            return EXIT_ERROR;
        }
    };
    if reply.status >= 400 {
        match serde_json::from_slice::<ErrorBody>(&reply.body) {
            Ok(e) => {
                let _ = match &e.field {
                    Some(f) => writeln!(err, "error: {f}: {} (HTTP {})", e.reason, reply.status),
                    None => writeln!(err, "error: {} (HTTP {})", e.reason, reply.status),
                };
            }
            Err(_) => {
                let _ = writeln!(err, "error: HTTP {}: {}", reply.status, reply.text().trim());
            }
        }
        return EXIT_ERROR;
    }
    let printed = if args.json || matches!(args.cmd, Cmd::Metrics) {
        Ok(reply.text())
    } else {
        match &args.cmd {
            Cmd::List => decode::<Vec<VipView>>(&reply).map(|v| format_vips(&v)),
            Cmd::Show { .. } => decode::<VipView>(&reply).map(|v| format_vips(&[v])),
            Cmd::Stats => decode::<StatsView>(&reply).map(|s| format_stats(&s)),
            Cmd::Status => decode::<StatusView>(&reply).map(|s| format_status(&s)),
            Cmd::Instance | Cmd::InstanceDrain | Cmd::InstanceUndrain => {
                decode::<super::instance::InstanceView>(&reply)
                    .map(|v| super::instance::format_instance(&v))
            }
            _ => decode::<AppliedBody>(&reply).map(|a| format!("ok: version {}\n", a.version)),
        }
    };
    match printed {
        Ok(text) => {
            let _ = out.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = writeln!(out);
            }
            EXIT_OK
        }
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            EXIT_ERROR
        }
    }
}

/// `main` of `trapezectl`.
pub fn ctl_main<I, T>(argv: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args = match CtlArgs::try_parse_from(argv) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return std::process::ExitCode::from(if e.use_stderr() { EXIT_USAGE } else { EXIT_OK });
        }
    };
    let code = run(&args, &mut io::stdout().lock(), &mut io::stderr().lock());
    std::process::ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn command_is_well_formed() {
        CtlArgs::command().debug_assert();
    }

    #[test]
    fn api_targets() {
        let t = |s| ApiTarget::parse(s).unwrap();
        assert_eq!(
            t("http://127.0.0.1:1/"),
            ApiTarget::Tcp("127.0.0.1:1".into())
        );
        assert_eq!(
            t("localhost"),
            ApiTarget::Tcp(format!("localhost:{DEFAULT_PORT}"))
        );
        assert_eq!(t("[::1]"), ApiTarget::Tcp(format!("[::1]:{DEFAULT_PORT}")));
        assert_eq!(t("[::1]:5"), ApiTarget::Tcp("[::1]:5".into()));
        assert_eq!(t("unix:/run/x"), ApiTarget::Unix("/run/x".into()));
        assert_eq!(t("/run/x"), ApiTarget::Unix("/run/x".into()));
        for bad in ["https://x:1", "unix:", "http://x/y", ""] {
            assert!(ApiTarget::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_of_commands() {
        let p = |args: &[&str]| {
            let mut v = vec!["trapezectl"];
            v.extend_from_slice(args);
            request_of(&CtlArgs::try_parse_from(v).unwrap().cmd)
        };
        assert_eq!(
            p(&["remove-backend", "a b", "--hard", "--if-version", "3"]),
            ("DELETE", "/backends/a%20b?mode=hard".into(), None, Some(3))
        );
        let (m, path, body, _) = p(&["set-weight", "s1", "7"]);
        assert_eq!((m, path.as_str()), ("PUT", "/backends/s1/weight"));
        assert_eq!(body.unwrap(), r#"{"weight":7}"#);
        let (_, _, body, _) = p(&["add-vip", "web", "[fd00::1]:443", "--backend", "s1"]);
        let v: VipBody = serde_json::from_str(&body.unwrap()).unwrap();
        assert_eq!(v.port, 443);
        assert_eq!(v.backends, vec!["s1".to_string()]);
        assert!(CtlArgs::try_parse_from(["trapezectl", "add-vip", "web", "1.2.3.4"]).is_err());
        assert_eq!(v.mode, Mode::Nat);
        assert_eq!(v.dsr, None);
        let (_, _, body, _) = p(&[
            "add-vip",
            "d",
            "10.0.0.1:80",
            "--dsr",
            "--encap",
            "gue",
            "--gue-port",
            "7000",
            "--outer-source",
            "10.1.0.0/24",
        ]);
        let v: VipBody = serde_json::from_str(&body.unwrap()).unwrap();
        assert_eq!(v.mode, Mode::Dsr);
        let d = v.dsr.unwrap();
        assert_eq!(d.encap.as_deref(), Some("gue"));
        assert_eq!(d.gue_port, Some(7000));
        assert_eq!(d.outer_source.as_deref(), Some("10.1.0.0/24"));
        // DSR settings without --dsr are a usage error, not silently ignored.
        assert!(CtlArgs::try_parse_from([
            "trapezectl",
            "add-vip",
            "d",
            "10.0.0.1:80",
            "--encap",
            "gue"
        ])
        .is_err());
        // Join ports and the announce mode.
        let (_, _, body, _) = p(&[
            "add-vip",
            "j",
            "10.0.0.2:80",
            "--backend",
            "s1",
            "--join-port",
            "s1=18081",
            "--announce",
            "join-ports",
        ]);
        let v: VipBody = serde_json::from_str(&body.unwrap()).unwrap();
        assert_eq!(v.join_ports.get("s1"), Some(&18081));
        assert_eq!(v.announce, Some(AnnounceMode::JoinPorts));
        for bad in [
            ["--join-port", "s1"],
            ["--join-port", "s1=0"],
            ["--announce", "loud"],
        ] {
            let mut args = vec!["trapezectl", "add-vip", "j", "10.0.0.2:80"];
            args.extend_from_slice(&bad);
            assert!(CtlArgs::try_parse_from(args).is_err(), "{bad:?}");
        }
    }
}

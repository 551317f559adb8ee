//! The REST server: axum over a current-thread tokio runtime, on a thread of its own.
//!
//! The server holds no state: it parses a route into a [`Request`], hands it to the control
//! thread through a bounded channel ([`ToControl`]) with a one-slot reply channel ([`Reply`]),
//! and waits for the [`Response`] at most [`ServeOptions::reply_timeout`] (then `503`). The
//! control thread owns the configuration, applies changes one at a time (so concurrent updates
//! are serialised there, and `if_version` / `If-Match` makes a client's read-modify-write safe)
//! and answers.
//!
//! ```text
//! client --HTTP--> trapeze-api thread --(Request, Reply)--> control thread --> publish pool
//!                      <------------------ Response --------------'
//! ```
//!
//! ## Failure containment
//!
//! * Everything the server refuses by itself (bad JSON, unknown field, wrong type, body over
//!   the limit, bad name, bad `If-Match`) is answered without bothering the control thread, and
//!   changes nothing.
//! * Each request runs in its own tokio task: a panic there is answered with a `500` and the
//!   server goes on; a panic of the whole thread ends the API only ([`ApiHandle::is_running`]
//!   turns false), never the process nor the forwarding workers.
//! * The control thread is never blocked by the API: the request channel is bounded and sent to
//!   with `try_send` (a full queue is a `503`), and a reply to a client that gave up is simply
//!   dropped (the control thread must ignore the error of `Reply::send`, see [`answer`]).
//!
//! The daemon's control loop polls its receiver (`try_recv`) and answers with [`answer`]; the
//! channel needs a capacity of at least 1 (e.g. 64): with a rendezvous channel every
//! `try_send` would fail unless the control thread happened to be blocked in `recv`.

#![warn(clippy::arithmetic_side_effects)]

use core::fmt;
use core::str::FromStr;
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::routing::{get, post, put};
use axum::Router;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::metrics::{CONTENT_TYPE_OPENMETRICS, CONTENT_TYPE_TEXT};
use super::types::{
    check_name, AppliedBody, BackendBody, DrainBody, EmptyBody, ErrorBody, ReloadBody, RemoveMode,
    Request, Response, VipBody, WeightBody,
};
use crate::config::rules;
use crate::config::units::parse_mac;

/// Default TCP port of the API (`127.0.0.1:9180`).
pub const DEFAULT_PORT: u16 = 9180;
/// Default time the server waits for the control thread's answer.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(2);
/// Default largest request body (larger: `413`).
pub const DEFAULT_BODY_LIMIT: usize = 64 * 1024;
/// Time in-flight requests get to finish once the server is asked to stop.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(500);

/// The one-slot channel on which the control thread answers a request.
pub type Reply = SyncSender<Response>;
/// What the server sends the control thread: the request and where to answer.
pub type ControlMsg = (Request, Reply);
/// The sending side of the control thread's request queue (`std::sync::mpsc::sync_channel`,
/// capacity >= 1).
pub type ToControl = SyncSender<ControlMsg>;

/// Answers a request: the control thread's side of [`Reply`]. A client that gave up (timeout,
/// closed connection) is not an error: the answer is dropped.
pub fn answer(reply: &Reply, response: Response) {
    let _ = reply.try_send(response);
}

/// Where the API listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BindAddr {
    /// A TCP address (`127.0.0.1:9180`, `[::1]:9180`; port 0: any free port).
    Tcp(SocketAddr),
    /// A Unix stream socket path (created with mode 0660; a stale socket file is replaced,
    /// a live one is an `AddrInUse` error).
    Unix(PathBuf),
}

impl Default for BindAddr {
    fn default() -> Self {
        Self::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, DEFAULT_PORT)))
    }
}

impl FromStr for BindAddr {
    type Err = String;

    /// `127.0.0.1:9180`, `[::1]:9180`, `http://127.0.0.1:9180`, `unix:/run/trapeze.sock` or an
    /// absolute path.
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Self::Unix(PathBuf::from(p)));
        }
        if s.starts_with('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        let hostport = s.strip_prefix("http://").unwrap_or(s).trim_end_matches('/');
        hostport.parse::<SocketAddr>().map(Self::Tcp).map_err(|_| {
            format!("{s:?} is neither ADDRESS:PORT (127.0.0.1:{DEFAULT_PORT}, [::1]:{DEFAULT_PORT}) nor unix:PATH")
        })
    }
}

impl fmt::Display for BindAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(a) => write!(f, "http://{a}"),
            Self::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Default time a client has to send a request's headers (also the longest a kept-alive
/// connection may sit idle before its next request).
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// Default longest time a connection may go without any byte read or written.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest number of open connections; more are closed as soon as they are accepted.
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a request waits for the control thread (then `503`).
    pub reply_timeout: Duration,
    /// Largest request body in bytes (then `413`).
    pub body_limit: usize,
    /// Time to send the request headers (and idle time between two requests of a connection);
    /// then the connection is closed.
    pub header_timeout: Duration,
    /// Longest time without a byte read or written (a slow body); then the connection is
    /// closed.
    pub idle_timeout: Duration,
    /// Connections served at once; more are closed at once (the client sees a reset or an
    /// empty answer and may retry).
    pub max_connections: usize,
    /// The bearer token every request must carry (`Authorization: Bearer TOKEN`); required when
    /// the API listens on a TCP address that is not loopback.
    pub token: Option<String>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            token: None,
        }
    }
}

/// Reads a bearer token file (`--api-token-file`): its first line, trimmed; at least 16
/// characters, visible ASCII only.
pub fn read_token_file(path: &std::path::Path) -> Result<String, String> {
    let text =
        crate::config::read::read_config(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!(
            "{}: the token must be at least 16 visible ASCII characters on the first line",
            path.display()
        ));
    }
    Ok(token)
}

/// The running server. Dropping it (or [`shutdown`](Self::shutdown)) stops the server: the
/// listener closes, in-flight requests get a short grace period, the thread is joined and a
/// Unix socket file is removed.
#[derive(Debug)]
pub struct ApiHandle {
    local: BindAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl ApiHandle {
    /// Where the server actually listens (the port chosen by the system for port 0).
    pub fn local_addr(&self) -> &BindAddr {
        &self.local
    }

    /// Whether the server thread is still running.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops the server and waits for its thread.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            // A panicked server thread has already been reported by the panic hook; it must not
            // take the caller down.
            let _ = t.join();
        }
        if let BindAddr::Unix(p) = &self.local {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for ApiHandle {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

enum StdListener {
    Tcp(std::net::TcpListener),
    #[cfg(unix)]
    Unix(std::os::unix::net::UnixListener),
}

fn bind(addr: &BindAddr) -> io::Result<(StdListener, BindAddr)> {
    match addr {
        BindAddr::Tcp(a) => {
            let l = std::net::TcpListener::bind(a)?;
            l.set_nonblocking(true)?;
            let local = BindAddr::Tcp(l.local_addr()?);
            Ok((StdListener::Tcp(l), local))
        }
        #[cfg(unix)]
        BindAddr::Unix(p) => {
            use std::os::unix::fs::{FileTypeExt, PermissionsExt};
            if let Ok(meta) = std::fs::symlink_metadata(p) {
                if !meta.file_type().is_socket() {
                    return Err(io::Error::new(
                        io::ErrorKind::AlreadyExists,
                        format!("{} exists and is not a socket", p.display()),
                    ));
                }
                if std::os::unix::net::UnixStream::connect(p).is_ok() {
                    return Err(io::Error::new(
                        io::ErrorKind::AddrInUse,
                        format!("{} is in use by a running server", p.display()),
                    ));
                }
                std::fs::remove_file(p)?;
            }
            let l = std::os::unix::net::UnixListener::bind(p)?;
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o660))?;
            l.set_nonblocking(true)?;
            Ok((StdListener::Unix(l), addr.clone()))
        }
        #[cfg(not(unix))]
        BindAddr::Unix(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "Unix sockets need a Unix system",
        )),
    }
}

/// Starts the API server on its own thread with the default [`ServeOptions`]. Binding errors
/// are returned here; afterwards the server only stops through its [`ApiHandle`].
pub fn serve(bind: BindAddr, to_control: ToControl) -> io::Result<ApiHandle> {
    serve_with(bind, to_control, ServeOptions::default())
}

/// [`serve`] with explicit options. Refused (`InvalidInput`) without a token on a TCP address
/// that is not loopback.
pub fn serve_with(
    bind_addr: BindAddr,
    to_control: ToControl,
    opts: ServeOptions,
) -> io::Result<ApiHandle> {
    if let BindAddr::Tcp(a) = &bind_addr {
        if !a.ip().is_loopback() && opts.token.is_none() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "the API on {a}, not a loopback address, needs a bearer token \
                     (--api-token-file FILE)"
                ),
            ));
        }
    }
    let (listener, local) = bind(&bind_addr)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let app = router(AppState {
        to_control,
        timeout: opts.reply_timeout,
    })
    .layer(DefaultBodyLimit::max(opts.body_limit));
    let guard = Arc::new(Guard {
        bound: match &local {
            BindAddr::Tcp(a) => Some(a.ip()),
            BindAddr::Unix(_) => None,
        },
        token: opts.token.clone(),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("trapeze-api".into())
        .spawn(move || {
            rt.block_on(run(listener, app, guard, opts, stop_rx));
            // Requests still waiting for the control thread are abandoned.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        })?;
    Ok(ApiHandle {
        local,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

enum Listener {
    Tcp(tokio::net::TcpListener),
    #[cfg(unix)]
    Unix(tokio::net::UnixListener),
}

impl Listener {
    async fn accept(&self) -> io::Result<Conn> {
        match self {
            Self::Tcp(l) => l.accept().await.map(|(s, _)| Conn::Tcp(s)),
            #[cfg(unix)]
            Self::Unix(l) => l.accept().await.map(|(s, _)| Conn::Unix(s)),
        }
    }
}

enum Conn {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

/// The accept loop: at most `max_connections` connections are served at once (more are closed
/// as soon as they are accepted, so they hold no descriptor), each by hyper with the header
/// timeout, and closed after `idle_timeout` without traffic.
async fn run(
    listener: StdListener,
    app: Router,
    guard: Arc<Guard>,
    opts: ServeOptions,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = match listener {
        StdListener::Tcp(l) => tokio::net::TcpListener::from_std(l).map(Listener::Tcp),
        #[cfg(unix)]
        StdListener::Unix(l) => tokio::net::UnixListener::from_std(l).map(Listener::Unix),
    };
    let listener = match listener {
        Ok(l) => l,
        Err(e) => {
            eprintln!("trapeze-api: cannot start: {e}");
            return;
        }
    };
    let max = opts.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => {
                let conn = match accepted {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of descriptors (EMFILE) or a connection reset before it was
                        // accepted: wait a little rather than spin.
                        eprintln!("trapeze-api: accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    drop(conn); // over the limit: closed at once
                    continue;
                };
                let (app, guard, closing) = (app.clone(), Arc::clone(&guard), closing_rx.clone());
                let (header, idle) = (opts.header_timeout, opts.idle_timeout);
                tokio::spawn(async move {
                    match conn {
                        Conn::Tcp(s) => serve_conn(s, app, guard, header, idle, closing).await,
                        #[cfg(unix)]
                        Conn::Unix(s) => serve_conn(s, app, guard, header, idle, closing).await,
                    }
                    drop(permit);
                });
            }
        }
    }
    // Asked to stop, or the handle was dropped: stop accepting, let in-flight requests finish
    // for a moment, then drop whatever is left.
    drop(listener);
    let _ = closing_tx.send(true);
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, slots.acquire_many(all)).await;
}

/// A stream that notes when a byte last went through it.
struct Tracked<S> {
    inner: S,
    last: Arc<std::sync::atomic::AtomicU64>,
    born: tokio::time::Instant,
}

impl<S> Tracked<S> {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> core::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            self.touch();
        }
        r
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
        buf: &[u8],
    ) -> core::task::Poll<io::Result<usize>> {
        let r = std::pin::Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, core::task::Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut core::task::Context<'_>,
    ) -> core::task::Poll<io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn serve_conn<S>(
    stream: S,
    app: Router,
    guard: Arc<Guard>,
    header_timeout: Duration,
    idle_timeout: Duration,
    mut closing: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let last = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let born = tokio::time::Instant::now();
    let io = hyper_util::rt::TokioIo::new(Tracked {
        inner: stream,
        last: Arc::clone(&last),
        born,
    });
    let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let mut app = app.clone();
        let guard = Arc::clone(&guard);
        async move {
            if let Err(refused) = guard.check(&req) {
                return Ok::<_, core::convert::Infallible>(*refused);
            }
            match tower_service::Service::call(&mut app, req).await {
                Ok(r) => Ok(r),
                Err(e) => match e {},
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let tick = idle_timeout
        .checked_div(4)
        .unwrap_or_default()
        .max(Duration::from_millis(10));
    let mut shutting = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            changed = closing.changed(), if !shutting => {
                if changed.is_err() || *closing.borrow() {
                    shutting = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            () = tokio::time::sleep(tick) => {
                let now = u64::try_from(born.elapsed().as_millis()).unwrap_or(u64::MAX);
                let quiet = now.saturating_sub(last.load(std::sync::atomic::Ordering::Relaxed));
                if u128::from(quiet) >= idle_timeout.as_millis() {
                    return; // idle too long: dropping the connection closes it
                }
            }
        }
    }
}

/// The checks made before a request reaches a route: `Host` and `Origin`, the bearer token,
/// and the JSON content type of a body.
#[derive(Debug)]
struct Guard {
    /// The TCP address the API is bound to (`None`: a Unix socket).
    bound: Option<std::net::IpAddr>,
    token: Option<String>,
}

impl Guard {
    fn check<B>(&self, req: &hyper::Request<B>) -> Result<(), Box<HttpResponse>> {
        self.check_inner(req).map_err(Box::new)
    }

    #[allow(clippy::result_large_err)] // boxed by `check`
    fn check_inner<B>(&self, req: &hyper::Request<B>) -> Result<(), HttpResponse> {
        let headers = req.headers();
        let text = |name: header::HeaderName| -> Result<Option<&str>, HttpResponse> {
            match headers.get(&name) {
                None => Ok(None),
                Some(v) => v
                    .to_str()
                    .map(|s| Some(s.trim()))
                    .map_err(|_| error_response(400, format!("{name}: not ASCII text"), None)),
            }
        };
        let host = text(header::HOST)?;
        if let Some(h) = host {
            if !self.host_allowed(authority_host(h)) {
                return Err(error_response(
                    403,
                    format!(
                        "Host {h:?} is not this API's (allowed: localhost, a loopback address{})",
                        self.bound
                            .filter(|a| !a.is_loopback())
                            .map(|a| format!(", {a}"))
                            .unwrap_or_default()
                    ),
                    None,
                ));
            }
        }
        if let Some(o) = text(header::ORIGIN)? {
            let authority = o
                .strip_prefix("http://")
                .or_else(|| o.strip_prefix("https://"))
                .filter(|a| !a.is_empty() && !a.contains('/'));
            let same = match (authority, host) {
                (Some(a), Some(h)) => a.eq_ignore_ascii_case(h),
                (Some(a), None) => self.host_allowed(authority_host(a)),
                (None, _) => false,
            };
            if !same {
                return Err(error_response(
                    403,
                    format!("Origin {o:?} is not this API's own: cross-site requests are refused"),
                    None,
                ));
            }
        }
        if let Some(want) = &self.token {
            let got = text(header::AUTHORIZATION)?
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim);
            if !got.is_some_and(|g| same_secret(g.as_bytes(), want.as_bytes())) {
                let mut r = error_response(
                    401,
                    "a bearer token is required (Authorization: Bearer TOKEN)".into(),
                    None,
                );
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"trapeze\""),
                );
                return Err(r);
            }
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let has_body = headers.contains_key(header::TRANSFER_ENCODING)
                || text(header::CONTENT_LENGTH)?.is_some_and(|n| n != "0");
            match text(header::CONTENT_TYPE)? {
                Some(ct) => {
                    let essence = ct.split(';').next().unwrap_or("").trim();
                    if !essence.eq_ignore_ascii_case("application/json") {
                        return Err(error_response(
                            415,
                            format!("Content-Type {ct:?}: the API takes application/json only"),
                            None,
                        ));
                    }
                }
                None if has_body => {
                    return Err(error_response(
                        415,
                        "a body needs Content-Type: application/json".into(),
                        None,
                    ))
                }
                None => {}
            }
        }
        Ok(())
    }

    /// `localhost`, a loopback address, or the address the API is bound to (any address when it
    /// is bound to all of them): names other than `localhost` are refused, so that a DNS name an
    /// attacker controls (DNS rebinding) cannot reach the API from a browser.
    fn host_allowed(&self, host: &str) -> bool {
        if host.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let bare = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        match bare.parse::<std::net::IpAddr>() {
            Ok(a) => a.is_loopback() || self.bound.is_some_and(|b| b == a || b.is_unspecified()),
            Err(_) => false,
        }
    }
}

/// The host of `host[:port]` / `[v6]:port`.
fn authority_host(a: &str) -> &str {
    if a.starts_with('[') {
        return a.find(']').map_or(a, |i| &a[..=i]);
    }
    match a.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => a,
    }
}

/// Compares two secrets in a time that depends on their lengths only.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Clone)]
struct AppState {
    to_control: ToControl,
    timeout: Duration,
}

type HttpResponse = axum::response::Response;

/// The route table (also served as `GET /`).
pub const ROUTES: &[(&str, &str, &str)] = &[
    (
        "GET",
        "/vips",
        "list the VIPs with their backends and counters",
    ),
    ("GET", "/vips/{name}", "one VIP"),
    (
        "POST",
        "/vips",
        "add a VIP (body: name, address, port, client_port?, backends?)",
    ),
    ("DELETE", "/vips/{name}", "remove a VIP"),
    (
        "POST",
        "/vips/{vip}/backends",
        "add a backend to a VIP (body: name, ipv4?, ipv6?, port, weight?, egress_port?, mac?)",
    ),
    (
        "DELETE",
        "/backends/{name}?mode=graceful|hard",
        "remove a backend",
    ),
    (
        "POST",
        "/backends/{name}/drain",
        "drain a backend (body: deadline_s?)",
    ),
    (
        "POST",
        "/backends/{name}/undrain",
        "make a draining backend active again",
    ),
    (
        "PUT",
        "/backends/{name}/weight",
        "set a backend's weight (body: weight)",
    ),
    (
        "POST",
        "/reload",
        "reload the configuration file (body: path?)",
    ),
    (
        "GET",
        "/stats",
        "counters per worker, VIP, backend, token table and control plane",
    ),
    ("GET", "/metrics", "Prometheus / OpenMetrics text"),
    (
        "GET",
        "/openapi.json",
        "this API's OpenAPI 3.1 description (docs/openapi.json)",
    ),
    ("GET", "/status", "version, last reload, uptime"),
    (
        "GET",
        "/instance",
        "the instance's announcement state (serving, draining, stopping) and which VIPs serve",
    ),
    (
        "POST",
        "/instance/drain",
        "withdraw this instance's VIPs (forwarding goes on)",
    ),
    (
        "POST",
        "/instance/undrain",
        "announce this instance's VIPs again",
    ),
];

fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/vips", get(list_vips).post(add_vip))
        .route("/vips/{name}", get(get_vip).delete(remove_vip))
        .route("/vips/{name}/backends", post(add_backend))
        .route("/backends/{name}", axum::routing::delete(remove_backend))
        .route("/backends/{name}/drain", post(drain))
        .route("/backends/{name}/undrain", post(undrain))
        .route("/backends/{name}/weight", put(set_weight))
        .route("/reload", post(reload))
        .route("/stats", get(stats))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .route("/status", get(status))
        .route("/instance", get(instance))
        .route("/instance/drain", post(instance_drain))
        .route("/instance/undrain", post(instance_undrain))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(state)
}

// ---- responses ----

fn json_response<T: Serialize>(status: u16, body: &T) -> HttpResponse {
    match serde_json::to_vec_pretty(body) {
        Ok(mut v) => {
            v.push(b'\n');
            let mut r = HttpResponse::new(v.into());
            *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => error_response(500, format!("cannot encode the answer: {e}"), None),
    }
}

fn error_response(status: u16, reason: String, field: Option<String>) -> HttpResponse {
    let status = if (400..=599).contains(&status) {
        status
    } else {
        500
    };
    let body = ErrorBody {
        status,
        reason,
        field,
    };
    let mut v = serde_json::to_vec_pretty(&body).unwrap_or_default();
    v.push(b'\n');
    let mut r = HttpResponse::new(v.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn etag(mut r: HttpResponse, version: u64) -> HttpResponse {
    if let Ok(v) = HeaderValue::from_str(&format!("\"{version}\"")) {
        r.headers_mut().insert(header::ETAG, v);
    }
    r
}

#[derive(Clone, Copy, Default)]
struct Shape {
    /// `201 Created` on success.
    created: bool,
    /// The scraper asked for OpenMetrics.
    openmetrics: bool,
}

fn to_http(resp: Response, shape: Shape) -> HttpResponse {
    match resp {
        Response::Error {
            status,
            reason,
            field,
        } => error_response(status, reason, field),
        Response::Vips(v) => json_response(200, &v),
        Response::Vip(v) => json_response(200, &v),
        Response::Applied { version, warning } => etag(
            json_response(
                if shape.created { 201 } else { 200 },
                &AppliedBody { version, warning },
            ),
            version,
        ),
        Response::Stats(s) => json_response(200, &s),
        Response::Instance(i) => json_response(200, &i),
        Response::Status(s) => {
            let v = s.version;
            etag(json_response(200, &s), v)
        }
        Response::Metrics(text) => {
            let mut r = HttpResponse::new(text.into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(if shape.openmetrics {
                    CONTENT_TYPE_OPENMETRICS
                } else {
                    CONTENT_TYPE_TEXT
                }),
            );
            r
        }
    }
}

// ---- talking to the control thread ----

async fn ask(state: &AppState, req: Request) -> Response {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    match state.to_control.try_send((req, tx)) {
        Ok(()) => {}
        Err(TrySendError::Full(_)) => {
            return Response::unavailable("the control thread is busy (its request queue is full)")
        }
        Err(TrySendError::Disconnected(_)) => {
            return Response::unavailable("the control thread is not running")
        }
    }
    let now = tokio::time::Instant::now();
    // The reply timeout is the server's own setting (2 s by default), not a request's value.
    let deadline = now.checked_add(state.timeout).unwrap_or(now);
    let mut pause = Duration::from_micros(100);
    loop {
        match rx.try_recv() {
            Ok(r) => return r,
            Err(TryRecvError::Disconnected) => {
                return Response::unavailable("the control thread dropped the request")
            }
            Err(TryRecvError::Empty) => {
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Response::unavailable(format!(
                        "the control thread did not answer within {} ms (a change may still be applied: see GET /status)",
                        state.timeout.as_millis()
                    ));
                }
                tokio::time::sleep(pause.min(deadline.saturating_duration_since(now))).await;
                pause = pause.saturating_mul(2).min(Duration::from_millis(5));
            }
        }
    }
}

/// Runs one request in its own task, so that a panic becomes a `500` and not a dropped
/// connection (or worse).
async fn dispatch(state: AppState, req: Result<Request, ErrorBody>, shape: Shape) -> HttpResponse {
    guarded(async move {
        let resp = match req {
            Ok(req) => ask(&state, req).await,
            Err(refused) => refused.into(),
        };
        to_http(resp, shape)
    })
    .await
}

async fn guarded<F>(work: F) -> HttpResponse
where
    F: core::future::Future<Output = HttpResponse> + Send + 'static,
{
    match tokio::spawn(work).await {
        Ok(r) => r,
        Err(e) => error_response(
            500,
            if e.is_panic() {
                "internal error in the API thread (see GET /status for the version serving)".into()
            } else {
                "the request was cancelled".into()
            },
            None,
        ),
    }
}

// ---- request parsing ----

fn path_name(p: Result<Path<String>, PathRejection>) -> Result<String, ErrorBody> {
    let Path(name) = p.map_err(|e| ErrorBody::bad_request(e.body_text()))?;
    check_name(&name).map_err(ErrorBody::bad_request)?;
    Ok(name)
}

/// The version of `If-Match` (`5`, `"5"` or `W/"5"`; `*` is no condition).
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ErrorBody> {
    let Some(v) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let s = v
        .to_str()
        .map_err(|_| ErrorBody::bad_request("If-Match: not ASCII text"))?
        .trim();
    if s == "*" {
        return Ok(None);
    }
    let bare = s.strip_prefix("W/").unwrap_or(s).trim_matches('"');
    bare.parse::<u64>().map(Some).map_err(|_| {
        ErrorBody::bad_request(format!(
            "If-Match: {s:?} is not a configuration version (a non-negative integer)"
        ))
    })
}

fn merge_versions(header: Option<u64>, body: Option<u64>) -> Result<Option<u64>, ErrorBody> {
    match (header, body) {
        (Some(h), Some(b)) if h != b => Err(ErrorBody::bad_request(format!(
            "If-Match ({h}) and if_version ({b}) disagree"
        ))),
        (h, b) => Ok(h.or(b)),
    }
}

/// Parses a JSON object body into `T`, taking out `if_version` first. `optional`: an empty body
/// reads as `{}`.
fn parse_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    optional: bool,
) -> Result<(T, Option<u64>), ErrorBody> {
    let bytes = body.map_err(|e| ErrorBody::new(e.status().as_u16(), e.body_text()))?;
    let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        if !optional {
            return Err(ErrorBody::bad_request("this route needs a JSON body"));
        }
        b"{}"
    } else {
        &bytes
    };
    let mut value: serde_json::Value = super::strict_json::parse(text)
        .map_err(|e| ErrorBody::bad_request(format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(map) = &mut value else {
        return Err(ErrorBody::bad_request("the body must be a JSON object"));
    };
    let version = match map.remove("if_version") {
        None | Some(serde_json::Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            ErrorBody::bad_request(format!(
                "if_version: expected a configuration version (a non-negative integer), got {v}"
            ))
        })?),
    };
    let t = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            ErrorBody::bad_request(e.inner().to_string())
        } else {
            ErrorBody::bad_request(format!("{path}: {}", e.inner()))
        }
    })?;
    Ok((t, version))
}

fn check_weight(weight: u32) -> Result<(), ErrorBody> {
    rules::weight(weight).map_err(|e| ErrorBody::invalid("weight", e))
}

// ---- handlers ----

async fn index() -> HttpResponse {
    #[derive(Serialize)]
    struct Route {
        method: &'static str,
        path: &'static str,
        what: &'static str,
    }
    let routes: Vec<Route> = ROUTES
        .iter()
        .map(|(method, path, what)| Route { method, path, what })
        .collect();
    json_response(200, &routes)
}

/// The API's OpenAPI description, `docs/openapi.json`, kept equal to the router by a test.
pub const OPENAPI_JSON: &str = include_str!("../../../docs/openapi.json");

async fn openapi() -> HttpResponse {
    let mut r = HttpResponse::new(axum::body::Body::from(OPENAPI_JSON));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn no_route(method: Method, uri: Uri) -> HttpResponse {
    error_response(
        404,
        format!("no route {method} {} (GET / lists the routes)", uri.path()),
        None,
    )
}

async fn wrong_method(method: Method, uri: Uri) -> HttpResponse {
    error_response(
        405,
        format!(
            "method {method} is not allowed on {} (GET / lists the routes)",
            uri.path()
        ),
        None,
    )
}

async fn list_vips(State(s): State<AppState>) -> HttpResponse {
    dispatch(s, Ok(Request::ListVips), Shape::default()).await
}

async fn get_vip(
    State(s): State<AppState>,
    p: Result<Path<String>, PathRejection>,
) -> HttpResponse {
    let req = path_name(p).map(|name| Request::GetVip { name });
    dispatch(s, req, Shape::default()).await
}

async fn add_vip(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let req = (|| {
        let (spec, v) = parse_body::<VipBody>(body, false)?;
        check_name(&spec.name).map_err(|e| ErrorBody::invalid("name", e))?;
        for (i, b) in spec.backends.iter().enumerate() {
            check_name(b).map_err(|e| ErrorBody::invalid(format!("backends[{i}]"), e))?;
        }
        if let Some(p) = &spec.client_port {
            check_name(p).map_err(|e| ErrorBody::invalid("client_port", e))?;
        }
        let if_version = merge_versions(if_match(&headers)?, v)?;
        Ok(Request::AddVip { spec, if_version })
    })();
    dispatch(
        s,
        req,
        Shape {
            created: true,
            ..Shape::default()
        },
    )
    .await
}

async fn remove_vip(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> HttpResponse {
    let req = (|| {
        let name = path_name(p)?;
        let q = query(q, &["if_version"])?;
        let if_version = merge_versions(if_match(&headers)?, query_version(&q)?)?;
        Ok(Request::RemoveVip { name, if_version })
    })();
    dispatch(s, req, Shape::default()).await
}

async fn add_backend(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let req = (|| {
        let vip = path_name(p)?;
        let (backend, v) = parse_body::<BackendBody>(body, false)?;
        check_name(&backend.name).map_err(|e| ErrorBody::invalid("name", e))?;
        if let Some(p) = &backend.egress_port {
            check_name(p).map_err(|e| ErrorBody::invalid("egress_port", e))?;
        }
        if backend.ipv4.is_none() && backend.ipv6.is_none() {
            return Err(ErrorBody::invalid(
                "ipv4",
                "a backend needs ipv4, ipv6 or both",
            ));
        }
        if let Some(m) = &backend.mac {
            parse_mac(m).map_err(|e| ErrorBody::invalid("mac", e))?;
        }
        rules::service_port(backend.port).map_err(|e| ErrorBody::invalid("port", e))?;
        check_weight(backend.weight)?;
        let if_version = merge_versions(if_match(&headers)?, v)?;
        Ok(Request::AddBackend {
            vip,
            backend,
            if_version,
        })
    })();
    dispatch(
        s,
        req,
        Shape {
            created: true,
            ..Shape::default()
        },
    )
    .await
}

fn query(
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
    allowed: &[&str],
) -> Result<BTreeMap<String, String>, ErrorBody> {
    let Query(q) = q.map_err(|e| ErrorBody::bad_request(e.body_text()))?;
    if let Some(k) = q.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(ErrorBody::bad_request(format!(
            "unknown query parameter {k:?} (expected one of: {})",
            allowed.join(", ")
        )));
    }
    Ok(q)
}

fn query_version(q: &BTreeMap<String, String>) -> Result<Option<u64>, ErrorBody> {
    q.get("if_version")
        .map(|v| {
            v.parse::<u64>().map_err(|_| {
                ErrorBody::bad_request(format!(
                    "if_version: {v:?} is not a configuration version (a non-negative integer)"
                ))
            })
        })
        .transpose()
}

async fn remove_backend(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    q: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> HttpResponse {
    let req = (|| {
        let name = path_name(p)?;
        let q = query(q, &["mode", "if_version"])?;
        let mode = match q.get("mode").map(String::as_str) {
            None | Some("graceful") => RemoveMode::Graceful,
            Some("hard") => RemoveMode::Hard,
            Some(m) => {
                return Err(ErrorBody::bad_request(format!(
                    "mode: {m:?} is neither \"graceful\" nor \"hard\""
                )))
            }
        };
        let if_version = merge_versions(if_match(&headers)?, query_version(&q)?)?;
        Ok(Request::RemoveBackend {
            name,
            mode,
            if_version,
        })
    })();
    dispatch(s, req, Shape::default()).await
}

async fn drain(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let req = (|| {
        let name = path_name(p)?;
        let (b, v) = parse_body::<DrainBody>(body, true)?;
        if let Some(d) = b.deadline_s {
            rules::drain_deadline(d).map_err(|e| ErrorBody::invalid("deadline_s", e))?;
        }
        let if_version = merge_versions(if_match(&headers)?, v)?;
        Ok(Request::Drain {
            name,
            deadline_s: b.deadline_s,
            if_version,
        })
    })();
    dispatch(s, req, Shape::default()).await
}

async fn undrain(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let req = (|| {
        let name = path_name(p)?;
        let (EmptyBody {}, v) = parse_body::<EmptyBody>(body, true)?;
        let if_version = merge_versions(if_match(&headers)?, v)?;
        Ok(Request::Undrain { name, if_version })
    })();
    dispatch(s, req, Shape::default()).await
}

async fn set_weight(
    State(s): State<AppState>,
    headers: HeaderMap,
    p: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let req = (|| {
        let name = path_name(p)?;
        let (b, v) = parse_body::<WeightBody>(body, false)?;
        check_weight(b.weight)?;
        let if_version = merge_versions(if_match(&headers)?, v)?;
        Ok(Request::SetWeight {
            name,
            weight: b.weight,
            if_version,
        })
    })();
    dispatch(s, req, Shape::default()).await
}

async fn reload(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> HttpResponse {
    let req = (|| {
        let (b, v) = parse_body::<ReloadBody>(body, true)?;
        if b.path.as_deref() == Some("") {
            return Err(ErrorBody::invalid("path", "an empty path"));
        }
        let if_version = merge_versions(if_match(&headers)?, v)?;
        Ok(Request::Reload {
            path: b.path,
            if_version,
        })
    })();
    dispatch(s, req, Shape::default()).await
}

async fn stats(State(s): State<AppState>) -> HttpResponse {
    dispatch(s, Ok(Request::Stats), Shape::default()).await
}

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> HttpResponse {
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    dispatch(
        s,
        Ok(Request::Metrics),
        Shape {
            openmetrics,
            ..Shape::default()
        },
    )
    .await
}

async fn status(State(s): State<AppState>) -> HttpResponse {
    dispatch(s, Ok(Request::Status), Shape::default()).await
}

async fn instance(State(s): State<AppState>) -> HttpResponse {
    dispatch(s, Ok(Request::Instance), Shape::default()).await
}

async fn instance_drain(State(s): State<AppState>) -> HttpResponse {
    dispatch(
        s,
        Ok(Request::InstanceDrain { drain: true }),
        Shape::default(),
    )
    .await
}

async fn instance_undrain(State(s): State<AppState>) -> HttpResponse {
    dispatch(
        s,
        Ok(Request::InstanceDrain { drain: false }),
        Shape::default(),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bind_addr_parses() {
        assert_eq!(
            "127.0.0.1:1".parse::<BindAddr>().unwrap(),
            BindAddr::Tcp("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(
            "http://[::1]:2/".parse::<BindAddr>().unwrap(),
            BindAddr::Tcp("[::1]:2".parse().unwrap())
        );
        assert_eq!(
            "unix:/run/t.sock".parse::<BindAddr>().unwrap(),
            BindAddr::Unix("/run/t.sock".into())
        );
        assert_eq!(
            "/run/t.sock".parse::<BindAddr>().unwrap(),
            BindAddr::Unix("/run/t.sock".into())
        );
        for bad in ["", "localhost", "unix:", "1.2.3.4"] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad:?}");
        }
        assert_eq!(BindAddr::default().to_string(), "http://127.0.0.1:9180");
    }

    #[test]
    fn if_match_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(if_match(&h).unwrap(), None);
        for (v, want) in [
            ("5", Some(5)),
            ("\"6\"", Some(6)),
            ("W/\"7\"", Some(7)),
            ("*", None),
        ] {
            h.insert(header::IF_MATCH, HeaderValue::from_static(v));
            assert_eq!(if_match(&h).unwrap(), want, "{v}");
        }
        h.insert(header::IF_MATCH, HeaderValue::from_static("x"));
        assert_eq!(if_match(&h).unwrap_err().status, 400);
        assert!(merge_versions(Some(1), Some(2)).is_err());
        assert_eq!(merge_versions(None, Some(2)).unwrap(), Some(2));
    }

    #[test]
    fn a_panicking_handler_is_a_500() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let r = rt.block_on(guarded(async { panic!("on purpose") }));
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let r = rt.block_on(guarded(async { json_response(200, &1) }));
        assert_eq!(r.status(), StatusCode::OK);
    }

    /// `docs/openapi.json` describes exactly the routes the router serves: every (path, method)
    /// of the document reaches a handler, every other method on its paths is a 405, and its
    /// paths are exactly `/` plus the route table `ROUTES` (which `GET /` serves).
    #[test]
    fn the_openapi_document_matches_the_router() {
        use tower_service::Service;
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        let paths = doc["paths"].as_object().unwrap();
        // The control thread is gone: a request that reaches a handler is answered (400, 503...)
        // by the handler, never by the fallbacks.
        let (to_control, rx) = std::sync::mpsc::sync_channel(1);
        drop(rx);
        let mut app = router(AppState {
            to_control,
            timeout: Duration::from_millis(10),
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let methods = ["GET", "POST", "PUT", "DELETE", "PATCH"];
        let mut documented = std::collections::BTreeSet::new();
        for (path, ops) in paths {
            let concrete = path.replace("{name}", "x");
            for m in methods {
                let here = ops.get(m.to_ascii_lowercase()).is_some();
                if here {
                    documented.insert((m.to_string(), path.clone()));
                }
                let req = axum::http::Request::builder()
                    .method(m)
                    .uri(&concrete)
                    .header(header::HOST, "127.0.0.1")
                    .body(axum::body::Body::empty())
                    .unwrap();
                let resp = rt.block_on(app.call(req)).unwrap();
                let status = resp.status().as_u16();
                let body = rt
                    .block_on(http_body_util::BodyExt::collect(resp.into_body()))
                    .unwrap()
                    .to_bytes();
                let text = String::from_utf8_lossy(&body);
                let fallback = status == 405 || text.contains("no route");
                assert_eq!(!fallback, here, "{m} {path}: {status} {text}");
            }
        }
        let mut routed: std::collections::BTreeSet<(String, String)> = ROUTES
            .iter()
            .map(|(m, p, _)| {
                let p = p.split('?').next().unwrap().replace("{vip}", "{name}");
                (m.to_string(), p)
            })
            .collect();
        routed.insert(("GET".into(), "/".into()));
        assert_eq!(documented, routed);
        // And a path the document does not have is not routed.
        let req = axum::http::Request::builder()
            .uri("/nosuch")
            .header(header::HOST, "127.0.0.1")
            .body(axum::body::Body::empty())
            .unwrap();
        assert_eq!(rt.block_on(app.call(req)).unwrap().status(), 404);
    }

    #[test]
    fn body_parsing() {
        let ok = |s: &'static str| Ok(Bytes::from_static(s.as_bytes()));
        let (w, v) = parse_body::<WeightBody>(ok(r#"{"weight":3,"if_version":9}"#), false).unwrap();
        assert_eq!((w.weight, v), (3, Some(9)));
        // Schemathesis found it (issue 12): 3.0 is the integer 3 (JSON Schema), 3.5 is not.
        let (w, _) = parse_body::<WeightBody>(ok(r#"{"weight":3.0}"#), false).unwrap();
        assert_eq!(w.weight, 3);
        assert_eq!(
            parse_body::<WeightBody>(ok(r#"{"weight":3.5}"#), false)
                .unwrap_err()
                .status,
            400
        );
        assert!(parse_body::<WeightBody>(ok(""), false).is_err());
        let (d, v) = parse_body::<DrainBody>(ok(" "), true).unwrap();
        assert_eq!((d.deadline_s, v), (None, None));
        for bad in [
            "{",
            "[1]",
            r#"{"weight":"x"}"#,
            r#"{"weight":1,"x":2}"#,
            r#"{"weight":1,"if_version":-1}"#,
            r#"{"weight":1,"weight":2}"#,
        ] {
            let e = parse_body::<WeightBody>(ok(bad), false).unwrap_err();
            assert_eq!(e.status, 400, "{bad}");
        }
    }
}

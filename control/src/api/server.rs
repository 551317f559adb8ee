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
use core::future::IntoFuture;
use core::str::FromStr;
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::mpsc::{SyncSender, TryRecvError, TrySendError};
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

/// Server settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServeOptions {
    /// How long a request waits for the control thread (then `503`).
    pub reply_timeout: Duration,
    /// Largest request body in bytes (then `413`).
    pub body_limit: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self {
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            body_limit: DEFAULT_BODY_LIMIT,
        }
    }
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

/// [`serve`] with explicit options.
pub fn serve_with(
    bind_addr: BindAddr,
    to_control: ToControl,
    opts: ServeOptions,
) -> io::Result<ApiHandle> {
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
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("trapeze-api".into())
        .spawn(move || {
            rt.block_on(run(listener, app, stop_rx));
            // Requests still waiting for the control thread are abandoned.
            rt.shutdown_timeout(SHUTDOWN_GRACE);
        })?;
    Ok(ApiHandle {
        local,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

async fn run(listener: StdListener, app: Router, stop: tokio::sync::oneshot::Receiver<()>) {
    let graceful = std::sync::Arc::new(tokio::sync::Notify::new());
    let signal = {
        let g = graceful.clone();
        async move { g.notified().await }
    };
    let server: std::pin::Pin<Box<dyn core::future::Future<Output = io::Result<()>> + Send>> =
        match listener {
            StdListener::Tcp(l) => match tokio::net::TcpListener::from_std(l) {
                Ok(l) => Box::pin(
                    axum::serve(l, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                ),
                Err(e) => {
                    eprintln!("trapeze-api: cannot start: {e}");
                    return;
                }
            },
            #[cfg(unix)]
            StdListener::Unix(l) => match tokio::net::UnixListener::from_std(l) {
                Ok(l) => Box::pin(
                    axum::serve(l, app)
                        .with_graceful_shutdown(signal)
                        .into_future(),
                ),
                Err(e) => {
                    eprintln!("trapeze-api: cannot start: {e}");
                    return;
                }
            },
        };
    let mut server = server;
    tokio::select! {
        r = &mut server => {
            if let Err(e) = r {
                eprintln!("trapeze-api: server stopped: {e}");
            }
        }
        _ = stop => {
            // Asked to stop, or the handle was dropped: stop accepting, let in-flight requests
            // finish for a moment, then drop whatever is left.
            graceful.notify_one();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, server).await;
        }
    }
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

    #[test]
    fn body_parsing() {
        let ok = |s: &'static str| Ok(Bytes::from_static(s.as_bytes()));
        let (w, v) = parse_body::<WeightBody>(ok(r#"{"weight":3,"if_version":9}"#), false).unwrap();
        assert_eq!((w.weight, v), (3, Some(9)));
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

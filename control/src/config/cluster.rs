//! `[cluster]`: token sharing between gateway instances (see `trapeze_core::cluster`).
//!
//! ```toml
//! [cluster]
//! listen = "10.99.0.1:7946"            # UDP address the sync thread binds (kernel stack)
//! peers = ["10.99.0.2:7946"]           # the other instances
//! secret_file = "/etc/trapeze/cluster.key"   # shared secret, >= 16 bytes (trailing newline dropped)
//! batch_interval = "100us"             # how long local changes wait before they are sent
//! remote_timeout = "10m"               # a remote owner not refreshed for this long stops routing
//! refresh_interval = "60s"             # every local token is re-announced this often (< remote_timeout)
//! remote_capacity = 1048576            # tokens with remote owners (default: tables.token_capacity)
//! journal_capacity = 65536             # local changes waiting to be sent
//! ```

use core::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::file::ClusterSection;
use super::units;

/// Default `batch_interval`.
pub const DEFAULT_BATCH: Duration = Duration::from_micros(100);

/// Shortest accepted secret.
pub const MIN_SECRET: usize = 16;

/// Validated `[cluster]` settings.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// Address the sync socket binds.
    pub listen: SocketAddr,
    /// The other instances.
    pub peers: Vec<SocketAddr>,
    /// Where the secret came from.
    pub secret_file: PathBuf,
    /// The shared secret (file contents, one trailing newline removed).
    pub secret: Vec<u8>,
    /// How long local changes are batched before sending.
    pub batch_interval: Duration,
    /// Lifetime of a remote owner without refresh.
    pub remote_timeout: Duration,
    /// Period of the full re-announcement of local tokens.
    pub refresh_interval: Duration,
    /// Bound of tokens with remote owners.
    pub remote_capacity: usize,
    /// Bound of the export journal.
    pub journal_capacity: usize,
}

impl core::fmt::Debug for ClusterSettings {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ClusterSettings")
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("secret_file", &self.secret_file)
            .field("secret", &"<redacted>")
            .field("batch_interval", &self.batch_interval)
            .field("remote_timeout", &self.remote_timeout)
            .field("refresh_interval", &self.refresh_interval)
            .field("remote_capacity", &self.remote_capacity)
            .field("journal_capacity", &self.journal_capacity)
            .finish()
    }
}

/// Parses `"250us"` or anything [`units::parse_duration_ms`] takes; `"0ms"`/`"0us"` is zero.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    if let Some(n) = t.strip_suffix("us") {
        return n
            .parse::<u64>()
            .map(Duration::from_micros)
            .map_err(|_| format!("{s:?} is not a duration"));
    }
    if t == "0ms" || t == "0s" {
        return Ok(Duration::ZERO);
    }
    units::parse_duration_ms(t).map(Duration::from_millis)
}

/// Validates `[cluster]`; every problem is reported as `(field, message)`.
pub(super) fn validate(
    c: &ClusterSection,
    token_capacity: usize,
    max_capacity: usize,
) -> Result<ClusterSettings, Vec<(String, String)>> {
    let mut errs: Vec<(String, String)> = Vec::new();
    let mut err = |f: &str, m: String| errs.push((format!("cluster.{f}"), m));
    let listen = match c.listen.parse::<SocketAddr>() {
        Ok(a) if a.port() != 0 => Some(a),
        Ok(_) => {
            err("listen", "needs a port".into());
            None
        }
        Err(_) => {
            err(
                "listen",
                format!(
                    "{:?} is not an address:port (e.g. \"10.99.0.1:7946\")",
                    c.listen
                ),
            );
            None
        }
    };
    let mut peers = Vec::new();
    if c.peers.is_empty() {
        err("peers", "list at least one other instance".into());
    }
    for (i, p) in c.peers.iter().enumerate() {
        match p.parse::<SocketAddr>() {
            Ok(a) if a.port() == 0 => err(&format!("peers[{i}]"), "needs a port".into()),
            Ok(a) if Some(a) == listen => err(
                &format!("peers[{i}]"),
                "is this instance's own listen address".into(),
            ),
            Ok(a) if peers.contains(&a) => {
                err(&format!("peers[{i}]"), format!("{a} is listed twice"))
            }
            Ok(a) => peers.push(a),
            Err(_) => err(
                &format!("peers[{i}]"),
                format!("{p:?} is not an address:port"),
            ),
        }
    }
    let secret_file = PathBuf::from(&c.secret_file);
    let secret = match std::fs::read(&secret_file) {
        Ok(mut s) => {
            if s.last() == Some(&b'\n') {
                s.pop();
                if s.last() == Some(&b'\r') {
                    s.pop();
                }
            }
            if s.len() < MIN_SECRET {
                err(
                    "secret_file",
                    format!(
                        "{:?} holds {} bytes; the secret needs at least {MIN_SECRET}",
                        c.secret_file,
                        s.len()
                    ),
                );
            }
            s
        }
        Err(e) => {
            err("secret_file", format!("{:?}: {e}", c.secret_file));
            Vec::new()
        }
    };
    let mut dur = |f: &str, v: &Option<String>, default: Duration, min: Duration| match v {
        None => default,
        Some(s) => match parse_interval(s) {
            Ok(d) if d < min => {
                err(f, format!("{s:?} is too short (at least {min:?})"));
                default
            }
            Ok(d) if d > Duration::from_secs(86_400) => {
                err(f, format!("{s:?} is too long (at most 1d)"));
                default
            }
            Ok(d) => d,
            Err(e) => {
                err(f, e);
                default
            }
        },
    };
    // Linux clients send their first join 0.1-2 ms after the handshake (testbed/join_delay.py
    // over the test bed's captures: p10 0.4-0.5 ms): the default keeps the sender well under it.
    let batch_interval = dur(
        "batch_interval",
        &c.batch_interval,
        DEFAULT_BATCH,
        Duration::ZERO,
    );
    let remote_timeout = dur(
        "remote_timeout",
        &c.remote_timeout,
        Duration::from_secs(600),
        Duration::from_secs(1),
    );
    let refresh_interval = dur(
        "refresh_interval",
        &c.refresh_interval,
        Duration::from_secs(60),
        Duration::from_millis(100),
    );
    let batch_interval = if batch_interval > Duration::from_secs(1) {
        err("batch_interval", "at most 1s".into());
        DEFAULT_BATCH
    } else {
        batch_interval
    };
    if refresh_interval >= remote_timeout {
        err(
            "refresh_interval",
            format!(
                "{refresh_interval:?} must be shorter than remote_timeout ({remote_timeout:?}), \
                 or remote owners of live connections expire between refreshes"
            ),
        );
    }
    let mut cap = |f: &str, v: Option<i64>, default: usize, lo: i64| match v {
        None => default,
        Some(v) if (lo..=max_capacity as i64).contains(&v) => v as usize,
        Some(v) => {
            err(f, format!("{v} is out of range ({lo}..={max_capacity})"));
            default
        }
    };
    let remote_capacity = cap("remote_capacity", c.remote_capacity, token_capacity, 0);
    let journal_capacity = cap("journal_capacity", c.journal_capacity, 65_536, 1);
    match listen {
        Some(listen) if errs.is_empty() => Ok(ClusterSettings {
            listen,
            peers,
            secret_file,
            secret,
            batch_interval,
            remote_timeout,
            refresh_interval,
            remote_capacity,
            journal_capacity,
        }),
        _ => Err(errs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(secret_file: &str) -> ClusterSection {
        ClusterSection {
            listen: "10.99.0.1:7946".into(),
            peers: vec!["10.99.0.2:7946".into()],
            secret_file: secret_file.into(),
            batch_interval: None,
            remote_timeout: None,
            refresh_interval: None,
            remote_capacity: None,
            journal_capacity: None,
        }
    }

    fn secret(name: &str, text: &str) -> String {
        let p = std::env::temp_dir().join(format!("tz-cluster-{}-{name}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    #[test]
    fn defaults_and_units() {
        let f = secret("ok", "0123456789abcdef\n");
        let s = validate(&section(&f), 1000, 1 << 26).unwrap();
        assert_eq!(s.secret, b"0123456789abcdef");
        assert_eq!(s.batch_interval, DEFAULT_BATCH);
        assert_eq!(s.remote_timeout, Duration::from_secs(600));
        assert_eq!(s.refresh_interval, Duration::from_secs(60));
        assert_eq!(s.remote_capacity, 1000);
        assert!(
            !format!("{s:?}").contains("0123456789abcdef"),
            "secret redacted"
        );
        let mut c = section(&f);
        c.batch_interval = Some("250us".into());
        c.remote_timeout = Some("30s".into());
        c.refresh_interval = Some("10s".into());
        let s = validate(&c, 1000, 1 << 26).unwrap();
        assert_eq!(s.batch_interval, Duration::from_micros(250));
        c.batch_interval = Some("0ms".into());
        assert_eq!(
            validate(&c, 1, 1 << 26).unwrap().batch_interval,
            Duration::ZERO
        );
    }

    #[test]
    fn every_problem_names_its_field() {
        let short = secret("short", "tooshort\n");
        let mut c = section(&short);
        c.listen = "10.99.0.1".into();
        c.peers = vec!["x".into(), "10.99.0.2:7946".into(), "10.99.0.2:7946".into()];
        c.batch_interval = Some("2s".into());
        c.refresh_interval = Some("20m".into());
        c.journal_capacity = Some(0);
        let e = validate(&c, 1000, 1 << 26).unwrap_err();
        let fields: Vec<&str> = e.iter().map(|(f, _)| f.as_str()).collect();
        for want in [
            "cluster.listen",
            "cluster.peers[0]",
            "cluster.peers[2]",
            "cluster.secret_file",
            "cluster.batch_interval",
            "cluster.refresh_interval",
            "cluster.journal_capacity",
        ] {
            assert!(fields.contains(&want), "{want} missing from {e:?}");
        }
        let mut c = section("/nonexistent/tz-secret");
        c.peers = vec!["10.99.0.1:7946".into()];
        let e = validate(&c, 1, 1 << 26).unwrap_err();
        assert!(e
            .iter()
            .any(|(f, m)| f == "cluster.peers[0]" && m.contains("own")));
        assert!(e.iter().any(|(f, _)| f == "cluster.secret_file"));
        let mut c = section(&secret("ok2", "0123456789abcdef"));
        c.peers.clear();
        assert!(validate(&c, 1, 1 << 26).is_err());
    }
}

//! Bad configuration files and bad command lines: each gives a clear error (naming the field or
//! the problem), a non-zero exit (2 for configuration and command-line errors, 1 when the
//! runtime cannot start), and leaves nothing running.
//!
//! The runtime cases start DPDK (each with `--no-pci` and its own `--file-prefix`), so they need a
//! daemon built with DPDK; without it they are compiled out.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long any case may take (a hang is a failure).
const TIMEOUT: Duration = Duration::from_secs(30);

/// A fresh directory under /tmp for one case, and the DPDK file prefix of that case (both named
/// `tz-cli-<case>-<pid>`; the configuration file carries the name too, so the daemon's command
/// line shows it). Dropping it removes the directory, DPDK's runtime directory of the prefix and
/// the daemon's state file.
struct Scratch {
    dir: PathBuf,
    prefix: String,
}

impl Scratch {
    fn new(case: &str) -> Self {
        let prefix = format!("tz-cli-{case}-{}", std::process::id());
        let dir = std::env::temp_dir().join(&prefix);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        for d in runtime_dirs(&prefix) {
            let _ = std::fs::remove_dir_all(d);
        }
        Self { dir, prefix }
    }

    /// Writes `text` as the case's configuration file and returns its path.
    fn config(&self, text: &str) -> PathBuf {
        let p = self.dir.join(format!("{}.toml", self.prefix));
        std::fs::write(&p, text).expect("write config");
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        for d in runtime_dirs(&self.prefix) {
            let _ = std::fs::remove_dir_all(d);
        }
        // The state file a started daemon keeps for its next start ([state]).
        for dir in ["/dev/hugepages", "/dev/shm"] {
            let _ = std::fs::remove_file(Path::new(dir).join(format!("{}.tzstate", self.prefix)));
        }
    }
}

/// Where DPDK 22.11 puts the runtime directory of `--file-prefix=prefix` (root: /var/run;
/// others: $XDG_RUNTIME_DIR or /tmp).
fn runtime_dirs(prefix: &str) -> Vec<PathBuf> {
    let mut v = vec![PathBuf::from("/var/run/dpdk").join(prefix)];
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        v.push(PathBuf::from(x).join("dpdk").join(prefix));
    }
    v.push(PathBuf::from("/tmp/dpdk").join(prefix));
    v
}

/// Processes (other than this one) whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == me || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if cmd.contains(needle) {
            found.push(format!("{name}: {cmd}"));
        }
    }
    found
}

/// What one run of the daemon did.
#[derive(Debug)]
struct Outcome {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Outcome {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Runs the daemon with `args` (stdout and stderr into files of `scratch`), and fails the test
/// if it is still running after `TIMEOUT`; afterwards nothing started by it may be left.
fn run(scratch: &Scratch, args: &[&str]) -> Outcome {
    let out = scratch.dir.join("stdout");
    let err = scratch.dir.join("stderr");
    let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze-gatewayd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("stdout file"))
        .stderr(std::fs::File::create(&err).expect("stderr file"))
        .spawn()
        .expect("start trapeze-gatewayd");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "trapeze-gatewayd {args:?} still running after {TIMEOUT:?}:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let o = Outcome {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    };
    let left = processes_mentioning(&scratch.prefix);
    assert!(left.is_empty(), "left running: {left:?}");
    o
}

/// Runs and requires exit `code` with every one of `needles` in stderr.
fn expect_error(scratch: &Scratch, args: &[&str], code: i32, needles: &[&str]) -> Outcome {
    let o = run(scratch, args);
    assert_eq!(o.code(), Some(code), "{args:?}: {o:#?}");
    for n in needles {
        assert!(
            o.stderr.contains(n),
            "{args:?}: stderr lacks {n:?}:\n{}",
            o.stderr
        );
    }
    assert!(
        !o.stdout.contains("total:"),
        "{args:?}: no counters without a run: {o:#?}"
    );
    o
}

/// A valid configuration (one port, the captures' VIPs and server) with `eal_args`
/// as the EAL arguments (a TOML list body) and `device` as the port's device.
fn config(eal_args: &str, device: &str) -> String {
    format!(
        r#"[eal]
args = [{eal_args}]

[[ports]]
name = "arm"
device = "{device}"
ipv4 = ["192.0.2.1/24", "198.51.100.1/24"]
ipv6 = ["2001:db8:1::1/64", "2001:db8:2::1/64"]

[[vips]]
name = "web4"
address = "203.0.113.10"
port = 80
mode = "nat"
client_port = "arm"
backends = ["srv"]

[[vips]]
name = "web6"
address = "2001:db8:ff::10"
port = 80
mode = "nat"
client_port = "arm"
backends = ["srv"]

[[backends]]
name = "srv"
ipv4 = "198.51.100.10"
ipv6 = "2001:db8:2::10"
port = 8080
egress_port = "arm"
mac = "02:00:00:00:02:10"

[tables]
flow_capacity = 4096
token_capacity = 1024

# Nothing may leave the port in these runs: no health probes.
[health]
enabled = false

[workers]
count = 1
"#
    )
}

/// The valid configuration of case `s` on a `net_null0` vdev that receives nothing.
fn good_config(s: &Scratch) -> String {
    config(
        &format!(
            r#""--no-pci", "--no-huge", "-m", "128", "--file-prefix={}", "-l", "0-1", "--vdev=net_null0,no-rx=1""#,
            s.prefix
        ),
        "net_null0",
    )
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn no_arguments_is_a_usage_error() {
    let s = Scratch::new("noargs");
    let o = expect_error(&s, &[], 2, &["--config"]);
    assert!(o.stderr.contains("Usage"), "{}", o.stderr);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let s = Scratch::new("flag");
    let cfg = s.config(&good_config(&s));
    expect_error(
        &s,
        &["--config", path_str(&cfg), "--frobnicate"],
        2,
        &["--frobnicate"],
    );
}

#[test]
fn zero_workers_on_the_command_line_is_refused() {
    let s = Scratch::new("workers0");
    let cfg = s.config(&good_config(&s));
    expect_error(
        &s,
        &["--config", path_str(&cfg), "--workers", "0"],
        2,
        &["--workers", "0 is not in 1..=256"],
    );
}

#[test]
fn bad_log_level_is_a_usage_error() {
    let s = Scratch::new("loglevel");
    let cfg = s.config(&good_config(&s));
    expect_error(
        &s,
        &["--config", path_str(&cfg), "--log-level", "loud"],
        2,
        &["--log-level", "loud"],
    );
}

#[test]
fn missing_config_file_is_named() {
    let s = Scratch::new("missing");
    let cfg = s.dir.join("nowhere.toml");
    expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &["cannot read", path_str(&cfg), "No such file"],
    );
}

#[test]
fn toml_syntax_error_gives_the_line() {
    let s = Scratch::new("syntax");
    let cfg = s.config("[eal]\nargs = [\"--no-pci\"\n\n[[ports]\nname = \"arm\"\n");
    expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &[path_str(&cfg), "TOML syntax error at line"],
    );
}

#[test]
fn unknown_key_is_named() {
    let s = Scratch::new("unknownkey");
    let cfg = s.config(&good_config(&s).replace("count = 1", "count = 1\ncuont = 2"));
    expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &["workers.cuont", "unknown field `cuont`", "line "],
    );
}

#[test]
fn missing_no_pci_is_refused() {
    let s = Scratch::new("nopci");
    let cfg = s.config(&good_config(&s).replace(r#""--no-pci", "#, ""));
    expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &["eal.args", "--no-pci is required"],
    );
}

#[test]
fn non_prime_maglev_size_is_refused() {
    let s = Scratch::new("maglev");
    let cfg = s.config(&good_config(&s).replace(
        "token_capacity = 1024",
        "token_capacity = 1024\nmaglev_size = 65536",
    ));
    expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &["tables.maglev_size", "65536 is not prime", "65537"],
    );
}

#[test]
fn unknown_backend_in_a_vip_is_named() {
    let s = Scratch::new("backend");
    let cfg = s.config(&good_config(&s).replacen(
        r#"backends = ["srv"]"#,
        r#"backends = ["srv", "srv9"]"#,
        1,
    ));
    let o = expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &[r#"vips[0].backends[1]: unknown backend "srv9""#],
    );
    assert!(
        o.stderr.contains("invalid configuration (1 problem)"),
        "{}",
        o.stderr
    );
}

#[test]
fn port_device_without_a_vdev_is_refused_before_dpdk_starts() {
    let s = Scratch::new("nodevice");
    let cfg =
        s.config(&good_config(&s).replace(r#"device = "net_null0""#, r#"device = "net_null1""#));
    let o = expect_error(
        &s,
        &["--config", path_str(&cfg)],
        2,
        &[
            "ports[0].device",
            r#""net_null1" is neither created by a --vdev"#,
            "net_null0",
        ],
    );
    assert!(
        !o.stderr.contains("EAL:"),
        "DPDK was not started: {}",
        o.stderr
    );
}

#[test]
fn check_of_a_good_config_prints_the_summary() {
    let s = Scratch::new("check");
    let cfg = s.config(&good_config(&s));
    let o = run(&s, &["--config", path_str(&cfg), "--check"]);
    assert_eq!(o.code(), Some(0), "{o:#?}");
    for n in [
        "configuration OK",
        "ports: 1",
        "vips: 2",
        "web4 203.0.113.10:80/tcp nat",
        "backends: 1",
        "maglev fingerprint",
    ] {
        assert!(o.stdout.contains(n), "stdout lacks {n:?}:\n{}", o.stdout);
    }
    assert!(
        !o.stderr.contains("EAL:"),
        "--check starts no DPDK: {}",
        o.stderr
    );
    // And the same with the command line's overrides.
    let o = run(
        &s,
        &[
            "--config",
            path_str(&cfg),
            "--check",
            "--workers",
            "2",
            "--no-huge",
        ],
    );
    assert_eq!(o.code(), Some(0), "{o:#?}");
    assert!(o.stdout.contains("workers: 2"), "{}", o.stdout);
}

/// Too many workers for the lcores given to EAL is a configuration error (exit 2) before
/// DPDK starts.
#[test]
fn more_workers_than_lcores_is_refused() {
    let s = Scratch::new("lcores");
    let cfg = s.config(&good_config(&s));
    let o = expect_error(
        &s,
        &["--config", path_str(&cfg), "--workers", "3"],
        2,
        &[
            "workers.count (--workers)",
            "3 workers but the EAL core list \"0-1\"",
        ],
    );
    assert!(!o.stderr.contains("EAL:"), "{}", o.stderr);
}

/// Runtime start-up failures: the configuration is valid, DPDK is started and refuses.
#[cfg(not(tz_no_dpdk))]
mod runtime {
    use super::*;

    /// An AF_PACKET vdev on an interface that does not exist: the vdev's probe fails, EAL
    /// carries on, and the port's device is missing.
    #[test]
    fn vdev_on_a_missing_interface_fails_naming_the_port_and_device() {
        // "tz-does-not-exist" is longer than IFNAMSIZ - 1 (DPDK: "I/F name too long"); the
        // short one is a well-formed name that does not exist (SIOCGIFINDEX: No such device).
        for (case, iface) in [("afp-long", "tz-does-not-exist"), ("afp", "tznoexist0")] {
            let s = Scratch::new(case);
            let cfg = s.config(&config(
                &format!(
                    r#""--no-pci", "--no-huge", "-m", "128", "--file-prefix={}", "-l", "0-1", "--vdev=net_af_packet0,iface={iface}""#,
                    s.prefix
                ),
                "net_af_packet0",
            ));
            expect_error(
                &s,
                &["--config", path_str(&cfg)],
                1,
                &[
                    "trapeze-gatewayd: error: ports[0] (arm)",
                    r#"device "net_af_packet0" does not exist"#,
                    "--vdev failed to probe",
                    "failed to initialize net_af_packet0 device",
                ],
            );
        }
    }

    /// A --vdev of a driver DPDK does not have: EAL refuses to start.
    #[test]
    fn vdev_of_an_unknown_driver_fails_in_eal() {
        let s = Scratch::new("nodriver");
        let cfg = s.config(&config(
            &format!(
                r#""--no-pci", "--no-huge", "-m", "128", "--file-prefix={}", "-l", "0-1", "--vdev=net_tznosuchdriver0""#,
                s.prefix
            ),
            "net_tznosuchdriver0",
        ));
        expect_error(
            &s,
            &["--config", path_str(&cfg)],
            1,
            &[
                "trapeze-gatewayd: error: DPDK EAL: rte_eal_init failed",
                "net_tznosuchdriver0",
            ],
        );
    }

    /// Issue 12, defect 4: nothing warned when the API was bound to a non-loopback address, and
    /// it had no authentication. Without `--api-token-file` such a daemon does not start.
    #[test]
    fn a_non_loopback_api_without_a_token_does_not_start() {
        let s = Scratch::new("notoken");
        let cfg = s.config(&good_config(&s));
        expect_error(
            &s,
            &["--config", path_str(&cfg), "--api", "0.0.0.0:0"],
            1,
            &["needs a bearer token", "--api-token-file"],
        );
        let short = s.dir.join("short.token");
        std::fs::write(&short, "tooshort\n").unwrap();
        expect_error(
            &s,
            &[
                "--config",
                path_str(&cfg),
                "--api",
                "0.0.0.0:0",
                "--api-token-file",
                path_str(&short),
            ],
            1,
            &["--api-token-file", "at least 16"],
        );
    }

    /// Hugepages wanted (no --no-huge) but the hugepage directory is an ordinary empty
    /// directory, not a hugetlbfs mount.
    #[test]
    fn hugepages_in_a_directory_without_hugetlbfs_fail_with_a_hint() {
        let s = Scratch::new("huge");
        let empty = s.dir.join("empty-huge-dir");
        std::fs::create_dir_all(&empty).expect("empty dir");
        let cfg = s.config(&config(
            &format!(
                r#""--no-pci", "--huge-dir={}", "--file-prefix={}", "-l", "0-1", "--vdev=net_null0""#,
                empty.display(),
                s.prefix
            ),
            "net_null0",
        ));
        let o = expect_error(
            &s,
            &["--config", path_str(&cfg)],
            1,
            &[
                "trapeze-gatewayd: error: DPDK EAL: rte_eal_init failed",
                "--no-huge",
            ],
        );
        assert!(
            o.stderr.to_lowercase().contains("hugepage"),
            "the error mentions hugepages: {}",
            o.stderr
        );
    }

    /// The good configuration really starts and stops (so the failures above are the cases',
    /// not the base configuration's).
    #[test]
    fn good_config_starts_and_stops_on_sigterm() {
        let s = Scratch::new("good");
        let cfg = s.config(&good_config(&s));
        let out = s.dir.join("stdout");
        let err = s.dir.join("stderr");
        let mut child = Command::new(env!("CARGO_BIN_EXE_trapeze-gatewayd"))
            .args(["--config", path_str(&cfg)])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).expect("stdout file"))
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("start trapeze-gatewayd");
        let start = Instant::now();
        let mut stderr = String::new();
        while start.elapsed() < TIMEOUT {
            stderr = std::fs::read_to_string(&err).unwrap_or_default();
            if stderr.contains("forwarding; stop with SIGINT or SIGTERM") {
                break;
            }
            if let Some(st) = child.try_wait().expect("try_wait") {
                panic!("exited early ({st}): {stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(stderr.contains("forwarding"), "did not start: {stderr}");
        let kill = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill");
        assert!(kill.success());
        let start = Instant::now();
        let status = loop {
            if let Some(st) = child.try_wait().expect("try_wait") {
                break st;
            }
            if start.elapsed() > TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no exit after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&out).unwrap_or_default();
        assert!(status.success(), "{status}: {stdout} {stderr}");
        assert!(stdout.contains("total: rx 0 tx 0 forwarded 0"), "{stdout}");
        let left = processes_mentioning(&s.prefix);
        assert!(left.is_empty(), "left running: {left:?}");
    }

    /// The daemon of `scratch`'s good configuration with its API on a Unix socket of the
    /// scratch directory, started and forwarding.
    struct Daemon {
        child: std::process::Child,
        api: trapeze_control::api::ctl::ApiTarget,
        err: PathBuf,
        out: PathBuf,
    }

    impl Daemon {
        fn start(s: &Scratch) -> Self {
            Self::start_with(s, "")
        }

        /// [`Daemon::start`] with `extra` appended to the configuration.
        fn start_with(s: &Scratch, extra: &str) -> Self {
            let cfg = s.config(&(good_config(s) + extra));
            let sock = s.dir.join("api.sock");
            let (out, err) = (s.dir.join("stdout"), s.dir.join("stderr"));
            let child = Command::new(env!("CARGO_BIN_EXE_trapeze-gatewayd"))
                .args(["--config", path_str(&cfg)])
                .arg("--api")
                .arg(format!("unix:{}", path_str(&sock)))
                .args(["--reload-dir", path_str(&s.dir)])
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&out).expect("stdout file"))
                .stderr(std::fs::File::create(&err).expect("stderr file"))
                .spawn()
                .expect("start trapeze-gatewayd");
            let mut d = Self {
                child,
                api: trapeze_control::api::ctl::ApiTarget::Unix(sock),
                err,
                out,
            };
            let start = Instant::now();
            while !d
                .stderr()
                .contains("forwarding; stop with SIGINT or SIGTERM")
            {
                if let Some(st) = d.child.try_wait().expect("try_wait") {
                    panic!("exited early ({st}): {}", d.stderr());
                }
                assert!(start.elapsed() < TIMEOUT, "did not start: {}", d.stderr());
                std::thread::sleep(Duration::from_millis(20));
            }
            d
        }

        fn stderr(&self) -> String {
            std::fs::read_to_string(&self.err).unwrap_or_default()
        }

        /// An API exchange: status and body.
        fn call(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
            let r = trapeze_control::api::ctl::http_request(
                &self.api,
                method,
                path,
                body.map(str::as_bytes),
                None,
                Duration::from_secs(10),
            )
            .expect("HTTP exchange");
            (r.status, r.text())
        }

        /// SIGTERM; the exit status and stdout once it exits (a hang fails the test).
        fn terminate(mut self) -> (ExitStatus, String) {
            let kill = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .expect("kill");
            assert!(kill.success());
            let start = Instant::now();
            let status = loop {
                if let Some(st) = self.child.try_wait().expect("try_wait") {
                    break st;
                }
                if start.elapsed() > TIMEOUT {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("no exit after SIGTERM: {}", self.stderr());
                }
                std::thread::sleep(Duration::from_millis(20));
            };
            (
                status,
                std::fs::read_to_string(&self.out).unwrap_or_default(),
            )
        }
    }

    impl Drop for Daemon {
        /// A test that fails half-way leaves nothing running.
        fn drop(&mut self) {
            if let Ok(None) = self.child.try_wait() {
                let _ = self.child.kill();
                let _ = self.child.wait();
            }
        }
    }

    /// The state file ([state]): a second daemon on a file a live one holds is refused, naming
    /// the lock, and the first goes on; after its SIGTERM the next start re-attaches the file
    /// (a clean stop, generation 2).
    #[test]
    fn a_state_file_is_locked_while_its_daemon_runs_and_re_attached_after() {
        let a = Scratch::new("state-a");
        let b = Scratch::new("state-b");
        let state = format!(
            "\n[state]\npath = \"{}\"\n",
            a.dir.join("gw.tzstate").display()
        );
        let d = Daemon::start_with(&a, &state);
        assert!(
            d.stderr().contains("): cold start (generation 1)"),
            "{}",
            d.stderr()
        );
        let cfg = b.config(&(good_config(&b) + &state));
        expect_error(
            &b,
            &["--config", path_str(&cfg)],
            1,
            &[
                "trapeze-gatewayd: error: state: ",
                "locked by another process",
            ],
        );
        let (code, body) = d.call("GET", "/vips/web4", None);
        assert_eq!(code, 200, "the first daemon goes on: {body}");
        let (status, _) = d.terminate();
        assert!(status.success());
        let d = Daemon::start_with(&a, &state);
        let err = d.stderr();
        assert!(
            err.contains("re-attached (generation 2; the previous daemon")
                && err.contains("stopped cleanly"),
            "{err}"
        );
        let (status, _) = d.terminate();
        assert!(status.success());
    }

    /// Issue 12, defect 1: this drain panicked the control thread, and from then on the daemon
    /// ignored SIGTERM. It is refused; the daemon goes on answering and stops on SIGTERM.
    #[test]
    fn a_drain_deadline_past_the_end_of_the_clock_is_refused_and_sigterm_still_stops() {
        let s = Scratch::new("drainmax");
        let d = Daemon::start(&s);
        let (code, body) = d.call(
            "POST",
            "/backends/srv/drain",
            Some(r#"{"deadline_s":18446744073709551615}"#),
        );
        assert_eq!(code, 422, "{body}");
        let (code, body) = d.call("GET", "/vips/web4", None);
        assert_eq!(code, 200, "{body}");
        let compact: String = body.split_whitespace().collect();
        assert!(
            compact.contains(r#""state":"active""#),
            "not half-applied: {body}"
        );
        let (status, stdout) = d.terminate();
        assert!(status.success(), "{status}: {stdout}");
        assert!(stdout.contains("total: rx 0"), "{stdout}");
        let left = processes_mentioning(&s.prefix);
        assert!(left.is_empty(), "left running: {left:?}");
    }

    /// Issue 12, defect 2: a reload of a FIFO nobody writes blocked the control thread in
    /// `open(2)` for good, and `/dev/zero` had the daemon OOM-killed. Both are refused at once
    /// (the FIFO under `--reload-dir` as not a regular file, `/dev/zero` as outside it), the
    /// daemon goes on answering, and SIGTERM stops it.
    #[test]
    fn a_fifo_or_dev_zero_as_reload_path_is_refused_and_the_daemon_goes_on() {
        let s = Scratch::new("fifo");
        let fifo = s.dir.join("reload.fifo");
        let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
        assert!(made.success());
        let d = Daemon::start(&s);
        let body = format!(r#"{{"path":"{}"}}"#, path_str(&fifo));
        let (code, reply) = d.call("POST", "/reload", Some(&body));
        assert_eq!(code, 422, "{reply}");
        assert!(reply.contains("not a regular file (a FIFO)"), "{reply}");
        let (code, reply) = d.call("POST", "/reload", Some(r#"{"path":"/dev/zero"}"#));
        assert_eq!(code, 403, "{reply}");
        let (code, reply) = d.call("GET", "/status", None);
        assert_eq!(code, 200, "{reply}");
        let (status, stdout) = d.terminate();
        assert!(status.success(), "{status}: {stdout}");
        assert!(stdout.contains("total: rx 0"), "{stdout}");
        let left = processes_mentioning(&s.prefix);
        assert!(left.is_empty(), "left running: {left:?}");
    }
}

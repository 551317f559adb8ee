//! The worker watchdog on the real daemon (issue 12): a worker that stops making progress turns
//! the instance `stopping` (so that `trapezectl bgp-feed` withdraws its VIPs) within the
//! configured `[workers] watchdog`, and it is counted in /metrics and logged.
//!
//! The stall is injected with the `fault-injection` feature, which only the test command builds
//! (`cargo test -p trapeze-gatewayd --features fault-injection --test watchdog`): SIGUSR1 makes
//! worker 0 stop beating its heartbeat (it sleeps in its loop until the stop). Without the
//! feature this file is empty.
//!
//! Also here: SIGUSR2 sticks the control thread for good (it used to be a reload of a FIFO, which
//! the reload's limits now refuse), and SIGTERM must still stop the daemon (issue 12, defects 1
//! and 2: a stuck control thread used to hold SIGTERM).
#![cfg(all(feature = "fault-injection", not(tz_no_dpdk)))]

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trapeze_control::api::ctl::{http_request, ApiTarget};
use trapeze_control::api::instance::{InstanceState, InstanceView};

/// A hang detector, never a measure of speed.
const HANG: Duration = Duration::from_secs(30);

struct Daemon {
    child: std::process::Child,
    dir: PathBuf,
    prefix: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
        for d in ["/var/run/dpdk", "/tmp/dpdk"] {
            let _ = std::fs::remove_dir_all(PathBuf::from(d).join(&self.prefix));
        }
        for d in ["/dev/hugepages", "/dev/shm"] {
            let _ = std::fs::remove_file(PathBuf::from(d).join(format!("{}.tzstate", self.prefix)));
        }
    }
}

fn start(case: &str, watchdog: &str) -> (Daemon, ApiTarget) {
    let prefix = format!("tzc-wd-{case}-{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(
        &cfg,
        common::null_config(&prefix, &format!("watchdog = \"{watchdog}\"\n")),
    )
    .unwrap();
    let sock = dir.join("api.sock");
    let err = dir.join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_trapeze-gatewayd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--api")
        .arg(format!("unix:{}", sock.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon { child, dir, prefix };
    let t0 = Instant::now();
    while !stderr(&d).contains("forwarding; stop with SIGINT or SIGTERM") {
        if let Some(st) = d.child.try_wait().unwrap() {
            panic!("exited early ({st}): {}", stderr(&d));
        }
        assert!(t0.elapsed() < HANG, "did not start: {}", stderr(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    (d, ApiTarget::Unix(sock))
}

fn stderr(d: &Daemon) -> String {
    std::fs::read_to_string(d.dir.join("stderr")).unwrap_or_default()
}

fn instance(api: &ApiTarget) -> InstanceView {
    let r = http_request(api, "GET", "/instance", None, None, Duration::from_secs(5)).unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    serde_json::from_slice(&r.body).unwrap()
}

fn signal(d: &Daemon, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

#[test]
fn a_stalled_worker_turns_the_instance_stopping_and_is_counted() {
    let (mut d, api) = start("stall", "300ms");
    let v = instance(&api);
    assert_eq!(v.state, InstanceState::Serving);
    assert_eq!(v.announce(&[]).len(), 1, "the feeder would announce web4");
    // A healthy worker for several watchdog periods: nothing happens.
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(instance(&api).state, InstanceState::Serving);

    signal(&d, "-USR1");
    let t0 = Instant::now();
    let v = loop {
        let v = instance(&api);
        if v.state == InstanceState::Stopping {
            break v;
        }
        assert!(t0.elapsed() < HANG, "no withdrawal: {}", stderr(&d));
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = t0.elapsed();
    assert!(v.announce(&[]).is_empty(), "the feeder withdraws every VIP");
    let log = stderr(&d);
    let line = log
        .lines()
        .find(|l| l.contains("watchdog: worker 0 made no progress for"))
        .unwrap_or_else(|| panic!("not logged: {log}"));
    println!(
        "withdrawn {} ms after SIGUSR1 (watchdog 300 ms); log: {line}",
        took.as_millis()
    );
    let m = http_request(&api, "GET", "/metrics", None, None, Duration::from_secs(5)).unwrap();
    let m = m.text();
    assert!(
        m.contains("\ntrapeze_control_watchdog_stalls_total 1\n"),
        "{m}"
    );

    // The daemon still stops on SIGTERM (the stalled worker sees the stop flag).
    signal(&d, "-TERM");
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < HANG, "did not stop: {}", stderr(&d));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}: {}", stderr(&d));
}

#[test]
fn a_stuck_control_thread_does_not_hold_sigterm() {
    let (mut d, api) = start("stuck", "2s");
    assert_eq!(instance(&api).state, InstanceState::Serving);
    signal(&d, "-USR2");
    // The API answers 503 once the control thread no longer does.
    let t0 = Instant::now();
    loop {
        let r = http_request(&api, "GET", "/status", None, None, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("{e}: {:?} {}", d.child.try_wait(), stderr(&d)));
        if r.status == 503 {
            break;
        }
        assert!(t0.elapsed() < HANG, "still answered: {}", r.text());
        std::thread::sleep(Duration::from_millis(20));
    }
    signal(&d, "-TERM");
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(t0.elapsed() < HANG, "SIGTERM held: {}", stderr(&d));
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(st.success(), "{st}: {}", stderr(&d));
    assert!(
        stderr(&d).contains("the control thread did not stop"),
        "{}",
        stderr(&d)
    );
    println!(
        "stuck control thread: SIGTERM exit in {} ms",
        t0.elapsed().as_millis()
    );
}

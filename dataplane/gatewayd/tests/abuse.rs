//! The abuse run (issue 12): the probes that once broke the daemon, repeated against a running
//! daemon (net_null, `--no-pci`, its API on a Unix socket, at most 256 file descriptors), which
//! must stay up and unchanged, and then stop on SIGTERM. Each probe is also a regression test of
//! its own elsewhere (control/tests/api.rs, tests/cli.rs); this one runs them together on the real
//! daemon.
#![cfg(not(tz_no_dpdk))]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use trapeze_control::api::ctl::{http_request, ApiTarget};

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

fn stderr(d: &Daemon) -> String {
    std::fs::read_to_string(d.dir.join("stderr")).unwrap_or_default()
}

/// An API call, retried while the server is full (a retrying client).
fn call(api: &ApiTarget, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
    let t0 = Instant::now();
    loop {
        match http_request(
            api,
            method,
            path,
            body.map(str::as_bytes),
            None,
            Duration::from_secs(5),
        ) {
            Ok(r) => return (r.status, r.text()),
            Err(e) => assert!(t0.elapsed() < HANG, "{method} {path}: {e}"),
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A hand-made request on a fresh connection: the status of the answer.
fn raw(sock: &PathBuf, req: &str) -> String {
    let mut s = UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(HANG)).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn the_abuse_run_leaves_the_daemon_up_and_unchanged() {
    let t_run = Instant::now();
    let prefix = format!("tzc-abuse-{}", std::process::id());
    let dir = std::env::temp_dir().join(&prefix);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("gateway.toml");
    std::fs::write(&cfg, common::null_config(&prefix, "")).unwrap();
    let sock = dir.join("api.sock");
    let fifo = dir.join("reload.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // At most 256 descriptors, so that idle connections that were kept would exhaust them.
    let child = Command::new("sh")
        .arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" \"$@\"")
        .arg(env!("CARGO_BIN_EXE_trapeze-gatewayd"))
        .arg("--config")
        .arg(&cfg)
        .arg("--api")
        .arg(format!("unix:{}", sock.display()))
        .arg("--reload-dir")
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
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
    let api = ApiTarget::Unix(sock.clone());
    let (code, before) = call(&api, "GET", "/vips", None);
    assert_eq!(code, 200, "{before}");
    let mut probes = 0;
    let mut expect = |method: &str, path: &str, body: &str, want: u16| {
        let (code, text) = call(&api, method, path, Some(body));
        assert_eq!(code, want, "{method} {path} {body}: {text}");
        probes += 1;
    };

    // Defect 1: a drain deadline at the end of the clock.
    expect(
        "POST",
        "/backends/srv/drain",
        r#"{"deadline_s":18446744073709551615}"#,
        422,
    );
    // Defect 2: /dev/zero (outside the reload directory) and a FIFO (not a regular file).
    expect("POST", "/reload", r#"{"path":"/dev/zero"}"#, 403);
    expect("POST", "/reload", r#"{"path":"reload.fifo"}"#, 422);
    // Defect 3: addresses no host can have, the gateway's own, a VIP without backends.
    for a in [
        "0.0.0.0",
        "255.255.255.255",
        "224.0.0.1",
        "127.0.0.1",
        "192.0.2.1",
    ] {
        let body = format!(r#"{{"name":"bad","ipv4":"{a}","port":8080}}"#);
        expect("POST", "/vips/web4/backends", &body, 422);
    }
    expect(
        "POST",
        "/vips/web4/backends",
        r#"{"name":"bad","ipv6":"::ffff:198.51.100.11","port":8080}"#,
        422,
    );
    expect(
        "POST",
        "/vips",
        r#"{"name":"v","address":"203.0.113.11","port":80,"backends":[]}"#,
        422,
    );
    // Defect 7: duplicate keys.
    expect(
        "PUT",
        "/backends/srv/weight",
        r#"{"weight":1,"weight":0}"#,
        400,
    );
    // Defect 4: a cross-site text/plain POST.
    let r = raw(
        &sock,
        "POST /backends/srv/drain HTTP/1.1\r\nHost: localhost\r\nOrigin: http://evil\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
    let r = raw(
        &sock,
        "POST /backends/srv/drain HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
    );
    assert!(r.starts_with("HTTP/1.1 415"), "{r}");
    // Defect 5: slow headers are cut off (the server closes: EOF, before the hang detector).
    let mut slow = UnixStream::connect(&sock).unwrap();
    slow.write_all(b"GET /status HTTP/1.1\r\nHost: loc")
        .unwrap();
    slow.set_read_timeout(Some(HANG)).unwrap();
    let t_slow = Instant::now();
    let mut buf = Vec::new();
    let n = slow.read_to_end(&mut buf);
    assert!(n.is_ok(), "{n:?}");
    let slow_closed = t_slow.elapsed();
    // 1000 idle connections, then a SIGHUP reload (it opens the configuration file).
    let idle: Vec<UnixStream> = (0..1000)
        .map(|_| UnixStream::connect(&sock).unwrap())
        .collect();
    let (code, st) = call(&api, "GET", "/status", None);
    assert_eq!(code, 200, "{st}");
    let ok = Command::new("kill")
        .args(["-HUP", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t0 = Instant::now();
    while !stderr(&d).contains("configuration reloaded") {
        assert!(
            !stderr(&d).contains("reload refused"),
            "the reload failed: {}",
            stderr(&d)
        );
        assert!(t0.elapsed() < HANG, "no reload: {}", stderr(&d));
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(idle);

    // Up and unchanged (the SIGHUP reload of the same file changes no VIP or backend).
    let (code, after) = call(&api, "GET", "/vips", None);
    assert_eq!(code, 200, "{after}");
    assert_eq!(after, before, "the pool is unchanged");
    assert!(d.child.try_wait().unwrap().is_none(), "the daemon is up");

    // SIGTERM: it exits.
    let ok = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
    let t_term = Instant::now();
    let st = loop {
        if let Some(st) = d.child.try_wait().unwrap() {
            break st;
        }
        assert!(t_term.elapsed() < HANG, "no exit: {}", stderr(&d));
        std::thread::sleep(Duration::from_millis(10));
    };
    let exit = t_term.elapsed();
    assert!(st.success(), "{st}: {}", stderr(&d));
    println!(
        "abuse run: {probes} refused requests, 2 cross-site requests, slow headers closed after {} ms, \
         1000 idle connections and a SIGHUP reload, pool unchanged; SIGTERM exit in {} ms; run {} ms",
        slow_closed.as_millis(),
        exit.as_millis(),
        t_run.elapsed().as_millis()
    );
}

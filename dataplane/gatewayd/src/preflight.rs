//! Checks made before DPDK starts, so that a missing hugetlbfs mount or a missing capability
//! (a container started without `--cap-add ...`) ends the daemon with one line naming the cause
//! and the fix, instead of DPDK's own messages (many lines, the cause in none of them).
//!
//! What is checked, and why each is needed (measured in docker/test-caps.sh):
//! - a hugetlbfs mount, unless the EAL runs with `--no-huge`: DPDK's memory comes from it;
//! - `CAP_NET_RAW` for `net_af_packet` and `net_af_xdp` devices: they open packet sockets;
//! - `CAP_NET_ADMIN` for `net_af_packet`, `net_af_xdp` and `net_tap` devices: they set the
//!   kernel interface promiscuous (SIOCSIFFLAGS) or create it (TUNSETIFF);
//! - `CAP_IPC_LOCK` when the af_packet rings exceed `RLIMIT_MEMLOCK`: the PMD maps each queue's
//!   RX and TX rings with `MAP_LOCKED` (framecnt x framesz bytes each), which counts against the
//!   limit (8 MiB in a Docker container here) unless the process has the capability;
//! - the NUMA memory-policy system calls (`get_mempolicy`): DPDK's memory allocator calls them,
//!   and Docker's default seccomp profile allows them only to a container with `CAP_SYS_NICE`.
//!   They are probed, not inferred from the capability set, since outside Docker (systemd, a
//!   plain host) no capability is needed for them.

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_IPC_LOCK: u32 = 14;

/// DPDK's af_packet defaults (drivers/net/af_packet): frames per ring and bytes per frame.
const AF_PACKET_FRAMECNT: u64 = 512;
const AF_PACKET_FRAMESZ: u64 = 2048;

/// One check's failure: the one-line message the daemon prints before exiting 1.
pub(crate) type Hint = String;

/// Runs every check for these EAL arguments; the first failure's hint.
pub(crate) fn check(eal_args: &[String]) -> Result<(), Hint> {
    let no_huge = eal_args.iter().any(|a| a == "--no-huge");
    if !no_huge {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        hugetlbfs(&mounts)?;
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if let Some(caps) = effective_caps(&status) {
        capabilities(eal_args, caps)?;
        let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
        locked_rings(eal_args, caps, memlock_limit(&limits))?;
    }
    if !no_huge && !trapeze_dpdk::mapping::numa_policy_calls_allowed() {
        return Err(
            "the NUMA memory-policy system calls are refused (get_mempolicy: EPERM), \
                    which DPDK's memory allocator needs; Docker's default seccomp profile allows \
                    them only with CAP_SYS_NICE: add --cap-add SYS_NICE"
                .into(),
        );
    }
    Ok(())
}

/// A hugetlbfs mount in `mounts` (the text of /proc/self/mounts), or the hint.
fn hugetlbfs(mounts: &str) -> Result<(), Hint> {
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(2) == Some("hugetlbfs"))
    {
        return Ok(());
    }
    Err("no hugetlbfs mount: DPDK takes its memory from huge pages; mount one \
         (host: mount -t hugetlbfs nodev /dev/hugepages; container: -v /dev/hugepages:/dev/hugepages) \
         or start with --no-huge"
        .into())
}

/// The effective capability set (`CapEff:` of /proc/self/status).
fn effective_caps(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities the configured virtual devices need, or the hint naming the first missing.
fn capabilities(eal_args: &[String], caps: u64) -> Result<(), Hint> {
    let has = |cap: u32| caps & (1u64 << cap) != 0;
    for dev in vdevs(eal_args) {
        let driver = dev.trim_end_matches(|c: char| c.is_ascii_digit());
        let needs: &[(u32, &str, &str)] = match driver {
            "net_af_packet" => &[
                (CAP_NET_RAW, "NET_RAW", "opens an AF_PACKET socket"),
                (CAP_NET_ADMIN, "NET_ADMIN", "sets its interface promiscuous"),
            ],
            "net_af_xdp" => &[
                (CAP_NET_RAW, "NET_RAW", "opens an AF_XDP socket"),
                (CAP_NET_ADMIN, "NET_ADMIN", "attaches an XDP program"),
            ],
            "net_tap" => &[(CAP_NET_ADMIN, "NET_ADMIN", "creates its tap interface")],
            _ => &[],
        };
        for &(cap, name, why) in needs {
            if !has(cap) {
                return Err(format!(
                    "missing capability CAP_{name}: {dev} {why} (container: --cap-add {name}; \
                     systemd: AmbientCapabilities=CAP_{name})"
                ));
            }
        }
    }
    Ok(())
}

/// The soft `Max locked memory` of /proc/self/limits in bytes (`None`: unlimited or unknown).
fn memlock_limit(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max locked memory"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The bytes the af_packet devices lock (RX and TX ring per queue pair), or the hint when that
/// exceeds `limit` and the process lacks `CAP_IPC_LOCK`.
fn locked_rings(eal_args: &[String], caps: u64, limit: Option<u64>) -> Result<(), Hint> {
    let (Some(limit), false) = (limit, caps & (1u64 << CAP_IPC_LOCK) != 0) else {
        return Ok(());
    };
    let mut total = 0u64;
    for spec in vdev_specs(eal_args) {
        let mut kv = spec.split(',');
        let name = kv.next().unwrap_or("");
        if name.trim_end_matches(|c: char| c.is_ascii_digit()) != "net_af_packet" {
            continue;
        }
        let (mut cnt, mut sz, mut qp) = (AF_PACKET_FRAMECNT, AF_PACKET_FRAMESZ, 1u64);
        for (k, v) in kv.filter_map(|p| p.split_once('=')) {
            let v = v.parse::<u64>().ok();
            match (k, v) {
                ("framecnt", Some(v)) => cnt = v,
                ("framesz", Some(v)) => sz = v,
                ("qpairs", Some(v)) => qp = v,
                _ => {}
            }
        }
        total = total.saturating_add(cnt.saturating_mul(sz).saturating_mul(2).saturating_mul(qp));
    }
    if total <= limit {
        return Ok(());
    }
    let mib = |b: u64| b as f64 / 1048576.0;
    Err(format!(
        "the af_packet rings lock {:.1} MiB (MAP_LOCKED), over RLIMIT_MEMLOCK {:.1} MiB, and \
         CAP_IPC_LOCK is missing (container: --cap-add IPC_LOCK; systemd: \
         AmbientCapabilities=CAP_IPC_LOCK or LimitMEMLOCK=infinity)",
        mib(total),
        mib(limit)
    ))
}

/// The device names of the `--vdev` arguments (`--vdev=NAME,...` or `--vdev NAME,...`).
fn vdevs(eal_args: &[String]) -> Vec<&str> {
    vdev_specs(eal_args)
        .into_iter()
        .map(|spec| spec.split(',').next().unwrap_or(spec))
        .collect()
}

/// The `--vdev` arguments' values (`NAME,key=value,...`).
fn vdev_specs(eal_args: &[String]) -> Vec<&str> {
    let mut out = Vec::new();
    let mut it = eal_args.iter();
    while let Some(a) = it.next() {
        let spec = if let Some(v) = a.strip_prefix("--vdev=") {
            Some(v)
        } else if a == "--vdev" {
            it.next().map(String::as_str)
        } else {
            None
        };
        if let Some(spec) = spec {
            out.push(spec);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn hugetlbfs_found_or_hinted() {
        assert!(hugetlbfs("nodev /dev/hugepages hugetlbfs rw,relatime,pagesize=2M 0 0\n").is_ok());
        let e = hugetlbfs("proc /proc proc rw 0 0\n").unwrap_err();
        assert!(e.starts_with("no hugetlbfs mount") && !e.contains('\n'));
    }

    #[test]
    fn caps_of_af_packet() {
        let a = args(&[
            "--no-pci",
            "--vdev=net_af_packet0,iface=gw-c",
            "--vdev",
            "net_null1",
        ]);
        let all = (1 << CAP_NET_RAW) | (1 << CAP_NET_ADMIN);
        assert!(capabilities(&a, all).is_ok());
        let e = capabilities(&a, 1 << CAP_NET_ADMIN).unwrap_err();
        assert!(e.contains("CAP_NET_RAW") && e.contains("net_af_packet0") && !e.contains('\n'));
        let e = capabilities(&a, 1 << CAP_NET_RAW).unwrap_err();
        assert!(e.contains("CAP_NET_ADMIN"));
        // Devices that need nothing.
        assert!(capabilities(
            &args(&["--vdev=net_null0", "--vdev=net_memif0,role=server"]),
            0
        )
        .is_ok());
    }

    #[test]
    fn locked_rings_against_the_limit() {
        let small = args(&[
            "--vdev=net_af_packet0,iface=a",
            "--vdev=net_af_packet1,iface=b",
        ]);
        let big = args(&[
            "--vdev=net_af_packet0,framecnt=4096,iface=a",
            "--vdev=net_af_packet1,iface=b",
        ]);
        let limit = Some(8 << 20);
        // 2 x 512 x 2048 x 2 = 4 MiB: under 8 MiB.
        assert!(locked_rings(&small, 0, limit).is_ok());
        // 4096 x 2048 x 2 + 4 MiB / 2 = 18 MiB: over, unless CAP_IPC_LOCK or no limit.
        let e = locked_rings(&big, 0, limit).unwrap_err();
        assert!(
            e.contains("18.0 MiB") && e.contains("IPC_LOCK") && !e.contains('\n'),
            "{e}"
        );
        assert!(locked_rings(&big, 1 << CAP_IPC_LOCK, limit).is_ok());
        assert!(locked_rings(&big, 0, None).is_ok());
        let limits = "Max locked memory         8388608              8388608              bytes\n";
        assert_eq!(memlock_limit(limits), Some(8 << 20));
        assert_eq!(
            memlock_limit("Max locked memory unlimited unlimited bytes\n"),
            None
        );
    }

    #[test]
    fn capeff_parsed() {
        let s = "Name:\tx\nCapEff:\t0000000000003000\n";
        assert_eq!(effective_caps(s), Some(0x3000));
        assert_eq!(effective_caps("Name: x\n"), None);
    }
}

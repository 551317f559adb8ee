//! Checks made before DPDK starts, so that a missing hugetlbfs mount or a missing capability
//! (a container started without `--cap-add ...`) ends the daemon with one line naming the cause
//! and the fix, instead of DPDK's own messages (many lines, the cause in none of them).
//!
//! What is checked, and why each is needed (measured in docker/test-caps.sh):
//! - a hugetlbfs mount, unless the EAL runs with `--no-huge`: DPDK's memory comes from it;
//! - `CAP_NET_RAW` for `net_af_packet` and `net_af_xdp` devices: they open packet sockets;
//! - `CAP_NET_ADMIN` for `net_af_packet`, `net_af_xdp` and `net_tap` devices: they set the
//!   kernel interface promiscuous (SIOCSIFFLAGS) or create it (TUNSETIFF);
//! - the NUMA memory-policy system calls (`get_mempolicy`): DPDK's memory allocator calls them,
//!   and Docker's default seccomp profile allows them only to a container with `CAP_SYS_NICE`.
//!   They are probed, not inferred from the capability set, since outside Docker (systemd, a
//!   plain host) no capability is needed for them.

/// Capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;

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

/// The device names of the `--vdev` arguments (`--vdev=NAME,...` or `--vdev NAME,...`).
fn vdevs(eal_args: &[String]) -> Vec<&str> {
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
            out.push(spec.split(',').next().unwrap_or(spec));
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
    fn capeff_parsed() {
        let s = "Name:\tx\nCapEff:\t0000000000003000\n";
        assert_eq!(effective_caps(s), Some(0x3000));
        assert_eq!(effective_caps("Name: x\n"), None);
    }
}

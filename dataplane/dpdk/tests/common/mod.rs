//! Shared by the EAL test binaries (each binary is one process: DPDK's EAL can be initialised
//! once per process). Every EAL here runs with `--no-pci` (never touch the machine's NICs) and
//! its own `--file-prefix`, whose runtime files are removed at the end.

#![allow(dead_code)]

use std::path::PathBuf;

/// A unique file prefix for this test process, and cleanup of DPDK's runtime files.
pub(crate) struct Prefix(pub(crate) String);

impl Prefix {
    pub(crate) fn new(test: &str) -> Self {
        Prefix(format!("tz-{test}-{}", std::process::id()))
    }

    /// EAL arguments: `--no-pci`, this prefix, main lcore 0, plus `extra`.
    pub(crate) fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = ["--no-pci", "-l", "0", "--file-prefix", &self.0]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    fn runtime_dirs(&self) -> Vec<PathBuf> {
        let mut dirs = vec![PathBuf::from("/var/run/dpdk").join(&self.0)];
        if let Ok(xdg) = std::env::var("XDG_RUNTIME_DIR") {
            dirs.push(PathBuf::from(xdg).join("dpdk").join(&self.0));
        }
        dirs.push(PathBuf::from("/tmp/dpdk").join(&self.0));
        dirs
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        for dir in self.runtime_dirs() {
            let _ = std::fs::remove_dir_all(dir);
        }
        // Hugepage backing files, if a test used hugepages without --huge-unlink.
        if let Ok(entries) = std::fs::read_dir("/dev/hugepages") {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&self.0) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
    }
}

/// A 64-byte Ethernet/IPv4/UDP-looking frame whose payload carries `seq`.
pub(crate) fn frame(seq: u8) -> Vec<u8> {
    let mut f = vec![0u8; 64];
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    for (i, b) in f[14..].iter_mut().enumerate() {
        *b = seq.wrapping_add(i as u8);
    }
    f
}

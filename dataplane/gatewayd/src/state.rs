//! Where the daemon's tables live: the state file (`[state]`), opened at start-up, before the
//! first pool is published.
//!
//! ```text
//! [state] persist = true:
//!   the file: [state].path, or <file-prefix>.tzstate in /dev/hugepages (hugetlbfs), else
//!   /dev/shm; an existing file is used where it is (either directory)
//!   lock it (flock; a running daemon holds it: refuse to start)
//!   inspect it:  same geometry  -> re-attach in place
//!                other geometry -> carry the surviving entries into a new file, renamed over it
//!                new, foreign, other version, corrupt header -> cold start (reason logged)
//!   a new file that finds too few free huge pages goes to /dev/shm (logged)
//! [state] persist = false: anonymous memory (huge pages when enough are free), cold
//! ```
//!
//! The core validates and re-attaches (`trapeze_core::state`); this module chooses the file,
//! maps it (`trapeze_dpdk::mapping`) and logs what happened. It hands the runtime one flow table
//! per worker, the token table, the configured pool with its ids seeded from the file (publish
//! that one), and a [`Keeper`] that the control loop calls after pool changes
//! ([`Keeper::pool_changed`]) and at a clean stop ([`Keeper::stopped`]).

use std::io::Read;
use std::path::{Path, PathBuf};

use trapeze_control::config::GatewayConfig;
use trapeze_control::log::Log;
use trapeze_control::publish::Published;
use trapeze_core::flow::FlowSecret;
use trapeze_core::pool::PoolSpec;
use trapeze_core::state::{self, Env, Refusal, Restored, StateFile, Want};
use trapeze_core::tables::flow_table::FlowTable;
use trapeze_core::tables::token::TokenTable;
use trapeze_core::Ticks;
use trapeze_dpdk::mapping::{self, MapError, MappedFile};

/// Where hugetlbfs is expected.
const HUGE_DIR: &str = "/dev/hugepages";
/// Where files go without hugetlbfs, or without enough free huge pages.
const SHM_DIR: &str = "/dev/shm";

/// The tables of this run, and the keeper of their file.
pub(crate) struct Tables {
    /// One per worker.
    pub(crate) flows: Vec<FlowTable>,
    /// Shared.
    pub(crate) tokens: TokenTable,
    /// The configured pool with the file's ids: the one to publish.
    pub(crate) pool: PoolSpec,
    /// The file's keeper (`None` without persistence).
    pub(crate) keeper: Option<Keeper>,
}

/// Keeps the state file current: the identities of the running pool, the clean-stop mark. Holds
/// the file's lock for the life of the process.
pub(crate) struct Keeper {
    file: StateFile,
    _lock: MappedFile,
    path: PathBuf,
    recorded: u64,
    warned: bool,
}

impl Keeper {
    /// Records the identities of the published pool when it changed (one atomic load
    /// otherwise): the supervising thread calls it every round (10 ms).
    pub(crate) fn pool_changed(&mut self, published: &Published, log: &Log) {
        if published.version() == self.recorded {
            return;
        }
        self.recorded = published.version();
        let unrecorded = self.file.record(&published.load());
        if unrecorded > 0 && !self.warned {
            self.warned = true;
            log.warn(format!(
                "state: {unrecorded} backend or VIP id(s) beyond the file's identity slots (or \
                 with names over 64 bytes): their flows will not survive a restart"
            ));
        }
    }

    /// Marks a clean stop (after the workers stopped).
    pub(crate) fn stopped(&mut self, log: &Log) {
        self.file.mark_clean();
        log.info(format!(
            "state: {} kept for the next start (clean stop, generation {})",
            self.path.display(),
            self.file.generation()
        ));
    }
}

/// Opens (or creates) the tables for `workers` workers (see the module documentation).
pub(crate) fn open(cfg: &GatewayConfig, workers: u16, log: &Log) -> Result<Tables, String> {
    let want = Want::new(
        workers,
        cfg.worker.flows,
        cfg.tokens,
        cfg.worker.max_backends,
        cfg.worker.max_vips,
    );
    let env = Env {
        now: Ticks(mapping::monotonic_ns()),
        boot_id: boot_id(),
        pid: std::process::id(),
    };
    let len = want.file_len();
    if !cfg.state.persist {
        let (m, huge) = mapping::anonymous(len, true).map_err(|e| format!("tables: {e}"))?;
        let r = state::create(m.leak(), &want, &env, random_secret(), &cfg.pool)
            .map_err(|e| format!("tables: {e}"))?;
        log.info(format!(
            "state: not kept across restarts ([state] persist = false); tables in {} MiB of {}",
            len.div_ceil(1 << 20),
            if huge { "huge pages" } else { "4 KiB pages" }
        ));
        return Ok(Tables {
            flows: r.flows,
            tokens: r.tokens,
            pool: r.pool,
            keeper: None,
        });
    }

    let name = cfg
        .state
        .path
        .as_ref()
        .and_then(|p| p.file_name())
        .map_or_else(|| cfg.state.default_name.clone().into(), |n| n.to_owned());
    let shm = Path::new(SHM_DIR).join(&name);
    let primary = match &cfg.state.path {
        Some(p) => p.clone(),
        None if mapping::is_hugetlbfs(Path::new(HUGE_DIR)) => Path::new(HUGE_DIR).join(&name),
        None => shm.clone(),
    };
    // An existing file is used where it is: the fallback directory holds it when hugetlbfs had
    // no room for it last time.
    let exists = |p: &Path| std::fs::metadata(p).is_ok_and(|m| m.len() > 0);
    let path = if !exists(&primary) && primary != shm && exists(&shm) {
        shm.clone()
    } else {
        primary.clone()
    };
    let file = MappedFile::open(&path).map_err(|e| format!("state: {e}"))?;
    // The other candidate, if a previous run left one there, is stale once this one is chosen.
    for other in [&primary, &shm] {
        if other != &path && exists(other) {
            if let Ok(f) = MappedFile::open(other) {
                if f.unlink().is_ok() {
                    log.info(format!("state: removed a stale {}", other.display()));
                }
            }
        }
    }

    let existing = file.len().map_err(|e| format!("state: {e}"))? as usize;
    let cold_reason = if existing == 0 {
        Refusal::Empty
    } else {
        let m = file.map(existing).map_err(|e| format!("state: {e}"))?;
        match state::inspect(m.bytes()) {
            Ok(info) if info.geometry == want.geometry => {
                let r = match state::attach(m.leak(), &want, &env, &cfg.pool) {
                    Ok(r) => r,
                    // `inspect` accepted it: only a mapping that is not page-aligned gets here.
                    Err((why, _)) => return Err(format!("state: {}: {why}", path.display())),
                };
                return Ok(finish(r, file, path, &want, log));
            }
            Ok(info) => {
                let carried = state::carry_over(m.bytes()).map_err(|e| format!("state: {e}"))?;
                drop(m);
                log.info(format!(
                    "state: {} holds {}; the configuration wants {}: carrying the entries over \
                     into a new file",
                    path.display(),
                    info.geometry,
                    want.geometry
                ));
                let (new, m) = create(&path.with_extension("tzstate.new"), &shm, len, log)?;
                let r = state::restore(m.leak(), &want, &env, &cfg.pool, carried)
                    .map_err(|e| format!("state: {e}"))?;
                let mut new = new;
                let target = new.path().with_file_name(&name);
                new.rename(&target).map_err(|e| format!("state: {e}"))?;
                if target != path {
                    let _ = file.unlink();
                }
                drop(file);
                let p = new.path().to_path_buf();
                return Ok(finish(r, new, p, &want, log));
            }
            Err(why) => why,
        }
    };
    if cold_reason != Refusal::Empty {
        log.warn(format!(
            "state: {}: {cold_reason}: starting cold (a new, empty file)",
            path.display()
        ));
    }
    file.clear().map_err(|e| format!("state: {e}"))?;
    let (file, m) = match file.size(len) {
        Ok(n) => {
            let m = file.map(n).map_err(|e| format!("state: {e}"))?;
            (file, m)
        }
        Err(MapError::NoRoom { err, .. }) if path != shm => {
            let _ = file.unlink();
            log.warn(format!(
                "state: not enough free huge pages for {} MiB in {} ({err}): using {}",
                len.div_ceil(1 << 20),
                path.display(),
                shm.display()
            ));
            create(&shm, &shm, len, log)?
        }
        Err(e) => return Err(format!("state: {e}")),
    };
    let r = state::create(m.leak(), &want, &env, random_secret(), &cfg.pool)
        .map_err(|e| format!("state: {e}"))?;
    let p = file.path().to_path_buf();
    Ok(finish(r, file, p, &want, log))
}

/// A new, sized, mapped file at `path`, or at `fallback` when `path` has no room.
fn create(
    path: &Path,
    fallback: &Path,
    len: usize,
    log: &Log,
) -> Result<(MappedFile, mapping::Mapping), String> {
    let f = MappedFile::open(path).map_err(|e| format!("state: {e}"))?;
    f.clear().map_err(|e| format!("state: {e}"))?;
    match f.size(len) {
        Ok(n) => {
            let m = f.map(n).map_err(|e| format!("state: {e}"))?;
            Ok((f, m))
        }
        Err(MapError::NoRoom { err, .. }) if path.parent() != fallback.parent() => {
            let _ = f.unlink();
            let to = fallback.with_file_name(path.file_name().unwrap_or_default());
            log.warn(format!(
                "state: no room for {} MiB in {} ({err}): using {}",
                len.div_ceil(1 << 20),
                path.display(),
                to.display()
            ));
            create(&to, &to, len, log)
        }
        Err(e) => Err(format!("state: {e}")),
    }
}

fn finish(r: Restored, lock: MappedFile, path: PathBuf, want: &Want, log: &Log) -> Tables {
    let backing = lock.backing();
    log.info(format!(
        "state: {} ({backing}, {} MiB): {}",
        path.display(),
        want.file_len().div_ceil(1 << 20),
        r.report
    ));
    let Restored {
        flows,
        tokens,
        pool,
        file,
        ..
    } = r;
    Tables {
        flows,
        tokens,
        pool,
        keeper: Some(Keeper {
            file,
            _lock: lock,
            path,
            // The first publication is version 1 of `Published`: recorded by the next round.
            recorded: 0,
            warned: false,
        }),
    }
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`), the timeline of CLOCK_MONOTONIC; zeros
/// when it cannot be read (stamps are then kept as found).
fn boot_id() -> [u8; 16] {
    let mut id = [0u8; 16];
    if let Ok(text) = std::fs::read_to_string("/proc/sys/kernel/random/boot_id") {
        let hex: Vec<u8> = text
            .bytes()
            .filter(u8::is_ascii_hexdigit)
            .map(|c| (c as char).to_digit(16).unwrap_or(0) as u8)
            .collect();
        for (i, pair) in hex.chunks(2).take(16).enumerate() {
            id[i] = pair[0] << 4 | pair.get(1).copied().unwrap_or(0);
        }
    }
    id
}

/// A fresh secret for the flow tables' buckets, from the kernel's random source.
fn random_secret() -> FlowSecret {
    let mut b = [0u8; 8];
    let read = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut b));
    if read.is_err() {
        // Never here on Linux; the process's hasher keys are the next best thing.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(mapping::monotonic_ns());
        b = h.finish().to_le_bytes();
    }
    FlowSecret(u64::from_le_bytes(b))
}

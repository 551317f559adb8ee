//! The state file: the flow tables, the token table's owner records and the backend and VIP
//! identities in one mapped file that outlives the daemon, so that a restarted daemon (after a
//! crash, `kill -9`, or a planned stop) re-attaches to its flows and tokens.
//!
//! The runtime maps the file (on hugetlbfs when it can: that is also what makes the tables
//! hugepage-backed; see `trapeze-dpdk`'s `StateFile`) and hands this module its bytes, plain
//! memory. Everything here is safe code: the bytes are cut into typed sections with `bytemuck`
//! (every record type is plain old data: no padding, no pointer, no enum, every byte pattern a
//! value), and nothing in them is trusted before it is validated.
//!
//! ## Layout (version [`LAYOUT_VERSION`])
//!
//! ```text
//! 0        Header: magic, layout version, the size of every record type, the geometry
//!          (workers, flow buckets per worker, token shards/quota/records, identity slots),
//!          the file length, the flow-table secret, a checksum (SHA-256) of all of it.
//!          Written once, when the file is formatted.
//! 1024     Status: clean-stop mark, pid, generation, boot id of the clock, pool version.
//!          Written at start, on pool changes and at a clean stop; not checksummed.
//! 4096     backend identities, one 104-byte record per BackendId (slot = id)
//!  ...     VIP identities, one 96-byte record per VipId
//!  ...     per worker: its flow table's tags (32 bytes a bucket) then entries (64 bytes each)
//!  ...     token owner records (88 bytes each), shard after shard
//! ```
//!
//! Every section starts on a 4 KiB boundary. A field layout change is a new
//! [`LAYOUT_VERSION`] (and record sizes are checked too), so a daemon never reads records of
//! another shape: it starts cold.
//!
//! ## What happens at start ([`inspect`], then one of [`attach`], [`carry_over`] + [`restore`],
//! [`create`])
//!
//! | the file | what the daemon does |
//! |---|---|
//! | missing or empty | cold start: [`create`] (a fresh random secret) |
//! | not ours, another layout version or record sizes, bad header checksum, inconsistent geometry | cold start, the reason logged |
//! | same geometry as the configuration | [`attach`] in place: every slot validated |
//! | another geometry (worker count, table sizes) | [`carry_over`] the surviving entries, [`restore`] them into a new file |
//!
//! Re-attaching validates everything, whatever the clean-stop mark says (it is reported, not
//! trusted):
//!
//! * **Identities** first ([`ids`]): the configuration's backends and VIPs get their old ids
//!   when unchanged, new never-used ids otherwise; the configuration's pool is published with
//!   those ids ([`Restored::pool`]).
//! * **Flows**: a slot is kept when its tag is its key's under the file's secret, in its bucket
//!   ([`FlowTable::repair`]), its state is one of the five, its key is TCP, its owner worker is
//!   this one, and its backend and VIP survive. Flows of removed backends or VIPs are dropped.
//! * **Tokens**: an owner record is kept when its token is SHA-256 of its server key, in its
//!   shard, and its backend survives ([`TokenTable::with_records`]); its subflow count is then
//!   recomputed from the flow entries that reference it, and an owner no entry references is
//!   dropped ([`TokenTable::recount`]; this also repairs a crash between a flow insert and its
//!   subflow count). A flow that references an owner which did not survive loses the reference.
//! * **Time**: timestamps are the runtime's clock (CLOCK_MONOTONIC, the same for every process
//!   of one boot). The status keeps the boot id; after a reboot (a file on a disk) every stamp
//!   is reset to now, as is any stamp in the future.
//!
//! A stop, clean or not, leaves the file as it is; the next start re-attaches. The runtime
//! locks the file (`flock`) so that a second daemon cannot attach to a file a live one maps.

pub mod ids;

use core::fmt;
use core::mem::size_of;
use core::sync::atomic::{compiler_fence, Ordering};
use std::collections::HashMap;

use bytemuck::{Pod, Zeroable};
use sha2::{Digest, Sha256};

use crate::flow::{hash_words_seeded, FlowSecret};
use crate::pipeline::steer;
use crate::pool::{BackendId, PoolSnapshot, PoolSpec, VipId};
use crate::tables::flow_table::{flags, FlowEntry, FlowState, FlowTable, FlowTableConfig, WAYS};
use crate::tables::mem::TableMem;
use crate::tables::token::{OwnerRecord, Rebuilt, TokenGeometry, TokenTable, TokenTableConfig};
use crate::time::{coarse_elapsed, Ticks};

use ids::{BackendIdent, Persisted, Seeded, VipIdent, NAME_MAX};

/// The layout version this build reads and writes. 3: IPv4 flow keys are bucketed by one
/// folded multiply of two keyed words ([`FlowKey::keyed_hash`](crate::flow::FlowKey::keyed_hash));
/// files of layout 1 (five-word rounds) and 2 (two-word rounds) placed them elsewhere, so they
/// are refused (a cold start) rather than repaired into an empty table.
pub const LAYOUT_VERSION: u32 = 3;

/// The first bytes of a state file.
pub const MAGIC: [u8; 8] = *b"TRAPEZE\x00";

/// Sections start on this boundary.
const ALIGN: usize = 4096;

/// Where the status lies in the first page.
const STATUS_AT: usize = 1024;

/// The status word of a file whose daemon stopped cleanly.
const CLEAN: u32 = 0x434c_4e21; // "CLN!"

/// How the configuration cuts the file: what must be equal for an attach in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Geometry {
    /// Workers, one flow table each.
    pub workers: u32,
    /// Buckets of each flow table (a power of two).
    pub flow_buckets: u32,
    /// The token table's pools.
    pub tokens: TokenGeometry,
    /// Backend identity slots (backend ids the file can remember).
    pub backend_slots: u32,
    /// VIP identity slots.
    pub vip_slots: u32,
}

impl fmt::Display for Geometry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} worker(s) x {} flows, {} token records in {} shards, {} backend and {} VIP ids",
            self.workers,
            self.flow_buckets as usize * WAYS,
            self.tokens.shards * self.tokens.records_per_shard,
            self.tokens.shards,
            self.backend_slots,
            self.vip_slots
        )
    }
}

/// What the configuration asks of the state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Want {
    /// The geometry.
    pub geometry: Geometry,
    /// Flow tables (their timeouts; the capacity is in the geometry).
    pub flows: FlowTableConfig,
    /// The token table.
    pub tokens: TokenTableConfig,
}

impl Want {
    /// For `workers` workers with flow tables of `flows`, a token table of `tokens`, and room
    /// for the identities of ids below `backend_slots` and `vip_slots`.
    pub fn new(
        workers: u16,
        flows: FlowTableConfig,
        tokens: TokenTableConfig,
        backend_slots: usize,
        vip_slots: usize,
    ) -> Self {
        Self {
            geometry: Geometry {
                workers: u32::from(workers.max(1)),
                flow_buckets: FlowTable::buckets_for(flows.capacity) as u32,
                tokens: TokenGeometry::of(tokens),
                backend_slots: backend_slots.min(1 << 16) as u32,
                vip_slots: vip_slots.min(1 << 16) as u32,
            },
            flows,
            tokens,
        }
    }

    /// The bytes a file of this geometry needs.
    pub fn file_len(&self) -> usize {
        Layout::of(&self.geometry).len
    }
}

/// The header (see the module documentation).
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
#[repr(C)]
struct Header {
    magic: [u8; 8],
    version: u32,
    header_size: u32,
    flow_entry_size: u32,
    tag_bucket_size: u32,
    owner_record_size: u32,
    backend_record_size: u32,
    vip_record_size: u32,
    workers: u32,
    flow_buckets: u32,
    token_shards: u32,
    token_quota: u32,
    token_records: u32,
    backend_slots: u32,
    vip_slots: u32,
    file_len: u64,
    secret: u64,
    checksum: u64,
}

impl Header {
    fn new(g: &Geometry, secret: FlowSecret) -> Self {
        let mut h = Self {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_size: size_of::<Header>() as u32,
            flow_entry_size: size_of::<FlowEntry>() as u32,
            tag_bucket_size: size_of::<[u32; WAYS]>() as u32,
            owner_record_size: size_of::<OwnerRecord>() as u32,
            backend_record_size: size_of::<BackendRecord>() as u32,
            vip_record_size: size_of::<VipRecord>() as u32,
            workers: g.workers,
            flow_buckets: g.flow_buckets,
            token_shards: g.tokens.shards as u32,
            token_quota: g.tokens.quota as u32,
            token_records: g.tokens.records_per_shard as u32,
            backend_slots: g.backend_slots,
            vip_slots: g.vip_slots,
            file_len: Layout::of(g).len as u64,
            secret: secret.0,
            checksum: 0,
        };
        h.checksum = h.digest();
        h
    }

    /// SHA-256 of the header with a zero checksum, first 8 bytes.
    fn digest(&self) -> u64 {
        let mut h = *self;
        h.checksum = 0;
        let d = Sha256::digest(bytemuck::bytes_of(&h));
        u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
    }

    fn geometry(&self) -> Geometry {
        Geometry {
            workers: self.workers,
            flow_buckets: self.flow_buckets,
            tokens: TokenGeometry {
                shards: self.token_shards as usize,
                quota: self.token_quota as usize,
                records_per_shard: self.token_records as usize,
            },
            backend_slots: self.backend_slots,
            vip_slots: self.vip_slots,
        }
    }
}

/// The status (see the module documentation).
#[derive(Debug, Clone, Copy, Default, Pod, Zeroable)]
#[repr(C)]
struct Status {
    clean: u32,
    pid: u32,
    generation: u64,
    boot_id: [u8; 16],
    pool_version: u64,
}

/// A backend identity in the file (slot = id).
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct BackendRecord {
    check: u64,
    used: u8,
    has_v4: u8,
    has_v6: u8,
    name_len: u8,
    port: u16,
    spare: [u8; 6],
    ipv4: [u8; 4],
    ipv6: [u8; 16],
    name: [u8; NAME_MAX],
}

/// A VIP identity in the file (slot = id).
#[derive(Debug, Clone, Copy, Pod, Zeroable)]
#[repr(C)]
struct VipRecord {
    check: u64,
    used: u8,
    proto: u8,
    name_len: u8,
    spare0: u8,
    port: u16,
    spare: [u8; 2],
    addr: [u8; 16],
    name: [u8; NAME_MAX],
}

/// A check value of a record's bytes after its first 8 (its check field).
fn record_check(bytes: &[u8], seed: u64) -> u64 {
    let words: Vec<u64> = bytes[8..]
        .chunks(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w[..c.len()].copy_from_slice(c);
            u64::from_le_bytes(w)
        })
        .collect();
    hash_words_seeded(seed, &words)
}

const BACKEND_SEED: u64 = 0x7472_6170_6562_6b31; // "trapebk1"
const VIP_SEED: u64 = 0x7472_6170_6576_6931; // "trapevi1"

fn name_bytes(name: &str) -> Option<([u8; NAME_MAX], u8)> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() > NAME_MAX {
        return None;
    }
    let mut out = [0u8; NAME_MAX];
    out[..b.len()].copy_from_slice(b);
    Some((out, b.len() as u8))
}

fn name_of(bytes: &[u8; NAME_MAX], len: u8) -> Option<String> {
    let len = usize::from(len);
    if len == 0 || len > NAME_MAX {
        return None;
    }
    core::str::from_utf8(&bytes[..len]).ok().map(str::to_string)
}

impl BackendRecord {
    fn encode(i: &BackendIdent) -> Option<Self> {
        let (name, name_len) = name_bytes(&i.name)?;
        let mut r = Self {
            check: 0,
            used: 1,
            has_v4: u8::from(i.ipv4.is_some()),
            has_v6: u8::from(i.ipv6.is_some()),
            name_len,
            port: i.port,
            spare: [0; 6],
            ipv4: i.ipv4.map_or([0; 4], |a| a.octets()),
            ipv6: i.ipv6.map_or([0; 16], |a| a.octets()),
            name,
        };
        r.check = record_check(bytemuck::bytes_of(&r), BACKEND_SEED);
        Some(r)
    }

    fn decode(&self) -> Option<BackendIdent> {
        if self.used != 1 || self.check != record_check(bytemuck::bytes_of(self), BACKEND_SEED) {
            return None;
        }
        Some(BackendIdent {
            name: name_of(&self.name, self.name_len)?,
            ipv4: (self.has_v4 == 1).then(|| self.ipv4.into()),
            ipv6: (self.has_v6 == 1).then(|| self.ipv6.into()),
            port: self.port,
        })
    }
}

impl VipRecord {
    fn encode(i: &VipIdent) -> Option<Self> {
        let (name, name_len) = name_bytes(&i.name)?;
        let mut r = Self {
            check: 0,
            used: 1,
            proto: i.proto,
            name_len,
            spare0: 0,
            port: i.port,
            spare: [0; 2],
            addr: crate::flow::addr_bytes(i.addr),
            name,
        };
        r.check = record_check(bytemuck::bytes_of(&r), VIP_SEED);
        Some(r)
    }

    fn decode(&self) -> Option<VipIdent> {
        if self.used != 1 || self.check != record_check(bytemuck::bytes_of(self), VIP_SEED) {
            return None;
        }
        Some(VipIdent {
            name: name_of(&self.name, self.name_len)?,
            addr: crate::flow::addr_from_bytes(self.addr),
            port: self.port,
            proto: self.proto,
        })
    }
}

/// Writes `r` into `slot` so that a process killed half-way leaves a record whose check fails
/// (its fields first, its check last).
fn write_record<R: Pod>(slot: &mut R, r: &R) {
    let b = bytemuck::bytes_of_mut(slot);
    let new = bytemuck::bytes_of(r);
    b[..8].fill(0);
    compiler_fence(Ordering::Release);
    b[8..].copy_from_slice(&new[8..]);
    compiler_fence(Ordering::Release);
    b[..8].copy_from_slice(&new[..8]);
}

/// Byte offsets of the sections.
#[derive(Debug, Clone)]
struct Layout {
    backends: usize,
    vips: usize,
    /// Per worker: (tags, entries).
    flows: Vec<(usize, usize)>,
    tokens: usize,
    len: usize,
}

impl Layout {
    fn of(g: &Geometry) -> Self {
        let up = |n: usize| n.div_ceil(ALIGN) * ALIGN;
        let mut at = ALIGN;
        let backends = at;
        at = up(at + g.backend_slots as usize * size_of::<BackendRecord>());
        let vips = at;
        at = up(at + g.vip_slots as usize * size_of::<VipRecord>());
        let buckets = g.flow_buckets as usize;
        let mut flows = Vec::with_capacity(g.workers as usize);
        for _ in 0..g.workers {
            let tags = at;
            at = up(at + buckets * size_of::<[u32; WAYS]>());
            let entries = at;
            at = up(at + buckets * WAYS * size_of::<FlowEntry>());
            flows.push((tags, entries));
        }
        let tokens = at;
        at = up(at + g.tokens.shards * g.tokens.records_per_shard * size_of::<OwnerRecord>());
        Self {
            backends,
            vips,
            flows,
            tokens,
            len: at,
        }
    }
}

/// Why a file cannot be attached (the daemon then starts cold and logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The file is new (all zero) or shorter than a header.
    Empty,
    /// It does not start with [`MAGIC`]: not a state file.
    NotOurs,
    /// Another layout version.
    Version {
        /// The file's.
        found: u32,
    },
    /// The same version with other record sizes (another build of it).
    RecordSizes,
    /// The header's checksum does not match: corrupt.
    Checksum,
    /// The header is intact but describes an impossible file (or one longer than the bytes).
    BadGeometry(String),
    /// The bytes are not aligned for the records (not a mapping).
    Misaligned,
    /// Another geometry than the configuration's ([`attach`] only: [`carry_over`] handles it).
    OtherGeometry {
        /// The file's.
        file: Geometry,
        /// The configuration's.
        config: Geometry,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => f.write_str("new file"),
            Self::NotOurs => f.write_str("not a trapeze state file (bad magic)"),
            Self::Version { found } => write!(
                f,
                "incompatible layout version {found} (this build reads {LAYOUT_VERSION})"
            ),
            Self::RecordSizes => f.write_str("incompatible layout (record sizes differ)"),
            Self::Checksum => f.write_str("corrupt header (checksum mismatch)"),
            Self::BadGeometry(why) => write!(f, "corrupt header ({why})"),
            Self::Misaligned => f.write_str("memory not aligned for the records"),
            Self::OtherGeometry { file, config } => {
                write!(f, "the file holds {file}, the configuration wants {config}")
            }
        }
    }
}

/// What [`inspect`] read from a file's header and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileInfo {
    /// The file's geometry.
    pub geometry: Geometry,
    /// Its flow-table secret.
    pub secret: FlowSecret,
    /// Starts so far.
    pub generation: u64,
    /// Whether its last daemon stopped cleanly.
    pub clean: bool,
    /// Its last daemon's pid.
    pub pid: u32,
    /// The boot its timestamps belong to.
    pub boot_id: [u8; 16],
}

/// Reads and checks a file's header (see [`Refusal`] for what is refused).
pub fn inspect(bytes: &[u8]) -> Result<FileInfo, Refusal> {
    if bytes.len() < ALIGN {
        return Err(Refusal::Empty);
    }
    let h: Header = bytemuck::pod_read_unaligned(&bytes[..size_of::<Header>()]);
    if h.magic != MAGIC {
        return Err(if bytes[..ALIGN].iter().all(|&b| b == 0) {
            Refusal::Empty
        } else {
            Refusal::NotOurs
        });
    }
    if h.version != LAYOUT_VERSION {
        return Err(Refusal::Version { found: h.version });
    }
    let sizes = Header::new(&h.geometry(), FlowSecret(0));
    if (
        h.header_size,
        h.flow_entry_size,
        h.tag_bucket_size,
        h.owner_record_size,
        h.backend_record_size,
        h.vip_record_size,
    ) != (
        sizes.header_size,
        sizes.flow_entry_size,
        sizes.tag_bucket_size,
        sizes.owner_record_size,
        sizes.backend_record_size,
        sizes.vip_record_size,
    ) {
        return Err(Refusal::RecordSizes);
    }
    if h.checksum != h.digest() {
        return Err(Refusal::Checksum);
    }
    let g = h.geometry();
    let bad = |why: &str| Err(Refusal::BadGeometry(why.to_string()));
    if g.workers == 0 || g.workers > 1024 {
        return bad("worker count");
    }
    if !g.flow_buckets.is_power_of_two() || g.flow_buckets > 1 << 28 {
        return bad("flow buckets");
    }
    if !g.tokens.shards.is_power_of_two() || g.tokens.shards > 1 << 16 {
        return bad("token shards");
    }
    if g.tokens.records_per_shard > 1 << 28 || g.backend_slots > 1 << 16 || g.vip_slots > 1 << 16 {
        return bad("table sizes");
    }
    if h.file_len != Layout::of(&g).len as u64 {
        return bad("file length");
    }
    if (bytes.len() as u64) < h.file_len {
        return bad("file shorter than its header says");
    }
    let st: Status =
        bytemuck::pod_read_unaligned(&bytes[STATUS_AT..STATUS_AT + size_of::<Status>()]);
    Ok(FileInfo {
        geometry: g,
        secret: FlowSecret(h.secret),
        generation: st.generation,
        clean: st.clean == CLEAN,
        pid: st.pid,
        boot_id: st.boot_id,
    })
}

/// The running process, as the state file sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Env {
    /// Now, on the runtime's clock (CLOCK_MONOTONIC).
    pub now: Ticks,
    /// The boot the clock belongs to (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: [u8; 16],
    /// This process.
    pub pid: u32,
}

/// The file cut into typed sections.
struct Sections {
    header: &'static mut Header,
    status: &'static mut Status,
    backends: &'static mut [BackendRecord],
    vips: &'static mut [VipRecord],
    flows: Vec<(TableMem<[u32; WAYS]>, TableMem<FlowEntry>)>,
    tokens: Vec<TableMem<OwnerRecord>>,
}

/// Takes `n` records of `T` at byte `offset` of what is left of the file (`at` is where that
/// rest starts).
fn take<T: Pod>(
    rest: &mut &'static mut [u8],
    at: &mut usize,
    offset: usize,
    n: usize,
) -> Result<&'static mut [T], Refusal> {
    let bytes = core::mem::take(rest);
    let skip = offset
        .checked_sub(*at)
        .filter(|&s| s <= bytes.len())
        .ok_or(Refusal::Misaligned)?;
    let (_, bytes) = bytes.split_at_mut(skip);
    let len = n * size_of::<T>();
    if bytes.len() < len {
        return Err(Refusal::BadGeometry("file too short".into()));
    }
    let (mine, tail) = bytes.split_at_mut(len);
    *rest = tail;
    *at = offset + len;
    bytemuck::try_cast_slice_mut(mine).map_err(|_| Refusal::Misaligned)
}

fn carve(bytes: &'static mut [u8], g: &Geometry) -> Result<Sections, Refusal> {
    let l = Layout::of(g);
    if bytes.len() < l.len {
        return Err(Refusal::BadGeometry("file too short".into()));
    }
    let mut rest = bytes;
    let mut at = 0;
    let header = take::<Header>(&mut rest, &mut at, 0, 1)?
        .first_mut()
        .ok_or(Refusal::Misaligned)?;
    let status = take::<Status>(&mut rest, &mut at, STATUS_AT, 1)?
        .first_mut()
        .ok_or(Refusal::Misaligned)?;
    let backends = take(&mut rest, &mut at, l.backends, g.backend_slots as usize)?;
    let vips = take(&mut rest, &mut at, l.vips, g.vip_slots as usize)?;
    let buckets = g.flow_buckets as usize;
    let mut flows = Vec::with_capacity(l.flows.len());
    for &(tags, entries) in &l.flows {
        let t = take(&mut rest, &mut at, tags, buckets)?;
        let e = take(&mut rest, &mut at, entries, buckets * WAYS)?;
        flows.push((TableMem::mapped(t), TableMem::mapped(e)));
    }
    let mut all: &'static mut [OwnerRecord] = take(
        &mut rest,
        &mut at,
        l.tokens,
        g.tokens.shards * g.tokens.records_per_shard,
    )?;
    let mut tokens = Vec::with_capacity(g.tokens.shards);
    for _ in 0..g.tokens.shards {
        let (shard, tail) = core::mem::take(&mut all).split_at_mut(g.tokens.records_per_shard);
        all = tail;
        tokens.push(TableMem::mapped(shard));
    }
    Ok(Sections {
        header,
        status,
        backends,
        vips,
        flows,
        tokens,
    })
}

/// The entries and records a file of another geometry held (heap copies), with what is needed
/// to re-insert them elsewhere ([`restore`]).
#[derive(Debug, Clone)]
pub struct Carried {
    info: FileInfo,
    persisted: Persisted,
    flows: Vec<FlowEntry>,
    records: Vec<OwnerRecord>,
    /// Occupied flow slots that were not consistent entries.
    invalid: usize,
}

impl Carried {
    /// The geometry the entries come from.
    pub fn geometry(&self) -> Geometry {
        self.info.geometry
    }
}

/// Reads the surviving entries of a file of any geometry (read-only), for [`restore`] into a
/// new file. Fails as [`inspect`] does.
pub fn carry_over(bytes: &[u8]) -> Result<Carried, Refusal> {
    let info = inspect(bytes)?;
    let g = info.geometry;
    let l = Layout::of(&g);
    let slice = |offset: usize, len: usize| bytes.get(offset..offset + len);
    let short = || Refusal::BadGeometry("file too short".into());
    let backends: &[BackendRecord] = bytemuck::try_cast_slice(
        slice(
            l.backends,
            g.backend_slots as usize * size_of::<BackendRecord>(),
        )
        .ok_or_else(short)?,
    )
    .map_err(|_| Refusal::Misaligned)?;
    let vips: &[VipRecord] = bytemuck::try_cast_slice(
        slice(l.vips, g.vip_slots as usize * size_of::<VipRecord>()).ok_or_else(short)?,
    )
    .map_err(|_| Refusal::Misaligned)?;
    let persisted = persisted(backends, vips);
    let buckets = g.flow_buckets as usize;
    let mut flows = Vec::new();
    let mut invalid = 0;
    for &(t, e) in &l.flows {
        let tags: &[[u32; WAYS]] = bytemuck::try_cast_slice(
            slice(t, buckets * size_of::<[u32; WAYS]>()).ok_or_else(short)?,
        )
        .map_err(|_| Refusal::Misaligned)?;
        let entries: &[FlowEntry] = bytemuck::try_cast_slice(
            slice(e, buckets * WAYS * size_of::<FlowEntry>()).ok_or_else(short)?,
        )
        .map_err(|_| Refusal::Misaligned)?;
        // The table's own check, on a heap copy.
        let mut tm = TableMem::zeroed(buckets);
        tm.copy_from_slice(tags);
        let mut em = TableMem::zeroed(buckets * WAYS);
        em.copy_from_slice(entries);
        let mut table = FlowTable::with_memory(FlowTableConfig::default(), info.secret, tm, em)
            .map_err(|e| Refusal::BadGeometry(e.to_string()))?;
        invalid += table.repair(|_| true).invalid;
        flows.extend(table.iter().map(|(_, e)| *e));
    }
    let records: &[OwnerRecord] = bytemuck::try_cast_slice(
        slice(
            l.tokens,
            g.tokens.shards * g.tokens.records_per_shard * size_of::<OwnerRecord>(),
        )
        .ok_or_else(short)?,
    )
    .map_err(|_| Refusal::Misaligned)?;
    let records = records.iter().filter(|r| r.in_use()).copied().collect();
    Ok(Carried {
        info,
        persisted,
        flows,
        records,
        invalid,
    })
}

fn persisted(backends: &[BackendRecord], vips: &[VipRecord]) -> Persisted {
    Persisted {
        backends: backends
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((BackendId(u16::try_from(i).ok()?), r.decode()?)))
            .collect(),
        vips: vips
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((VipId(u16::try_from(i).ok()?), r.decode()?)))
            .collect(),
    }
}

/// How the tables were obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum How {
    /// A new, empty file.
    Cold,
    /// The file's tables, validated in place.
    Attached {
        /// Whether the previous daemon had stopped cleanly.
        clean: bool,
        /// Its pid.
        pid: u32,
    },
    /// The entries of a file of another geometry, re-inserted into a new one.
    Carried {
        /// The old geometry.
        from: Geometry,
        /// Whether the previous daemon had stopped cleanly.
        clean: bool,
    },
}

/// What a start did with the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Cold, attached or carried over.
    pub how: How,
    /// Starts of this file, this one included.
    pub generation: u64,
    /// Timestamps were reset to now (another boot, or stamps in the future).
    pub restamped: usize,
    /// Flows kept, per worker.
    pub flows: Vec<usize>,
    /// Flows dropped because their backend or VIP is not configured any more.
    pub flows_removed: usize,
    /// Occupied slots that were not a valid entry (cleared).
    pub flows_invalid: usize,
    /// Flows that did not fit a smaller table (carried over only).
    pub flows_no_room: usize,
    /// The token table's rebuild.
    pub tokens: Rebuilt,
    /// Owners that no flow entry references any more (dropped).
    pub owners_orphaned: usize,
    /// Flow references to owners that did not survive (cleared).
    pub refs_cleared: usize,
    /// Configured backends new to the file.
    pub backends_added: Vec<String>,
    /// Backends of the file not configured any more (their flows and owners dropped).
    pub backends_removed: Vec<String>,
    /// Configured VIPs new to the file.
    pub vips_added: Vec<String>,
    /// VIPs of the file not configured any more.
    pub vips_removed: Vec<String>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.how {
            How::Cold => write!(f, "cold start (generation {})", self.generation)?,
            How::Attached { clean, pid } => write!(
                f,
                "re-attached (generation {}; the previous daemon, pid {pid}, {})",
                self.generation,
                if *clean {
                    "stopped cleanly"
                } else {
                    "did not stop cleanly"
                }
            )?,
            How::Carried { from, clean } => write!(
                f,
                "carried over from a file of {from} (generation {}; previous stop {})",
                self.generation,
                if *clean { "clean" } else { "not clean" }
            )?,
        }
        let total: usize = self.flows.iter().sum();
        write!(f, ": flows {total} kept {:?}", self.flows)?;
        write!(
            f,
            ", {} dropped (backend or VIP removed), {} invalid",
            self.flows_removed, self.flows_invalid
        )?;
        if self.flows_no_room > 0 {
            write!(f, ", {} no room", self.flows_no_room)?;
        }
        write!(
            f,
            "; tokens {} ({} owners) kept, {} invalid, {} no room, {} orphaned; {} flow references cleared",
            self.tokens.tokens,
            self.tokens.owners - self.owners_orphaned.min(self.tokens.owners),
            self.tokens.invalid,
            self.tokens.no_room,
            self.owners_orphaned,
            self.refs_cleared
        )?;
        if self.restamped > 0 {
            write!(f, "; {} timestamps reset to now", self.restamped)?;
        }
        if !self.backends_added.is_empty() || !self.backends_removed.is_empty() {
            write!(
                f,
                "; backends added {:?}, removed {:?}",
                self.backends_added, self.backends_removed
            )?;
        }
        if !self.vips_added.is_empty() || !self.vips_removed.is_empty() {
            write!(
                f,
                "; VIPs added {:?}, removed {:?}",
                self.vips_added, self.vips_removed
            )?;
        }
        Ok(())
    }
}

/// The tables of a start, and the handle that keeps the file up to date.
#[derive(Debug)]
pub struct Restored {
    /// One flow table per worker.
    pub flows: Vec<FlowTable>,
    /// The token table.
    pub tokens: TokenTable,
    /// The configured pool with its ids seeded from the file ([`ids::seed_ids`]): publish this
    /// one.
    pub pool: PoolSpec,
    /// The identities and status, for the control thread.
    pub file: StateFile,
    /// What was done.
    pub report: Report,
}

/// The control thread's handle on the file: it records the pool's identities as the pool
/// changes, and marks a clean stop.
pub struct StateFile {
    header: &'static mut Header,
    status: &'static mut Status,
    backends: &'static mut [BackendRecord],
    vips: &'static mut [VipRecord],
}

impl fmt::Debug for StateFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateFile")
            .field("generation", &self.status.generation)
            .field("pool_version", &self.status.pool_version)
            .finish()
    }
}

impl StateFile {
    /// Records the identity of every backend and VIP of the published `pool` whose record
    /// differs (a new id, or an id whose backend changed address). Ids of removed backends keep
    /// their last identity: ids are never reused, and one that comes back with the same identity
    /// gets its id back. Returns the number of ids the file has no slot for (their flows will not
    /// survive a restart). After each publication.
    pub fn record(&mut self, pool: &PoolSnapshot) -> usize {
        self.record_ids(
            pool.backends
                .iter()
                .flatten()
                .map(|b| (b.id, BackendIdent::of(b))),
            pool.vips
                .iter()
                .flatten()
                .map(|v| (v.id, VipIdent::of_vip(v))),
            pool.version,
        )
    }

    /// [`Self::record`] for a pool not yet built (the configured one, at start).
    fn record_spec(&mut self, spec: &PoolSpec) -> usize {
        self.record_ids(
            spec.backends
                .iter()
                .flatten()
                .map(|b| (b.id, BackendIdent::of(b))),
            spec.vips.iter().flatten().map(|v| (v.id, VipIdent::of(v))),
            spec.version,
        )
    }

    fn record_ids(
        &mut self,
        backends: impl Iterator<Item = (BackendId, BackendIdent)>,
        vips: impl Iterator<Item = (VipId, VipIdent)>,
        version: u64,
    ) -> usize {
        let mut unrecorded = 0;
        for (id, ident) in backends {
            match (
                self.backends.get_mut(id.0 as usize),
                BackendRecord::encode(&ident),
            ) {
                (Some(slot), Some(r)) => {
                    if slot.decode().as_ref() != Some(&ident) {
                        write_record(slot, &r);
                    }
                }
                _ => unrecorded += 1,
            }
        }
        for (id, ident) in vips {
            match (self.vips.get_mut(id.0 as usize), VipRecord::encode(&ident)) {
                (Some(slot), Some(r)) => {
                    if slot.decode().as_ref() != Some(&ident) {
                        write_record(slot, &r);
                    }
                }
                _ => unrecorded += 1,
            }
        }
        self.status.pool_version = version;
        unrecorded
    }

    /// Marks a clean stop (the workers have stopped: nothing writes the tables any more).
    pub fn mark_clean(&mut self) {
        self.status.clean = CLEAN;
    }

    /// Starts of this file, this one included.
    pub fn generation(&self) -> u64 {
        self.status.generation
    }

    /// The flow tables' secret.
    pub fn secret(&self) -> FlowSecret {
        FlowSecret(self.header.secret)
    }
}

/// Formats `bytes` (at least [`Want::file_len`] long, page-aligned: a mapping) as a new, empty
/// state file whose flow tables are keyed with `secret`: a cold start. The pool keeps its
/// configured ids.
pub fn create(
    bytes: &'static mut [u8],
    want: &Want,
    env: &Env,
    secret: FlowSecret,
    pool: &PoolSpec,
) -> Result<Restored, Refusal> {
    let sec = carve(bytes, &want.geometry)?;
    Ok(build(sec, want, env, pool, Mode::Fresh(secret)))
}

/// Re-attaches the tables of `bytes` in place (see the module documentation). The file must
/// hold the configuration's geometry; on any refusal the bytes are handed back, for
/// [`create`] (or, for [`Refusal::OtherGeometry`], [`carry_over`] first).
#[allow(clippy::result_large_err)]
pub fn attach(
    bytes: &'static mut [u8],
    want: &Want,
    env: &Env,
    pool: &PoolSpec,
) -> Result<Restored, (Refusal, &'static mut [u8])> {
    let info = match inspect(bytes) {
        Ok(i) => i,
        Err(r) => return Err((r, bytes)),
    };
    if !(bytes.as_ptr() as usize).is_multiple_of(ALIGN) {
        return Err((Refusal::Misaligned, bytes));
    }
    if info.geometry != want.geometry {
        return Err((
            Refusal::OtherGeometry {
                file: info.geometry,
                config: want.geometry,
            },
            bytes,
        ));
    }
    // The length, the geometry and the alignment are checked: carving cannot fail (were it to,
    // the bytes would be lost to this start, which then cannot format them).
    let sec = carve(bytes, &want.geometry).map_err(|r| (r, Default::default()))?;
    Ok(build(sec, want, env, pool, Mode::InPlace(info)))
}

/// Formats `bytes` as a new file of the configuration's geometry and re-inserts what
/// [`carry_over`] kept of an old one: flows (into the table of the worker that now owns each),
/// owner records, identities, the secret. Each entry is validated as [`attach`] does.
pub fn restore(
    bytes: &'static mut [u8],
    want: &Want,
    env: &Env,
    pool: &PoolSpec,
    carried: Carried,
) -> Result<Restored, Refusal> {
    let sec = carve(bytes, &want.geometry)?;
    Ok(build(sec, want, env, pool, Mode::Carried(carried)))
}

enum Mode {
    Fresh(FlowSecret),
    InPlace(FileInfo),
    Carried(Carried),
}

fn build(sec: Sections, want: &Want, env: &Env, pool: &PoolSpec, mode: Mode) -> Restored {
    let Sections {
        header,
        status,
        backends,
        vips,
        flows: flow_mem,
        tokens: token_mem,
    } = sec;
    let g = &want.geometry;
    let workers = g.workers as usize;
    let now_ms = env.now.coarse_ms();
    let (how, secret, generation, old_boot, persisted) = match &mode {
        Mode::Fresh(s) => (How::Cold, *s, 0, None, Persisted::default()),
        Mode::InPlace(i) => (
            How::Attached {
                clean: i.clean,
                pid: i.pid,
            },
            i.secret,
            i.generation,
            Some(i.boot_id),
            persisted(backends, vips),
        ),
        Mode::Carried(c) => (
            How::Carried {
                from: c.info.geometry,
                clean: c.info.clean,
            },
            c.info.secret,
            c.info.generation,
            Some(c.info.boot_id),
            c.persisted.clone(),
        ),
    };
    let other_boot = old_boot.is_some_and(|b| b != env.boot_id);
    let seeded = ids::seed_ids(pool, &persisted).unwrap_or_else(|_| {
        // Every id is used: start the identities afresh (nothing persisted survives).
        ids::seed_ids(pool, &Persisted::default()).unwrap_or_else(|_| Seeded {
            spec: pool.clone(),
            kept_backends: Vec::new(),
            kept_vips: Vec::new(),
            added_backends: Vec::new(),
            removed_backends: Vec::new(),
            added_vips: Vec::new(),
            removed_vips: Vec::new(),
        })
    });

    // The header (a fresh or carried file: written anew) and the status.
    if !matches!(mode, Mode::InPlace(_)) {
        *header = Header::new(g, secret);
        for r in backends.iter_mut() {
            r.used = 0;
        }
        for r in vips.iter_mut() {
            r.used = 0;
        }
    }
    *status = Status {
        clean: 0,
        pid: env.pid,
        generation: generation + 1,
        boot_id: env.boot_id,
        pool_version: pool.version,
    };

    let mut report = Report {
        how,
        generation: generation + 1,
        restamped: 0,
        flows: Vec::with_capacity(workers),
        flows_removed: 0,
        flows_invalid: 0,
        flows_no_room: 0,
        tokens: Rebuilt::default(),
        owners_orphaned: 0,
        refs_cleared: 0,
        backends_added: seeded.added_backends.clone(),
        backends_removed: seeded.removed_backends.clone(),
        vips_added: seeded.added_vips.clone(),
        vips_removed: seeded.removed_vips.clone(),
    };
    if matches!(mode, Mode::Fresh(_)) {
        report.backends_added.clear();
        report.vips_added.clear();
    }

    // Whether an entry survives, and its stamp corrected. `None`: invalid; `Some(false)`:
    // removed backend or VIP.
    let mut restamped = 0;
    let mut flow_ok = |e: &mut FlowEntry| -> Option<bool> {
        if FlowState::from_u8(e.state).is_none() || e.key.proto != 6 {
            return None;
        }
        if !seeded.keeps_backend(e.backend) || !seeded.keeps_vip(e.vip) {
            return Some(false);
        }
        if other_boot || coarse_elapsed(now_ms, e.last_seen) > i32::MAX as u32 {
            e.last_seen = now_ms;
            restamped += 1;
        }
        Some(true)
    };

    // Flows.
    let mut tables: Vec<FlowTable> = Vec::with_capacity(workers);
    for (w, (mut tags, entries)) in flow_mem.into_iter().enumerate() {
        if !matches!(mode, Mode::InPlace(_)) {
            for t in tags.iter_mut() {
                *t = [0; WAYS];
            }
        }
        let table = FlowTable::with_memory(want.flows, secret, tags, entries);
        // The geometry was checked: the memory has the right shape.
        let mut table = table.unwrap_or_else(|_| unreachable!("carved to the geometry"));
        if matches!(mode, Mode::InPlace(_)) {
            let (mut invalid, mut removed) = (0, 0);
            let r = table.repair(|e| {
                let owner = steer(&e.key.src, e.key.src_port, g.workers as u16) as usize;
                match flow_ok(e) {
                    Some(true) if owner == w => true,
                    Some(true) | None => {
                        invalid += 1;
                        false
                    }
                    Some(false) => {
                        removed += 1;
                        false
                    }
                }
            });
            report.flows_invalid += r.invalid + invalid;
            report.flows_removed += removed;
        }
        tables.push(table);
    }
    let mut token_mem = token_mem;
    if let Mode::Carried(c) = &mode {
        report.flows_invalid += c.invalid;
        for e in &c.flows {
            let mut e = *e;
            match flow_ok(&mut e) {
                None => report.flows_invalid += 1,
                Some(false) => report.flows_removed += 1,
                Some(true) => {
                    let w = steer(&e.key.src, e.key.src_port, g.workers as u16) as usize;
                    let Some(t) = tables.get_mut(w) else {
                        report.flows_invalid += 1;
                        continue;
                    };
                    let h = t.hash(&e.key);
                    let stored = t.lookup(&e.key, h).is_none()
                        && matches!(
                            t.insert(h, e, e.last_seen),
                            crate::tables::flow_table::Insert::Inserted { evicted: None, .. }
                        );
                    if !stored {
                        report.flows_no_room += 1;
                    }
                }
            }
        }
        // Owner records into the new pools, each in its token's shard (validated below).
        let mask = g.tokens.shards - 1;
        let mut next = vec![0usize; g.tokens.shards];
        for pool in token_mem.iter_mut() {
            for r in pool.iter_mut() {
                *r = OwnerRecord::zeroed();
            }
        }
        for r in &c.records {
            let s = r.token() as usize & mask;
            match token_mem.get_mut(s).and_then(|p| p.get_mut(next[s])) {
                Some(slot) => {
                    *slot = *r;
                    next[s] += 1;
                }
                None => report.tokens.no_room += 1,
            }
        }
    }
    report.restamped = restamped;
    if matches!(mode, Mode::Fresh(_)) {
        for pool in token_mem.iter_mut() {
            for r in pool.iter_mut() {
                *r = OwnerRecord::zeroed();
            }
        }
    }

    // Tokens.
    let no_room_before = report.tokens.no_room;
    let (tokens, rebuilt) = TokenTable::with_records(want.tokens, token_mem, |_, o| {
        seeded.keeps_backend(o.backend)
    })
    .unwrap_or_else(|_| unreachable!("carved to the geometry"));
    report.tokens = rebuilt;
    report.tokens.no_room += no_room_before;
    let mut refs: HashMap<(u32, BackendId), u16> = HashMap::new();
    for t in &tables {
        for (_, e) in t.iter() {
            if e.has(flags::TOKEN_REF) {
                let n = refs.entry((e.token, e.backend)).or_default();
                *n = n.saturating_add(1);
            }
        }
    }
    report.owners_orphaned = tokens.recount(|tok, b| refs.get(&(tok, b)).copied().unwrap_or(0));
    report.restamped += tokens.restamp(|t| {
        if other_boot || t > env.now {
            env.now
        } else {
            t
        }
    });
    for t in tables.iter_mut() {
        t.for_each_mut(|e| {
            if e.has(flags::TOKEN_REF) && tokens.owners(e.token).get(e.backend).is_none() {
                e.flags &= !flags::TOKEN_REF;
                report.refs_cleared += 1;
            }
        });
    }
    for t in &tables {
        report.flows.push(t.len());
    }

    // Identities: the carried ones, then the configuration's.
    let mut file = StateFile {
        header,
        status,
        backends,
        vips,
    };
    if let Mode::Carried(_) = &mode {
        for (id, i) in &persisted.backends {
            if let (Some(slot), Some(r)) = (
                file.backends.get_mut(id.0 as usize),
                BackendRecord::encode(i),
            ) {
                write_record(slot, &r);
            }
        }
        for (id, i) in &persisted.vips {
            if let (Some(slot), Some(r)) = (file.vips.get_mut(id.0 as usize), VipRecord::encode(i))
            {
                write_record(slot, &r);
            }
        }
    }
    file.record_spec(&seeded.spec);
    Restored {
        flows: tables,
        tokens,
        pool: seeded.spec,
        file,
        report,
    }
}

/// Takes the memory back from a start's tables (tests: what a new process would map).
#[cfg(test)]
fn detach(flows: Vec<FlowTable>, tokens: TokenTable, file: StateFile) -> Sections {
    Sections {
        header: file.header,
        status: file.status,
        backends: file.backends,
        vips: file.vips,
        flows: flows.into_iter().map(FlowTable::into_memory).collect(),
        tokens: tokens.into_records(),
    }
}

#[cfg(test)]
mod tests;

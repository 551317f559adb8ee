//! Memory that outlives the process: a locked file mapped shared, on hugetlbfs when it can be.
//!
//! The gateway keeps its flow and token tables in one such file (trapeze-core's `state`
//! module). A file on hugetlbfs (`/dev/hugepages`) is backed by 2 MiB pages, which is what
//! makes the tables hugepage-backed, and like a file in `/dev/shm` it survives the process,
//! `kill -9` included: its pages belong to the file, not to the process. Mapping it `MAP_SHARED`
//! means the tables are the file, with no copy in either direction.
//!
//! This module knows nothing of what the bytes hold: it opens and locks the file, sizes it
//! (allocating its pages up front, so that running out of huge pages or of `/dev/shm` is an
//! error at start, never a `SIGBUS` later), maps it, and hands out plain bytes. It does not
//! depend on DPDK (it builds with `TRAPEZE_NO_DPDK=1`).

use core::ptr::NonNull;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What backs a file's pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// hugetlbfs: huge pages of this size.
    Hugetlbfs {
        /// Bytes per page (2 MiB or 1 GiB).
        page_size: usize,
    },
    /// tmpfs (`/dev/shm`): 4 KiB pages of RAM.
    Tmpfs,
    /// Any other file system (a disk: the file also survives a reboot).
    Other,
}

impl Backing {
    /// The unit a file's length is rounded up to.
    pub fn page_size(&self) -> usize {
        match self {
            Self::Hugetlbfs { page_size } => *page_size,
            _ => 4096,
        }
    }
}

impl core::fmt::Display for Backing {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Hugetlbfs { page_size } => {
                write!(f, "hugetlbfs, {} KiB pages", page_size / 1024)
            }
            Self::Tmpfs => f.write_str("tmpfs, 4 KiB pages"),
            Self::Other => f.write_str("a disk file system, 4 KiB pages"),
        }
    }
}

const HUGETLBFS_MAGIC: libc::__fsword_t = 0x9584_58f6;
const TMPFS_MAGIC: libc::__fsword_t = 0x0102_1994;

/// Why a file could not be opened, sized or mapped.
#[derive(Debug)]
pub enum MapError {
    /// Another process holds the file's lock: a live daemon maps it.
    Locked(PathBuf),
    /// Not enough free huge pages, or no room left in the file system.
    NoRoom {
        /// The file.
        path: PathBuf,
        /// Bytes asked for.
        len: usize,
        /// What the system said.
        err: io::Error,
    },
    /// Anything else: the operation, the file and the error.
    Io(&'static str, PathBuf, io::Error),
}

impl core::fmt::Display for MapError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Locked(p) => write!(
                f,
                "{}: locked by another process (a running daemon uses this state file; stop it \
                 first, or give this one another [state] path)",
                p.display()
            ),
            Self::NoRoom { path, len, err } => write!(
                f,
                "{}: no room for {} MiB ({err})",
                path.display(),
                len.div_ceil(1 << 20)
            ),
            Self::Io(op, p, e) => write!(f, "{}: {op}: {e}", p.display()),
        }
    }
}

impl std::error::Error for MapError {}

/// An open, exclusively locked (`flock`) file that holds memory to map. The lock lives as long
/// as this value (the kernel drops it when the process dies, `kill -9` included).
#[derive(Debug)]
pub struct MappedFile {
    file: File,
    path: PathBuf,
    backing: Backing,
}

impl MappedFile {
    /// Opens `path` (created, mode 0600, when missing) and locks it. Fails with
    /// [`MapError::Locked`] when another process holds the lock.
    pub fn open(path: &Path) -> Result<Self, MapError> {
        let io = |op| move |e| MapError::Io(op, path.to_path_buf(), e);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io("open"))?;
        // SAFETY: flock on a descriptor this function owns; no memory is passed.
        let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                MapError::Locked(path.to_path_buf())
            } else {
                MapError::Io("flock", path.to_path_buf(), e)
            });
        }
        let backing = backing_of(&file).map_err(io("fstatfs"))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            backing,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What backs its pages.
    pub fn backing(&self) -> Backing {
        self.backing
    }

    /// Its current length.
    pub fn len(&self) -> Result<u64, MapError> {
        self.file
            .metadata()
            .map(|m| m.len())
            .map_err(|e| MapError::Io("stat", self.path.clone(), e))
    }

    /// Whether it is empty (new).
    pub fn is_empty(&self) -> Result<bool, MapError> {
        self.len().map(|n| n == 0)
    }

    /// Reads up to `n` bytes from the start (hugetlbfs files can be read, not written).
    pub fn read_start(&self, n: usize) -> Result<Vec<u8>, MapError> {
        let mut buf = vec![0u8; n];
        let got = self
            .file
            .read_at(&mut buf, 0)
            .map_err(|e| MapError::Io("read", self.path.clone(), e))?;
        buf.truncate(got);
        Ok(buf)
    }

    /// Empties the file (its pages go back to the system).
    pub fn clear(&self) -> Result<(), MapError> {
        self.file
            .set_len(0)
            .map_err(|e| MapError::Io("ftruncate", self.path.clone(), e))
    }

    /// Gives the file `len` bytes (rounded up to the page size), all of them allocated now:
    /// [`MapError::NoRoom`] when the huge pages or the file system's space do not suffice.
    /// Returns the rounded length.
    pub fn size(&self, len: usize) -> Result<usize, MapError> {
        let page = self.backing.page_size();
        let len = len.div_ceil(page).max(1) * page;
        if self.len()? < len as u64 {
            self.file
                .set_len(len as u64)
                .map_err(|e| MapError::Io("ftruncate", self.path.clone(), e))?;
        }
        // SAFETY: fallocate on a descriptor this value owns, within the file's length.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), 0, 0, len as libc::off_t) };
        if r != 0 {
            let err = io::Error::last_os_error();
            let _ = self.clear();
            return Err(match err.raw_os_error() {
                Some(libc::ENOSPC | libc::ENOMEM) => MapError::NoRoom {
                    path: self.path.clone(),
                    len,
                    err,
                },
                _ => MapError::Io("fallocate", self.path.clone(), err),
            });
        }
        Ok(len)
    }

    /// Maps the first `len` bytes of the file (which must be that long: [`size`](Self::size)),
    /// shared, read and write, every page faulted in now.
    pub fn map(&self, len: usize) -> Result<Mapping, MapError> {
        if len == 0 || self.len()? < len as u64 {
            return Err(MapError::Io(
                "mmap",
                self.path.clone(),
                io::Error::new(io::ErrorKind::InvalidInput, "shorter than the mapping"),
            ));
        }
        // SAFETY: a new mapping chosen by the kernel (no fixed address), of a descriptor this
        // value owns; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                self.file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(MapError::Io(
                "mmap",
                self.path.clone(),
                io::Error::last_os_error(),
            ));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| {
            MapError::Io("mmap", self.path.clone(), io::Error::other("null mapping"))
        })?;
        Ok(Mapping { ptr, len })
    }

    /// Renames the file (within its file system), e.g. a new file over the one it replaces.
    /// The lock stays with the file.
    pub fn rename(&mut self, to: &Path) -> Result<(), MapError> {
        std::fs::rename(&self.path, to)
            .map_err(|e| MapError::Io("rename", self.path.clone(), e))?;
        self.path = to.to_path_buf();
        Ok(())
    }

    /// Removes the file's name (a mapping keeps its pages until the process exits).
    pub fn unlink(&self) -> Result<(), MapError> {
        std::fs::remove_file(&self.path).map_err(|e| MapError::Io("unlink", self.path.clone(), e))
    }
}

fn backing_of(file: &File) -> io::Result<Backing> {
    let mut st = core::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: fstatfs writes one `statfs` into the buffer it is given, which is that large.
    let r = unsafe { libc::fstatfs(file.as_raw_fd(), st.as_mut_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatfs succeeded, so it filled the buffer (and it was zeroed before anyway).
    let st = unsafe { st.assume_init() };
    Ok(match st.f_type {
        HUGETLBFS_MAGIC => Backing::Hugetlbfs {
            page_size: usize::try_from(st.f_bsize).unwrap_or(2 << 20),
        },
        TMPFS_MAGIC => Backing::Tmpfs,
        _ => Backing::Other,
    })
}

/// Whether `dir` is a mounted hugetlbfs.
pub fn is_hugetlbfs(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut st = core::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: statfs reads a NUL-terminated path and writes one `statfs` into a buffer that large.
    let r = unsafe { libc::statfs(c.as_ptr(), st.as_mut_ptr()) };
    // SAFETY: the buffer was zeroed, and statfs filled it when it returned 0.
    r == 0 && unsafe { st.assume_init() }.f_type == HUGETLBFS_MAGIC
}

/// Anonymous memory (nothing survives the process): huge pages when `huge` and the system has
/// enough free, else ordinary pages. Returns the mapping and whether it got huge pages.
pub fn anonymous(len: usize, huge: bool) -> Result<(Mapping, bool), MapError> {
    let path = PathBuf::from("(anonymous)");
    let try_map = |flags: libc::c_int, len: usize| {
        // SAFETY: a new private anonymous mapping chosen by the kernel; checked before use.
        let p = unsafe {
            libc::mmap(
                core::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE | flags,
                -1,
                0,
            )
        };
        (p != libc::MAP_FAILED)
            .then(|| NonNull::new(p.cast::<u8>()))
            .flatten()
    };
    if len == 0 {
        return Err(MapError::Io(
            "mmap",
            path,
            io::Error::new(io::ErrorKind::InvalidInput, "empty mapping"),
        ));
    }
    if huge {
        let hlen = len.div_ceil(2 << 20) * (2 << 20);
        if let Some(ptr) = try_map(libc::MAP_HUGETLB, hlen) {
            return Ok((Mapping { ptr, len: hlen }, true));
        }
    }
    match try_map(0, len) {
        Some(ptr) => Ok((Mapping { ptr, len }, false)),
        None => Err(MapError::NoRoom {
            path,
            len,
            err: io::Error::last_os_error(),
        }),
    }
}

/// A mapping; unmapped when dropped, unless [leaked](Self::leak) for the rest of the process.
#[derive(Debug)]
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    /// Its length.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it is empty (never: mappings have at least one page).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `ptr` is a live mapping of `len` readable bytes until `self` is dropped, which
        // this borrow prevents. The file is locked: no cooperating process writes it meanwhile.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, writable.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `bytes`, and the mapping is writable; `&mut self` makes this the only
        // view into it for the borrow's duration.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Keeps the mapping for the rest of the process and returns its bytes: the one view of them
    /// there will ever be.
    pub fn leak(self) -> &'static mut [u8] {
        let me = core::mem::ManuallyDrop::new(self);
        // SAFETY: the mapping is never unmapped (no drop runs), so the bytes stay valid for the
        // life of the process; `self` is consumed, so no other view exists.
        unsafe { core::slice::from_raw_parts_mut(me.ptr.as_ptr(), me.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value made; no borrow of its bytes outlives
        // `self` (they borrow it), and leaked mappings never get here.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

/// The system's monotonic clock (`CLOCK_MONOTONIC`) in nanoseconds: one timeline for every
/// process of a boot, so a restarted daemon reads the stamps its predecessor wrote.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `timespec` into the one given; CLOCK_MONOTONIC exists on
    // every Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Whether this process may make the NUMA memory-policy system calls DPDK's memory allocator
/// makes (`get_mempolicy`, `set_mempolicy`, `mbind`): probed with a `get_mempolicy` that asks for
/// nothing. `false` only when it fails with `EPERM`, which is what a seccomp filter refusing it
/// returns (Docker's default profile refuses the three unless the container has
/// `CAP_SYS_NICE`). A kernel without NUMA support (`ENOSYS`) counts as allowed: DPDK copes.
pub fn numa_policy_calls_allowed() -> bool {
    // SAFETY: get_mempolicy with null `mode` and `nodemask` pointers, maxnode 0, a null address
    // and flags 0 writes nothing and reads nothing; it only reports success or an error.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_mempolicy,
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_ulong>(),
            0 as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            0 as libc::c_ulong,
        )
    };
    ret == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn path(name: &str) -> PathBuf {
        PathBuf::from(format!("/dev/shm/tzr-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn a_locked_file_survives_its_mapping_and_refuses_a_second_owner() {
        let p = path("lock");
        let f = MappedFile::open(&p).unwrap();
        assert_eq!(f.backing(), Backing::Tmpfs);
        assert!(f.is_empty().unwrap());
        assert!(matches!(MappedFile::open(&p), Err(MapError::Locked(_))));
        let len = f.size(10_000).unwrap();
        assert_eq!(len, 12_288);
        let mut m = f.map(len).unwrap();
        m.bytes_mut()[..5].copy_from_slice(b"hello");
        m.bytes_mut()[len - 1] = 7;
        drop(m);
        drop(f);
        // Another "process": the bytes are there.
        let f = MappedFile::open(&p).unwrap();
        assert_eq!(f.len().unwrap(), len as u64);
        assert_eq!(&f.read_start(5).unwrap(), b"hello");
        let m = f.map(len).unwrap();
        assert_eq!(m.bytes()[len - 1], 7);
        let leaked = m.leak();
        assert_eq!(&leaked[..5], b"hello");
        f.clear().unwrap();
        assert!(f.is_empty().unwrap());
        assert!(f.map(4096).is_err(), "no mapping beyond the end");
        f.unlink().unwrap();
    }

    #[test]
    fn a_file_on_hugetlbfs_has_huge_pages() {
        let dir = Path::new("/dev/hugepages");
        if !is_hugetlbfs(dir) {
            eprintln!("skipped: no hugetlbfs at /dev/hugepages");
            return;
        }
        let p = dir.join(format!("tzr-test-{}", std::process::id()));
        let f = match MappedFile::open(&p) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("skipped: {e}");
                return;
            }
        };
        let Backing::Hugetlbfs { page_size } = f.backing() else {
            panic!("{:?}", f.backing())
        };
        match f.size(1) {
            Ok(len) => {
                assert_eq!(len, page_size);
                let mut m = f.map(len).unwrap();
                m.bytes_mut()[len - 1] = 9;
                drop(m);
                assert_eq!(f.map(len).unwrap().bytes()[len - 1], 9);
            }
            // No free huge page: reported, not a SIGBUS later.
            Err(MapError::NoRoom { .. }) => {}
            Err(e) => panic!("{e}"),
        }
        f.unlink().unwrap();
    }

    #[test]
    fn anonymous_memory_and_the_clock() {
        let (mut m, _) = anonymous(8192, false).unwrap();
        assert!(m.bytes().iter().all(|&b| b == 0));
        m.bytes_mut()[8191] = 1;
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
        assert!(!is_hugetlbfs(Path::new("/dev/shm")));
    }
}

//! Reading a configuration file without trusting its path: a regular file only, of bounded
//! size, read within a bounded time.
//!
//! `POST /reload {"path": ...}` names a file. Before this module a FIFO blocked the control
//! thread in `open(2)` forever, and `/dev/zero` was read until the daemon was OOM-killed
//! (issue 12, defect 2). Now:
//!
//! * the file is opened with `O_NONBLOCK | O_NOCTTY` (opening a FIFO or a terminal does not
//!   wait), then `fstat` on the opened descriptor (no race with a rename) must say *regular
//!   file*: FIFOs, sockets, devices (`/dev/zero`) and directories are refused;
//! * its size must be at most [`MAX_CONFIG_BYTES`], and at most that many bytes (plus one, to
//!   notice a file that grew) are read;
//! * the open and the read run on a short-lived thread of their own and the caller waits at most
//!   [`READ_TIMEOUT`] (a file on a hung network or FUSE mount): then the caller gets an error
//!   and goes on; the stuck reader is left behind, and while it is stuck further reads are
//!   refused at once ([`ReadError::Busy`]), so at most one thread can ever be stuck.
//!
//! Which paths may be read at all is the caller's policy (`crate::pool`: the configured file, or
//! a file under `--reload-dir`).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Largest configuration file read (1 MiB; a gateway with thousands of backends needs less than
/// a tenth of it).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Longest wait for the open and the read of a configuration file.
pub const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadError {
    /// The system refused (no such file, permission...).
    Io(String),
    /// Not a regular file: what it is.
    NotRegular(&'static str),
    /// Larger than the limit: its size (or the limit + 1 when it grew while read).
    TooLarge(u64),
    /// Not UTF-8 text.
    NotText,
    /// The open or the read did not finish in time.
    Timeout,
    /// An earlier read is still stuck.
    Busy,
}

impl core::fmt::Display for ReadError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Io(e) => f.write_str(e),
            Self::NotRegular(what) => write!(f, "not a regular file (a {what})"),
            Self::TooLarge(n) => write!(
                f,
                "{n} bytes, larger than the limit of {MAX_CONFIG_BYTES} bytes"
            ),
            Self::NotText => f.write_str("not UTF-8 text"),
            Self::Timeout => write!(
                f,
                "the file could not be read within {} ms",
                READ_TIMEOUT.as_millis()
            ),
            Self::Busy => f.write_str(
                "an earlier read of a configuration file is still stuck; try again later",
            ),
        }
    }
}

/// Reads `path` as described in the module documentation (a reader of its own).
pub fn read_config(path: &Path) -> Result<String, ReadError> {
    ConfigReader::default().read(path, MAX_CONFIG_BYTES, READ_TIMEOUT)
}

/// Reads configuration files one at a time: while one of its reads is stuck, the next ones are
/// refused ([`ReadError::Busy`]). The control thread keeps one for its reloads.
#[derive(Debug, Default, Clone)]
pub struct ConfigReader {
    /// Set while a reader thread runs.
    busy: Arc<AtomicBool>,
}

impl ConfigReader {
    /// Reads `path`: at most `limit` bytes, within `timeout`.
    pub fn read(&self, path: &Path, limit: u64, timeout: Duration) -> Result<String, ReadError> {
        if self.busy.swap(true, Ordering::AcqRel) {
            return Err(ReadError::Busy);
        }
        let (tx, rx) = mpsc::sync_channel(1);
        let p: PathBuf = path.to_path_buf();
        let busy = Arc::clone(&self.busy);
        let spawned = std::thread::Builder::new()
            .name("tz-config-read".into())
            .spawn(move || {
                let r = read_now(&p, limit);
                busy.store(false, Ordering::Release);
                let _ = tx.send(r);
            });
        if let Err(e) = spawned {
            self.busy.store(false, Ordering::Release);
            return Err(ReadError::Io(format!("cannot start the reader: {e}")));
        }
        match rx.recv_timeout(timeout) {
            Ok(r) => r,
            Err(_) => Err(ReadError::Timeout),
        }
    }
}

fn read_now(path: &Path, limit: u64) -> Result<String, ReadError> {
    let f = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    let meta = f.metadata().map_err(|e| ReadError::Io(e.to_string()))?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let what = if ft.is_dir() {
            "directory"
        } else if ft.is_fifo() {
            "FIFO"
        } else if ft.is_socket() {
            "socket"
        } else if ft.is_char_device() {
            "character device"
        } else if ft.is_block_device() {
            "block device"
        } else {
            "special file"
        };
        return Err(ReadError::NotRegular(what));
    }
    if meta.len() > limit {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut buf = Vec::new();
    f.take(limit.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|e| ReadError::Io(e.to_string()))?;
    if buf.len() as u64 > limit {
        return Err(ReadError::TooLarge(buf.len() as u64));
    }
    String::from_utf8(buf).map_err(|_| ReadError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_the_limit() {
        let dir = std::env::temp_dir().join(format!("tzc-read-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = dir.join("ok.toml");
        std::fs::write(&ok, "a = 1\n").unwrap();
        assert_eq!(read_config(&ok).unwrap(), "a = 1\n");
        let big = dir.join("big.toml");
        std::fs::write(&big, vec![b'#'; 101]).unwrap();
        assert_eq!(
            ConfigReader::default().read(&big, 100, READ_TIMEOUT),
            Err(ReadError::TooLarge(101))
        );
        assert_eq!(
            read_config(Path::new("/dev/zero")),
            Err(ReadError::NotRegular("character device"))
        );
        assert_eq!(read_config(&dir), Err(ReadError::NotRegular("directory")));
        let fifo = dir.join("f.fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        assert_eq!(read_config(&fifo), Err(ReadError::NotRegular("FIFO")));
        assert!(matches!(
            read_config(&dir.join("missing")),
            Err(ReadError::Io(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

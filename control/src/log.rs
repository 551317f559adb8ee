//! Minimal leveled logging to stderr: the daemon's output is a handful of lines, each prefixed
//! with the program's name.

use crate::cli::LogLevel;

/// Where and how much the daemon logs.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    level: LogLevel,
}

impl Log {
    /// A log that prints messages of `level` and more severe ones.
    pub fn new(level: LogLevel) -> Self {
        Self { level }
    }

    /// Whether messages of level `l` are printed.
    pub fn enabled(&self, l: LogLevel) -> bool {
        (l as u8) <= (self.level as u8)
    }

    /// Normal operation.
    pub fn info(&self, msg: impl std::fmt::Display) {
        if self.enabled(LogLevel::Info) {
            eprintln!("trapeze-gatewayd: {msg}");
        }
    }

    /// Something the operator should look at.
    pub fn warn(&self, msg: impl std::fmt::Display) {
        if self.enabled(LogLevel::Warn) {
            eprintln!("trapeze-gatewayd: warning: {msg}");
        }
    }

    /// Details for debugging.
    pub fn debug(&self, msg: impl std::fmt::Display) {
        if self.enabled(LogLevel::Debug) {
            eprintln!("trapeze-gatewayd: {msg}");
        }
    }
}

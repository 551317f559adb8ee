//! Configuration errors. Every error names where it is: a TOML line and column for syntax and
//! type errors, a field path (`vips[1].backends[2]`) for everything the validator refuses.

use core::fmt;
use std::path::PathBuf;

/// One refused field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Path of the field in the file: `eal.args`, `ports[0].vlan`, `vips[1].backends[2]`, ...
    /// (`(file)` for the file as a whole).
    pub field: String,
    /// What is wrong, and where it helps, what would be right.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// The file could not be read.
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        message: String,
    },
    /// Not valid TOML, or a value of the wrong type, a missing key or an unknown key.
    Parse {
        /// 1-based line of the offending text (0 when unknown).
        line: usize,
        /// 1-based column (in characters; 0 when unknown).
        column: usize,
        /// Path of the field, when the error is about a field (not plain syntax).
        field: Option<String>,
        /// The parser's message.
        message: String,
    },
    /// Valid TOML that the validator refuses: every problem found, in file order per section.
    Invalid(Vec<FieldError>),
}

impl ConfigError {
    /// The fields named by this error (empty for I/O and plain syntax errors).
    pub fn fields(&self) -> Vec<&str> {
        match self {
            Self::Io { .. } => Vec::new(),
            Self::Parse { field, .. } => field.iter().map(String::as_str).collect(),
            Self::Invalid(v) => v.iter().map(|e| e.field.as_str()).collect(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { path, message } => write!(f, "cannot read {}: {message}", path.display()),
            Self::Parse {
                line,
                column,
                field: None,
                message,
            } => write!(
                f,
                "TOML syntax error at line {line}, column {column}: {message}"
            ),
            Self::Parse {
                line,
                column,
                field: Some(field),
                message,
            } => write!(f, "{field}: {message} (line {line}, column {column})"),
            Self::Invalid(errors) => {
                for (i, e) in errors.iter().enumerate() {
                    if i > 0 {
                        writeln!(f)?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

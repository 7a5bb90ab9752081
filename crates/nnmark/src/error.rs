//! The library's one error type. Every variant names the file, field or value at fault, so the
//! CLI can print it as a single line.

use std::path::PathBuf;

/// Result alias used throughout nnmark.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in nnmark.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file being read or written.
        path: PathBuf,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A file whose content does not follow its format (bad magic, truncated, wrong shape...).
    #[error("{path}: {problem}")]
    Format {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A value given by the user (flag, config field) that is out of range or unknown.
    #[error("invalid {field} '{value}': {reason}")]
    InvalidArgument {
        /// The flag or field name.
        field: String,
        /// The value as given.
        value: String,
        /// Why it is rejected, and what would be accepted.
        reason: String,
    },
    /// A weights file that does not fit the model it is loaded into.
    #[error("{path}: {problem}")]
    Weights {
        /// The weights file.
        path: PathBuf,
        /// What does not fit.
        problem: String,
    },
    /// A data set whose content is inconsistent (label out of range, size mismatch).
    #[error("{source_name}: {problem}")]
    Data {
        /// Where the data came from (a file, or a data set name).
        source_name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A requested feature or device that this build cannot provide.
    #[error("{0}")]
    Unsupported(String),
    /// A marked model does not prove its own key: nothing was written.
    #[error("{0}")]
    Unprovable(String),
    /// A remote endpoint that failed, refused or answered something unusable.
    #[error("{endpoint}: {problem}")]
    Remote {
        /// The endpoint (URL) or suspect file.
        endpoint: String,
        /// What went wrong, with the status or the offending part of the answer.
        problem: String,
    },
    /// An external command (npm, tar) failed.
    #[error("{command}: {problem}")]
    External {
        /// The command that failed.
        command: String,
        /// Its error output or exit status.
        problem: String,
    },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// A format problem in a named file.
    pub fn format(path: impl Into<PathBuf>, problem: impl Into<String>) -> Self {
        Error::Format {
            path: path.into(),
            problem: problem.into(),
        }
    }

    /// A failed or unusable exchange with a remote endpoint.
    pub fn remote(endpoint: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Remote {
            endpoint: endpoint.into(),
            problem: problem.into(),
        }
    }

    /// A rejected user value.
    pub fn invalid(
        field: impl Into<String>,
        value: impl ToString,
        reason: impl Into<String>,
    ) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

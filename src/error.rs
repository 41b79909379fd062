//! The one error type of the anodet library: every variant names the file or parameter at fault.

use std::path::{Path, PathBuf};

/// Everything that can go wrong in anodet. Messages start lower-case and name the input first, so
/// the CLI can print them as `anodet: <message>`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A user-supplied file or folder is unusable (corrupt image, wrong layout, …).
    #[error("{}: {problem}", path.display())]
    Input { path: PathBuf, problem: String },
    /// Reading or writing a file failed at the operating-system level.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A parameter (flag) has a value anodet cannot use.
    #[error("{name}: {problem}")]
    InvalidParam { name: String, problem: String },
    /// A numerical step failed on the data (e.g. a singular covariance).
    #[error("{context}: {problem}")]
    Numeric { context: String, problem: String },
    /// libtorch reported an error (model loading, forward pass, device).
    #[error("{context}: {source}")]
    Torch {
        context: String,
        #[source]
        source: tch::TchError,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A problem with a user-supplied file or folder.
    pub fn input(path: impl AsRef<Path>, problem: impl Into<String>) -> Self {
        Error::Input { path: path.as_ref().to_path_buf(), problem: problem.into() }
    }

    /// An operating-system error while touching `path`.
    pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        Error::Io { path: path.as_ref().to_path_buf(), source }
    }

    /// A parameter value that cannot be used.
    pub fn param(name: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::InvalidParam { name: name.into(), problem: problem.into() }
    }

    /// A numerical failure, with the context it happened in.
    pub fn numeric(context: impl Into<String>, problem: impl Into<String>) -> Self {
        Error::Numeric { context: context.into(), problem: problem.into() }
    }

    /// A libtorch failure, with what anodet was doing.
    pub fn torch(context: impl Into<String>, source: tch::TchError) -> Self {
        Error::Torch { context: context.into(), source }
    }
}

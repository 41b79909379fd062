//! Progress reporting: the library calls these hooks; the CLI draws them (indicatif on stderr).

/// Receives progress of long steps. Implementations must be cheap and thread-safe.
pub trait Progress: Sync {
    /// A step of `total` units named `what` begins.
    fn start(&self, _total: u64, _what: &str) {}
    /// `done` more units are finished.
    fn advance(&self, _done: u64) {}
    /// The step is over.
    fn finish(&self) {}
}

/// Reports nothing (library use, tests).
pub struct Silent;

impl Progress for Silent {}

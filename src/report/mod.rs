//! Writing results: atomic file and folder writes, and one writer per output format.

pub mod atomic;
pub mod csv;
pub mod npy;
pub mod overlay;
pub mod plots;
pub mod table;

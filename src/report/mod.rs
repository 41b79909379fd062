//! Writing results: atomic file and folder writes, and one writer per output format.

pub mod atomic;
pub mod clock;
pub mod csv;
pub mod eval_page;
pub mod html;
pub mod npy;
pub mod overlay;
pub mod pictures;
pub mod plots;
pub mod table;

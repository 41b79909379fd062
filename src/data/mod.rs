//! Data: finding the images of a category, decoding them, splitting them, generating test sets.

pub mod defects;
pub mod image;
pub mod layout;
pub mod split;
pub mod synth;

pub use layout::{Category, Layout, Sample, Split};

//! anodet: visual inspection from good examples only.
//!
//! The pipeline, one module per stage:
//! - [`data`]: find a category's images (MVTec AD or good/bad layout), decode and resize them,
//!   split them into folds, or generate a synthetic category.
//! - [`backbone`]: a pretrained EfficientNet exported to TorchScript, run through tch, giving
//!   nine feature maps ("levels" 1–9).
//! - [`features`]: global-average-pooled feature vectors per level for a set of images.
//! - [`gaussian`]: mean and Ledoit-Wolf covariance per level; scores are Mahalanobis distances.
//! - [`scorer`]: the seam every verb scores through: fit on good images → fitted scorer →
//!   image scores and maps (the pooled Gaussian, knn patch memory).
//! - [`threshold`]: turning scores into verdicts.
//! - [`linalg`]: Cholesky inverse and symmetric eigendecomposition on libtorch's LAPACK.
//! - [`model`]: the fitted model on disk.
//! - [`pipeline`]: the verbs (`fit`, `score`) built from the stages.
//! - [`report`]: writing outputs safely.
//! - [`serve`]: the HTTP inspection service (`anodet serve`).

pub mod backbone;
pub mod data;
pub mod error;
pub mod features;
pub mod gaussian;
pub mod heatmap;
pub mod linalg;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod report;
pub mod rng;
pub mod scorer;
pub mod serve;
pub mod threshold;

pub use error::{Error, Result};

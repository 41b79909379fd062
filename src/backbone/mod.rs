//! Backbones turn a batch of prepared images into feature maps, one per level (1–9).

pub mod allocator;
pub mod device;
pub mod hlac;
pub mod levels;
pub mod precision;
pub mod sidecar;
pub mod torchscript;

pub use device::DeviceSpec;
pub use levels::Levels;
pub use precision::Precision;
pub use sidecar::BackboneInfo;
pub use torchscript::TorchBackbone;

use std::path::Path;

use ndarray::Array2;

use crate::data::image::PreparedImage;
use crate::error::Result;

/// A feature extractor: a TorchScript CNN or the weight-free HLAC features.
pub enum Backbone {
    Torch(TorchBackbone),
    Hlac(hlac::Hlac),
}

impl Backbone {
    pub fn info(&self) -> &BackboneInfo {
        match self {
            Backbone::Torch(b) => b.info(),
            Backbone::Hlac(h) => h.info(),
        }
    }

    /// Identifies the network: the fp32 TorchScript file's SHA-256 (whatever variant runs), or
    /// HLAC's id. Runs are checked against it.
    pub fn sha256(&self) -> &str {
        match self {
            Backbone::Torch(b) => b.sha256(),
            Backbone::Hlac(_) => hlac::HLAC_ID,
        }
    }

    /// Identifies the exact computation (variant file included), for the feature cache.
    pub fn cache_key(&self) -> &str {
        match self {
            Backbone::Torch(b) => b.cache_key(),
            Backbone::Hlac(_) => hlac::HLAC_ID,
        }
    }

    /// Which computation runs: fp32, fp32_frozen, bf16, fp16_autocast or hlac.
    pub fn precision(&self) -> &str {
        match self {
            Backbone::Torch(b) => b.variant(),
            Backbone::Hlac(_) => "hlac",
        }
    }

    /// The file that runs (for messages about the computation).
    pub fn path(&self) -> &Path {
        match self {
            Backbone::Torch(b) => b.path(),
            Backbone::Hlac(_) => Path::new("hlac"),
        }
    }

    /// The file that identifies the network (the fp32 `.pt`; for messages about identity).
    pub fn identity_path(&self) -> &Path {
        match self {
            Backbone::Torch(b) => b.identity_path(),
            Backbone::Hlac(_) => Path::new("hlac"),
        }
    }

    pub fn device(&self) -> tch::Device {
        match self {
            Backbone::Torch(b) => b.device(),
            Backbone::Hlac(_) => tch::Device::Cpu,
        }
    }

    /// The CNN, for what only a network can do (autograd maps, per-position features).
    pub fn as_torch(&self) -> Option<&TorchBackbone> {
        match self {
            Backbone::Torch(b) => Some(b),
            Backbone::Hlac(_) => None,
        }
    }

    /// Pooled features of same-sized images: one `images × channels` matrix per level.
    pub fn pooled(&self, images: &[&PreparedImage], levels: &Levels) -> Result<Vec<Array2<f32>>> {
        match self {
            Backbone::Torch(b) => b.pooled(images, levels),
            Backbone::Hlac(h) => {
                let rows = h.image_features(images);
                levels
                    .as_slice()
                    .iter()
                    .map(|&level| {
                        let (start, width) = h.info().level_span(level);
                        Ok(Array2::from_shape_fn((rows.len(), width), |(i, j)| rows[i][start + j]))
                    })
                    .collect()
            }
        }
    }
}

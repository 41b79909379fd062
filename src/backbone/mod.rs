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

/// How many images one forward pass takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchLimit {
    /// At most this many images.
    pub images: usize,
    /// Where set, also at most this many input pixels (but always at least one image).
    pub pixels: Option<usize>,
}

impl BatchLimit {
    /// Exactly `images` per pass, whatever their size (`--batch`).
    pub fn images(images: usize) -> Self {
        BatchLimit { images, pixels: None }
    }

    /// Images of `width × height` per pass (at least one, unless `images` is 0).
    pub fn images_of(&self, width: u32, height: u32) -> usize {
        let pixels = (width as usize * height as usize).max(1);
        match self.pixels {
            Some(limit) => (limit / pixels).max(1).min(self.images),
            None => self.images,
        }
    }
}

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

    /// Input pixels one forward pass should hold at most (`None`: no limit beyond the image
    /// count). See [`TorchBackbone::pass_pixels`].
    pub fn pass_pixels(&self) -> Option<usize> {
        match self {
            Backbone::Torch(b) => b.pass_pixels(),
            Backbone::Hlac(_) => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_limit_counts_images_and_pixels() {
        let fixed = BatchLimit::images(16);
        assert_eq!(fixed.images_of(224, 224), 16);
        assert_eq!(fixed.images_of(4000, 3000), 16, "--batch holds whatever the size");
        let limited = BatchLimit { images: 16, pixels: Some(349_525) };
        assert_eq!(limited.images_of(224, 224), 6);
        assert_eq!(limited.images_of(544, 224), 2);
        assert_eq!(limited.images_of(100, 100), 16, "never more than the image count");
        assert_eq!(limited.images_of(2448, 2048), 1, "never fewer than one image");
        assert_eq!(BatchLimit { images: 0, pixels: Some(1000) }.images_of(10, 10), 0);
    }
}

//! Embedded images as scorers read them: pooled vectors per level, or patch features.

use std::path::PathBuf;

use super::{FeatureSet, PatchSet};
use crate::error::{Error, Result};

/// What a scorer reads from the backbone for each image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingKind {
    /// One global-average-pooled vector per level.
    Pooled,
    /// A vector per spatial position (see [`crate::features::patches`]).
    Patches,
    /// HLAC features per cell of a `grid × grid` partition, as positions.
    Cells { grid: usize },
    /// One embedding per ensemble member (made by the pipeline, which opens their backbones).
    Members,
}

/// Embedded images, as a scorer reads them.
#[derive(Debug, Clone)]
pub enum Embeddings {
    Pooled(FeatureSet),
    Patches(PatchSet),
    /// One per ensemble member, each over the same images in the same order.
    Members(Vec<Embeddings>),
}

impl Embeddings {
    pub fn len(&self) -> usize {
        match self {
            Embeddings::Pooled(f) => f.len(),
            Embeddings::Patches(p) => p.len(),
            Embeddings::Members(m) => m.first().map_or(0, Embeddings::len),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn paths(&self) -> &[PathBuf] {
        match self {
            Embeddings::Pooled(f) => &f.paths,
            Embeddings::Patches(p) => &p.paths,
            Embeddings::Members(m) => m.first().map_or(&[], Embeddings::paths),
        }
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> Embeddings {
        match self {
            Embeddings::Pooled(f) => Embeddings::Pooled(f.select(indices)),
            Embeddings::Patches(p) => Embeddings::Patches(p.select(indices)),
            Embeddings::Members(m) => {
                Embeddings::Members(m.iter().map(|e| e.select(indices)).collect())
            }
        }
    }

    pub fn pooled(&self) -> Result<&FeatureSet> {
        match self {
            Embeddings::Pooled(f) => Ok(f),
            _ => Err(wrong_embedding("pooled features")),
        }
    }

    pub fn patches(&self) -> Result<&PatchSet> {
        match self {
            Embeddings::Patches(p) => Ok(p),
            _ => Err(wrong_embedding("patch features")),
        }
    }

    pub fn members(&self) -> Result<&[Embeddings]> {
        match self {
            Embeddings::Members(m) => Ok(m),
            _ => Err(wrong_embedding("one embedding per member")),
        }
    }
}

fn wrong_embedding(wanted: &str) -> Error {
    Error::numeric("scorer", format!("this scorer reads {wanted}"))
}

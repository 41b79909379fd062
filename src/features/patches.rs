//! Per-position features ("patches") for patch-memory scorers: the chosen levels' maps, each
//! averaged over a 3×3 neighbourhood (PatchCore's local aggregation, so a position sees a little
//! context), upsampled to the finest chosen level's grid and concatenated.

use std::path::PathBuf;

use tch::{Kind, Tensor};

use crate::backbone::Levels;
use crate::error::{Error, Result};

/// Patch features of a set of images: image `i` has `grids[i].0 × grids[i].1` positions (row
/// major), rows `offsets[i]..offsets[i + 1]` of `values` (rows × `dim`).
#[derive(Debug, Clone)]
pub struct PatchSet {
    pub paths: Vec<PathBuf>,
    pub levels: Levels,
    pub dim: usize,
    pub grids: Vec<(usize, usize)>,
    pub offsets: Vec<usize>,
    pub values: Vec<f32>,
}

impl PatchSet {
    /// An empty set for `levels` with `dim` values per position.
    pub fn empty(levels: Levels, dim: usize) -> Self {
        PatchSet {
            paths: Vec::new(),
            levels,
            dim,
            grids: Vec::new(),
            offsets: vec![0],
            values: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.paths.len()
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }

    /// Total positions over all images.
    pub fn rows(&self) -> usize {
        self.offsets.last().copied().unwrap_or(0)
    }

    /// Appends one image's positions (`grid.0 × grid.1 × dim` values).
    pub fn push(&mut self, path: PathBuf, grid: (usize, usize), values: &[f32]) -> Result<()> {
        if values.len() != grid.0 * grid.1 * self.dim {
            return Err(Error::numeric(
                "patch features",
                format!(
                    "{} values for a {}×{} grid of {} dimensions",
                    values.len(),
                    grid.0,
                    grid.1,
                    self.dim
                ),
            ));
        }
        self.paths.push(path);
        self.grids.push(grid);
        self.values.extend_from_slice(values);
        self.offsets.push(self.values.len() / self.dim);
        Ok(())
    }

    /// The positions of image `i`.
    pub fn image(&self, i: usize) -> &[f32] {
        &self.values[self.offsets[i] * self.dim..self.offsets[i + 1] * self.dim]
    }

    /// The images at `indices`, in that order.
    pub fn select(&self, indices: &[usize]) -> PatchSet {
        let mut out = PatchSet::empty(self.levels.clone(), self.dim);
        for &i in indices {
            out.paths.push(self.paths[i].clone());
            out.grids.push(self.grids[i]);
            out.values.extend_from_slice(self.image(i));
            out.offsets.push(out.values.len() / self.dim);
        }
        out
    }

    /// All positions as one `rows × dim` tensor on the CPU.
    pub fn tensor(&self) -> Tensor {
        Tensor::from_slice(&self.values).view([self.rows() as i64, self.dim as i64])
    }
}

/// Patch features `n × h × w × dim` (float) of `levels` from a batch's nine level maps.
pub fn patch_embedding(maps: &[Tensor], levels: &Levels) -> Result<Tensor> {
    let finest = levels.as_slice()[0] as usize - 1;
    let base = maps.get(finest).ok_or_else(|| Error::numeric("patch features", "missing level"))?;
    let (h, w) = (base.size()[2], base.size()[3]);
    let mut parts = Vec::new();
    for &level in levels.as_slice() {
        let map = maps[level as usize - 1].to_kind(Kind::Float);
        let pooled = map
            .f_avg_pool2d([3, 3], [1, 1], [1, 1], false, false, None)
            .map_err(|e| Error::torch("patch features", e))?;
        let sized = if pooled.size()[2..] == [h, w] {
            pooled
        } else {
            pooled
                .f_upsample_bilinear2d([h, w], false, None, None)
                .map_err(|e| Error::torch("patch features", e))?
        };
        parts.push(sized);
    }
    let joined = Tensor::f_cat(&parts, 1).map_err(|e| Error::torch("patch features", e))?;
    Ok(joined.permute([0, 2, 3, 1]).contiguous())
}

/// Values per position for `levels` of a backbone with `channels` per level.
pub fn patch_dim(channels: &[usize], levels: &Levels) -> usize {
    levels.as_slice().iter().map(|&l| channels[l as usize - 1]).sum()
}

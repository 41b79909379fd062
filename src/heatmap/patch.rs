//! PaDiM-style patch model: a Gaussian per spatial position over several levels.
//!
//! Levels 3, 4 and 5 (strides 8, 16 and 32) are upsampled to level 3's grid and concatenated,
//! so each position has one vector (24 + 40 + 80 = 144 values for Lite0), modelled by a
//! Gaussian per position ([`PositionGaussians`]) fitted on the network's device.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{Device, Tensor};

use super::torch;
use crate::error::{Error, Result};
use crate::gaussian::PositionGaussians;
use crate::report::atomic;

/// The levels a patch model concatenates.
pub const PATCH_LEVELS: [u8; 3] = [3, 4, 5];

/// Per-position Gaussians on level 3's grid at the run's input size.
pub struct PatchModel {
    gaussians: PositionGaussians,
}

impl From<PositionGaussians> for PatchModel {
    fn from(gaussians: PositionGaussians) -> Self {
        PatchModel { gaussians }
    }
}

/// Concatenated patch features `n × positions × dims` from the nine level maps of a batch.
pub fn patch_features(maps: &[Tensor]) -> Result<(Tensor, (i64, i64))> {
    let base = &maps[PATCH_LEVELS[0] as usize - 1];
    let (n, h, w) = (base.size()[0], base.size()[2], base.size()[3]);
    let mut parts = vec![base.shallow_clone()];
    for &level in &PATCH_LEVELS[1..] {
        let map = &maps[level as usize - 1];
        parts.push(
            map.f_upsample_bilinear2d([h, w], false, None, None)
                .map_err(torch("patch features"))?,
        );
    }
    let joined = Tensor::f_cat(&parts, 1).map_err(torch("patch features"))?;
    let dims = joined.size()[1];
    Ok((joined.permute([0, 2, 3, 1]).reshape([n, h * w, dims]), (h, w)))
}

impl PatchModel {
    /// Distance maps `n × h × w` from the nine level maps of a batch.
    pub fn maps_from_levels(&self, levels: &[Tensor]) -> Result<Tensor> {
        let (features, grid) = patch_features(levels)?;
        if grid != self.gaussians.grid() {
            return Err(Error::numeric(
                "patch model",
                format!(
                    "feature grid {grid:?} differs from the fitted {:?} (another input size?)",
                    self.gaussians.grid()
                ),
            ));
        }
        Ok(self.gaussians.distances(&features)?.view([-1, grid.0, grid.1]))
    }

    /// Saves mean and precision (float32) with the grid.
    pub fn save(&self, path: &Path) -> Result<()> {
        let to_bytes = |t: &Tensor| -> Result<Vec<u8>> {
            let values = Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().view(-1))
                .map_err(torch("patch model"))?;
            Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        let g = &self.gaussians;
        let (mean, precision) = (to_bytes(g.mean())?, to_bytes(g.precision())?);
        let shape = |t: &Tensor| t.size().iter().map(|&s| s as usize).collect::<Vec<_>>();
        let views = vec![
            (
                "mean".to_string(),
                TensorView::new(Dtype::F32, shape(g.mean()), &mean)
                    .map_err(|e| Error::input(path, e.to_string()))?,
            ),
            (
                "precision".to_string(),
                TensorView::new(Dtype::F32, shape(g.precision()), &precision)
                    .map_err(|e| Error::input(path, e.to_string()))?,
            ),
        ];
        let metadata = std::collections::HashMap::from([
            ("grid_height".to_string(), g.grid().0.to_string()),
            ("grid_width".to_string(), g.grid().1.to_string()),
        ]);
        let bytes = safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::input(path, e.to_string()))?;
        atomic::write_file(path, &bytes)
    }

    /// Loads a model written by [`PatchModel::save`].
    pub fn load(path: &Path, device: Device) -> Result<PatchModel> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let corrupt = |what: &str| Error::input(path, format!("corrupt patch model: {what}"));
        let (_, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(&e.to_string()))?;
        let tensors = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(&e.to_string()))?;
        let grid_value = |key: &str| -> Result<i64> {
            header
                .metadata()
                .as_ref()
                .and_then(|m| m.get(key))
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| corrupt(key))
        };
        let grid = (grid_value("grid_height")?, grid_value("grid_width")?);
        let read = |name: &str| -> Result<Tensor> {
            let view = tensors.tensor(name).map_err(|_| corrupt(name))?;
            if view.dtype() != Dtype::F32 {
                return Err(corrupt(name));
            }
            let values: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            let shape: Vec<i64> = view.shape().iter().map(|&s| s as i64).collect();
            Tensor::from_slice(&values)
                .f_view(shape.as_slice())
                .map_err(|_| corrupt(name))
                .map(|t| t.to_device(device))
        };
        let (mean, precision) = (read("mean")?, read("precision")?);
        let gaussians = PositionGaussians::from_parts(grid, mean, precision)
            .map_err(|_| corrupt("shapes do not fit the grid"))?;
        Ok(PatchModel { gaussians })
    }
}

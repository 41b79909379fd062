//! PaDiM-style patch model: a Gaussian per spatial position over several levels.
//!
//! Levels 3, 4 and 5 (strides 8, 16 and 32) are upsampled to level 3's grid and concatenated,
//! so each position has one vector (24 + 40 + 80 = 144 values for Lite0). Per position, mean and
//! Ledoit-Wolf covariance come from the same streaming sums as [`crate::gaussian::Accumulator`],
//! batched over positions on the network's device.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use tch::{Device, Kind, Tensor};

use super::torch;
use crate::error::{Error, Result};
use crate::report::atomic;

/// The levels a patch model concatenates.
pub const PATCH_LEVELS: [u8; 3] = [3, 4, 5];

/// Per-position Gaussians.
pub struct PatchModel {
    /// Grid (height, width) of level 3 at the run's input size.
    grid: (i64, i64),
    /// positions × dims
    mean: Tensor,
    /// positions × dims × dims
    precision: Tensor,
}

/// Running sums for all positions at once (float64).
pub struct PatchAccumulator {
    count: i64,
    shift: Option<Tensor>,
    sum: Option<Tensor>,
    sum_outer: Option<Tensor>,
    sum_norm_weighted: Option<Tensor>,
    sum_norm4: Option<Tensor>,
    grid: (i64, i64),
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

impl PatchAccumulator {
    pub fn new() -> Self {
        PatchAccumulator {
            count: 0,
            shift: None,
            sum: None,
            sum_outer: None,
            sum_norm_weighted: None,
            sum_norm4: None,
            grid: (0, 0),
        }
    }

    /// Adds a batch of patch features (`n × positions × dims`).
    pub fn push(&mut self, features: &Tensor, grid: (i64, i64)) -> Result<()> {
        let x = features.to_kind(Kind::Double);
        if let Some(shift) = &self.shift {
            if shift.size() != x.size()[1..] {
                return Err(Error::numeric(
                    "patch model",
                    "images of different sizes cannot share a patch model",
                ));
            }
        } else {
            self.shift = Some(x.get(0).copy());
            self.grid = grid;
        }
        let shift = self.shift.as_ref().map(|s| s.shallow_clone()).unwrap_or_else(|| x.get(0));
        let y = x.f_sub(&shift).map_err(torch("patch model"))?;
        let norms2 = (&y * &y).sum_dim_intlist(-1, false, Kind::Double);
        let add = |slot: &mut Option<Tensor>, value: Tensor| {
            *slot = Some(match slot.take() {
                Some(total) => total + value,
                None => value,
            });
        };
        add(&mut self.sum, y.sum_dim_intlist(0, false, Kind::Double));
        add(
            &mut self.sum_outer,
            Tensor::f_einsum("npi,npj->pij", &[&y, &y], None::<i64>)
                .map_err(torch("patch model"))?,
        );
        add(
            &mut self.sum_norm_weighted,
            Tensor::f_einsum("np,npi->pi", &[&norms2, &y], None::<i64>)
                .map_err(torch("patch model"))?,
        );
        add(&mut self.sum_norm4, (&norms2 * &norms2).sum_dim_intlist(0, false, Kind::Double));
        self.count += x.size()[0];
        Ok(())
    }

    /// Ledoit-Wolf per position (the formulas of `gaussian::ledoit_wolf`, batched), then inverse.
    pub fn finish(self, device: Device) -> Result<PatchModel> {
        let n = self.count as f64;
        let (Some(shift), Some(s1), Some(s2), Some(s3), Some(s4)) =
            (self.shift, self.sum, self.sum_outer, self.sum_norm_weighted, self.sum_norm4)
        else {
            return Err(Error::numeric("patch model", "no images"));
        };
        if self.count < 2 {
            return Err(Error::numeric(
                "patch model",
                format!("needs at least 2 images, got {}", self.count),
            ));
        }
        let p = s1.size()[1] as f64;
        let m = &s1 / n;
        let empirical = &s2 / n - m.unsqueeze(2) * m.unsqueeze(1);
        let trace = empirical.diagonal(0, -2, -1).sum_dim_intlist(-1, false, Kind::Double);
        let mu = &trace / p;
        let frobenius2 =
            (&empirical * &empirical).sum_dim_intlist(&[-2i64, -1][..], false, Kind::Double);
        let c = (&m * &m).sum_dim_intlist(-1, false, Kind::Double);
        let sum_a = s2.diagonal(0, -2, -1).sum_dim_intlist(-1, false, Kind::Double);
        let sum_ab = (&s3 * &m).sum_dim_intlist(-1, false, Kind::Double);
        let sum_b2 = Tensor::f_einsum("pi,pij,pj->p", &[&m, &s2, &m], None::<i64>)
            .map_err(torch("patch model"))?;
        let beta_raw =
            &s4 - &sum_ab * 4.0 + &sum_b2 * 4.0 + &c * &sum_a * 2.0 - &c * &c * (3.0 * n);
        let beta = (&beta_raw / n - &frobenius2) / (p * n);
        let delta = (&frobenius2 - &mu * &trace * 2.0 + &mu * &mu * p) / p;
        let beta = beta.minimum(&delta);
        let defined = beta.ne(0.0).logical_and(&delta.gt(0.0));
        let shrinkage = beta
            .f_div(&delta.clamp_min(f64::MIN_POSITIVE))
            .map_err(torch("patch model"))?
            .where_self(&defined, &beta.zeros_like());
        let identity = Tensor::eye(p as i64, (Kind::Double, empirical.device()));
        let keep: Tensor = 1.0 - &shrinkage;
        let covariance = &empirical * keep.view([-1, 1, 1])
            + identity.unsqueeze(0) * (&shrinkage * &mu).view([-1, 1, 1]);
        let (cholesky, info) =
            covariance.f_linalg_cholesky_ex(false, false).map_err(torch("patch model"))?;
        if info.abs().max().int64_value(&[]) != 0 {
            return Err(Error::numeric(
                "patch model",
                "a per-position covariance is singular (identical features at some position); use more varied good images",
            ));
        }
        let precision = cholesky.f_cholesky_inverse(false).map_err(torch("patch model"))?;
        Ok(PatchModel {
            grid: self.grid,
            mean: (m + shift).to_kind(Kind::Float).to_device(device),
            precision: precision.to_kind(Kind::Float).to_device(device),
        })
    }
}

impl Default for PatchAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl PatchModel {
    /// Distance maps `n × h × w` from the nine level maps of a batch.
    pub fn maps_from_levels(&self, levels: &[Tensor]) -> Result<Tensor> {
        let (features, grid) = patch_features(levels)?;
        if grid != self.grid {
            return Err(Error::numeric(
                "patch model",
                format!(
                    "feature grid {grid:?} differs from the fitted {:?} (another input size?)",
                    self.grid
                ),
            ));
        }
        let centred = features.f_sub(&self.mean).map_err(torch("patch map"))?;
        let quadratic = Tensor::f_einsum(
            "npi,pij,npj->np",
            &[&centred, &self.precision, &centred],
            None::<i64>,
        )
        .map_err(torch("patch map"))?;
        Ok(quadratic.clamp_min(0.0).sqrt().view([-1, grid.0, grid.1]))
    }

    /// Saves mean and precision (float32) with the grid.
    pub fn save(&self, path: &Path) -> Result<()> {
        let to_bytes = |t: &Tensor| -> Result<Vec<u8>> {
            let values = Vec::<f32>::try_from(t.to_device(Device::Cpu).contiguous().view(-1))
                .map_err(torch("patch model"))?;
            Ok(values.iter().flat_map(|v| v.to_le_bytes()).collect())
        };
        let (mean, precision) = (to_bytes(&self.mean)?, to_bytes(&self.precision)?);
        let shape = |t: &Tensor| t.size().iter().map(|&s| s as usize).collect::<Vec<_>>();
        let views = vec![
            (
                "mean".to_string(),
                TensorView::new(Dtype::F32, shape(&self.mean), &mean)
                    .map_err(|e| Error::input(path, e.to_string()))?,
            ),
            (
                "precision".to_string(),
                TensorView::new(Dtype::F32, shape(&self.precision), &precision)
                    .map_err(|e| Error::input(path, e.to_string()))?,
            ),
        ];
        let metadata = std::collections::HashMap::from([
            ("grid_height".to_string(), self.grid.0.to_string()),
            ("grid_width".to_string(), self.grid.1.to_string()),
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
        let positions = grid.0 * grid.1;
        if mean.dim() != 2
            || mean.size()[0] != positions
            || precision.size() != [positions, mean.size()[1], mean.size()[1]]
        {
            return Err(corrupt("shapes do not fit the grid"));
        }
        Ok(PatchModel { grid, mean, precision })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::GaussianParams;

    #[test]
    fn batched_ledoit_wolf_matches_the_pooled_estimator_at_every_position() {
        tch::manual_seed(3);
        let features = Tensor::randn([30, 4, 6], (Kind::Float, Device::Cpu)) * 2.0 + 5.0;
        let mut accumulator = PatchAccumulator::new();
        accumulator.push(&features.narrow(0, 0, 7), (2, 2)).unwrap();
        accumulator.push(&features.narrow(0, 7, 23), (2, 2)).unwrap();
        let model = accumulator.finish(Device::Cpu).unwrap();
        for position in 0..4 {
            let rows = features.select(1, position);
            let values = Vec::<f32>::try_from(rows.contiguous().view(-1)).unwrap();
            let matrix = ndarray::Array2::from_shape_vec((30, 6), values).unwrap();
            let reference = GaussianParams::new().fit(matrix.view()).unwrap();
            let precision =
                Vec::<f32>::try_from(model.precision.get(position).contiguous().view(-1)).unwrap();
            for (got, want) in precision.iter().zip(reference.precision().iter()) {
                assert!(
                    (*got as f64 - want).abs() <= 1e-4 * want.abs().max(1.0),
                    "{got} vs {want}"
                );
            }
            let mean = Vec::<f32>::try_from(model.mean.get(position)).unwrap();
            for (got, want) in mean.iter().zip(reference.mean().iter()) {
                assert!((*got as f64 - want).abs() < 1e-4);
            }
        }
    }
}

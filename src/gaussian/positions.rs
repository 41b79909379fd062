//! A Gaussian per spatial position (PaDiM's model): mean and Ledoit-Wolf shrunk covariance of
//! each position's feature vector over good images, scored by Mahalanobis distance.
//!
//! The sums are those of [`super::Accumulator`], batched over positions on the tensors' device
//! in float64, so a fit streams batches of images and holds O(positions × dims²).

use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

fn torch(context: &'static str) -> impl Fn(tch::TchError) -> Error {
    move |e| Error::torch(context, e)
}

/// Per-position Gaussians on a grid.
pub struct PositionGaussians {
    /// Grid (height, width) of the positions.
    grid: (i64, i64),
    /// positions × dims
    mean: Tensor,
    /// positions × dims × dims
    precision: Tensor,
}

/// Running sums for all positions at once (float64).
pub struct PositionAccumulator {
    count: i64,
    shift: Option<Tensor>,
    sum: Option<Tensor>,
    sum_outer: Option<Tensor>,
    sum_norm_weighted: Option<Tensor>,
    sum_norm4: Option<Tensor>,
    grid: (i64, i64),
}

impl PositionAccumulator {
    pub fn new() -> Self {
        PositionAccumulator {
            count: 0,
            shift: None,
            sum: None,
            sum_outer: None,
            sum_norm_weighted: None,
            sum_norm4: None,
            grid: (0, 0),
        }
    }

    /// An empty accumulator whose sums are taken about `shift` (positions × dims): accumulators
    /// of image sets taken about one shift can be subtracted ([`PositionAccumulator::minus`]).
    pub fn about(shift: &Tensor, grid: (i64, i64)) -> Self {
        PositionAccumulator {
            shift: Some(shift.to_kind(Kind::Double).copy()),
            grid,
            ..PositionAccumulator::new()
        }
    }

    /// The sums of this set without the images of `part`, a subset of them accumulated about
    /// the same shift: the fit on the rest without passing over its images again.
    pub fn minus(&self, part: &PositionAccumulator) -> Result<PositionAccumulator> {
        let same_shift = match (&self.shift, &part.shift) {
            (Some(a), Some(b)) => a.size() == b.size() && a.equal(b),
            _ => false,
        };
        if !same_shift || self.grid != part.grid || part.count > self.count {
            return Err(Error::numeric(
                "position gaussians",
                "only a subset accumulated about the same shift can be removed",
            ));
        }
        let less = |whole: &Option<Tensor>, removed: &Option<Tensor>| match (whole, removed) {
            (Some(w), Some(r)) => Some(w - r),
            (w, _) => w.as_ref().map(Tensor::copy),
        };
        Ok(PositionAccumulator {
            count: self.count - part.count,
            shift: self.shift.as_ref().map(Tensor::copy),
            sum: less(&self.sum, &part.sum),
            sum_outer: less(&self.sum_outer, &part.sum_outer),
            sum_norm_weighted: less(&self.sum_norm_weighted, &part.sum_norm_weighted),
            sum_norm4: less(&self.sum_norm4, &part.sum_norm4),
            grid: self.grid,
        })
    }

    /// Adds a batch of features (`n × positions × dims`) on a `grid` of positions.
    pub fn push(&mut self, features: &Tensor, grid: (i64, i64)) -> Result<()> {
        let x = features.to_kind(Kind::Double);
        if let Some(shift) = &self.shift {
            if shift.size() != x.size()[1..] {
                return Err(Error::numeric(
                    "position gaussians",
                    "images of different sizes cannot share per-position Gaussians",
                ));
            }
        } else {
            self.shift = Some(x.get(0).copy());
            self.grid = grid;
        }
        let shift = self.shift.as_ref().map(|s| s.shallow_clone()).unwrap_or_else(|| x.get(0));
        // positions × images × dims: each position's rows together, for batched products.
        let y = x.f_sub(&shift).map_err(torch("position gaussians"))?.transpose(0, 1).contiguous();
        let norms2 = (&y * &y).sum_dim_intlist(-1, false, Kind::Double);
        let add = |slot: &mut Option<Tensor>, value: Tensor| {
            *slot = Some(match slot.take() {
                Some(total) => total + value,
                None => value,
            });
        };
        add(&mut self.sum, y.sum_dim_intlist(1, false, Kind::Double));
        // The outer products (positions × dims², the bulk of the sums) are added in place: a
        // new total per batch would allocate and fault in that much again for every batch.
        let outer = |total: Option<&mut Tensor>| match total {
            Some(total) => total.f_baddbmm_(&y.transpose(1, 2), &y).map(|_| None),
            None => y.transpose(1, 2).f_bmm(&y).map(Some),
        };
        if let Some(first) = outer(self.sum_outer.as_mut()).map_err(torch("position gaussians"))? {
            self.sum_outer = Some(first);
        }
        add(
            &mut self.sum_norm_weighted,
            norms2.unsqueeze(1).f_bmm(&y).map_err(torch("position gaussians"))?.squeeze_dim(1),
        );
        add(&mut self.sum_norm4, (&norms2 * &norms2).sum_dim_intlist(1, false, Kind::Double));
        self.count += x.size()[0];
        Ok(())
    }

    /// Ledoit-Wolf per position (the formulas of `gaussian::ledoit_wolf`, batched), then inverse.
    ///
    /// The positions × dims² tensors dominate memory and time (each one allocated is also
    /// faulted in page by page): the sum of outer products becomes the covariance in place, so
    /// a finish allocates only the Cholesky factor and the precision besides it.
    pub fn finish(self, device: Device) -> Result<PositionGaussians> {
        let n = self.count as f64;
        let (Some(shift), Some(s1), Some(mut s2), Some(s3), Some(s4)) =
            (self.shift, self.sum, self.sum_outer, self.sum_norm_weighted, self.sum_norm4)
        else {
            return Err(Error::numeric("position gaussians", "no images"));
        };
        if self.count < 2 {
            return Err(Error::numeric(
                "position gaussians",
                format!("needs at least 2 images, got {}", self.count),
            ));
        }
        let p = s1.size()[1] as f64;
        let m = &s1 / n;
        let c = (&m * &m).sum_dim_intlist(-1, false, Kind::Double);
        // What β needs of the raw sums, before they become the covariance.
        let sum_a = s2.diagonal(0, -2, -1).sum_dim_intlist(-1, false, Kind::Double);
        let sum_ab = (&s3 * &m).sum_dim_intlist(-1, false, Kind::Double);
        let sum_b2 = Tensor::f_einsum("pi,pij,pj->p", &[&m, &s2, &m], None::<i64>)
            .map_err(torch("position gaussians"))?;
        // The empirical covariance s2 / n − m mᵀ, in place of s2.
        let _ = s2.f_div_scalar_(n).map_err(torch("position gaussians"))?;
        let _ = s2
            .f_baddbmm_(&(-&m).unsqueeze(2), &m.unsqueeze(1))
            .map_err(torch("position gaussians"))?;
        let mut empirical = s2;
        let trace = empirical.diagonal(0, -2, -1).sum_dim_intlist(-1, false, Kind::Double);
        let mu = &trace / p;
        // Each position's squared Frobenius norm, as the vector norm of its flattened matrix
        // (without a squared copy of the matrices).
        let frobenius2 = empirical
            .flatten(1, -1)
            .f_linalg_norm(2.0, &[1i64][..], false, Kind::Double)
            .map_err(torch("position gaussians"))?
            .square();
        let beta_raw =
            &s4 - &sum_ab * 4.0 + &sum_b2 * 4.0 + &c * &sum_a * 2.0 - &c * &c * (3.0 * n);
        let beta = (&beta_raw / n - &frobenius2) / (p * n);
        let delta = (&frobenius2 - &mu * &trace * 2.0 + &mu * &mu * p) / p;
        let beta = beta.minimum(&delta);
        let defined = beta.ne(0.0).logical_and(&delta.gt(0.0));
        let shrinkage = beta
            .f_div(&delta.clamp_min(f64::MIN_POSITIVE))
            .map_err(torch("position gaussians"))?
            .where_self(&defined, &beta.zeros_like());
        // (1 − shrinkage) · empirical + shrinkage · μ · I, in place.
        let keep: Tensor = 1.0 - &shrinkage;
        let _ = empirical.f_mul_(&keep.view([-1, 1, 1])).map_err(torch("position gaussians"))?;
        let _ = empirical
            .diagonal(0, -2, -1)
            .f_add_(&(&shrinkage * &mu).unsqueeze(1))
            .map_err(torch("position gaussians"))?;
        let covariance = empirical;
        let (cholesky, info) =
            covariance.f_linalg_cholesky_ex(false, false).map_err(torch("position gaussians"))?;
        if info.abs().max().int64_value(&[]) != 0 {
            return Err(Error::numeric(
                "position gaussians",
                "a per-position covariance is singular (identical features at some position); use more varied good images",
            ));
        }
        let precision = cholesky.f_cholesky_inverse(false).map_err(torch("position gaussians"))?;
        Ok(PositionGaussians {
            grid: self.grid,
            mean: (m + shift).to_kind(Kind::Float).to_device(device),
            precision: precision.to_kind(Kind::Float).to_device(device),
        })
    }
}

impl Default for PositionAccumulator {
    fn default() -> Self {
        Self::new()
    }
}

impl PositionGaussians {
    /// Rebuilds from stored parts, checking that the shapes fit the grid.
    pub fn from_parts(grid: (i64, i64), mean: Tensor, precision: Tensor) -> Result<Self> {
        let positions = grid.0 * grid.1;
        if mean.dim() != 2
            || mean.size()[0] != positions
            || precision.size() != [positions, mean.size()[1], mean.size()[1]]
        {
            return Err(Error::numeric("position gaussians", "shapes do not fit the grid"));
        }
        Ok(PositionGaussians { grid, mean, precision })
    }

    pub fn grid(&self) -> (i64, i64) {
        self.grid
    }

    /// Values per position.
    pub fn dim(&self) -> i64 {
        self.mean.size()[1]
    }

    /// positions × dims (float32).
    pub fn mean(&self) -> &Tensor {
        &self.mean
    }

    /// positions × dims × dims (float32).
    pub fn precision(&self) -> &Tensor {
        &self.precision
    }

    /// The same Gaussians, sharing their tensors.
    pub fn share(&self) -> PositionGaussians {
        PositionGaussians {
            grid: self.grid,
            mean: self.mean.shallow_clone(),
            precision: self.precision.shallow_clone(),
        }
    }

    /// Mahalanobis distance `n × positions` of each position of `features`
    /// (`n × positions × dims`, on the Gaussians' device) to its own position's Gaussian.
    pub fn distances(&self, features: &Tensor) -> Result<Tensor> {
        let size = features.size();
        if size.len() != 3 || size[1] != self.grid.0 * self.grid.1 || size[2] != self.dim() {
            return Err(Error::numeric(
                "position gaussians",
                format!(
                    "features of shape {size:?} do not fit {} positions of {} values",
                    self.grid.0 * self.grid.1,
                    self.dim()
                ),
            ));
        }
        let centred = features.f_sub(&self.mean).map_err(torch("position distances"))?;
        let quadratic = Tensor::f_einsum(
            "npi,pij,npj->np",
            &[&centred, &self.precision, &centred],
            None::<i64>,
        )
        .map_err(torch("position distances"))?;
        Ok(quadratic.clamp_min(0.0).sqrt())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::GaussianParams;

    #[test]
    fn removing_a_subset_equals_accumulating_the_rest() {
        tch::manual_seed(4);
        let features = Tensor::randn([20, 3, 4], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        let shift = features.get(0);
        let mut whole = PositionAccumulator::about(&shift, (1, 3));
        whole.push(&features, (1, 3)).unwrap();
        let mut part = PositionAccumulator::about(&shift, (1, 3));
        part.push(&features.narrow(0, 5, 6), (1, 3)).unwrap();
        let rest = Tensor::cat(&[features.narrow(0, 0, 5), features.narrow(0, 11, 9)], 0);
        let mut direct = PositionAccumulator::new();
        direct.push(&rest, (1, 3)).unwrap();
        let by_removal = whole.minus(&part).unwrap().finish(Device::Cpu).unwrap();
        let direct = direct.finish(Device::Cpu).unwrap();
        let gap = (by_removal.precision() - direct.precision()).abs().max().double_value(&[]);
        let scale = direct.precision().abs().max().double_value(&[]);
        assert!(gap <= 1e-5 * scale, "{gap} vs {scale}");
        let gap = (by_removal.mean() - direct.mean()).abs().max().double_value(&[]);
        assert!(gap < 1e-5, "{gap}");
        // Another shift (a set not accumulated about the same one) is refused.
        let mut other = PositionAccumulator::new();
        other.push(&features.narrow(0, 3, 2), (1, 3)).unwrap();
        assert!(whole.minus(&other).is_err());
    }

    #[test]
    fn batched_ledoit_wolf_matches_the_pooled_estimator_at_every_position() {
        tch::manual_seed(3);
        let features = Tensor::randn([30, 4, 6], (Kind::Float, Device::Cpu)) * 2.0 + 5.0;
        let mut accumulator = PositionAccumulator::new();
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

//! The Gaussian model of good images: mean and Ledoit-Wolf shrunk covariance per level, scored by
//! Mahalanobis distance (linfa style: `GaussianParams` → `fit` → `GaussianModel` → `score`).

pub mod ledoit_wolf;
pub mod levels;
pub mod positions;

use ndarray::{Array1, Array2, ArrayView1, ArrayView2, Axis};

pub use ledoit_wolf::{Accumulator, ShrunkEstimate};
pub use levels::MultiLevelGaussian;
pub use positions::{PositionAccumulator, PositionGaussians};

use crate::error::{Error, Result};

/// Settings of the Gaussian fit. The covariance is always the Ledoit-Wolf estimate (sklearn's
/// `LedoitWolf`); `ridge` adds ε·I on top for data whose features are all identical.
#[derive(Debug, Clone, Default)]
pub struct GaussianParams {
    ridge: f64,
}

impl GaussianParams {
    pub fn new() -> Self {
        GaussianParams::default()
    }

    /// Adds `ridge`·I to the shrunk covariance (default 0, which reproduces sklearn exactly).
    pub fn ridge(mut self, ridge: f64) -> Self {
        self.ridge = ridge;
        self
    }

    fn check(&self) -> Result<()> {
        if !(self.ridge >= 0.0 && self.ridge.is_finite()) {
            return Err(Error::param(
                "ridge",
                format!("{} must be a finite value ≥ 0", self.ridge),
            ));
        }
        Ok(())
    }

    /// Fits on all rows of `features` (images × dimensions).
    pub fn fit(&self, features: ArrayView2<f32>) -> Result<GaussianModel> {
        let mut accumulator = Accumulator::new(features.ncols());
        accumulator.push(features)?;
        self.fit_accumulated(&accumulator)
    }

    /// Fits from sums gathered batch by batch.
    pub fn fit_accumulated(&self, accumulator: &Accumulator) -> Result<GaussianModel> {
        self.check()?;
        let estimate = accumulator.estimate()?;
        let mut covariance = estimate.covariance.clone();
        for i in 0..covariance.nrows() {
            covariance[[i, i]] += self.ridge;
        }
        // Cholesky both checks positive definiteness and gives the inverse cheaply.
        let precision = crate::linalg::spd_inverse(&covariance).map_err(|_| {
            Error::numeric(
                "gaussian fit",
                format!(
                    "covariance of {} images is singular (are all features identical?); \
                     use more varied good images",
                    estimate.count
                ),
            )
        })?;
        Ok(GaussianModel {
            mean: estimate.mean,
            precision,
            shrinkage: estimate.shrinkage,
            count: estimate.count,
        })
    }
}

/// A fitted Gaussian: mean and precision (inverse covariance).
#[derive(Debug, Clone, PartialEq)]
pub struct GaussianModel {
    mean: Array1<f64>,
    precision: Array2<f64>,
    shrinkage: f64,
    count: usize,
}

impl GaussianModel {
    /// Rebuilds a model from stored parts, checking their shapes.
    pub fn from_parts(
        mean: Array1<f64>,
        precision: Array2<f64>,
        shrinkage: f64,
        count: usize,
    ) -> Result<Self> {
        if precision.dim() != (mean.len(), mean.len()) {
            return Err(Error::numeric(
                "gaussian model",
                format!("precision is {:?}, mean has {} values", precision.dim(), mean.len()),
            ));
        }
        if mean.iter().chain(precision.iter()).any(|v| !v.is_finite()) {
            return Err(Error::numeric("gaussian model", "contains NaN or infinity"));
        }
        Ok(GaussianModel { mean, precision, shrinkage, count })
    }

    pub fn mean(&self) -> ArrayView1<'_, f64> {
        self.mean.view()
    }

    pub fn precision(&self) -> ArrayView2<'_, f64> {
        self.precision.view()
    }

    /// Ledoit-Wolf shrinkage coefficient chosen by the fit (0 = empirical, 1 = scaled identity).
    pub fn shrinkage(&self) -> f64 {
        self.shrinkage
    }

    /// Number of images fitted.
    pub fn count(&self) -> usize {
        self.count
    }

    pub fn dim(&self) -> usize {
        self.mean.len()
    }

    /// Mahalanobis distances √((x−μ)ᵀ P (x−μ)) of each row of `features`.
    pub fn score(&self, features: ArrayView2<f32>) -> Result<Array1<f64>> {
        if features.ncols() != self.dim() {
            return Err(Error::numeric(
                "scoring",
                format!(
                    "features have {} values, the model expects {}",
                    features.ncols(),
                    self.dim()
                ),
            ));
        }
        let centred = features.mapv(f64::from) - &self.mean;
        let projected = centred.dot(&self.precision);
        let squared = (&projected * &centred).sum_axis(Axis(1));
        // Rounding can make a tiny quadratic form negative; a distance is never below zero.
        Ok(squared.mapv(|v| v.max(0.0).sqrt()))
    }
}

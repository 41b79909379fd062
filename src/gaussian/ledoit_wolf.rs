//! Streaming sufficient statistics for a Gaussian with Ledoit-Wolf shrinkage.
//!
//! sklearn's `LedoitWolf` needs the centred data matrix X (n × p): the empirical covariance
//! C = XᵀX / n, and β_ = Σₖ ‖xₖ‖⁴ over the centred rows. Both follow from sums that can be
//! accumulated one batch at a time, so memory stays O(p²) however many images are fitted:
//! with y = x − shift (the first sample, which keeps the sums small and the subtraction exact
//! enough), m = Σy / n, a = ‖y‖², b = y·m, c = ‖m‖²:
//!   C  = Σ yyᵀ / n − m mᵀ
//!   β_ = Σ (a − 2b + c)² = Σa² − 4 Σab + 4 mᵀ(Σ yyᵀ)m + 2c Σa − 4c Σb + n c²,  Σb = n c.

use ndarray::{Array1, Array2, ArrayView2, Axis};

use crate::error::{Error, Result};

/// Running sums over the rows pushed so far.
#[derive(Debug, Clone)]
pub struct Accumulator {
    dim: usize,
    count: usize,
    shift: Option<Array1<f64>>,
    sum: Array1<f64>,
    sum_outer: Array2<f64>,
    /// Σ ‖y‖² y
    sum_norm_weighted: Array1<f64>,
    /// Σ ‖y‖⁴
    sum_norm4: f64,
}

/// The estimate sklearn's `LedoitWolf().fit(X)` gives.
#[derive(Debug, Clone)]
pub struct ShrunkEstimate {
    pub count: usize,
    pub mean: Array1<f64>,
    pub covariance: Array2<f64>,
    pub shrinkage: f64,
}

impl Accumulator {
    pub fn new(dim: usize) -> Self {
        Accumulator {
            dim,
            count: 0,
            shift: None,
            sum: Array1::zeros(dim),
            sum_outer: Array2::zeros((dim, dim)),
            sum_norm_weighted: Array1::zeros(dim),
            sum_norm4: 0.0,
        }
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Adds the rows of `batch` (images × features). Non-finite values are rejected.
    pub fn push(&mut self, batch: ArrayView2<f32>) -> Result<()> {
        if batch.ncols() != self.dim {
            return Err(Error::numeric(
                "gaussian fit",
                format!("feature vector has {} values, expected {}", batch.ncols(), self.dim),
            ));
        }
        if batch.nrows() == 0 {
            return Ok(());
        }
        if batch.iter().any(|v| !v.is_finite()) {
            return Err(Error::numeric("gaussian fit", "features contain NaN or infinity"));
        }
        let shift = self.shift.get_or_insert_with(|| batch.row(0).mapv(f64::from)).clone();
        let y = batch.mapv(f64::from) - &shift;
        self.sum += &y.sum_axis(Axis(0));
        ndarray::linalg::general_mat_mul(1.0, &y.t(), &y, 1.0, &mut self.sum_outer);
        for row in y.rows() {
            let norm2 = row.dot(&row);
            self.sum_norm_weighted.scaled_add(norm2, &row);
            self.sum_norm4 += norm2 * norm2;
        }
        self.count += batch.nrows();
        Ok(())
    }

    /// Mean, Ledoit-Wolf shrunk covariance and shrinkage, exactly as sklearn defines them.
    pub fn estimate(&self) -> Result<ShrunkEstimate> {
        let n = self.count as f64;
        let p = self.dim as f64;
        if self.count < 2 {
            return Err(Error::numeric(
                "gaussian fit",
                format!("needs at least 2 images, got {}", self.count),
            ));
        }
        let shift = self.shift.clone().unwrap_or_else(|| Array1::zeros(self.dim));
        let m = &self.sum / n;
        let mut empirical = &self.sum_outer / n;
        for i in 0..self.dim {
            for j in 0..self.dim {
                empirical[[i, j]] -= m[i] * m[j];
            }
        }
        let trace: f64 = empirical.diag().sum();
        let mu = trace / p;
        let shrinkage = if self.dim == 1 {
            0.0
        } else {
            let frobenius2: f64 = empirical.iter().map(|v| v * v).sum();
            let c = m.dot(&m);
            let sum_a = self.sum_outer.diag().sum();
            let sum_ab = self.sum_norm_weighted.dot(&m);
            let sum_b2 = m.dot(&self.sum_outer.dot(&m));
            let beta_raw = self.sum_norm4 - 4.0 * sum_ab + 4.0 * sum_b2 + 2.0 * c * sum_a
                - 4.0 * c * n * c
                + n * c * c;
            let beta = (beta_raw / n - frobenius2) / (p * n);
            let delta = (frobenius2 - 2.0 * mu * trace + p * mu * mu) / p;
            let beta = beta.min(delta);
            if beta == 0.0 || delta == 0.0 {
                0.0
            } else {
                beta / delta
            }
        };
        let mut covariance = empirical * (1.0 - shrinkage);
        for i in 0..self.dim {
            covariance[[i, i]] += shrinkage * mu;
        }
        Ok(ShrunkEstimate { count: self.count, mean: m + &shift, covariance, shrinkage })
    }
}

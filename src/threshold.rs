//! Decision thresholds on image scores.
//!
//! `fit` has only good images, so its default threshold is label-free: a high quantile of
//! *cross-fitted* scores of the training images — each image scored by a Gaussian fitted on the
//! other folds. In-sample distances are biased low (the Gaussian has seen the image; with a few
//! hundred images and hundreds of dimensions the bias is large), so a quantile of them would flag
//! many good images; the χ² law of the squared distance assumes a known covariance and fails for
//! the same reason. Cross-fitted scores behave like scores of new good images.

use ndarray::Array1;

use crate::error::{Error, Result};
use crate::rng::Rng;

/// A threshold and how it was chosen (stored in the model file, shown in reports).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Threshold {
    pub value: f64,
    /// e.g. `cross_fitted_quantile`, `manual`, `f1_optimal`.
    pub method: String,
    /// Human-readable account of the choice.
    pub description: String,
}

/// Settings of the label-free threshold.
#[derive(Debug, Clone)]
pub struct QuantileThreshold {
    /// Share of good images expected below the threshold, in (0, 1]; 0.99 by default.
    pub quantile: f64,
    /// Number of cross-fitting folds (at most the number of images).
    pub folds: usize,
    pub seed: u64,
}

impl Default for QuantileThreshold {
    fn default() -> Self {
        QuantileThreshold { quantile: 0.99, folds: 5, seed: 0 }
    }
}

/// The fewest good images a fit accepts: the threshold comes from cross-fitting with up to five
/// folds, and each fold's Gaussian needs at least 2 images from the others.
pub const MIN_FIT_IMAGES: usize = 10;

impl QuantileThreshold {
    pub fn check(&self) -> Result<()> {
        if !(self.quantile > 0.0 && self.quantile <= 1.0) {
            return Err(Error::param(
                "--threshold-quantile",
                format!("{} is outside (0, 1]", self.quantile),
            ));
        }
        if self.folds < 2 {
            return Err(Error::param("folds", "cross-fitting needs at least 2 folds"));
        }
        Ok(())
    }

    /// The held-out images of each cross-fitting fold of `images` training images (checked
    /// settings): for scorers that cross-fit themselves ([`crate::scorer::Scorer::fit_cross_fitted`]).
    pub fn folds_for(&self, images: usize) -> Result<Vec<Vec<usize>>> {
        self.check()?;
        cross_fit_folds(images, self.folds, self.seed)
    }

    /// The threshold from the training images' cross-fitted scores (one per image, folds as
    /// [`Self::folds_for`] gives them).
    pub fn from_cross_fitted(&self, scores: &Array1<f64>) -> Result<Threshold> {
        self.check()?;
        let images = scores.len();
        let value = quantile(scores.as_slice().unwrap_or(&[]), self.quantile)?;
        Ok(Threshold {
            value,
            method: "cross_fitted_quantile".into(),
            description: format!(
                "{}% quantile of the {} training images' {}-fold cross-fitted scores",
                self.quantile * 100.0,
                images,
                self.folds.min(images)
            ),
        })
    }
}

/// The held-out images of each of `folds` seeded random folds of `n` images (at most `n` folds).
pub fn cross_fit_folds(n: usize, folds: usize, seed: u64) -> Result<Vec<Vec<usize>>> {
    if n < MIN_FIT_IMAGES {
        return Err(Error::param(
            "training images",
            format!("found {n} good images; a fit needs at least {MIN_FIT_IMAGES}"),
        ));
    }
    let folds = folds.min(n);
    let mut order: Vec<usize> = (0..n).collect();
    Rng::new(seed).shuffle(&mut order);
    Ok((0..folds).map(|fold| order.iter().copied().skip(fold).step_by(folds).collect()).collect())
}

/// The images outside `held_out` among `0..n`, in order.
fn complement(n: usize, held_out: &[usize]) -> Vec<usize> {
    let mut outside = vec![true; n];
    for &i in held_out {
        outside[i] = false;
    }
    (0..n).filter(|&i| outside[i]).collect()
}

/// Scores each of `n` images by `fit_score` fitted on the images outside its fold (`held_out`:
/// each fold's images).
pub fn scores_over_folds(
    n: usize,
    held_out: &[Vec<usize>],
    fit_score: impl Fn(&[usize], &[usize]) -> Result<Vec<f64>>,
) -> Result<Array1<f64>> {
    let mut scores = Array1::zeros(n);
    for fold in held_out {
        for (&index, score) in fold.iter().zip(fit_score(&complement(n, fold), fold)?) {
            scores[index] = score;
        }
    }
    Ok(scores)
}

/// The `q` quantile of `values` with linear interpolation (numpy's default method).
pub fn quantile(values: &[f64], q: f64) -> Result<f64> {
    if values.is_empty() {
        return Err(Error::numeric("quantile", "no values"));
    }
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::numeric("quantile", "scores contain NaN or infinity"));
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let position = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (position.floor() as usize, position.ceil() as usize);
    Ok(sorted[low] + (sorted[high] - sorted[low]) * (position - low as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_interpolates_like_numpy() {
        let values = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&values, 0.0).unwrap(), 1.0);
        assert_eq!(quantile(&values, 1.0).unwrap(), 4.0);
        assert!((quantile(&values, 0.5).unwrap() - 2.5).abs() < 1e-12);
        assert!((quantile(&values, 0.9).unwrap() - 3.7).abs() < 1e-12);
        assert!(quantile(&[], 0.5).is_err());
        assert!(quantile(&[1.0, f64::NAN], 0.5).is_err());
    }

    #[test]
    fn rejects_bad_quantiles() {
        for q in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(
                QuantileThreshold { quantile: q, ..Default::default() }.check().is_err(),
                "{q}"
            );
        }
    }
}

//! Image-level metrics: ROC and AUC, F1-optimal thresholds, confusion matrices, class summaries.
//! Every function validates its input (equal lengths, finite scores) and states what it does when
//! a class is missing: it returns `None` rather than NaN.

pub mod confusion;
pub mod pro;
pub mod roc;

pub use confusion::{best_f1_threshold, Confusion, F1Choice};
pub use roc::{roc_auc, roc_curve, RocPoint};

use crate::error::{Error, Result};

/// Checks that `scores` and `labels` (true = defective) pair up and that scores are finite.
pub fn validate(scores: &[f64], labels: &[bool]) -> Result<()> {
    if scores.len() != labels.len() {
        return Err(Error::numeric(
            "metrics",
            format!("{} scores but {} labels", scores.len(), labels.len()),
        ));
    }
    if let Some(bad) = scores.iter().find(|s| !s.is_finite()) {
        return Err(Error::numeric("metrics", format!("score {bad} is not finite")));
    }
    Ok(())
}

/// Mean and median of a set of scores (`None` when empty).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub mean: Option<f64>,
    pub median: Option<f64>,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        if values.is_empty() {
            return Summary { count: 0, mean: None, median: None };
        }
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median =
            if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Summary {
            count: n,
            mean: Some(sorted.iter().sum::<f64>() / n as f64),
            median: Some(median),
        }
    }
}

//! ROC curve and the area under it.

use super::validate;
use crate::error::Result;

/// One point of the ROC curve: predicting "defective" for scores ≥ `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct RocPoint {
    pub threshold: f64,
    pub false_positive_rate: f64,
    pub true_positive_rate: f64,
}

/// Area under the ROC curve, equal to sklearn's `roc_auc_score`: the probability that a random
/// defective image scores above a random good one, ties counting one half (average ranks).
/// `None` when either class is absent — the AUC is undefined then.
pub fn roc_auc(scores: &[f64], labels: &[bool]) -> Result<Option<f64>> {
    validate(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    let negatives = labels.len() - positives;
    if positives == 0 || negatives == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum = 0.0;
    let mut start = 0;
    while start < order.len() {
        let mut end = start;
        while end + 1 < order.len() && scores[order[end + 1]] == scores[order[start]] {
            end += 1;
        }
        // Ranks start..=end (1-based: start+1..=end+1) share their average.
        let average_rank = (start + end) as f64 / 2.0 + 1.0;
        rank_sum += average_rank * order[start..=end].iter().filter(|&&i| labels[i]).count() as f64;
        start = end + 1;
    }
    let p = positives as f64;
    Ok(Some((rank_sum - p * (p + 1.0) / 2.0) / (p * negatives as f64)))
}

/// ROC curve from the highest threshold down, starting at (0, 0) and ending at (1, 1), one point
/// per distinct score (as sklearn's `roc_curve(drop_intermediate=False)`). Empty when a class is
/// absent.
pub fn roc_curve(scores: &[f64], labels: &[bool]) -> Result<Vec<RocPoint>> {
    validate(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count() as f64;
    let negatives = labels.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return Ok(Vec::new());
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let mut points = vec![RocPoint {
        threshold: f64::INFINITY,
        false_positive_rate: 0.0,
        true_positive_rate: 0.0,
    }];
    let (mut tp, mut fp) = (0.0, 0.0);
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        let last_of_tie = order.get(k + 1).is_none_or(|&next| scores[next] != scores[i]);
        if last_of_tie {
            points.push(RocPoint {
                threshold: scores[i],
                false_positive_rate: fp / negatives,
                true_positive_rate: tp / positives,
            });
        }
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_reversed_and_tied() {
        let labels = [false, false, true, true];
        assert_eq!(roc_auc(&[0.1, 0.2, 0.8, 0.9], &labels).unwrap(), Some(1.0));
        assert_eq!(roc_auc(&[0.9, 0.8, 0.2, 0.1], &labels).unwrap(), Some(0.0));
        assert_eq!(roc_auc(&[0.5; 4], &labels).unwrap(), Some(0.5));
    }

    #[test]
    fn hand_computed_with_one_tie() {
        // Pairs (defective > good): 0.35>0.1 ✓, 0.35 vs 0.4 ✗, 0.8 >both ✓✓ → 3/4; tie none.
        assert_eq!(
            roc_auc(&[0.1, 0.4, 0.35, 0.8], &[false, false, true, true]).unwrap(),
            Some(0.75)
        );
        // A defective tied with a good one counts 1/2: (1 + 0.5) / 2.
        assert_eq!(roc_auc(&[0.1, 0.5, 0.5], &[false, false, true]).unwrap(), Some(0.75));
    }

    #[test]
    fn one_class_is_undefined_not_nan() {
        assert_eq!(roc_auc(&[0.1, 0.2], &[false, false]).unwrap(), None);
        assert!(roc_curve(&[0.1, 0.2], &[true, true]).unwrap().is_empty());
        assert!(roc_auc(&[0.1], &[false, true]).is_err());
        assert!(roc_auc(&[f64::NAN, 1.0], &[false, true]).is_err());
    }

    #[test]
    fn curve_area_equals_auc() {
        let scores = [0.1, 0.4, 0.35, 0.8, 0.4, 0.2, 0.9];
        let labels = [false, false, true, true, true, false, true];
        let curve = roc_curve(&scores, &labels).unwrap();
        let area: f64 = curve
            .windows(2)
            .map(|w| {
                (w[1].false_positive_rate - w[0].false_positive_rate)
                    * (w[1].true_positive_rate + w[0].true_positive_rate)
                    / 2.0
            })
            .sum();
        assert!((area - roc_auc(&scores, &labels).unwrap().unwrap()).abs() < 1e-12);
        assert_eq!(curve.last().unwrap().false_positive_rate, 1.0);
    }
}

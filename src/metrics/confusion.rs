//! Confusion matrices and the F1-optimal threshold.

use super::validate;
use crate::error::Result;

/// Counts of a binary decision ("defective" is the positive class).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Confusion {
    pub true_negative: usize,
    pub false_positive: usize,
    pub false_negative: usize,
    pub true_positive: usize,
}

impl Confusion {
    /// The four counts as `TN FP FN TP` values, e.g. `891 61 52 340` (for a column headed so).
    pub fn counts(&self) -> String {
        format!(
            "{} {} {} {}",
            self.true_negative, self.false_positive, self.false_negative, self.true_positive
        )
    }

    /// The four counts, each named: `TN 891 FP 61 FN 52 TP 340`.
    pub fn named_counts(&self) -> String {
        format!(
            "TN {} FP {} FN {} TP {}",
            self.true_negative, self.false_positive, self.false_negative, self.true_positive
        )
    }

    /// Predicts "defective" for scores strictly above `threshold`.
    pub fn at(scores: &[f64], labels: &[bool], threshold: f64) -> Result<Confusion> {
        validate(scores, labels)?;
        let mut counts = Confusion::default();
        for (&score, &defective) in scores.iter().zip(labels) {
            counts.add(defective, score > threshold);
        }
        Ok(counts)
    }

    pub fn add(&mut self, defective: bool, flagged: bool) {
        match (defective, flagged) {
            (false, false) => self.true_negative += 1,
            (false, true) => self.false_positive += 1,
            (true, false) => self.false_negative += 1,
            (true, true) => self.true_positive += 1,
        }
    }

    pub fn merge(&mut self, other: &Confusion) {
        self.true_negative += other.true_negative;
        self.false_positive += other.false_positive;
        self.false_negative += other.false_negative;
        self.true_positive += other.true_positive;
    }

    /// TP / (TP + FP); `None` when nothing was flagged.
    pub fn precision(&self) -> Option<f64> {
        ratio(self.true_positive, self.true_positive + self.false_positive)
    }

    /// TP / (TP + FN); `None` without defective images.
    pub fn recall(&self) -> Option<f64> {
        ratio(self.true_positive, self.true_positive + self.false_negative)
    }

    /// 2TP / (2TP + FP + FN); `None` when there is no defective image and none was flagged.
    pub fn f1(&self) -> Option<f64> {
        ratio(
            2 * self.true_positive,
            2 * self.true_positive + self.false_positive + self.false_negative,
        )
    }

    /// Share of correct decisions.
    pub fn accuracy(&self) -> Option<f64> {
        let total =
            self.true_negative + self.false_positive + self.false_negative + self.true_positive;
        ratio(self.true_negative + self.true_positive, total)
    }
}

fn ratio(numerator: usize, denominator: usize) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// The threshold with the best F1 on the given scores, and that F1.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct F1Choice {
    pub threshold: f64,
    pub f1: f64,
}

/// Scans every distinct score as a cut (as sklearn's `precision_recall_curve`) and returns the
/// best F1. The threshold is placed halfway between the lowest flagged score and the next lower
/// score, so it separates the same images with `>` or `≥` and transfers sensibly to new scores.
/// Ties in F1 go to the higher threshold (fewer false alarms). `None` without defective images.
pub fn best_f1_threshold(scores: &[f64], labels: &[bool]) -> Result<Option<F1Choice>> {
    validate(scores, labels)?;
    let positives = labels.iter().filter(|&&l| l).count();
    if positives == 0 {
        return Ok(None);
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut best: Option<F1Choice> = None;
    for (k, &i) in order.iter().enumerate() {
        if labels[i] {
            tp += 1;
        } else {
            fp += 1;
        }
        let next = order.get(k + 1).map(|&n| scores[n]);
        if next == Some(scores[i]) {
            continue; // a cut can only fall between distinct scores
        }
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (positives - tp)) as f64;
        let threshold = match next {
            Some(lower) => (scores[i] + lower) / 2.0,
            None => scores[i] - scores[i].abs().max(1.0) * 1e-9,
        };
        if best.is_none_or(|b| f1 > b.f1) {
            best = Some(F1Choice { threshold, f1 });
        }
    }
    Ok(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confusion_counts_and_rates() {
        let scores = [0.1, 0.6, 0.4, 0.9];
        let labels = [false, false, true, true];
        let c = Confusion::at(&scores, &labels, 0.5).unwrap();
        assert_eq!(
            c,
            Confusion { true_negative: 1, false_positive: 1, false_negative: 1, true_positive: 1 }
        );
        assert_eq!(c.precision(), Some(0.5));
        assert_eq!(c.recall(), Some(0.5));
        assert_eq!(c.f1(), Some(0.5));
        assert_eq!(Confusion::default().f1(), None);
    }

    #[test]
    fn best_f1_separates_when_possible() {
        let choice =
            best_f1_threshold(&[0.1, 0.2, 0.7, 0.9], &[false, false, true, true]).unwrap().unwrap();
        assert_eq!(choice.f1, 1.0);
        assert!((choice.threshold - 0.45).abs() < 1e-12);
    }

    #[test]
    fn best_f1_hand_computed_overlap() {
        // Sorted high→low: 0.9 D, 0.8 G, 0.7 D, 0.3 D, 0.2 G. Cuts: after 0.9: F1=2/(2+0+2)=0.5;
        // after 0.8: 2/(2+1+2)=0.4; after 0.7: 4/(4+1+1)=0.667; after 0.3: 6/(6+1+0)=0.857;
        // after 0.2: 6/(6+2)=0.75. Best: 0.857 at the cut between 0.3 and 0.2.
        let choice =
            best_f1_threshold(&[0.9, 0.8, 0.7, 0.3, 0.2], &[true, false, true, true, false])
                .unwrap()
                .unwrap();
        assert!((choice.f1 - 6.0 / 7.0).abs() < 1e-12);
        assert!((choice.threshold - 0.25).abs() < 1e-12);
        let c = Confusion::at(
            &[0.9, 0.8, 0.7, 0.3, 0.2],
            &[true, false, true, true, false],
            choice.threshold,
        )
        .unwrap();
        assert_eq!(c.f1(), Some(choice.f1));
    }

    #[test]
    fn no_defects_means_no_f1_threshold() {
        assert_eq!(best_f1_threshold(&[0.1, 0.2], &[false, false]).unwrap(), None);
        assert!(best_f1_threshold(&[0.1], &[]).is_err());
    }
}

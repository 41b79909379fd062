//! Seeded stratified k-fold assignment, following sklearn's `StratifiedKFold(shuffle=True)`:
//! classes are spread over folds as evenly as sklearn does (allocation by sorted-label striding),
//! then each class's fold labels are shuffled with the seed. The permutation comes from anodet's
//! own generator, so fold membership differs from numpy's for the same seed, but the fold sizes
//! per class are identical.

use crate::error::{Error, Result};
use crate::rng::Rng;

/// Fold index (0..folds) for each sample; `labels[i]` is true for defective samples.
pub fn stratified_folds(labels: &[bool], folds: usize, seed: u64) -> Result<Vec<usize>> {
    if folds < 2 {
        return Err(Error::param(
            "--folds",
            format!("{folds} folds; cross-validation needs at least 2"),
        ));
    }
    let counts = [labels.iter().filter(|&&d| !d).count(), labels.iter().filter(|&&d| d).count()];
    for (class, &count) in ["good", "defective"].iter().zip(&counts) {
        if count > 0 && count < folds {
            return Err(Error::param(
                "--folds",
                format!("{folds} folds need at least {folds} {class} images, found {count}"),
            ));
        }
    }
    // sklearn: allocation[fold][class] = bincount(sorted_labels[fold::folds]).
    let sorted: Vec<usize> =
        std::iter::repeat_n(0, counts[0]).chain(std::iter::repeat_n(1, counts[1])).collect();
    let mut rng = Rng::new(seed);
    let mut assignment = vec![0; labels.len()];
    for (class, &count) in counts.iter().enumerate() {
        let mut class_folds: Vec<usize> = Vec::with_capacity(count);
        for fold in 0..folds {
            let allocated =
                sorted.iter().skip(fold).step_by(folds).filter(|&&c| c == class).count();
            class_folds.extend(std::iter::repeat_n(fold, allocated));
        }
        rng.shuffle(&mut class_folds);
        let members =
            labels.iter().enumerate().filter(|(_, &d)| usize::from(d) == class).map(|(i, _)| i);
        for (index, fold) in members.zip(class_folds) {
            assignment[index] = fold;
        }
    }
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_are_stratified_complete_and_seeded() {
        let labels: Vec<bool> = (0..100).map(|i| i % 4 == 0).collect();
        let folds = stratified_folds(&labels, 3, 1).unwrap();
        for fold in 0..3 {
            let good = (0..100).filter(|&i| folds[i] == fold && !labels[i]).count();
            let bad = (0..100).filter(|&i| folds[i] == fold && labels[i]).count();
            assert!((24..=26).contains(&good), "fold {fold}: {good} good");
            assert!((8..=9).contains(&bad), "fold {fold}: {bad} defective");
        }
        assert_eq!(folds, stratified_folds(&labels, 3, 1).unwrap());
        assert_ne!(folds, stratified_folds(&labels, 3, 2).unwrap());
    }

    #[test]
    fn too_small_a_class_is_explained() {
        let labels = [false, false, false, true, true];
        let message = stratified_folds(&labels, 3, 0).unwrap_err().to_string();
        assert!(message.contains("at least 3 defective images, found 2"), "{message}");
        assert!(stratified_folds(&labels, 1, 0).is_err());
    }
}

//! Per-region overlap (PRO, Bergmann et al. 2020): the mean share of each ground-truth defect
//! region that a threshold flags, integrated over the false-positive rate from 0 to a limit (30%
//! by convention) and divided by that limit, so 1.0 is perfect. Regions are the 8-connected
//! components of each mask, so a small defect counts as much as a large one.

use crate::error::{Error, Result};

/// Thresholds sampled along the false-positive-rate axis.
const STEPS: usize = 300;

/// One image's anomaly map and mask, row-major, `width` pixels a row.
pub struct LabelledMap<'a> {
    pub values: &'a [f32],
    pub labels: &'a [bool],
    pub width: usize,
}

/// PRO integrated up to `max_fpr`; `None` when there is no defect region or no normal pixel.
pub fn pro_auc(images: &[LabelledMap], max_fpr: f64) -> Result<Option<f64>> {
    if !(max_fpr > 0.0 && max_fpr <= 1.0) {
        return Err(Error::param("max_fpr", format!("{max_fpr} is outside (0, 1]")));
    }
    let mut negatives: Vec<f32> = Vec::new();
    let mut regions: Vec<Vec<f32>> = Vec::new();
    for image in images {
        if image.values.len() != image.labels.len()
            || image.width == 0
            || image.values.len() % image.width != 0
        {
            return Err(Error::numeric("pro", "map and mask shapes differ"));
        }
        if image.values.iter().any(|v| !v.is_finite()) {
            return Err(Error::numeric("pro", "map contains NaN or infinity"));
        }
        negatives
            .extend(image.values.iter().zip(image.labels).filter(|(_, &l)| !l).map(|(&v, _)| v));
        for pixels in connected_regions(image.labels, image.width) {
            let mut values: Vec<f32> = pixels.iter().map(|&i| image.values[i]).collect();
            values.sort_by(f32::total_cmp);
            regions.push(values);
        }
    }
    if negatives.is_empty() || regions.is_empty() {
        return Ok(None);
    }
    negatives.sort_by(f32::total_cmp);
    let above =
        |sorted: &[f32], threshold: f32| sorted.len() - sorted.partition_point(|&v| v <= threshold);
    let n = negatives.len();
    let overlap_above = |threshold: f32| {
        regions.iter().map(|r| above(r, threshold) as f64 / r.len() as f64).sum::<f64>()
            / regions.len() as f64
    };
    let mut points: Vec<(f64, f64)> = Vec::with_capacity(STEPS + 2);
    for step in 0..=STEPS {
        // Flagging pixels above the normal value at this rank flags about `target` of the normal
        // pixels; step 0 is the highest normal value (no false positive yet).
        let target = max_fpr * step as f64 / STEPS as f64;
        let rank = (n - 1).saturating_sub((target * n as f64).floor() as usize);
        let threshold = negatives[rank];
        points.push((above(&negatives, threshold) as f64 / n as f64, overlap_above(threshold)));
    }
    // Everything flagged: the curve ends at (1, 1); ties are bridged linearly, as in ROC curves.
    points.push((1.0, 1.0));
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut area = 0.0;
    for pair in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x0 >= max_fpr || x1 <= x0 {
            continue;
        }
        let (x_end, y_end) = if x1 > max_fpr {
            (max_fpr, y0 + (y1 - y0) * (max_fpr - x0) / (x1 - x0))
        } else {
            (x1, y1)
        };
        area += (x_end - x0) * (y0 + y_end) / 2.0;
    }
    Ok(Some(area / max_fpr))
}

/// Pixel indices of each 8-connected component of `true` pixels.
pub fn connected_regions(labels: &[bool], width: usize) -> Vec<Vec<usize>> {
    let height = labels.len() / width.max(1);
    let mut seen = vec![false; labels.len()];
    let mut regions = Vec::new();
    for start in 0..labels.len() {
        if !labels[start] || seen[start] {
            continue;
        }
        let mut region = Vec::new();
        let mut stack = vec![start];
        seen[start] = true;
        while let Some(i) = stack.pop() {
            region.push(i);
            let (x, y) = (i % width, i / width);
            for ny in y.saturating_sub(1)..=(y + 1).min(height - 1) {
                for nx in x.saturating_sub(1)..=(x + 1).min(width - 1) {
                    let j = ny * width + nx;
                    if labels[j] && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        regions.push(region);
    }
    regions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_are_eight_connected() {
        // 4×3: a diagonal pair (one region) and a lone pixel.
        let labels =
            [true, false, false, false, false, true, false, true, false, false, false, false];
        let regions = connected_regions(&labels, 4);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions.iter().map(Vec::len).sum::<usize>(), 3);
    }

    #[test]
    fn perfect_map_scores_one_and_inverted_map_zero() {
        let labels: Vec<bool> = (0..100).map(|i| i % 10 < 2 && i / 10 < 2).collect();
        // Normal pixels get distinct values, so no tie blurs the curve.
        let perfect: Vec<f32> =
            (0..100).map(|i| if labels[i] { 1.0 } else { 0.5 * i as f32 / 100.0 }).collect();
        let map = LabelledMap { values: &perfect, labels: &labels, width: 10 };
        assert!((pro_auc(&[map], 0.3).unwrap().unwrap() - 1.0).abs() < 0.02);
        let inverted: Vec<f32> =
            (0..100).map(|i| if labels[i] { 0.0 } else { 1.0 + i as f32 / 100.0 }).collect();
        let map = LabelledMap { values: &inverted, labels: &labels, width: 10 };
        assert!(pro_auc(&[map], 0.3).unwrap().unwrap() < 0.01);
    }

    #[test]
    fn small_regions_weigh_as_much_as_large_ones() {
        // Region A (1 px) is found, region B (9 px) is missed: PRO ≈ 0.5 whatever their sizes.
        let mut labels = vec![false; 100];
        labels[0] = true;
        for y in 5..8 {
            for x in 5..8 {
                labels[y * 10 + x] = true;
            }
        }
        // Normal pixels get distinct values between the two regions' values.
        let values: Vec<f32> = (0..100)
            .map(|i| match i {
                0 => 2.0,
                _ if labels[i] => 0.0,
                _ => 0.5 + i as f32 / 1000.0,
            })
            .collect();
        let map = LabelledMap { values: &values, labels: &labels, width: 10 };
        let pro = pro_auc(&[map], 0.3).unwrap().unwrap();
        assert!((pro - 0.5).abs() < 0.02, "{pro}");
        assert_eq!(pro_auc(&[], 0.3).unwrap(), None);
    }
}

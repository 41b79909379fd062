//! HLAC: higher-order local autocorrelation features (Otsu 1988), the classic weight-free
//! alternative to a CNN: no weights, no libtorch, no GPU.
//!
//! A feature is the mean over positions r of f(r)·f(r+a₁)·f(r+a₂) for displacements aᵢ in the
//! 3×3 neighbourhood (scaled by a distance d), up to second order, counting patterns that are
//! translations of each other once: 35 masks on grey levels, 25 on binary images (where
//! f² = f merges some). Means (not sums) make images of different sizes comparable.
//!
//! The nine "levels" (so `--levels` means the same kind of thing as for CNNs):
//! - levels 1–5: the 35 grey-level features at d = 1, 2, 4, 8, 16 px
//! - levels 6–9: the 25 binary features at d = 1, 2, 4, 8 px, after Otsu binarisation of each
//!   image (the threshold that best separates its grey-level histogram into two classes)
//!
//! Images are brought to the input size first (256 × 256 by default), grey = mean of R, G, B.

use rayon::prelude::*;

use super::sidecar::BackboneInfo;
use crate::data::image::PreparedImage;
use crate::error::{Error, Result};

/// Displacement distances of levels 1–5 (grey) and 6–9 (binary).
pub const GREY_DISTANCES: [i32; 5] = [1, 2, 4, 8, 16];
pub const BINARY_DISTANCES: [i32; 4] = [1, 2, 4, 8];
/// Identifies this feature definition in model files (in place of a weight checksum).
pub const HLAC_ID: &str = "hlac-v1:grey35x[1,2,4,8,16]+binary25x[1,2,4,8]+otsu";

type Mask = Vec<(i32, i32)>;

/// The HLAC masks up to second order: 35 for grey levels, 25 for binary images. Each mask is
/// the list of offsets (the reference point included) whose values are multiplied.
pub fn masks(binary: bool) -> Vec<Mask> {
    let neighbourhood: Vec<(i32, i32)> =
        (-1..=1).flat_map(|dy| (-1..=1).map(move |dx| (dx, dy))).collect();
    let mut candidates: Vec<Mask> = vec![vec![(0, 0)]];
    for (i, &a) in neighbourhood.iter().enumerate() {
        candidates.push(vec![(0, 0), a]);
        for &b in &neighbourhood[i..] {
            candidates.push(vec![(0, 0), a, b]);
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    let mut unique = Vec::new();
    for mut mask in candidates {
        if binary {
            mask.sort_unstable();
            mask.dedup(); // f·f = f on binary images
        }
        // Canonical form: sorted, translated so the smallest offset is the origin.
        mask.sort_unstable();
        let origin = mask[0];
        let canonical: Mask = mask.iter().map(|&(x, y)| (x - origin.0, y - origin.1)).collect();
        if seen.insert(canonical.clone()) {
            unique.push(canonical);
        }
    }
    unique
}

/// The HLAC feature extractor.
pub struct Hlac {
    grey_masks: Vec<Mask>,
    binary_masks: Vec<Mask>,
    info: BackboneInfo,
}

impl Hlac {
    pub fn new() -> Self {
        let grey_masks = masks(false);
        let binary_masks = masks(true);
        let channels = [35, 35, 35, 35, 35, 25, 25, 25, 25];
        let info = BackboneInfo {
            version: 1,
            name: "hlac".into(),
            architecture: HLAC_ID.into(),
            input_size: [256, 256],
            interpolation: "bilinear".into(),
            mean: [0.0; 3],
            std: [1.0; 3],
            channels,
            weights: "none (HLAC has no weights)".into(),
            weights_sha256: None,
            torchscript_sha256: HLAC_ID.into(),
            variants: Default::default(),
        };
        Hlac { grey_masks, binary_masks, info }
    }

    pub fn info(&self) -> &BackboneInfo {
        &self.info
    }

    /// All nine levels of one grey image (`width × height`, values in [0, 1]), concatenated,
    /// over the positions of the window `[x0, x1) × [y0, y1)`.
    pub fn window_features(
        &self,
        grey: &[f32],
        width: usize,
        height: usize,
        window: Window,
    ) -> Vec<f32> {
        let mut out = Vec::with_capacity(35 * 5 + 25 * 4);
        for &d in &GREY_DISTANCES {
            out.extend(
                self.grey_masks.iter().map(|m| mask_mean(grey, width, height, m, d, window)),
            );
        }
        let threshold = otsu(grey);
        let binary: Vec<f32> =
            grey.iter().map(|&v| if v > threshold { 1.0 } else { 0.0 }).collect();
        for &d in &BINARY_DISTANCES {
            out.extend(
                self.binary_masks.iter().map(|m| mask_mean(&binary, width, height, m, d, window)),
            );
        }
        out
    }

    /// Features of whole images, all nine levels concatenated, one vector per image (parallel).
    pub fn image_features(&self, images: &[&PreparedImage]) -> Vec<Vec<f32>> {
        images
            .par_iter()
            .map(|image| {
                let (w, h) = (image.width as usize, image.height as usize);
                let whole = Window { x0: 0, y0: 0, x1: w, y1: h };
                self.window_features(&grey_of(image), w, h, whole)
            })
            .collect()
    }

    /// Features of each cell of a `grid × grid` partition of one image (row-major cells); each
    /// cell averages the positions inside it (displaced pixels may lie outside the cell).
    pub fn cell_features(&self, image: &PreparedImage, grid: usize) -> Result<Vec<Vec<f32>>> {
        let (w, h) = (image.width as usize, image.height as usize);
        if grid == 0 || grid > w.min(h) {
            return Err(Error::param(
                "grid",
                format!("{grid} cells a side do not fit a {w}×{h} image"),
            ));
        }
        let grey = grey_of(image);
        let cells: Vec<Window> = (0..grid * grid)
            .map(|c| {
                let (i, j) = (c / grid, c % grid);
                Window {
                    x0: j * w / grid,
                    x1: (j + 1) * w / grid,
                    y0: i * h / grid,
                    y1: (i + 1) * h / grid,
                }
            })
            .collect();
        Ok(cells.par_iter().map(|&cell| self.window_features(&grey, w, h, cell)).collect())
    }
}

impl Default for Hlac {
    fn default() -> Self {
        Self::new()
    }
}

/// A rectangle of reference positions, `[x0, x1) × [y0, y1)`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// Grey values in [0, 1] (mean of the three channels) of a prepared image with mean 0, std 1.
fn grey_of(image: &PreparedImage) -> Vec<f32> {
    let plane = (image.width * image.height) as usize;
    (0..plane)
        .map(|i| (image.chw[i] + image.chw[plane + i] + image.chw[2 * plane + i]) / 3.0)
        .collect()
}

/// Mean over reference positions in `window` (those whose displaced points all lie in the image)
/// of the product of the image at the mask's offsets scaled by `d`.
fn mask_mean(f: &[f32], width: usize, height: usize, mask: &Mask, d: i32, window: Window) -> f32 {
    let offsets: Vec<(i64, i64)> =
        mask.iter().map(|&(x, y)| ((x * d) as i64, (y * d) as i64)).collect();
    let min_x = offsets.iter().map(|o| o.0).min().unwrap_or(0);
    let max_x = offsets.iter().map(|o| o.0).max().unwrap_or(0);
    let min_y = offsets.iter().map(|o| o.1).min().unwrap_or(0);
    let max_y = offsets.iter().map(|o| o.1).max().unwrap_or(0);
    let x_start = (window.x0 as i64).max(-min_x);
    let x_end = (window.x1 as i64).min(width as i64 - max_x);
    let y_start = (window.y0 as i64).max(-min_y);
    let y_end = (window.y1 as i64).min(height as i64 - max_y);
    if x_start >= x_end || y_start >= y_end {
        return 0.0;
    }
    let span = (x_end - x_start) as usize;
    let mut total = 0.0f64;
    for y in y_start..y_end {
        let row = |o: (i64, i64)| {
            let start = ((y + o.1) * width as i64 + x_start + o.0) as usize;
            &f[start..start + span]
        };
        let sum: f32 = match offsets.as_slice() {
            [a] => row(*a).iter().sum(),
            [a, b] => row(*a).iter().zip(row(*b)).map(|(p, q)| p * q).sum(),
            [a, b, c] => {
                row(*a).iter().zip(row(*b)).zip(row(*c)).map(|((p, q), r)| p * q * r).sum()
            }
            _ => 0.0,
        };
        total += sum as f64;
    }
    (total / (span as f64 * (y_end - y_start) as f64)) as f32
}

/// Otsu's threshold of grey values in [0, 1] (256-bin histogram).
pub fn otsu(grey: &[f32]) -> f32 {
    let mut histogram = [0f64; 256];
    for &v in grey {
        histogram[(v.clamp(0.0, 1.0) * 255.0).round() as usize] += 1.0;
    }
    let total: f64 = histogram.iter().sum();
    let weighted_total: f64 = histogram.iter().enumerate().map(|(i, &c)| i as f64 * c).sum();
    let (mut below, mut weighted_below) = (0.0, 0.0);
    let (mut best, mut best_variance) = (0usize, -1.0);
    for (i, &count) in histogram.iter().enumerate() {
        below += count;
        weighted_below += i as f64 * count;
        let above = total - below;
        if below == 0.0 || above == 0.0 {
            continue;
        }
        let (mean_below, mean_above) =
            (weighted_below / below, (weighted_total - weighted_below) / above);
        let variance = below * above * (mean_below - mean_above).powi(2);
        if variance > best_variance {
            best_variance = variance;
            best = i;
        }
    }
    (best as f32 + 0.5) / 255.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prepared(width: u32, height: u32, grey: impl Fn(u32, u32) -> f32) -> PreparedImage {
        let plane = (width * height) as usize;
        let mut chw = vec![0.0; 3 * plane];
        for y in 0..height {
            for x in 0..width {
                for c in 0..3 {
                    chw[c * plane + (y * width + x) as usize] = grey(x, y);
                }
            }
        }
        PreparedImage { width, height, chw }
    }

    #[test]
    fn there_are_35_grey_and_25_binary_masks() {
        assert_eq!(masks(false).len(), 35);
        assert_eq!(masks(true).len(), 25);
    }

    #[test]
    fn constant_image_gives_its_powers() {
        let hlac = Hlac::new();
        let image = prepared(40, 30, |_, _| 0.5);
        let features = &hlac.image_features(&[&image])[0];
        // Grey masks have 1, 2 or 3 factors: 0.5, 0.25 or 0.125, at every distance.
        for (mask, value) in masks(false).iter().zip(&features[..35]) {
            let expected = 0.5f32.powi(mask.len() as i32);
            assert!((value - expected).abs() < 1e-6, "{mask:?}: {value}");
        }
        assert_eq!(features.len(), 35 * 5 + 25 * 4);
    }

    #[test]
    fn single_bright_pixel_and_a_line() {
        let hlac = Hlac::new();
        let grey = masks(false);
        let pair = |dx, dy| grey.iter().position(|m| m == &vec![(0, 0), (dx, dy)]).unwrap();
        // One bright pixel: every second-order product with a non-zero offset is zero.
        let dot = prepared(21, 21, |x, y| if (x, y) == (10, 10) { 1.0 } else { 0.0 });
        let f = &hlac.image_features(&[&dot])[0];
        assert!(f[0] > 0.0);
        assert_eq!(f[pair(1, 0)], 0.0);
        // A horizontal line: neighbours along x correlate, along y they do not.
        let line = prepared(21, 21, |_, y| if y == 10 { 1.0 } else { 0.0 });
        let f = &hlac.image_features(&[&line])[0];
        assert!(f[pair(1, 0)] > 0.0);
        assert_eq!(f[pair(0, 1)], 0.0);
    }

    #[test]
    fn whole_image_features_are_translation_invariant_and_size_normalised() {
        let hlac = Hlac::new();
        let texture = |x: u32, y: u32| ((x * 7 + y * 13) % 17) as f32 / 16.0;
        let a = &hlac.image_features(&[&prepared(96, 96, texture)])[0];
        let shifted = &hlac.image_features(&[&prepared(96, 96, |x, y| texture(x + 17, y))])[0];
        let larger = &hlac.image_features(&[&prepared(192, 192, texture)])[0];
        for ((p, q), r) in a.iter().zip(shifted).zip(larger) {
            assert!((p - q).abs() < 0.02 * p.abs().max(0.05), "translation: {p} vs {q}");
            assert!((p - r).abs() < 0.02 * p.abs().max(0.05), "size: {p} vs {r}");
        }
    }

    #[test]
    fn otsu_splits_two_levels_and_cells_cover_the_image() {
        let grey: Vec<f32> = (0..100).map(|i| if i < 50 { 0.2 } else { 0.8 }).collect();
        let t = otsu(&grey);
        assert!(t > 0.2 && t < 0.8, "{t}");
        let hlac = Hlac::new();
        let image = prepared(64, 64, |x, _| if x < 32 { 0.0 } else { 1.0 });
        let cells = hlac.cell_features(&image, 4).unwrap();
        assert_eq!(cells.len(), 16);
        assert!(cells[0][0] < cells[3][0], "left cells are dark, right ones bright");
        assert!(hlac.cell_features(&image, 0).is_err());
    }
}

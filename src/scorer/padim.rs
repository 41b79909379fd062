//! Per-position Gaussians on deep levels (PaDiM, Defard et al. 2020, on patch features made as
//! the knn scorer's are, by default of levels 5, 6 and 7): each position of the grid has its own
//! Gaussian (mean and Ledoit-Wolf covariance over the good training images' features at that
//! position); a position scores its Mahalanobis distance to its own Gaussian; an image scores
//! its worst position, the outer `border` rings ignored, as knn does.
//!
//! Where knn asks "is this patch like any good patch anywhere?", PaDiM asks "is this patch like
//! the good patches at this place?", with a covariance that down-weights the directions good
//! parts vary in. That suits parts that sit in the same place in every image (solar cells,
//! boards): on elpv-poly it beat knn on Lite0 and Lite2 and tied on Lite1; on generated wood,
//! whose grain direction varies, it lost. It needs one grid for all images (squashed input).

use ndarray::Array1;
use tch::{Device, Kind, Tensor};

use super::knn::{interior_or_error, worst_inside};
use super::{
    variant_borders, Embeddings, FittedScorer, PositionMap, PositionScorer, Scorer, ScorerSpec,
    StoredTensor, TensorData,
};
use crate::backbone::allocator::MMAP_THRESHOLD;
use crate::backbone::Levels;
use crate::error::{Error, Result};
use crate::features::PatchSet;
use crate::gaussian::{PositionAccumulator, PositionGaussians};

/// Settings of the PaDiM scorer.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PadimParams {
    /// Outer rings of positions ignored by the image score.
    pub border: usize,
}

impl Default for PadimParams {
    fn default() -> Self {
        PadimParams { border: super::knn::DEFAULT_BORDER }
    }
}

/// Images per batch of the fit's sums and of scoring: as many as keep a batch's float64
/// features (positions × dims × 8 bytes an image) within half of glibc's mapping threshold, so
/// the batch's temporaries reuse freed memory instead of being mapped and faulted in anew (see
/// `backbone::allocator`); 27 images of Lite0's 14 × 14 positions of 384 values.
fn images_per_batch(positions: usize, dim: usize) -> usize {
    (MMAP_THRESHOLD as usize / 2 / (positions * dim * 8).max(1)).max(1)
}

impl PadimParams {
    /// Fits one Gaussian per position on the patch features of good images, which must all
    /// share one grid.
    pub fn fit_patches(&self, patches: &PatchSet) -> Result<PadimModel> {
        let (_, accumulator) = self.accumulate(patches)?;
        Ok(self.model(patches, accumulator.finish(Device::Cpu)?))
    }

    /// The checked grid of `patches` and the per-position sums of all their images, in order,
    /// about the first image's features.
    fn accumulate(&self, patches: &PatchSet) -> Result<((usize, usize), PositionAccumulator)> {
        let grid = one_grid(patches)?;
        interior_or_error(grid.0, grid.1, self.border)?;
        if patches.len() < 2 {
            return Err(Error::numeric(
                "padim fit",
                format!("needs at least 2 good images, got {}", patches.len()),
            ));
        }
        let mut accumulator = PositionAccumulator::new();
        for batch in image_batches(patches, grid)? {
            accumulator.push(&batch, (grid.0 as i64, grid.1 as i64))?;
        }
        Ok((grid, accumulator))
    }

    fn model(&self, patches: &PatchSet, gaussians: PositionGaussians) -> PadimModel {
        PadimModel { params: self.clone(), levels: patches.levels.clone(), gaussians }
    }
}

/// The one grid every image of `patches` has.
fn one_grid(patches: &PatchSet) -> Result<(usize, usize)> {
    let Some(&first) = patches.grids.first() else {
        return Err(Error::numeric("padim", "no images"));
    };
    if let Some(i) = patches.grids.iter().position(|&g| g != first) {
        return Err(Error::input(
            &patches.paths[i],
            format!(
                "its feature grid {}×{} differs from the first image's {}×{}: padim keeps a \
                 Gaussian per position, so every image needs one input size (use --aspect squash)",
                patches.grids[i].0, patches.grids[i].1, first.0, first.1
            ),
        ));
    }
    Ok(first)
}

/// `patches` as tensors of up to [`images_per_batch`] images × positions × dims.
fn image_batches(patches: &PatchSet, grid: (usize, usize)) -> Result<Vec<Tensor>> {
    let positions = (grid.0 * grid.1) as i64;
    let all = patches.tensor().view([patches.len() as i64, positions, patches.dim as i64]);
    let batch = images_per_batch(grid.0 * grid.1, patches.dim);
    Ok((0..patches.len())
        .step_by(batch)
        .map(|start| {
            let n = batch.min(patches.len() - start) as i64;
            all.narrow(0, start as i64, n)
        })
        .collect())
}

impl Scorer for PadimParams {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Padim(self.clone())
    }

    fn fit(&self, good: &Embeddings) -> Result<Box<dyn FittedScorer>> {
        Ok(Box::new(self.fit_patches(good.patches()?)?))
    }

    /// The fit's sums, less each fold's own sums, are the sums of the images outside the fold:
    /// two passes over the images (the fit's, then the folds') instead of one per fit. The fit
    /// itself is exactly [`PadimParams::fit_patches`]'s.
    fn fit_cross_fitted(
        &self,
        good: &Embeddings,
        held_out: &[Vec<usize>],
    ) -> Result<(Box<dyn FittedScorer>, Array1<f64>)> {
        let patches = good.patches()?;
        let (grid, whole) = self.accumulate(patches)?;
        let all = patches.tensor().view([
            patches.len() as i64,
            (grid.0 * grid.1) as i64,
            patches.dim as i64,
        ]);
        let grid = (grid.0 as i64, grid.1 as i64);
        let shift = all.get(0);
        let mut scores = Array1::zeros(patches.len());
        for fold in held_out {
            let mut part = PositionAccumulator::about(&shift, grid);
            for chunk in fold.chunks(images_per_batch(all.size()[1] as usize, patches.dim)) {
                let rows: Vec<i64> = chunk.iter().map(|&i| i as i64).collect();
                part.push(&all.index_select(0, &Tensor::from_slice(&rows)), grid)?;
            }
            let model = self.model(patches, whole.minus(&part)?.finish(Device::Cpu)?);
            for (&image, score) in fold.iter().zip(model.score(&good.select(fold))?) {
                scores[image] = score;
            }
        }
        Ok((Box::new(self.model(patches, whole.finish(Device::Cpu)?)), scores))
    }
}

/// Fitted per-position Gaussians.
pub struct PadimModel {
    params: PadimParams,
    levels: Levels,
    gaussians: PositionGaussians,
}

impl PadimModel {
    pub fn params(&self) -> &PadimParams {
        &self.params
    }

    /// The fitted grid (height, width).
    pub fn grid(&self) -> (usize, usize) {
        let (h, w) = self.gaussians.grid();
        (h as usize, w as usize)
    }

    /// Values per position.
    pub fn dim(&self) -> usize {
        self.gaussians.dim() as usize
    }

    /// Position scores `n × h × w` of `features` (`n × h × w × dims`, or rows `n·h·w × dims`
    /// in image-then-row-major order) on the fitted grid.
    pub fn position_scores(&self, features: &Tensor) -> Result<Tensor> {
        let (h, w) = self.grid();
        let d = self.gaussians.dim();
        let n = features.numel() as i64 / (h as i64 * w as i64 * d).max(1);
        if features.numel() as i64 != n * h as i64 * w as i64 * d {
            return Err(Error::numeric(
                "padim scoring",
                format!("features do not fit the fitted {h}×{w} grid of {d} values"),
            ));
        }
        let features = features.to_kind(Kind::Float).reshape([n, (h * w) as i64, d]);
        let mut parts = Vec::new();
        let images = images_per_batch(h * w, d as usize) as i64;
        for start in (0..n).step_by(images as usize) {
            let batch = features.narrow(0, start, images.min(n - start));
            parts.push(self.gaussians.distances(&batch)?);
        }
        if parts.is_empty() {
            return Ok(Tensor::zeros([0, h as i64, w as i64], (Kind::Float, Device::Cpu)));
        }
        Ok(Tensor::cat(&parts, 0).view([n, h as i64, w as i64]))
    }

    /// Position scores of every image of `patches`, checked against the fitted grid.
    fn all_position_scores(&self, patches: &PatchSet) -> Result<Vec<f32>> {
        if patches.dim as i64 != self.gaussians.dim() {
            return Err(Error::numeric(
                "padim scoring",
                format!(
                    "positions have {} values, the Gaussians {}",
                    patches.dim,
                    self.gaussians.dim()
                ),
            ));
        }
        let grid = self.grid();
        if let Some(i) = patches.grids.iter().position(|&g| g != grid) {
            return Err(Error::input(
                &patches.paths[i],
                format!(
                    "its feature grid {}×{} differs from the fitted {}×{}: padim scores images \
                     at the run's one input size",
                    patches.grids[i].0, patches.grids[i].1, grid.0, grid.1
                ),
            ));
        }
        if patches.is_empty() {
            return Ok(Vec::new());
        }
        Vec::<f32>::try_from(self.position_scores(&patches.tensor())?.contiguous().view(-1))
            .map_err(|e| Error::torch("padim scoring", e))
    }
}

impl FittedScorer for PadimModel {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Padim(self.params.clone())
    }

    fn score(&self, embeddings: &Embeddings) -> Result<Vec<f64>> {
        let mut scores = self.score_variants(embeddings, &[self.spec()])?;
        Ok(scores.pop().unwrap_or_default())
    }

    /// Variants differ in `border` only: one set of position scores serves them all.
    fn score_variants(
        &self,
        embeddings: &Embeddings,
        variants: &[ScorerSpec],
    ) -> Result<Vec<Vec<f64>>> {
        let borders = variant_borders(&self.spec(), variants)?;
        let patches = embeddings.patches()?;
        let (h, w) = self.grid();
        for &border in &borders {
            interior_or_error(h, w, border)?;
        }
        let scores = self.all_position_scores(patches)?;
        let per_image = h * w;
        borders
            .iter()
            .map(|&border| {
                scores
                    .chunks_exact(per_image)
                    .map(|image| worst_inside(image, h, w, border))
                    .collect()
            })
            .collect()
    }

    fn maps(&self, embeddings: &Embeddings) -> Result<Option<Vec<PositionMap>>> {
        let patches = embeddings.patches()?;
        let scores = self.all_position_scores(patches)?;
        let (height, width) = self.grid();
        Ok(Some(
            scores
                .chunks_exact(height * width)
                .map(|values| PositionMap { height, width, values: values.to_vec() })
                .collect(),
        ))
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let (h, w) = self.grid();
        let d = self.gaussians.dim() as usize;
        let values = |t: &Tensor| Vec::<f32>::try_from(t.contiguous().view(-1)).unwrap_or_default();
        vec![
            StoredTensor {
                name: MEAN_TENSOR.into(),
                shape: vec![h, w, d],
                data: TensorData::F32(values(self.gaussians.mean())),
            },
            StoredTensor {
                name: PRECISION_TENSOR.into(),
                shape: vec![h, w, d * (d + 1) / 2],
                data: TensorData::F32(values(&pack_lower(self.gaussians.precision()))),
            },
        ]
    }

    fn padim(&self) -> Option<&PadimModel> {
        Some(self)
    }

    fn positions(&self) -> Option<&dyn PositionScorer> {
        Some(self)
    }
}

impl PositionScorer for PadimModel {
    fn levels(&self) -> &Levels {
        &self.levels
    }

    fn position_maps(&self, features: &Tensor) -> Result<Tensor> {
        let size = features.size();
        let (h, w) = self.grid();
        if size.len() != 4 || (size[1], size[2]) != (h as i64, w as i64) {
            return Err(Error::numeric(
                "padim map",
                format!(
                    "the image's feature grid {size:?} differs from the fitted {h}×{w}: padim maps \
                     images at the run's one input size"
                ),
            ));
        }
        self.position_scores(features)
    }

    fn image_score(&self, scores: &[f32], h: usize, w: usize) -> Result<f64> {
        worst_inside(scores, h, w, self.params.border)
    }

    fn share(&self) -> Box<dyn PositionScorer> {
        Box::new(PadimModel {
            params: self.params.clone(),
            levels: self.levels.clone(),
            gaussians: self.gaussians.share(),
        })
    }

    fn storage(&self) -> usize {
        self.gaussians.precision().data_ptr() as usize
    }
}

/// Names in the run's safetensors file: means (h × w × d) and the precisions' lower triangles
/// (h × w × d(d+1)/2, row by row: a precision is symmetric, so half of it is stored).
pub const MEAN_TENSOR: &str = "padim.mean";
pub const PRECISION_TENSOR: &str = "padim.precision_lower";

/// Row-major lower-triangle indices (flat, into d × d) of a `d × d` matrix.
fn lower_indices(d: i64) -> Tensor {
    let rc = Tensor::tril_indices(d, d, 0, (Kind::Int64, Device::Cpu));
    rc.get(0) * d + rc.get(1)
}

/// positions × d × d symmetric → positions × d(d+1)/2.
fn pack_lower(full: &Tensor) -> Tensor {
    let (p, d) = (full.size()[0], full.size()[1]);
    full.reshape([p, d * d]).index_select(1, &lower_indices(d))
}

/// positions × d(d+1)/2 → positions × d × d, mirrored.
fn unpack_lower(packed: &Tensor, d: i64) -> Tensor {
    let p = packed.size()[0];
    let lower = Tensor::zeros([p, d * d], (Kind::Float, Device::Cpu))
        .index_copy(1, &lower_indices(d), packed)
        .view([p, d, d]);
    let diagonal = lower.diagonal(0, -2, -1).diag_embed(0, -2, -1);
    &lower + lower.transpose(1, 2) - diagonal
}

/// Rebuilds a PaDiM model from its stored tensors.
pub fn load(
    params: &PadimParams,
    levels: &Levels,
    read: &super::ReadWithShape<f32>,
) -> Result<PadimModel> {
    let damaged = || Error::numeric("padim model", "the stored Gaussians are damaged");
    let (mean_shape, mean) = read(MEAN_TENSOR)?;
    let (precision_shape, precision) = read(PRECISION_TENSOR)?;
    let [h, w, d] = mean_shape[..] else { return Err(damaged()) };
    if h * w * d != mean.len()
        || precision_shape != [h, w, d * (d + 1) / 2]
        || precision.len() != h * w * d * (d + 1) / 2
        || mean.iter().chain(&precision).any(|v| !v.is_finite())
    {
        return Err(damaged());
    }
    let positions = (h * w) as i64;
    let mean = Tensor::from_slice(&mean).view([positions, d as i64]);
    let packed = Tensor::from_slice(&precision).view([positions, (d * (d + 1) / 2) as i64]);
    let gaussians =
        PositionGaussians::from_parts((h as i64, w as i64), mean, unpack_lower(&packed, d as i64))?;
    interior_or_error(h, w, params.border)?;
    Ok(PadimModel { params: params.clone(), levels: levels.clone(), gaussians })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gaussian::GaussianParams;
    use std::path::PathBuf;

    fn random_set(images: usize, grid: (usize, usize), dim: usize, seed: u64) -> PatchSet {
        let mut rng = crate::rng::Rng::new(seed);
        let mut set = PatchSet::empty(Levels::new(vec![6, 7]).unwrap(), dim);
        for i in 0..images {
            let values: Vec<f32> = (0..grid.0 * grid.1 * dim)
                .map(|k| rng.range(-1.0, 1.0) as f32 * (1.0 + (k % dim) as f32))
                .collect();
            set.push(PathBuf::from(format!("{i}.png")), grid, &values).unwrap();
        }
        set
    }

    /// The Mahalanobis distance of `x` under the pooled Gaussian fitted on `rows` (n × d).
    fn reference_distance(rows: &[Vec<f32>], x: &[f32]) -> f64 {
        let d = x.len();
        let flat: Vec<f32> = rows.iter().flatten().copied().collect();
        let matrix = ndarray::Array2::from_shape_vec((rows.len(), d), flat).unwrap();
        let model = GaussianParams::new().fit(matrix.view()).unwrap();
        let x = ndarray::Array1::from_iter(x.iter().map(|&v| v as f64));
        let centred = &x - &model.mean();
        centred.dot(&model.precision().dot(&centred)).sqrt()
    }

    #[test]
    fn each_position_is_scored_by_its_own_gaussian() {
        let (grid, dim) = ((3, 4), 3);
        let good = random_set(40, grid, dim, 5);
        let model = PadimParams { border: 0 }.fit_patches(&good).unwrap();
        let probe = random_set(2, grid, dim, 9);
        let maps = model.maps(&Embeddings::Patches(probe.clone())).unwrap().unwrap();
        for (image, map) in maps.iter().enumerate() {
            assert_eq!((map.height, map.width), grid);
            for position in 0..grid.0 * grid.1 {
                let at = |set: &PatchSet, i: usize| {
                    let start = set.offsets[i] * dim + position * dim;
                    set.values[start..start + dim].to_vec()
                };
                let rows: Vec<Vec<f32>> = (0..good.len()).map(|i| at(&good, i)).collect();
                let want = reference_distance(&rows, &at(&probe, image));
                let got = map.values[position] as f64;
                assert!((got - want).abs() <= 1e-3 * want.max(1.0), "{got} vs {want}");
            }
        }
        // The image score is the worst position inside the border.
        let scores = model.score(&Embeddings::Patches(probe)).unwrap();
        for (score, map) in scores.iter().zip(&maps) {
            let worst = map.values.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(*score, worst as f64);
        }
    }

    #[test]
    fn an_odd_value_at_one_place_is_caught_there_and_border_variants_share_the_fit() {
        let (grid, dim) = ((5, 5), 2);
        let good = random_set(30, grid, dim, 1);
        let model = PadimParams { border: 1 }.fit_patches(&good).unwrap();
        let mut odd = random_set(1, grid, dim, 2);
        let centre = (2 * 5 + 2) * dim;
        odd.values[centre..centre + dim].copy_from_slice(&[30.0, -30.0]);
        let mut corner = random_set(1, grid, dim, 2);
        corner.values[0..dim].copy_from_slice(&[30.0, -30.0]);
        let plain = model.score(&Embeddings::Patches(random_set(1, grid, dim, 2))).unwrap()[0];
        let odd_score = model.score(&Embeddings::Patches(odd)).unwrap()[0];
        assert!(odd_score > 3.0 * plain, "{odd_score} vs {plain}");
        // The corner is outside the border ring's interior: ignored by border 1, not by 0.
        let corner = Embeddings::Patches(corner);
        let spec = |border| ScorerSpec::Padim(PadimParams { border });
        let both = model.score_variants(&corner, &[spec(1), spec(0)]).unwrap();
        assert_eq!(both[0][0], plain);
        assert!(both[1][0] > 3.0 * plain);
        let alone = PadimParams { border: 0 }.fit_patches(&good).unwrap();
        assert_eq!(alone.score(&corner).unwrap(), both[1]);
        assert!(model.score_variants(&corner, &[spec(3)]).is_err());
    }

    #[test]
    fn cross_fitted_scores_equal_refits_on_the_other_folds() {
        let good = Embeddings::Patches(random_set(25, (3, 3), 3, 11));
        let held_out = crate::threshold::cross_fit_folds(25, 5, 0).unwrap();
        let params = PadimParams { border: 1 };
        let (fitted, cross) = params.fit_cross_fitted(&good, &held_out).unwrap();
        let refit = crate::threshold::scores_over_folds(25, &held_out, |training, held| {
            params.fit(&good.select(training))?.score(&good.select(held))
        })
        .unwrap();
        for (c, r) in cross.iter().zip(&refit) {
            assert!((c - r).abs() <= 1e-4 * r.abs().max(1.0), "{c} vs {r}");
        }
        // The fit itself is the plain fit's, exactly.
        let probe = Embeddings::Patches(random_set(3, (3, 3), 3, 12));
        let plain = params.fit(&good).unwrap().score(&probe).unwrap();
        assert_eq!(fitted.score(&probe).unwrap(), plain);
    }

    #[test]
    fn stored_model_scores_identically() {
        let good = random_set(20, (3, 3), 4, 3);
        let model = PadimParams { border: 1 }.fit_patches(&good).unwrap();
        let stored = model.tensors();
        let read = |name: &str| {
            let t = stored.iter().find(|t| t.name == name).unwrap();
            let TensorData::F32(values) = t.data.clone() else { panic!("f32") };
            Ok((t.shape.clone(), values))
        };
        let loaded = load(model.params(), model.levels(), &read).unwrap();
        let probe = Embeddings::Patches(random_set(4, (3, 3), 4, 8));
        assert_eq!(model.score(&probe).unwrap(), loaded.score(&probe).unwrap());
        assert_eq!(
            model.maps(&probe).unwrap().unwrap()[2].values,
            loaded.maps(&probe).unwrap().unwrap()[2].values
        );
        // A damaged file is refused, not read.
        let short = |name: &str| read(name).map(|(s, mut v)| (s, v.split_off(1)));
        assert!(load(model.params(), model.levels(), &short).is_err());
    }

    #[test]
    fn images_of_another_grid_are_named() {
        let mut good = random_set(3, (4, 4), 2, 1);
        let other = random_set(1, (4, 5), 2, 2);
        good.push(PathBuf::from("wide.png"), (4, 5), &other.values).unwrap();
        let error = PadimParams::default().fit_patches(&good).err().unwrap().to_string();
        assert!(error.starts_with("wide.png") && error.contains("--aspect squash"), "{error}");
        let model = PadimParams::default().fit_patches(&random_set(5, (4, 4), 2, 1)).unwrap();
        let mut probe = random_set(1, (4, 4), 2, 3);
        probe.push(PathBuf::from("wide.png"), (4, 5), &other.values).unwrap();
        let error = model.score(&Embeddings::Patches(probe)).err().unwrap().to_string();
        assert!(error.starts_with("wide.png"), "{error}");
        let error = PadimParams { border: 2 }.fit_patches(&good_square()).err().unwrap();
        assert!(error.to_string().starts_with("--border"), "{error}");
    }

    fn good_square() -> PatchSet {
        random_set(4, (4, 4), 2, 7)
    }
}

//! The short measurements tune makes before its first candidate, so that it can say up front
//! how long the grid will take:
//! - each distinct network pass runs on two batches of the real images, the second timed (the
//!   first pays the network's warm-up); the feature cache keeps what they computed, so the pass
//!   itself later reads those images instead of running them again, and images already cached
//!   time as the cache reads the pass will do;
//! - each scorer fits and scores once on synthetic features of the real width, timed, which
//!   gives its speed in the units of [`FeatureShape`]'s work model.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use ndarray::Array2;

use super::estimate::{reads, FamilyPrior, FeatureShape, FitPlan, ScorerSpeed, WorkModel};
use super::Candidate;
use crate::backbone::Levels;
use crate::data::image::{Aspect, InputSize};
use crate::error::{Error, Result};
use crate::features::{EmbeddingKind, Embeddings, FeatureSet, OnBadImage, PatchSet};
use crate::pipeline::embed::Embedder;
use crate::pipeline::Runtime;
use crate::progress::Silent;
use crate::rng::Rng;
use crate::scorer::ScorerSpec;

/// At most this many rows of synthetic patch features for the knn probe to fit on: enough that
/// the greedy selection's per-round costs are small beside its products, as they are at real
/// bank sizes. Smaller sets are probed at their own largest fit's size, so that the probe never
/// costs more than one of their fits.
const KNN_PROBE_FIT_ROWS: usize = 65_536;
/// At most this many rows for the knn probe to score.
const KNN_PROBE_SCORED_ROWS: usize = 8_192;
/// At most this many images for the padim probe to fit on (its per-position inverses cost as
/// much at any image count).
const PADIM_PROBE_IMAGES: usize = 64;
/// At most this many images for the Gaussian probe to fit on and score.
const GAUSSIAN_PROBE_IMAGES: usize = 256;

/// What tune's families are expected to cost, and what finding out cost.
pub(super) struct Probed {
    /// One per family, in the families' order.
    pub priors: Vec<FamilyPrior>,
    pub seconds: f64,
}

/// One network pass: which backbone and input, which kind of features (patch features per level
/// set).
#[derive(Debug, Clone, PartialEq)]
struct PassKey {
    backbone: String,
    size: Option<InputSize>,
    aspect: Aspect,
    patch_levels: Option<Levels>,
}

impl PassKey {
    fn of(candidate: &Candidate) -> Self {
        PassKey {
            backbone: candidate.backbone.clone(),
            size: candidate.size,
            aspect: candidate.aspect,
            patch_levels: (candidate.scorer.embedding() == EmbeddingKind::Patches)
                .then(|| candidate.levels.clone()),
        }
    }
}

/// What the timed batch of a pass showed.
struct PassSample {
    seconds_per_image: f64,
    /// Pooled passes: each level's width.
    widths: BTreeMap<u8, usize>,
    /// Patch passes: positions per image (mean), values per position, one image's grid.
    patches: Option<(f64, usize, (usize, usize))>,
}

/// A read's feature shape, and one image's grid for synthetic patches.
type ReadShape = (FeatureShape, (usize, usize));

/// Probes the passes and scorers of `families` (indices into `candidates`) over `paths`; an
/// ensemble's are its members' (see [`reads`]), fitted and cross-fitted each.
pub(super) fn probe(
    runtime: &Runtime,
    candidates: &[Candidate],
    families: &[Vec<usize>],
    paths: &[PathBuf],
    plan: &FitPlan,
) -> Result<Probed> {
    let started = Instant::now();
    let leads: Vec<&Candidate> = families.iter().map(|f| &candidates[f[0]]).collect();
    let lead_reads: Vec<Vec<Candidate>> = leads.iter().map(|lead| reads(lead)).collect();
    let all_reads: Vec<&Candidate> = lead_reads.iter().flatten().collect();
    // Each distinct pass probed once; `pass_of[i][j]` is lead `i`'s read `j`'s.
    let mut passes: Vec<(PassKey, PassSample)> = Vec::new();
    let mut pass_of: Vec<Vec<usize>> = Vec::with_capacity(leads.len());
    for read_list in &lead_reads {
        let mut indices = Vec::with_capacity(read_list.len());
        for read in read_list {
            let key = PassKey::of(read);
            let index = match passes.iter().position(|(k, _)| *k == key) {
                Some(index) => index,
                None => {
                    let sample = probe_pass(runtime, read, &key, &all_reads, paths)?;
                    passes.push((key, sample));
                    passes.len() - 1
                }
            };
            indices.push(index);
        }
        pass_of.push(indices);
    }
    let shapes: Vec<Vec<ReadShape>> = lead_reads
        .iter()
        .zip(&pass_of)
        .map(|(read_list, indices)| {
            read_list
                .iter()
                .zip(indices)
                .map(|(read, &pass)| shape_of(read, &passes[pass].1))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let largest_fit = plan.largest_fit().ceil().max(2.0) as usize;
    let flat: Vec<(&Candidate, &ReadShape)> =
        lead_reads.iter().flatten().zip(shapes.iter().flatten()).collect();
    let mut speeds: Vec<(&'static str, ScorerSpeed)> = Vec::new();
    for (read, _) in &flat {
        let name = read.scorer.name();
        if speeds.iter().any(|(n, _)| *n == name) {
            continue;
        }
        // Probe with the read of this scorer whose fit is the largest per image (the
        // Gaussian's widest levels, where its cost is).
        let (widest, (shape, grid)) = flat
            .iter()
            .filter(|(r, _)| r.scorer.name() == name)
            .max_by(|a, b| a.1 .0.fit_work(1.0).total_cmp(&b.1 .0.fit_work(1.0)))
            .expect("this read is among them");
        speeds
            .push((name, probe_scorer(&widest.scorer, &widest.levels, shape, *grid, largest_fit)?));
    }
    let speed_of =
        |read: &Candidate| speeds.iter().find(|(n, _)| *n == read.scorer.name()).expect("probed").1;
    let priors = leads
        .iter()
        .zip(&lead_reads)
        .zip(shapes.iter().zip(&pass_of))
        .map(|((lead, read_list), (read_shapes, indices))| {
            let members: Vec<(FeatureShape, ScorerSpeed)> = read_list
                .iter()
                .zip(read_shapes)
                .map(|(read, (shape, _))| (shape.clone(), speed_of(read)))
                .collect();
            let work = match &lead.scorer {
                ScorerSpec::Ensemble(params) => {
                    WorkModel::Ensemble { members, folds: params.folds }
                }
                _ => {
                    let (shape, speed) = members.into_iter().next().expect("one read");
                    WorkModel::Single(shape, speed)
                }
            };
            let seconds_per_image: Vec<f64> =
                indices.iter().map(|&pass| passes[pass].1.seconds_per_image).collect();
            FamilyPrior::new(lead, &work, &seconds_per_image, paths.len(), plan)
        })
        .collect();
    Ok(Probed { priors, seconds: started.elapsed().as_secs_f64() })
}

/// Runs the pass of `key` on two batches of `paths` and times the second. Pooled passes read
/// every level any pooled read on that input reads.
fn probe_pass(
    runtime: &Runtime,
    lead: &Candidate,
    key: &PassKey,
    reads: &[&Candidate],
    paths: &[PathBuf],
) -> Result<PassSample> {
    let mut spec = lead.features();
    if key.patch_levels.is_none() {
        let mut levels: Vec<u8> = reads
            .iter()
            .filter(|l| PassKey::of(l) == *key)
            .flat_map(|l| l.levels.as_slice().to_vec())
            .collect();
        levels.sort_unstable();
        levels.dedup();
        spec.levels = Levels::new(levels)?;
    }
    let embedder = Embedder::open(runtime, &spec, &lead.scorer)?;
    let primary = embedder.primary();
    let batch = runtime.images_per_pass(&primary.backbone, primary.preprocess.size).max(1);
    let warm = batch.min(paths.len() / 2);
    let timed = &paths[warm..(warm + batch).min(paths.len())];
    if timed.is_empty() {
        return Err(Error::numeric("tune estimate", "no images to time the network on"));
    }
    embedder.embed(&paths[..warm], OnBadImage::Stop, &Silent)?;
    let started = Instant::now();
    let (embeddings, _, _) = embedder.embed(timed, OnBadImage::Stop, &Silent)?;
    let seconds_per_image = started.elapsed().as_secs_f64() / timed.len() as f64;
    let mut sample = PassSample { seconds_per_image, widths: BTreeMap::new(), patches: None };
    match &embeddings {
        Embeddings::Pooled(features) => {
            for (level, values) in features.levels.as_slice().iter().zip(&features.per_level) {
                sample.widths.insert(*level, values.ncols());
            }
        }
        Embeddings::Patches(patches) => {
            let rows_per_image = patches.rows() as f64 / patches.len().max(1) as f64;
            let grid = patches.grids.first().copied().unwrap_or((1, 1));
            sample.patches = Some((rows_per_image, patches.dim, grid));
        }
        Embeddings::Members(_) => {
            return Err(Error::numeric("tune estimate", "an ensemble's passes are its members'"))
        }
    }
    Ok(sample)
}

/// The shape of `lead`'s features from its pass's sample, and a grid for synthetic patches.
fn shape_of(lead: &Candidate, sample: &PassSample) -> Result<(FeatureShape, (usize, usize))> {
    match (&lead.scorer, sample.patches) {
        (ScorerSpec::Knn(params), Some((rows_per_image, dim, grid))) => {
            Ok((FeatureShape::Patches { rows_per_image, dim, coreset: params.coreset }, grid))
        }
        (ScorerSpec::Padim(_), Some((_, dim, grid))) => {
            Ok((FeatureShape::Positions { positions: (grid.0 * grid.1) as f64, dim }, grid))
        }
        (_, None) => {
            let widths = lead
                .levels
                .as_slice()
                .iter()
                .map(|level| sample.widths.get(level).copied())
                .collect::<Option<Vec<usize>>>()
                .ok_or_else(|| Error::numeric("tune estimate", "a level was not probed"))?;
            Ok((FeatureShape::Pooled { widths }, (1, 1)))
        }
        _ => Err(Error::numeric("tune estimate", "the probed pass does not match the scorer")),
    }
}

/// Fits and scores `scorer` on synthetic features of `shape`, timed, at most at the size of the
/// tune's largest fit (`largest_fit` good images).
fn probe_scorer(
    scorer: &ScorerSpec,
    levels: &Levels,
    shape: &FeatureShape,
    grid: (usize, usize),
    largest_fit: usize,
) -> Result<ScorerSpeed> {
    let mut rng = Rng::new(0);
    let (fitted_on, scored, fit_images, scored_images) = match shape {
        FeatureShape::Pooled { widths } => {
            let set = |images: usize, rng: &mut Rng| -> Result<Embeddings> {
                let per_level = widths
                    .iter()
                    .map(|&d| Array2::from_shape_simple_fn((images, d), || rng.unit() as f32))
                    .collect();
                Ok(Embeddings::Pooled(FeatureSet {
                    paths: vec![PathBuf::new(); images],
                    levels: levels.clone(),
                    per_level,
                }))
            };
            let images = GAUSSIAN_PROBE_IMAGES.min(largest_fit);
            (set(images, &mut rng)?, set(images, &mut rng)?, images as f64, images as f64)
        }
        FeatureShape::Patches { dim, .. } | FeatureShape::Positions { dim, .. } => {
            let per_image = (grid.0 * grid.1).max(1);
            let set = |rows: usize, rng: &mut Rng| -> Result<(Embeddings, usize)> {
                let images = rows.div_ceil(per_image);
                let mut patches = PatchSet::empty(levels.clone(), *dim);
                let mut values = vec![0.0f32; per_image * dim];
                for _ in 0..images {
                    values.iter_mut().for_each(|v| *v = rng.unit() as f32);
                    patches.push(PathBuf::new(), grid, &values)?;
                }
                Ok((Embeddings::Patches(patches), images))
            };
            let fit_rows = match shape {
                FeatureShape::Positions { .. } => largest_fit.min(PADIM_PROBE_IMAGES) * per_image,
                _ => KNN_PROBE_FIT_ROWS.min(largest_fit * per_image),
            };
            let (fitted_on, fit_images) = set(fit_rows, &mut rng)?;
            let (scored, scored_images) = set(KNN_PROBE_SCORED_ROWS.min(fit_rows), &mut rng)?;
            (fitted_on, scored, fit_images as f64, scored_images as f64)
        }
    };
    // The work model counts positions per image; the synthetic images have `grid`'s.
    let shape = match shape {
        FeatureShape::Patches { dim, coreset, .. } => FeatureShape::Patches {
            rows_per_image: (grid.0 * grid.1).max(1) as f64,
            dim: *dim,
            coreset: *coreset,
        },
        other => other.clone(),
    };
    let started = Instant::now();
    let fitted = scorer.scorer()?.fit(&fitted_on)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    fitted.score(&scored)?;
    let score_seconds = started.elapsed().as_secs_f64();
    // A knn bank kept whole has no fit work: any speed will do.
    let per_second = |work: f64, seconds: f64| {
        if work > 0.0 {
            work / seconds.max(1e-6)
        } else {
            1.0
        }
    };
    Ok(ScorerSpeed {
        fit_per_second: per_second(shape.fit_work(fit_images), fit_seconds),
        score_per_second: per_second(shape.score_work(fit_images, scored_images), score_seconds),
    })
}

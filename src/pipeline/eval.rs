//! `eval`: how well a category's defective images are told from good ones.
//!
//! Protocols:
//! - `cv` (the seed study's): every labelled image of the category, good and defective, in
//!   stratified folds. For each fold a Gaussian is fitted on the good images of the other folds
//!   and scores this fold, so every image gets exactly one out-of-fold score.
//! - `mvtec` (the papers' benchmark): fit on train/good, score test/*.
//!
//! Thresholds are reported two ways, labelled everywhere: the *oracle* F1-optimal threshold,
//! chosen on the very scores it is judged on (the seed's figure, optimistic), and the *honest*
//! one: `cv` chooses each fold's threshold on the other folds' scores; `mvtec` uses the label-free
//! threshold `fit` would store (a quantile of cross-fitted training scores).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::backbone::Backbone;
use crate::backbone::Levels;
use crate::data::image::Preprocess;
use crate::data::split::stratified_folds;
use crate::data::{Category, Layout, Sample, Split};
use crate::error::{Error, Result};
use crate::features::cells::hlac_cell_features;
use crate::features::FeatureSpec;
use crate::features::{Embeddings, FeatureSet, LevelMaps, OnBadImage};
use crate::gaussian::{GaussianParams, MultiLevelGaussian};
use crate::metrics::{best_f1_threshold, roc_auc, roc_curve, Confusion, RocPoint, Summary};
use crate::pipeline::embed::Embedder;
use crate::pipeline::Runtime;
use crate::progress::Progress;
use crate::scorer::{FittedScorer, PositionScorer, ScorerSpec};
use crate::threshold::{scores_over_folds, QuantileThreshold};

/// Version of `metrics.json`.
pub const EVAL_FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    Cv,
    Mvtec,
}

/// What to evaluate and how.
#[derive(Debug, Clone)]
pub struct EvalParams {
    pub data_root: PathBuf,
    pub category: String,
    pub features: FeatureSpec,
    pub scorer: ScorerSpec,
    pub protocol: Protocol,
    pub folds: usize,
    pub seed: u64,
    /// Whole cross-validations with seeds seed, seed+1, …
    pub repeats: usize,
    /// The label-free threshold of the `mvtec` protocol.
    pub fit_threshold: QuantileThreshold,
    /// HLAC patch mode: features per cell of a `grid × grid` partition, one Gaussian shared by
    /// all cells, image score = the highest cell score.
    pub grid: Option<usize>,
}

impl EvalParams {
    fn check(&self) -> Result<()> {
        if self.repeats == 0 {
            return Err(Error::param("--repeats", "must be at least 1"));
        }
        if self.grid.is_some() && self.scorer != ScorerSpec::Gaussian {
            return Err(Error::param(
                "--grid",
                "HLAC's grid mode scores cells with one shared Gaussian; drop --scorer",
            ));
        }
        if self.grid.is_some() && self.features.backbone != "hlac" {
            return Err(Error::param(
                "--grid",
                "grid cells are HLAC's patch mode; CNN backbones localise with `anodet heatmap`",
            ));
        }
        if self.protocol == Protocol::Mvtec && self.repeats > 1 {
            return Err(Error::param(
                "--repeats",
                "the mvtec protocol has no random split to repeat",
            ));
        }
        self.fit_threshold.check()
    }
}

/// One evaluated image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoredSample {
    pub path: PathBuf,
    pub defect_type: String,
    pub defective: bool,
    /// Fold that scored it (`cv`), or `None` (`mvtec`).
    pub fold: Option<usize>,
    pub score: f64,
}

/// A threshold and what it gives.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ThresholdResult {
    /// How the threshold was chosen.
    pub method: String,
    /// The threshold(s): one value, or one per fold for out-of-fold choices.
    pub thresholds: Vec<f64>,
    pub confusion: Confusion,
    pub precision: Option<f64>,
    pub recall: Option<f64>,
    pub f1: Option<f64>,
}

impl ThresholdResult {
    fn new(method: &str, thresholds: Vec<f64>, confusion: Confusion) -> Self {
        ThresholdResult {
            method: method.into(),
            thresholds,
            precision: confusion.precision(),
            recall: confusion.recall(),
            f1: confusion.f1(),
            confusion,
        }
    }
}

/// Per-fold facts (one "fold" under the mvtec protocol).
#[derive(Debug, Clone, serde::Serialize)]
pub struct FoldResult {
    pub fold: usize,
    pub training_images: usize,
    pub auc: Option<f64>,
    /// In-sample scores of the fold's training images (the seed plots them).
    pub training_scores: Vec<f64>,
}

/// All figures of one cross-validation (or one mvtec evaluation).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunMetrics {
    pub seed: u64,
    pub auc: Option<f64>,
    pub auc_per_defect_type: BTreeMap<String, Option<f64>>,
    pub good: Summary,
    pub defective: Summary,
    pub per_defect_type: BTreeMap<String, Summary>,
    /// F1-optimal threshold on all the scores it is judged on (optimistic).
    pub oracle: Option<ThresholdResult>,
    /// Threshold chosen without looking at the judged images' labels.
    pub honest: Option<ThresholdResult>,
    pub folds: Vec<FoldResult>,
    #[serde(skip)]
    pub samples: Vec<ScoredSample>,
    #[serde(skip)]
    pub roc: Vec<RocPoint>,
}

/// Mean and standard deviation of one figure over the repeats.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Spread {
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub max: f64,
}

/// The whole evaluation.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EvalReport {
    pub version: u32,
    pub category: String,
    pub data_root: PathBuf,
    pub protocol: Protocol,
    pub backbone: String,
    /// The computation that ran: fp32, fp32_frozen, bf16 or hlac.
    pub precision: String,
    pub levels: Levels,
    pub input: String,
    pub scorer: ScorerSpec,
    pub folds: usize,
    pub images: usize,
    pub good_images: usize,
    pub defective_images: usize,
    pub warnings: Vec<String>,
    pub runs: Vec<RunMetrics>,
    /// Over the repeats (present when there are several).
    pub spread: BTreeMap<String, Spread>,
    pub feature_seconds: f64,
    /// Images whose features were needed (fit and judged; once per ensemble member), and how
    /// many came from the cache.
    pub extracted_images: usize,
    pub cache_hits: usize,
    pub seconds: f64,
}

/// What [`evaluate_keeping_inputs`] opened and computed that a review page reuses, so it need
/// not run the network on every image again.
pub struct EvalInputs {
    pub backbone: Backbone,
    pub preprocess: Preprocess,
    /// What the page's anomaly maps are computed from: fit images first (`mvtec`), then the
    /// judged images in the order of each run's samples.
    pub maps_from: ReviewMaps,
}

/// The embeddings behind the review page's maps.
pub enum ReviewMaps {
    /// Pooled features of the evaluation's levels: maps are a fold Gaussian's feature map, from
    /// the map level's spatial features where the evaluation's pass kept them (`maps`, aligned
    /// with `features`), else from a second pass.
    Pooled { features: FeatureSet, maps: LevelMaps },
    /// A knn or padim run's patch features, or an ensemble's members' embeddings: maps are the
    /// position scores of the knn and padim models that scored each fold (`fold_mappers`, kept
    /// in fold order; a plain run's missing fold is refitted from `spec`, the run's scorer, with
    /// the same seed: the same model), an ensemble's members' standardised and summed as their
    /// scores were. `inputs`:
    /// the preprocessing of each part's network (one for a plain run, one per member), whose
    /// input size each member's map is smoothed at, as `heatmap` does.
    Positions {
        spec: Option<ScorerSpec>,
        patches: Embeddings,
        fold_mappers: Vec<Vec<FoldMapper>>,
        inputs: Vec<Preprocess>,
    },
}

/// A knn or padim model that scored a fold, as the review page draws it.
pub struct FoldMapper {
    /// The ensemble member it is (its index among the members' embeddings); `None`: the run's
    /// own scorer.
    pub member: Option<usize>,
    pub model: Box<dyn PositionScorer>,
    /// The standardisation of its scores in the ensemble ((v − centre) / spread; 0 and 1 for a
    /// plain run).
    pub centre: f64,
    pub spread: f64,
}

impl FoldMapper {
    /// The models of `fitted` that draw its maps: itself (knn, padim), an ensemble's knn and
    /// padim members, or none.
    fn of(fitted: &dyn FittedScorer) -> Vec<FoldMapper> {
        if let Some(own) = fitted.positions() {
            return vec![FoldMapper { member: None, model: own.share(), centre: 0.0, spread: 1.0 }];
        }
        let Some(ensemble) = fitted.ensemble() else {
            return Vec::new();
        };
        ensemble
            .members()
            .iter()
            .enumerate()
            .filter_map(|(index, member)| {
                Some(FoldMapper {
                    member: Some(index),
                    model: member.scorer.positions()?.share(),
                    centre: member.centre,
                    spread: member.spread,
                })
            })
            .collect()
    }
}

/// The level whose map the review page shows: the evaluation's last (highest) level.
pub fn review_map_level(levels: &Levels) -> Result<u8> {
    levels.as_slice().last().copied().ok_or_else(|| Error::param("--levels", "no level to map"))
}

pub fn evaluate(
    params: &EvalParams,
    runtime: &Runtime,
    progress: &dyn Progress,
) -> Result<EvalReport> {
    run_evaluation(params, runtime, progress, false).map(|(report, _)| report)
}

/// [`evaluate`], also returning the opened backbone and the pooled features (for the review
/// page).
pub fn evaluate_keeping_inputs(
    params: &EvalParams,
    runtime: &Runtime,
    progress: &dyn Progress,
) -> Result<(EvalReport, EvalInputs)> {
    let (report, inputs) = run_evaluation(params, runtime, progress, true)?;
    let inputs = inputs.ok_or_else(|| Error::numeric("eval", "review inputs were not kept"))?;
    Ok((report, inputs))
}

/// The evaluation; with `keep_inputs`, also what the review page reuses. Without it no pooled
/// features are extracted beyond what the scorer reads.
fn run_evaluation(
    params: &EvalParams,
    runtime: &Runtime,
    progress: &dyn Progress,
    keep_inputs: bool,
) -> Result<(EvalReport, Option<EvalInputs>)> {
    let started = Instant::now();
    params.check()?;
    let category = Category::discover(&params.data_root, &params.category)?;
    let (fit_samples, judged): (Vec<&Sample>, Vec<&Sample>) = match params.protocol {
        Protocol::Cv => (Vec::new(), category.all().iter().collect()),
        Protocol::Mvtec => {
            if category.layout != Layout::Mvtec {
                return Err(Error::input(
                    &category.root,
                    "the mvtec protocol needs the MVTec AD layout (train/good, test/*)",
                ));
            }
            (category.training_good(), category.test_samples())
        }
    };
    if judged.is_empty() {
        return Err(Error::input(&category.root, "no images to evaluate"));
    }
    let labels: Vec<bool> = judged.iter().map(|s| s.is_defective()).collect();
    let defective_count = labels.iter().filter(|&&d| d).count();
    let mut warnings = Vec::new();
    if defective_count == 0 {
        warnings.push(format!(
            "{} has no defective images: AUC, F1 and thresholds are undefined; only score summaries are reported",
            category.root.display()
        ));
    }

    let embedder = Embedder::open(runtime, &params.features, &params.scorer)?;
    let (backbone, preprocess) = (&embedder.primary().backbone, &embedder.primary().preprocess);
    let mut paths: Vec<PathBuf> = fit_samples.iter().map(|s| s.path.clone()).collect();
    paths.extend(judged.iter().map(|s| s.path.clone()));
    let feature_started = Instant::now();
    let map_level = review_map_level(&params.features.levels)?;
    let mut kept_maps = LevelMaps::default();
    let (scorer, cache_hits) = match (params.grid, backbone) {
        (Some(grid), Backbone::Hlac(hlac)) => {
            let features = hlac_cell_features(
                hlac,
                preprocess,
                &paths,
                &params.features.levels,
                grid,
                progress,
            )?;
            (Scorer::Cells { features, cells: grid * grid }, 0)
        }
        _ if keep_inputs => {
            let (embeddings, _, cache_hits, maps) =
                embedder.embed_keeping_maps(&paths, OnBadImage::Stop, progress, map_level)?;
            kept_maps = maps;
            (Scorer::Embedded { embeddings, spec: params.scorer.clone() }, cache_hits)
        }
        _ => {
            let (embeddings, _, cache_hits) = embedder.embed(&paths, OnBadImage::Stop, progress)?;
            (Scorer::Embedded { embeddings, spec: params.scorer.clone() }, cache_hits)
        }
    };
    let feature_seconds = feature_started.elapsed().as_secs_f64();
    let fit_images: Vec<usize> = (0..fit_samples.len()).collect();
    let judged_images: Vec<usize> = (fit_samples.len()..paths.len()).collect();

    let gaussian = GaussianParams::new();
    // The review page maps the first run's images with the knn and padim models that scored them.
    let keep_banks = keep_inputs && params.scorer.maps_by_positions();
    let mut fold_banks: Vec<Vec<FoldMapper>> = Vec::new();
    let runs = match params.protocol {
        Protocol::Cv => (0..params.repeats)
            .map(|r| {
                cross_validate(
                    &judged,
                    &scorer,
                    &judged_images,
                    &labels,
                    params.folds,
                    params.seed + r as u64,
                    &gaussian,
                    true,
                    (keep_banks && r == 0).then_some(&mut fold_banks),
                )
            })
            .collect::<Result<Vec<_>>>()?,
        Protocol::Mvtec => vec![fixed_split(
            &judged,
            &scorer,
            (&fit_images, &judged_images),
            &labels,
            params,
            &gaussian,
            keep_banks.then_some(&mut fold_banks),
        )?],
    };
    let spread = if runs.len() > 1 { spreads(&runs) } else { BTreeMap::new() };
    let report = EvalReport {
        version: EVAL_FORMAT_VERSION,
        category: params.category.clone(),
        data_root: params.data_root.clone(),
        protocol: params.protocol,
        backbone: backbone.info().name.clone(),
        precision: backbone.precision().to_string(),
        levels: params.features.levels.clone(),
        input: format!("{} ({:?})", preprocess.size, preprocess.aspect).to_lowercase(),
        scorer: params.scorer.clone(),
        folds: if params.protocol == Protocol::Cv { params.folds } else { 1 },
        images: judged.len(),
        good_images: judged.len() - defective_count,
        defective_images: defective_count,
        warnings,
        runs,
        spread,
        feature_seconds,
        // An ensemble embeds every image once per member (its cache hits count per member).
        extracted_images: paths.len() * embedder.parts(),
        cache_hits,
        seconds: started.elapsed().as_secs_f64(),
    };
    if !keep_inputs {
        return Ok((report, None));
    }
    // The review page maps a knn or padim run, and an ensemble with such members, with their own
    // position scores; every other run with fold Gaussians of pooled features: the scorer's own
    // embeddings when it reads those, else the pooled features (a cache hit after a patch pass).
    let maps_from = match (scorer, &params.scorer) {
        (
            Scorer::Embedded { embeddings: patches @ Embeddings::Patches(_), .. },
            spec @ (ScorerSpec::Knn(_) | ScorerSpec::Padim(_)),
        ) => ReviewMaps::Positions {
            spec: Some(spec.clone()),
            patches,
            fold_mappers: fold_banks,
            inputs: vec![embedder.primary().preprocess.clone()],
        },
        (
            Scorer::Embedded { embeddings: members @ Embeddings::Members(_), .. },
            ScorerSpec::Ensemble(_),
        ) if keep_banks => ReviewMaps::Positions {
            spec: None,
            patches: members,
            fold_mappers: fold_banks,
            inputs: embedder.part_preprocesses(),
        },
        (Scorer::Embedded { embeddings: Embeddings::Pooled(features), .. }, _) => {
            ReviewMaps::Pooled { features, maps: kept_maps }
        }
        _ => {
            let opened = embedder.primary();
            let mut extractor =
                runtime.extractor(&opened.backbone, &opened.preprocess, &params.features.levels)?;
            extractor.map_level = Some(map_level);
            let extraction = extractor.extract(&paths, OnBadImage::Stop, progress)?;
            ReviewMaps::Pooled { features: extraction.features, maps: extraction.maps }
        }
    };
    let opened = embedder.into_primary();
    Ok((
        report,
        Some(EvalInputs { backbone: opened.backbone, preprocess: opened.preprocess, maps_from }),
    ))
}

/// Out-of-fold scores and figures. With `score_training` each fold also scores its own
/// training images (in-sample, for the strip plot); an inner CV that only ranks skips them, as
/// they cost as much as the held-out scores.
/// With `banks`, the knn models that scored each fold are kept there, in fold order.
#[allow(clippy::too_many_arguments)] // the CV's inputs, each used once
pub(crate) fn cross_validate(
    samples: &[&Sample],
    scorer: &Scorer,
    images: &[usize],
    labels: &[bool],
    folds: usize,
    seed: u64,
    gaussian: &GaussianParams,
    score_training: bool,
    mut banks: Option<&mut Vec<Vec<FoldMapper>>>,
) -> Result<RunMetrics> {
    let mut runs = cross_validate_each(
        samples,
        images,
        labels,
        (folds, seed),
        score_training,
        1,
        |training, held_out| {
            let banks = banks.as_deref_mut();
            Ok(vec![if score_training {
                scorer.fit_score_keeping(training, [training, held_out], gaussian, banks)?
            } else {
                let [held] = scorer.fit_score_keeping(training, [held_out], gaussian, banks)?;
                [Vec::new(), held]
            }])
        },
    )?;
    Ok(runs.remove(0))
}

/// Seconds a cross-validation spent fitting and scoring, summed over its folds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct FitScoreSeconds {
    pub fit: f64,
    pub score: f64,
}

/// [`cross_validate`] for several settings that share one fit ([`ScorerSpec::shares_fit`]):
/// each fold fits once, with `variants[0]`, and scores every variant from that fit. One set of
/// figures per variant, each exactly what `cross_validate` gives for that setting alone. Adds
/// the time its fits and its scoring took to `seconds`.
#[allow(clippy::too_many_arguments)] // the CV's inputs, each used once
pub(crate) fn cross_validate_variants(
    samples: &[&Sample],
    embeddings: &Embeddings,
    variants: &[ScorerSpec],
    images: &[usize],
    labels: &[bool],
    (folds, seed): (usize, u64),
    score_training: bool,
    seconds: &mut FitScoreSeconds,
) -> Result<Vec<RunMetrics>> {
    let Some(fitted_as) = variants.first() else {
        return Ok(Vec::new());
    };
    cross_validate_each(
        samples,
        images,
        labels,
        (folds, seed),
        score_training,
        variants.len(),
        |training, held_out| {
            let started = Instant::now();
            let fitted = fitted_as.scorer()?.fit(&embeddings.select(training))?;
            let fitted_at = Instant::now();
            seconds.fit += (fitted_at - started).as_secs_f64();
            let in_sample = if score_training {
                fitted.score_variants(&embeddings.select(training), variants)?
            } else {
                vec![Vec::new(); variants.len()]
            };
            let held = fitted.score_variants(&embeddings.select(held_out), variants)?;
            seconds.score += fitted_at.elapsed().as_secs_f64();
            Ok(in_sample.into_iter().zip(held).map(|(t, h)| [t, h]).collect())
        },
    )
}

/// The folds of a cross-validation: `fit_score(training, held_out)` (image indices) gives, per
/// variant, the in-sample training scores (empty unless `score_training`) and the held-out ones.
fn cross_validate_each(
    samples: &[&Sample],
    images: &[usize],
    labels: &[bool],
    (folds, seed): (usize, u64),
    score_training: bool,
    variants: usize,
    mut fit_score: impl FnMut(&[usize], &[usize]) -> Result<Vec<[Vec<f64>; 2]>>,
) -> Result<Vec<RunMetrics>> {
    let assignment = stratified_folds(labels, folds, seed)?;
    let mut scores = vec![vec![0.0; samples.len()]; variants];
    let mut fold_results: Vec<Vec<FoldResult>> = vec![Vec::new(); variants];
    for fold in 0..folds {
        let training: Vec<usize> =
            (0..samples.len()).filter(|&i| assignment[i] != fold && !labels[i]).collect();
        let held_out: Vec<usize> = (0..samples.len()).filter(|&i| assignment[i] == fold).collect();
        if training.len() < 2 {
            return Err(fold_too_small(fold, training.len()));
        }
        let to_images = |local: &[usize]| local.iter().map(|&i| images[i]).collect::<Vec<_>>();
        let per_variant = fit_score(&to_images(&training), &to_images(&held_out))?;
        let fold_labels: Vec<bool> = held_out.iter().map(|&i| labels[i]).collect();
        for (v, [training_scores, held_scores]) in per_variant.into_iter().enumerate() {
            for (&i, &s) in held_out.iter().zip(held_scores.iter()) {
                scores[v][i] = s;
            }
            debug_assert!(score_training || training_scores.is_empty());
            fold_results[v].push(FoldResult {
                fold,
                training_images: training.len(),
                auc: roc_auc(&held_scores, &fold_labels)?,
                training_scores,
            });
        }
    }
    scores
        .into_iter()
        .zip(fold_results)
        .map(|(scores, fold_results)| {
            judge_folds(samples, scores, labels, &assignment, folds, seed, fold_results)
        })
        .collect()
}

/// The figures of out-of-fold `scores` (one per sample; `assignment` gives each sample's fold):
/// AUC, summaries, the oracle threshold and the honest one (each fold judged at the threshold
/// that is F1-optimal on the other folds' scores).
pub(crate) fn judge_folds(
    samples: &[&Sample],
    scores: Vec<f64>,
    labels: &[bool],
    assignment: &[usize],
    folds: usize,
    seed: u64,
    fold_results: Vec<FoldResult>,
) -> Result<RunMetrics> {
    // Honest: each fold judged at the threshold that is F1-optimal on the other folds' scores.
    let mut honest_confusion = Confusion::default();
    let mut honest_thresholds = Vec::new();
    let mut honest_defined = true;
    for fold in 0..folds {
        let (others, this): (Vec<usize>, Vec<usize>) =
            (0..samples.len()).partition(|&i| assignment[i] != fold);
        let other_scores: Vec<f64> = others.iter().map(|&i| scores[i]).collect();
        let other_labels: Vec<bool> = others.iter().map(|&i| labels[i]).collect();
        match best_f1_threshold(&other_scores, &other_labels)? {
            Some(choice) => {
                for &i in &this {
                    honest_confusion.add(labels[i], scores[i] > choice.threshold);
                }
                honest_thresholds.push(choice.threshold);
            }
            None => honest_defined = false,
        }
    }
    let honest = honest_defined.then(|| {
        ThresholdResult::new(
            "per fold: F1-optimal threshold on the other folds' out-of-fold scores, applied to this fold",
            honest_thresholds,
            honest_confusion,
        )
    });
    let scored = samples
        .iter()
        .zip(&scores)
        .zip(assignment)
        .map(|((s, &score), &fold)| ScoredSample {
            path: s.path.clone(),
            defect_type: s.defect_type.clone(),
            defective: s.is_defective(),
            fold: Some(fold),
            score,
        })
        .collect();
    summarise(seed, scored, labels, honest, fold_results)
}

fn fixed_split(
    samples: &[&Sample],
    scorer: &Scorer,
    (fit_images, judged_images): (&[usize], &[usize]),
    labels: &[bool],
    params: &EvalParams,
    gaussian: &GaussianParams,
    banks: Option<&mut Vec<Vec<FoldMapper>>>,
) -> Result<RunMetrics> {
    if fit_images.len() < 2 {
        return Err(fold_too_small(0, fit_images.len()));
    }
    let held_out = params.fit_threshold.folds_for(fit_images.len())?;
    let ([training_scores, scores], cross_fitted) = scorer.fit_score_cross_fitted(
        fit_images,
        [fit_images, judged_images],
        &held_out,
        gaussian,
        banks,
    )?;
    let label_free = params.fit_threshold.from_cross_fitted(&cross_fitted)?;
    let confusion = Confusion::at(&scores, labels, label_free.value)?;
    let honest = Some(ThresholdResult::new(
        &format!("label-free, as `anodet fit` stores it: {}", label_free.description),
        vec![label_free.value],
        confusion,
    ));
    let scored = samples
        .iter()
        .zip(scores.iter())
        .map(|(s, &score)| ScoredSample {
            path: s.path.clone(),
            defect_type: s.defect_type.clone(),
            defective: s.is_defective(),
            fold: None,
            score,
        })
        .collect();
    let folds = vec![FoldResult {
        fold: 0,
        training_images: fit_images.len(),
        auc: roc_auc(&scores, labels)?,
        training_scores,
    }];
    debug_assert!(samples.iter().all(|s| s.split == Split::Test));
    summarise(params.seed, scored, labels, honest, folds)
}

fn fold_too_small(fold: usize, images: usize) -> Error {
    Error::param(
        "--folds",
        format!(
            "fold {} leaves {images} good images to fit on; use fewer folds or more good images",
            fold + 1
        ),
    )
}

/// Fits on some images and scores others, by image index into the extracted set.
pub(crate) enum Scorer {
    /// The run's scorer on what it reads.
    Embedded { embeddings: Embeddings, spec: ScorerSpec },
    /// HLAC grid mode: `cells` rows per image (grid cells); one Gaussian for all cells; an image
    /// scores as its highest cell. Shared rather than per cell: with a few hundred good images a
    /// per-cell Gaussian of up to 300 dimensions would rest on one sample per image and cell
    /// position, while sharing pools `cells` times more samples and does not assume the parts
    /// are aligned.
    Cells { features: FeatureSet, cells: usize },
}

impl Scorer {
    /// Fits on `training` images, then scores each list of `targets`.
    pub(crate) fn fit_score<const N: usize>(
        &self,
        training: &[usize],
        targets: [&[usize]; N],
        gaussian: &GaussianParams,
    ) -> Result<[Vec<f64>; N]> {
        self.fit_score_keeping(training, targets, gaussian, None)
    }

    /// [`Scorer::fit_score_keeping`], also scoring each training image by a fit on the training
    /// images outside its cross-fitting fold (`held_out`: positions in `training`), as the
    /// label-free threshold needs; the scorer shares work between those fits where it can.
    pub(crate) fn fit_score_cross_fitted<const N: usize>(
        &self,
        training: &[usize],
        targets: [&[usize]; N],
        held_out: &[Vec<usize>],
        gaussian: &GaussianParams,
        banks: Option<&mut Vec<Vec<FoldMapper>>>,
    ) -> Result<([Vec<f64>; N], ndarray::Array1<f64>)> {
        match self {
            Scorer::Embedded { embeddings, spec } => {
                let (fitted, cross_fitted) =
                    spec.scorer()?.fit_cross_fitted(&embeddings.select(training), held_out)?;
                Ok((score_targets(&*fitted, embeddings, targets, banks)?, cross_fitted))
            }
            Scorer::Cells { .. } => {
                let out = self.fit_score_keeping(training, targets, gaussian, banks)?;
                let pick = |local: &[usize]| local.iter().map(|&i| training[i]).collect::<Vec<_>>();
                let cross_fitted = scores_over_folds(training.len(), held_out, |inner, held| {
                    let [scores] = self.fit_score(&pick(inner), [&pick(held)], gaussian)?;
                    Ok(scores)
                })?;
                Ok((out, cross_fitted))
            }
        }
    }

    /// [`Scorer::fit_score`], also pushing the fitted knn models onto `banks` (the review page
    /// maps each fold's images with the models that scored them).
    pub(crate) fn fit_score_keeping<const N: usize>(
        &self,
        training: &[usize],
        targets: [&[usize]; N],
        gaussian: &GaussianParams,
        banks: Option<&mut Vec<Vec<FoldMapper>>>,
    ) -> Result<[Vec<f64>; N]> {
        let mut out: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
        match self {
            Scorer::Embedded { embeddings, spec } => {
                let fitted = spec.scorer()?.fit(&embeddings.select(training))?;
                out = score_targets(&*fitted, embeddings, targets, banks)?;
            }
            Scorer::Cells { features, cells } => {
                let rows = |images: &[usize]| -> Vec<usize> {
                    images.iter().flat_map(|&i| i * cells..(i + 1) * cells).collect()
                };
                let model = MultiLevelGaussian::fit(&features.select(&rows(training)), gaussian)?;
                for (slot, images) in out.iter_mut().zip(targets) {
                    let row_scores = model.score(&features.select(&rows(images)))?.to_vec();
                    *slot = row_scores
                        .chunks(*cells)
                        .map(|c| c.iter().copied().fold(f64::NEG_INFINITY, f64::max))
                        .collect();
                }
            }
        }
        Ok(out)
    }
}

/// Scores each list of `targets` with `fitted`, pushing its knn models onto `banks`.
fn score_targets<const N: usize>(
    fitted: &dyn FittedScorer,
    embeddings: &Embeddings,
    targets: [&[usize]; N],
    banks: Option<&mut Vec<Vec<FoldMapper>>>,
) -> Result<[Vec<f64>; N]> {
    let mut out: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for (slot, images) in out.iter_mut().zip(targets) {
        *slot = fitted.score(&embeddings.select(images))?;
    }
    if let Some(banks) = banks {
        banks.push(FoldMapper::of(fitted));
    }
    Ok(out)
}

fn summarise(
    seed: u64,
    samples: Vec<ScoredSample>,
    labels: &[bool],
    honest: Option<ThresholdResult>,
    folds: Vec<FoldResult>,
) -> Result<RunMetrics> {
    let scores: Vec<f64> = samples.iter().map(|s| s.score).collect();
    let good_scores: Vec<f64> = samples.iter().filter(|s| !s.defective).map(|s| s.score).collect();
    let defective_scores: Vec<f64> =
        samples.iter().filter(|s| s.defective).map(|s| s.score).collect();
    let mut per_type: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for sample in samples.iter().filter(|s| s.defective) {
        per_type.entry(sample.defect_type.clone()).or_default().push(sample.score);
    }
    let mut auc_per_defect_type = BTreeMap::new();
    for (defect_type, type_scores) in &per_type {
        let mut joined = good_scores.clone();
        joined.extend(type_scores);
        let joined_labels: Vec<bool> = (0..joined.len()).map(|i| i >= good_scores.len()).collect();
        auc_per_defect_type.insert(defect_type.clone(), roc_auc(&joined, &joined_labels)?);
    }
    let oracle = best_f1_threshold(&scores, labels)?
        .map(|choice| -> Result<ThresholdResult> {
            Ok(ThresholdResult::new(
                "F1-optimal on all the scores it is judged on (optimistic)",
                vec![choice.threshold],
                Confusion::at(&scores, labels, choice.threshold)?,
            ))
        })
        .transpose()?;
    Ok(RunMetrics {
        seed,
        auc: roc_auc(&scores, labels)?,
        auc_per_defect_type,
        good: Summary::of(&good_scores),
        defective: Summary::of(&defective_scores),
        per_defect_type: per_type.iter().map(|(t, s)| (t.clone(), Summary::of(s))).collect(),
        oracle,
        honest,
        folds,
        roc: roc_curve(&scores, labels)?,
        samples,
    })
}

/// Mean, std, min and max of the headline figures over the repeats.
fn spreads(runs: &[RunMetrics]) -> BTreeMap<String, Spread> {
    type Figure = fn(&RunMetrics) -> Option<f64>;
    let figures: [(&str, Figure); 5] = [
        ("auc", |r| r.auc),
        ("oracle_f1", |r| r.oracle.as_ref().and_then(|t| t.f1)),
        ("honest_f1", |r| r.honest.as_ref().and_then(|t| t.f1)),
        ("honest_precision", |r| r.honest.as_ref().and_then(|t| t.precision)),
        ("honest_recall", |r| r.honest.as_ref().and_then(|t| t.recall)),
    ];
    let mut out = BTreeMap::new();
    for (name, get) in figures {
        let values: Vec<f64> = runs.iter().filter_map(get).collect();
        if values.is_empty() {
            continue;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let variance = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        out.insert(name.to_string(), Spread { mean, std: variance.sqrt(), min, max });
    }
    out
}

//! `tune`: chooses a category's pipeline (backbone, levels, scorer, input size and aspect) by
//! nested cross-validation, and reports what that choice really achieves.
//!
//! - Outer folds: the stratified folds `eval` uses (same allocation and seed). Each outer fold
//!   chooses a candidate from its own training part only: an inner cross-validation there (fit
//!   on inner-train good images, score the inner held-out images) ranks the candidates by inner
//!   out-of-fold AUROC, ties by honest F1, then by speed. The chosen candidate, fitted on the
//!   outer training part's good images, scores the outer fold. The pooled outer scores give the
//!   figure a user should expect on new parts.
//! - Every candidate's own plain cross-validation on all images (exactly `eval`'s) is reported
//!   too; the best of those is optimistic, because it was picked on the images that judge it.
//! - The final choice ranks the candidates by their plain cross-validation on all images; it is
//!   what `tune.json` records for `anodet fit --tuned`.
//! - With fewer real defects than `min_defects`, defects are painted onto held-out good images
//!   ([`crate::data::defects`]) and the choice is made with them; the report says so.

mod estimate;
pub mod grid;
mod probe;

use std::path::{Path, PathBuf};
use std::time::Instant;

use self::estimate::{
    family_seconds, measures_something_new, remaining_seconds, upfront, FamilyCost, FitPlan,
};
use crate::backbone::sidecar::BackboneFiles;
use crate::backbone::Levels;
use crate::data::defects::{paint_files, PaintedImage, SYNTHETIC_KINDS};
use crate::data::image::{Aspect, InputSize};
use crate::data::split::stratified_folds;
use crate::data::{Category, Sample, Split};
use crate::error::{Error, Result};
use crate::features::{FeatureSpec, OnBadImage};
use crate::metrics::Confusion;
pub use crate::model::TunedFrom;
use crate::pipeline::embed::Embedder;
use crate::pipeline::eval::{
    cross_validate_variants, judge_folds, EvalReport, FitScoreSeconds, Protocol, RunMetrics,
    EVAL_FORMAT_VERSION,
};
use crate::pipeline::Runtime;
use crate::progress::{Progress, Silent};
use crate::scorer::{KnnParams, PadimParams, ScorerSpec};

/// Version of `tune.json`.
pub const TUNE_FORMAT_VERSION: u32 = 1;
pub const TUNE_JSON: &str = "tune.json";

/// What every output says about the figures.
pub const HONESTY_NOTE: &str = "the nested (outer-fold) figure is what to expect on new parts; \
     the best single candidate's own CV figure is optimistic (it was chosen on the images that \
     judge it)";

/// One pipeline to try: how features are made and how they are scored.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Candidate {
    pub backbone: String,
    pub levels: Levels,
    /// Input size (`None`: the backbone's own).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<InputSize>,
    pub aspect: Aspect,
    pub scorer: ScorerSpec,
}

impl Candidate {
    pub fn features(&self) -> FeatureSpec {
        FeatureSpec {
            backbone: self.backbone.clone(),
            levels: self.levels.clone(),
            size: self.size,
            aspect: self.aspect,
        }
    }

    /// A short readable name: backbone, levels, scorer and its settings, size, aspect.
    pub fn label(&self) -> String {
        let knn = |p: &KnnParams| format!("knn(coreset {}, border {})", p.coreset, p.border);
        let size = self.size.map_or_else(|| "native".to_string(), |s| s.to_string());
        let aspect = format!("{:?}", self.aspect).to_lowercase();
        match &self.scorer {
            ScorerSpec::Ensemble(params) => {
                let members = params
                    .members
                    .iter()
                    .map(|m| {
                        let scorer = match &m.scorer {
                            ScorerSpec::Knn(p) => knn(p),
                            other => other.name().to_string(),
                        };
                        format!("{} L{} {scorer}", m.backbone, m.levels)
                    })
                    .collect::<Vec<_>>()
                    .join(" + ");
                format!("ensemble[{members}] {size} {aspect}")
            }
            ScorerSpec::Knn(p) => {
                format!("{} L{} {} {size} {aspect}", self.backbone, self.levels, knn(p))
            }
            ScorerSpec::Padim(p) => {
                format!(
                    "{} L{} padim(border {}) {size} {aspect}",
                    self.backbone, self.levels, p.border
                )
            }
            other => format!("{} L{} {} {size} {aspect}", self.backbone, self.levels, other.name()),
        }
    }

    /// The backbones the candidate reads: its own, and its members' for an ensemble.
    pub fn backbones(&self) -> Vec<&str> {
        let mut names = vec![self.backbone.as_str()];
        if let ScorerSpec::Ensemble(params) = &self.scorer {
            for member in &params.members {
                if !names.contains(&member.backbone.as_str()) {
                    names.push(&member.backbone);
                }
            }
        }
        names
    }

    /// The `anodet fit` flags that give this pipeline by hand.
    pub fn fit_flags(&self) -> Vec<String> {
        let mut flags = vec![
            "--backbone".to_string(),
            self.backbone.clone(),
            "--levels".into(),
            self.levels.to_string(),
            "--aspect".into(),
            format!("{:?}", self.aspect).to_lowercase(),
            "--scorer".into(),
            self.scorer.name().into(),
        ];
        // `--coreset` sets knn and every knn member, `--border` also padim and its members (grid
        // files give an ensemble's members one set).
        let scorers: Vec<&ScorerSpec> = match &self.scorer {
            ScorerSpec::Ensemble(params) => {
                for member in &params.members {
                    flags.extend([
                        "--member".into(),
                        format!("{}:{}@{}", member.scorer.name(), member.levels, member.backbone),
                    ]);
                }
                params.members.iter().map(|m| &m.scorer).collect()
            }
            own => vec![own],
        };
        if let Some(p) = scorers.iter().find_map(|s| match s {
            ScorerSpec::Knn(p) => Some(p),
            _ => None,
        }) {
            flags.extend(["--coreset".into(), p.coreset.to_string()]);
        }
        if let Some(border) = scorers.iter().find_map(|s| match s {
            ScorerSpec::Knn(p) => Some(p.border),
            ScorerSpec::Padim(p) => Some(p.border),
            _ => None,
        }) {
            flags.extend(["--border".into(), border.to_string()]);
        }
        if let Some(size) = self.size {
            flags.extend(["--size".into(), size.to_string()]);
        }
        flags
    }
}

/// The backbones the default grid tries, when installed.
pub const DEFAULT_BACKBONES: &[&str] =
    &["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"];

/// How much longer the images' short side must be than a backbone's input side for the default
/// grid to try knn at a larger input: a larger input can only show detail the images have, and
/// below a third more the gain is too small for a candidate's cost.
pub const LARGER_INPUT_MIN_RATIO: f64 = 4.0 / 3.0;
/// The larger input is the images' short side, at most this many times the native side.
pub const LARGER_INPUT_MAX_RATIO: f64 = 1.5;

/// The default grid: for each installed backbone of [`DEFAULT_BACKBONES`] and each aspect
/// (`keep` only where the images are not square), the Gaussian on levels 7, 6-8 and 5-9, and knn
/// on levels 6,7 (its default; wider knn levels multiply the bank's width, level 9 alone adds
/// 1280 values a position) with coreset 0.1 and border 1 or 0, and with squashed input padim on
/// levels 6,7 with border 1 (a Gaussian per position: cheap, and it won on aligned parts; see
/// the README). Where no `size` is given and the
/// images' median short side (`short_side`) is at least [`LARGER_INPUT_MIN_RATIO`] times the
/// backbone's input side, also knn border 1 at a larger input (see [`larger_input`]): knn scores
/// single positions, so finer positions can show small defects, while the pooled Gaussian
/// averages them away (measured: see the README). Also the notes on skipped backbones.
pub fn default_grid(
    models_dir: &Path,
    square: bool,
    size: Option<InputSize>,
    short_side: Option<u32>,
) -> (Vec<Candidate>, Vec<String>) {
    let mut candidates = Vec::new();
    let mut notes = Vec::new();
    let aspects: &[Aspect] =
        if square { &[Aspect::Squash] } else { &[Aspect::Squash, Aspect::Keep] };
    let levels =
        |l: &[u8]| Levels::new(l.to_vec()).unwrap_or_else(|_| unreachable!("valid levels"));
    for &backbone in DEFAULT_BACKBONES {
        if !models_dir.join(format!("{backbone}.pt")).is_file() {
            notes.push(format!(
                "{backbone} is not installed in {} (export it with scripts/export_backbone.py \
                 {backbone}); skipped",
                models_dir.display()
            ));
            continue;
        }
        let larger = match (size, short_side) {
            (None, Some(side)) => match BackboneFiles::locate(backbone, models_dir) {
                Ok(files) => larger_input(files.info.input_size, side),
                Err(e) => {
                    notes.push(format!("{backbone}: no larger-input candidate ({e})"));
                    None
                }
            },
            _ => None,
        };
        for &aspect in aspects {
            let candidate = |levels: Levels, size: Option<InputSize>, scorer: ScorerSpec| {
                Candidate { backbone: backbone.to_string(), levels, size, aspect, scorer }
            };
            for l in [&[7u8][..], &[6, 7, 8], &[5, 6, 7, 8, 9]] {
                candidates.push(candidate(levels(l), size, ScorerSpec::Gaussian));
            }
            for border in [1, 0] {
                let knn = KnnParams { coreset: 0.1, border, seed: 0 };
                candidates.push(candidate(levels(&[6, 7]), size, ScorerSpec::Knn(knn)));
            }
            // One Gaussian per position needs one grid: squashed input only.
            if aspect == Aspect::Squash {
                let padim = ScorerSpec::Padim(PadimParams::default());
                candidates.push(candidate(padim.default_levels(), size, padim));
            }
            if let Some(larger) = larger {
                let knn = KnnParams { coreset: 0.1, border: 1, seed: 0 };
                candidates.push(candidate(levels(&[6, 7]), Some(larger), ScorerSpec::Knn(knn)));
            }
        }
    }
    (candidates, notes)
}

/// The larger square input the default grid tries knn at, for a backbone whose input is
/// `native` (height, width) on images whose median short side is `short_side`: that side, at
/// most [`LARGER_INPUT_MAX_RATIO`] times the native one, when it is at least
/// [`LARGER_INPUT_MIN_RATIO`] times the native one.
pub fn larger_input(native: [u32; 2], short_side: u32) -> Option<InputSize> {
    let native_side = native[0].min(native[1]) as f64;
    if (short_side as f64) < LARGER_INPUT_MIN_RATIO * native_side {
        return None;
    }
    let side = (short_side as f64).min(LARGER_INPUT_MAX_RATIO * native_side).round() as u32;
    Some(InputSize { width: side, height: side })
}

/// The default grid for a category: squash and keep where its images are not all square, knn
/// at a larger input where they are large enough.
pub fn default_candidates(
    data_root: &Path,
    category: &str,
    models_dir: &Path,
    size: Option<InputSize>,
) -> Result<(Vec<Candidate>, Vec<String>)> {
    let category = Category::discover(data_root, category)?;
    let mut square = true;
    let mut short_sides = Vec::new();
    for sample in category.all() {
        let (w, h) = image::image_dimensions(&sample.path)
            .map_err(|e| Error::input(&sample.path, format!("cannot read image: {e}")))?;
        square &= w == h;
        short_sides.push(w.min(h));
    }
    short_sides.sort_unstable();
    let median = short_sides.get(short_sides.len() / 2).copied();
    let (candidates, mut notes) = default_grid(models_dir, square, size, median);
    if square {
        notes.push("images are square: aspect keep would equal squash; not tried".into());
    }
    Ok((candidates, notes))
}

/// Checks that every candidate's backbone is installed; `source` names the grid in errors.
pub fn check_backbones(candidates: &[Candidate], models_dir: &Path, source: &str) -> Result<()> {
    for (i, candidate) in candidates.iter().enumerate() {
        for name in candidate.backbones() {
            check_backbone(i, name, models_dir, source)?;
        }
    }
    Ok(())
}

/// Checks that candidate `i`'s backbone `name` is installed.
fn check_backbone(i: usize, name: &str, models_dir: &Path, source: &str) -> Result<()> {
    if name == "hlac" {
        return Ok(());
    }
    let file = if name.ends_with(".pt") {
        PathBuf::from(name)
    } else {
        models_dir.join(format!("{name}.pt"))
    };
    if !file.is_file() {
        return Err(Error::input(
            source,
            format!(
                "candidate {}: backbone {name} is not installed ({} is missing); export it with \
                 scripts/export_backbone.py {name} (scripts/setup.sh does this for \
                 efficientnet_lite0, _lite1 and _lite2)",
                i + 1,
                file.display()
            ),
        ));
    }
    Ok(())
}

/// Where the images seen by a step came from; for auditing that outer test images never reach
/// an inner fit or ranking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The images an inner cross-validation (fits and inner scoring) of an outer fold can see.
    InnerEvaluation,
    /// The images whose inner results ranked the candidates of an outer fold.
    InnerRanking,
    /// The images an outer fold's chosen candidate was fitted on.
    OuterFit,
}

/// One audited step.
#[derive(Debug, Clone)]
pub struct Seen {
    pub outer_fold: usize,
    pub stage: Stage,
    pub candidate: usize,
    pub paths: Vec<PathBuf>,
}

/// What tune tells its caller while it runs: notes for the user and an audit trail.
pub trait TuneHooks: Sync {
    fn note(&self, _message: &str) {}
    fn seen(&self, _seen: &Seen) {}
}

/// Hooks that do nothing.
pub struct Quiet;

impl TuneHooks for Quiet {}

/// What to tune and how.
#[derive(Debug, Clone)]
pub struct TuneParams {
    pub data_root: PathBuf,
    pub category: String,
    pub candidates: Vec<Candidate>,
    /// The grid file, or "default grid".
    pub grid_source: String,
    pub folds: usize,
    pub inner_folds: usize,
    pub seed: u64,
    /// Time budget in minutes.
    pub budget_minutes: Option<f64>,
    /// Below this many real defects, choose with synthetic ones.
    pub min_defects: usize,
    pub synthetic: bool,
    /// Where painted images are written (part of the outputs).
    pub synthetic_dir: PathBuf,
}

impl TuneParams {
    fn check(&self) -> Result<()> {
        if self.candidates.is_empty() {
            return Err(Error::param("--grid", "no candidates to try"));
        }
        if self.folds < 2 {
            return Err(Error::param("--folds", "nested CV needs at least 2 outer folds"));
        }
        if self.inner_folds < 2 {
            return Err(Error::param("--inner-folds", "the inner CV needs at least 2 folds"));
        }
        if let Some(budget) = self.budget_minutes {
            if !(budget.is_finite() && budget > 0.0) {
                return Err(Error::param(
                    "--budget",
                    format!("{budget} minutes; give a positive number of minutes"),
                ));
            }
        }
        Ok(())
    }
}

/// Mean and population standard deviation.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct MeanSpread {
    pub mean: f64,
    pub std: f64,
}

impl MeanSpread {
    fn of(values: &[f64]) -> Option<MeanSpread> {
        if values.is_empty() {
            return None;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64;
        Some(MeanSpread { mean, std: var.sqrt() })
    }
}

/// One candidate's results.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CandidateResult {
    pub index: usize,
    pub label: String,
    pub candidate: Candidate,
    /// Inner out-of-fold AUROC per outer fold.
    pub inner_auc: Vec<Option<f64>>,
    pub inner_honest_f1: Vec<Option<f64>>,
    pub inner_auc_spread: Option<MeanSpread>,
    pub inner_honest_f1_spread: Option<MeanSpread>,
    /// Its own plain CV on all images (what `eval` reports for it; optimistic for the best).
    pub cv_auc: Option<f64>,
    pub cv_honest_f1: Option<f64>,
    /// The computation that ran (fp32, fp32_frozen, bf16, hlac).
    pub precision: String,
    pub network_seconds: f64,
    pub fit_score_seconds: f64,
}

/// One outer fold: its choice and the choice's figures on the fold.
#[derive(Debug, Clone, serde::Serialize)]
pub struct OuterFold {
    pub fold: usize,
    pub chosen: usize,
    pub chosen_label: String,
    pub training_images: usize,
    pub test_images: usize,
    pub auc: Option<f64>,
    /// At the threshold F1-optimal on the other outer folds' scores (as `eval`'s honest one).
    pub honest_threshold: Option<f64>,
    pub honest_f1: Option<f64>,
    pub confusion: Option<Confusion>,
}

/// How the labelled set was made when real defects were too few.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SyntheticInfo {
    pub statement: String,
    pub real_defects_set_aside: usize,
    pub painted: Vec<PaintedImage>,
    pub kinds: Vec<String>,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// The probe for the up-front estimate.
    pub probe_seconds: f64,
    pub network_seconds: f64,
    /// The cross-validations' work: fits, scoring and judging the folds.
    pub fit_score_seconds: f64,
    /// Of which fitting.
    pub fit_seconds: f64,
    /// Of which scoring.
    pub score_seconds: f64,
    pub seconds: f64,
}

impl std::ops::AddAssign for Timing {
    /// Repeats add up.
    fn add_assign(&mut self, more: Timing) {
        self.probe_seconds += more.probe_seconds;
        self.network_seconds += more.network_seconds;
        self.fit_score_seconds += more.fit_score_seconds;
        self.fit_seconds += more.fit_seconds;
        self.score_seconds += more.score_seconds;
        self.seconds += more.seconds;
    }
}

/// The whole tune.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TuneReport {
    pub version: u32,
    pub category: String,
    pub data_root: PathBuf,
    pub grid: String,
    pub folds: usize,
    pub inner_folds: usize,
    pub seed: u64,
    pub images: usize,
    pub good_images: usize,
    pub defective_images: usize,
    /// Present when the choice was made with painted defects.
    pub synthetic: Option<SyntheticInfo>,
    pub honesty: String,
    pub notes: Vec<String>,
    /// Candidates left out by `--budget`, with the reason.
    pub dropped: Vec<String>,
    pub candidates: Vec<CandidateResult>,
    pub outer_folds: Vec<OuterFold>,
    /// Pooled outer figures: each image scored by its outer fold's chosen candidate.
    pub outer: RunMetrics,
    /// The final choice (ranked on all images), index into `candidates`.
    pub chosen: usize,
    pub chosen_candidate: Candidate,
    pub fit_flags: Vec<String>,
    /// Every image the tune saw, with its label.
    pub images_seen: Vec<(PathBuf, String)>,
    pub timing: Timing,
    /// With `--repeats N`: the whole nested CV once per seed (seed, seed + 1, …); the outputs
    /// above are the first seed's.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub repeats: Vec<Repeat>,
    /// Mean and spread of the nested AUROC and honest F1 over the repeats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_auc: Option<MeanSpread>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeat_honest_f1: Option<MeanSpread>,
}

/// One repeat of the nested CV.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Repeat {
    pub seed: u64,
    pub auc: Option<f64>,
    pub honest_f1: Option<f64>,
    /// The candidate each outer fold chose.
    pub chosen_per_fold: Vec<String>,
    /// The final choice on all images.
    pub chosen: String,
}

/// [`tune`] `repeats` times with seeds `params.seed`, `params.seed + 1`, …: the report of the
/// first seed, with every repeat's nested figures and their mean and spread. Painted defects of
/// later repeats go to a temporary folder (the outputs keep the first seed's).
pub fn tune_repeated(
    params: &TuneParams,
    repeats: usize,
    runtime: &Runtime,
    progress: &dyn Progress,
    hooks: &dyn TuneHooks,
) -> Result<TuneReport> {
    if repeats == 0 {
        return Err(Error::param("--repeats", "must be at least 1"));
    }
    let mut first = tune(params, runtime, progress, hooks)?;
    if repeats == 1 {
        return Ok(first);
    }
    let summary = |report: &TuneReport| Repeat {
        seed: report.seed,
        auc: report.outer.auc,
        honest_f1: report.outer.honest.as_ref().and_then(|h| h.f1),
        chosen_per_fold: report.outer_folds.iter().map(|f| f.chosen_label.clone()).collect(),
        chosen: report.candidates[report.chosen].label.clone(),
    };
    let mut all = vec![summary(&first)];
    for r in 1..repeats {
        hooks.note(&format!("repeat {}/{repeats} (seed {})", r + 1, params.seed + r as u64));
        let scratch = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
        let repeat = TuneParams {
            seed: params.seed + r as u64,
            synthetic_dir: scratch.path().join("synthetic"),
            ..params.clone()
        };
        let report = tune(&repeat, runtime, progress, hooks)?;
        all.push(summary(&report));
        first.timing += report.timing;
    }
    let defined =
        |pick: fn(&Repeat) -> Option<f64>| -> Vec<f64> { all.iter().filter_map(pick).collect() };
    first.repeat_auc = MeanSpread::of(&defined(|r| r.auc));
    first.repeat_honest_f1 = MeanSpread::of(&defined(|r| r.honest_f1));
    first.repeats = all;
    Ok(first)
}

impl TuneReport {
    /// The nested outer scores as an `eval` report (for scores.csv and the plots): each image
    /// scored by the candidate its outer fold chose; named after the final choice.
    pub fn outer_as_eval(&self) -> EvalReport {
        let chosen = &self.candidates[self.chosen];
        EvalReport {
            version: EVAL_FORMAT_VERSION,
            category: self.category.clone(),
            data_root: self.data_root.clone(),
            protocol: Protocol::Cv,
            backbone: chosen.candidate.backbone.clone(),
            precision: chosen.precision.clone(),
            levels: chosen.candidate.levels.clone(),
            input: "tune: per outer fold, its chosen candidate".into(),
            scorer: chosen.candidate.scorer.clone(),
            folds: self.folds,
            images: self.images,
            good_images: self.good_images,
            defective_images: self.defective_images,
            warnings: self.notes.clone(),
            runs: vec![self.outer.clone()],
            spread: Default::default(),
            feature_seconds: self.timing.network_seconds,
            extracted_images: self.images,
            cache_hits: 0,
            seconds: self.timing.seconds,
        }
    }
}

/// AUROC, honest F1, fit-and-score seconds.
type RankKey = (Option<f64>, Option<f64>, f64);

/// Ranking key: AUROC (higher), honest F1 (higher), seconds (lower). Undefined figures rank last.
fn better(a: RankKey, b: RankKey) -> bool {
    let key = |v: Option<f64>| v.unwrap_or(f64::NEG_INFINITY);
    let (a_auc, b_auc) = (key(a.0), key(b.0));
    if (a_auc - b_auc).abs() > 1e-12 {
        return a_auc > b_auc;
    }
    let (a_f1, b_f1) = (key(a.1), key(b.1));
    if (a_f1 - b_f1).abs() > 1e-12 {
        return a_f1 > b_f1;
    }
    a.2 < b.2
}

fn best(keys: &[(usize, RankKey)]) -> usize {
    let mut chosen = keys[0];
    for &entry in &keys[1..] {
        if better(entry.1, chosen.1) {
            chosen = entry;
        }
    }
    chosen.0
}

/// The labelled set the tune works on: real samples, or good samples plus painted defects.
fn labelled_set(
    params: &TuneParams,
    category: &Category,
    notes: &mut Vec<String>,
) -> Result<(Vec<Sample>, Option<SyntheticInfo>)> {
    let all = category.all();
    let real_defects = all.iter().filter(|s| s.is_defective()).count();
    let good: Vec<&Sample> = all.iter().filter(|s| !s.is_defective()).collect();
    let needed_good = 2 * params.folds * params.inner_folds;
    if real_defects >= params.min_defects {
        if good.len() < needed_good {
            return Err(too_few_good(category, params, good.len(), needed_good));
        }
        if real_defects < params.folds * params.inner_folds {
            return Err(Error::param(
                "--folds",
                format!(
                    "{} outer × {} inner folds need at least {} defective images, found \
                     {real_defects}",
                    params.folds,
                    params.inner_folds,
                    params.folds * params.inner_folds
                ),
            ));
        }
        return Ok((all.to_vec(), None));
    }
    if !params.synthetic {
        return Err(Error::input(
            &category.root,
            format!(
                "{real_defects} defective images (fewer than --min-defects {}) and \
                 --no-synthetic: nothing to choose with; add defective images or drop \
                 --no-synthetic",
                params.min_defects
            ),
        ));
    }
    // A third of the good images (at least folds × inner folds) become painted defects; the
    // painted images replace their sources, so no image appears both good and defective.
    let painted_count = (good.len() / 3).max(params.folds * params.inner_folds);
    let kept_good = good.len().saturating_sub(painted_count);
    if kept_good < needed_good {
        return Err(too_few_good(category, params, good.len(), needed_good + painted_count));
    }
    // Spread the painted sources over the whole good list (every third image).
    let step = good.len() as f64 / painted_count as f64;
    let chosen: Vec<usize> = (0..painted_count).map(|k| (k as f64 * step) as usize).collect();
    let sources: Vec<PathBuf> = chosen.iter().map(|&i| good[i].path.clone()).collect();
    let painted = paint_files(&sources, &params.synthetic_dir, params.seed)?;
    let mut samples: Vec<Sample> = good
        .iter()
        .enumerate()
        .filter(|(i, _)| !chosen.contains(i))
        .map(|(_, s)| (*s).clone())
        .collect();
    samples.extend(painted.iter().map(|p| Sample {
        path: p.path.clone(),
        split: Split::Test,
        defect_type: format!("synthetic_{}", p.kind),
        mask: Some(p.mask.clone()),
    }));
    let statement = format!(
        "chosen with synthetic defects: {real_defects} real defective images (fewer than \
         --min-defects {}), so {} good images were painted ({}) and used as the defective class; \
         all figures below are on synthetic defects",
        params.min_defects,
        painted.len(),
        SYNTHETIC_KINDS.join(", ")
    );
    notes.push(statement.clone());
    Ok((
        samples,
        Some(SyntheticInfo {
            statement,
            real_defects_set_aside: real_defects,
            painted,
            kinds: SYNTHETIC_KINDS.iter().map(|k| k.to_string()).collect(),
        }),
    ))
}

fn too_few_good(category: &Category, params: &TuneParams, found: usize, needed: usize) -> Error {
    Error::input(
        &category.root,
        format!(
            "{found} good images; {} outer × {} inner folds need at least {needed} (two good \
             images per inner fit and fold{}); use fewer --folds / --inner-folds or add good images",
            params.folds,
            params.inner_folds,
            if needed > 2 * params.folds * params.inner_folds {
                ", plus the ones painted as synthetic defects"
            } else {
                ""
            }
        ),
    )
}

/// Runs the nested cross-validation and the final choice.
pub fn tune(
    params: &TuneParams,
    runtime: &Runtime,
    progress: &dyn Progress,
    hooks: &dyn TuneHooks,
) -> Result<TuneReport> {
    let started = Instant::now();
    params.check()?;
    check_backbones(&params.candidates, &runtime.models_dir, &params.grid_source)?;
    let category = Category::discover(&params.data_root, &params.category)?;
    let mut notes = Vec::new();
    let (owned, synthetic) = labelled_set(params, &category, &mut notes)?;
    let samples: Vec<&Sample> = owned.iter().collect();
    let labels: Vec<bool> = samples.iter().map(|s| s.is_defective()).collect();
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    let n = samples.len();
    let outer = stratified_folds(&labels, params.folds, params.seed)?;

    let count = params.candidates.len();
    let families = fit_families(&params.candidates);
    let good = labels.iter().filter(|&&defective| !defective).count();
    let plan = FitPlan::nested(n, good, params.folds, params.inner_folds);
    let probed = probe::probe(runtime, &params.candidates, &families, &paths, &plan)?;
    let planned = upfront(&probed.priors);
    let (network, fits) = planned.iter().fold((0.0, 0.0), |(n, f), (net, fit)| (n + net, f + fit));
    hooks.note(&format!(
        "{count} candidates ({}), {n} images, {} outer × {} inner folds: about {:.1} min \
         (network {:.1} min, fits and scoring {:.1} min; probed in {:.1} s), refined as each \
         scorer and backbone is first timed",
        params.grid_source,
        params.folds,
        params.inner_folds,
        (network + fits) / 60.0,
        network / 60.0,
        fits / 60.0,
        probed.seconds
    ));
    // The progress bar counts estimated milliseconds, so that its ETA weighs a knn fold more
    // than a Gaussian one.
    let steps: Vec<ProgressSteps> = probed
        .priors
        .iter()
        .zip(&planned)
        .map(|(prior, &(network, fits))| {
            ProgressSteps::new(network, fits, prior.plain_share, params.folds)
        })
        .collect();
    progress.start(steps.iter().map(ProgressSteps::total).sum(), "tuning");
    let mut results: Vec<CandidateResult> = Vec::new();
    let mut plain: Vec<RunMetrics> = Vec::new();
    let mut inner_paths: Vec<Vec<Vec<PathBuf>>> = Vec::new();
    // Per candidate and outer fold: mean and spread of the inner out-of-fold good scores, the
    // scale on which folds that chose different candidates are pooled.
    let mut inner_good_scales: Vec<Vec<Option<MeanSpread>>> = Vec::new();
    let mut dropped = Vec::new();
    let mut spent: Vec<FamilyCost> = Vec::new();
    let mut stage_seconds = FitScoreSeconds::default();
    for (family_index, family) in families.iter().enumerate() {
        let first = &params.candidates[family[0]];
        let prior = &probed.priors[family_index];
        let estimate = family_seconds(prior, &[], &spent);
        // The first family always runs, so that there is a choice.
        if let (Some(budget), false) = (params.budget_minutes, spent.is_empty()) {
            let elapsed = started.elapsed().as_secs_f64();
            if elapsed + estimate > budget * 60.0 {
                for &index in family {
                    dropped.push(format!(
                        "{} (estimated {:.0} s; {:.0} s of the {budget} min budget left)",
                        params.candidates[index].label(),
                        estimate,
                        (budget * 60.0 - elapsed).max(0.0)
                    ));
                }
                progress.advance(steps[family_index].total());
                continue;
            }
        }
        let family_started = Instant::now();
        let variants: Vec<ScorerSpec> =
            family.iter().map(|&i| params.candidates[i].scorer.clone()).collect();
        for &index in family {
            hooks.note(&format!(
                "candidate {}/{count}: {}",
                index + 1,
                params.candidates[index].label()
            ));
        }
        let numbers = family.iter().map(|i| (i + 1).to_string()).collect::<Vec<_>>().join(", ");
        if family.len() > 1 {
            hooks.note(&format!("candidates {numbers} share one fit and one search per fold"));
        }
        let embedder = Embedder::open(runtime, &first.features(), &first.scorer)?;
        let precision = embedder.primary().backbone.precision().to_string();
        let network_started = Instant::now();
        let (embeddings, _, _) = embedder.embed(&paths, OnBadImage::Stop, &Silent)?;
        let network_seconds = network_started.elapsed().as_secs_f64();
        progress.advance(steps[family_index].network);
        let fits_started = Instant::now();
        let all: Vec<usize> = (0..n).collect();
        let runs = cross_validate_variants(
            &samples,
            &embeddings,
            &variants,
            &all,
            &labels,
            (params.folds, params.seed),
            true,
            &mut stage_seconds,
        )?;
        progress.advance(steps[family_index].plain);
        // Per variant, per outer fold.
        let mut inner_auc = vec![Vec::new(); family.len()];
        let mut inner_f1 = vec![Vec::new(); family.len()];
        let mut seen_paths = vec![Vec::new(); family.len()];
        let mut good_scales = vec![Vec::new(); family.len()];
        for fold in 0..params.folds {
            let training: Vec<usize> = (0..n).filter(|&i| outer[i] != fold).collect();
            // The inner CV gets only the outer training part's embeddings: it cannot see the
            // outer test images.
            let visible = embeddings.select(&training);
            for &index in family {
                hooks.seen(&Seen {
                    outer_fold: fold,
                    stage: Stage::InnerEvaluation,
                    candidate: index,
                    paths: visible.paths().to_vec(),
                });
            }
            let part_samples: Vec<&Sample> = training.iter().map(|&i| samples[i]).collect();
            let part_labels: Vec<bool> = training.iter().map(|&i| labels[i]).collect();
            let local: Vec<usize> = (0..training.len()).collect();
            let inner = cross_validate_variants(
                &part_samples,
                &visible,
                &variants,
                &local,
                &part_labels,
                (params.inner_folds, params.seed),
                false,
                &mut stage_seconds,
            )
            .map_err(|e| inner_error(e, fold))?;
            for (v, inner) in inner.into_iter().enumerate() {
                inner_auc[v].push(inner.auc);
                inner_f1[v].push(inner.honest.as_ref().and_then(|h| h.f1));
                seen_paths[v].push(inner.samples.iter().map(|s| s.path.clone()).collect());
                let good: Vec<f64> =
                    inner.samples.iter().filter(|s| !s.defective).map(|s| s.score).collect();
                good_scales[v]
                    .push(MeanSpread::of(&good).filter(|m| m.std > 0.0 && m.std.is_finite()));
            }
            progress.advance(steps[family_index].inner[fold]);
        }
        // A family's members share their costs equally, so that the totals add up.
        let share = family.len() as f64;
        let family_fit_score_seconds = fits_started.elapsed().as_secs_f64();
        let fit_score_seconds = family_fit_score_seconds / share;
        let defined = |v: &[Option<f64>]| v.iter().flatten().copied().collect::<Vec<_>>();
        for (v, run) in runs.into_iter().enumerate() {
            let candidate = &params.candidates[family[v]];
            results.push(CandidateResult {
                index: results.len(),
                label: candidate.label(),
                candidate: candidate.clone(),
                inner_auc_spread: MeanSpread::of(&defined(&inner_auc[v])),
                inner_honest_f1_spread: MeanSpread::of(&defined(&inner_f1[v])),
                inner_auc: std::mem::take(&mut inner_auc[v]),
                inner_honest_f1: std::mem::take(&mut inner_f1[v]),
                cv_auc: run.auc,
                cv_honest_f1: run.honest.as_ref().and_then(|h| h.f1),
                precision: precision.clone(),
                network_seconds: network_seconds / share,
                fit_score_seconds,
            });
            plain.push(run);
            inner_paths.push(std::mem::take(&mut seen_paths[v]));
            inner_good_scales.push(std::mem::take(&mut good_scales[v]));
        }
        let seconds = family_started.elapsed().as_secs_f64();
        let new_kind = measures_something_new(first, &spent);
        spent.push(FamilyCost {
            lead: first.clone(),
            network_seconds,
            fit_score_seconds: family_fit_score_seconds,
            prior_fit_score_seconds: prior.fit_score_seconds,
        });
        let left = &families[family_index + 1..];
        if new_kind && !left.is_empty() {
            let rest = remaining_seconds(
                &probed.priors[family_index + 1..].iter().collect::<Vec<_>>(),
                &spent,
            );
            let ran =
                if family.len() > 1 { format!("candidates {numbers}") } else { first.label() };
            hooks.note(&format!(
                "{ran} took {seconds:.1} s (estimated {estimate:.1} s); about {:.1} min for the \
                 {} candidate(s) left",
                rest / 60.0,
                left.iter().map(Vec::len).sum::<usize>()
            ));
        }
    }
    progress.finish();
    if !dropped.is_empty() {
        notes.push(format!(
            "--budget dropped {} candidate(s): {}",
            dropped.len(),
            dropped.join("; ")
        ));
    }

    // Each outer fold chooses from its inner results only.
    let choices: Vec<usize> = (0..params.folds)
        .map(|fold| {
            let keys: Vec<(usize, RankKey)> = results
                .iter()
                .map(|r| {
                    (r.index, (r.inner_auc[fold], r.inner_honest_f1[fold], r.fit_score_seconds))
                })
                .collect();
            best(&keys)
        })
        .collect();
    // Scores of different candidates live on different scales (a Mahalanobis distance, a patch
    // distance): when the folds chose differently, each fold's scores are standardised by its
    // candidate's inner out-of-fold good scores (seen by that fold's training part only) before
    // they are pooled for the AUROC and the honest thresholds.
    let mixed = choices.iter().any(|&c| c != choices[0]);
    if mixed {
        notes.push(
            "the outer folds chose different candidates: each fold's scores were standardised by \
             its candidate's inner out-of-fold good-image scores before pooling"
                .into(),
        );
    }
    let mut outer_scores = vec![0.0; n];
    let mut outer_folds = Vec::new();
    let mut fold_results = Vec::new();
    #[allow(clippy::needless_range_loop)] // `fold` also selects outer images, not one vector
    for fold in 0..params.folds {
        // Speed in the ranking: fits and scoring only. The network pass is paid once per
        // backbone and input (the first candidate reading them pays it; the others hit the cache).
        for r in &results {
            hooks.seen(&Seen {
                outer_fold: fold,
                stage: Stage::InnerRanking,
                candidate: r.index,
                paths: inner_paths[r.index][fold].clone(),
            });
        }
        let chosen = choices[fold];
        let run = &plain[chosen];
        let fold_result =
            run.folds.get(fold).cloned().ok_or_else(|| {
                Error::numeric("tune", format!("outer fold {} is missing", fold + 1))
            })?;
        hooks.seen(&Seen {
            outer_fold: fold,
            stage: Stage::OuterFit,
            candidate: chosen,
            paths: (0..n)
                .filter(|&i| outer[i] != fold && !labels[i])
                .map(|i| paths[i].clone())
                .collect(),
        });
        let scale = match (mixed, inner_good_scales[chosen][fold]) {
            (false, _) => MeanSpread { mean: 0.0, std: 1.0 },
            (true, Some(scale)) => scale,
            (true, None) => {
                return Err(Error::numeric(
                    "tune",
                    format!(
                        "outer fold {}: the inner good-image scores of {} have no spread to \
                         standardise by",
                        fold + 1,
                        results[chosen].label
                    ),
                ))
            }
        };
        for i in (0..n).filter(|&i| outer[i] == fold) {
            outer_scores[i] = (run.samples[i].score - scale.mean) / scale.std;
        }
        let mut fold_result = fold_result;
        for score in &mut fold_result.training_scores {
            *score = (*score - scale.mean) / scale.std;
        }
        outer_folds.push(OuterFold {
            fold,
            chosen,
            chosen_label: results[chosen].label.clone(),
            training_images: fold_result.training_images,
            test_images: (0..n).filter(|&i| outer[i] == fold).count(),
            auc: fold_result.auc,
            honest_threshold: None,
            honest_f1: None,
            confusion: None,
        });
        fold_results.push(fold_result);
    }
    let pooled = judge_folds(
        &samples,
        outer_scores.clone(),
        &labels,
        &outer,
        params.folds,
        params.seed,
        fold_results,
    )?;
    if let Some(honest) = &pooled.honest {
        for (fold_report, &threshold) in outer_folds.iter_mut().zip(&honest.thresholds) {
            let members: Vec<usize> = (0..n).filter(|&i| outer[i] == fold_report.fold).collect();
            let scores: Vec<f64> = members.iter().map(|&i| outer_scores[i]).collect();
            let fold_labels: Vec<bool> = members.iter().map(|&i| labels[i]).collect();
            let confusion = Confusion::at(&scores, &fold_labels, threshold)?;
            fold_report.honest_threshold = Some(threshold);
            fold_report.honest_f1 = confusion.f1();
            fold_report.confusion = Some(confusion);
        }
    }

    // The final choice: ranked on all images.
    let keys: Vec<(usize, RankKey)> = results
        .iter()
        .map(|r| (r.index, (r.cv_auc, r.cv_honest_f1, r.fit_score_seconds)))
        .collect();
    let chosen = best(&keys);
    let chosen_candidate = results[chosen].candidate.clone();
    let network_seconds = results.iter().map(|r| r.network_seconds).sum();
    let fit_score_seconds = results.iter().map(|r| r.fit_score_seconds).sum();
    let defective = labels.iter().filter(|&&d| d).count();
    Ok(TuneReport {
        version: TUNE_FORMAT_VERSION,
        category: params.category.clone(),
        data_root: params.data_root.clone(),
        grid: params.grid_source.clone(),
        folds: params.folds,
        inner_folds: params.inner_folds,
        seed: params.seed,
        images: n,
        good_images: n - defective,
        defective_images: defective,
        synthetic,
        honesty: HONESTY_NOTE.to_string(),
        notes,
        dropped,
        fit_flags: chosen_candidate.fit_flags(),
        chosen_candidate,
        chosen,
        candidates: results,
        outer_folds,
        outer: pooled,
        images_seen: samples.iter().map(|s| (s.path.clone(), s.defect_type.clone())).collect(),
        timing: Timing {
            probe_seconds: probed.seconds,
            network_seconds,
            fit_score_seconds,
            fit_seconds: stage_seconds.fit,
            score_seconds: stage_seconds.score,
            seconds: started.elapsed().as_secs_f64(),
        },
        repeats: Vec::new(),
        repeat_auc: None,
        repeat_honest_f1: None,
    })
}

/// One family's progress steps, in estimated milliseconds (at least one each): its network
/// pass, its plain CV and each outer fold's inner CV.
struct ProgressSteps {
    network: u64,
    plain: u64,
    inner: Vec<u64>,
}

impl ProgressSteps {
    fn new(network_seconds: f64, fit_seconds: f64, plain_share: f64, folds: usize) -> Self {
        let milliseconds = |seconds: f64| (seconds * 1000.0).round().max(1.0) as u64;
        let inner_each = fit_seconds * (1.0 - plain_share) / folds as f64;
        ProgressSteps {
            network: milliseconds(network_seconds),
            plain: milliseconds(fit_seconds * plain_share),
            inner: vec![milliseconds(inner_each); folds],
        }
    }

    fn total(&self) -> u64 {
        self.network + self.plain + self.inner.iter().sum::<u64>()
    }
}

/// Candidates grouped so that each group shares one embedding and one fit per fold: the same
/// features and scorer settings that [`ScorerSpec::shares_fit`] (knn candidates that differ only
/// in `border`). Groups in the order of their first member.
fn fit_families(candidates: &[Candidate]) -> Vec<Vec<usize>> {
    let mut families: Vec<Vec<usize>> = Vec::new();
    for (index, candidate) in candidates.iter().enumerate() {
        let shared = families.iter_mut().find(|family| {
            let first = &candidates[family[0]];
            (&first.backbone, &first.levels, first.size, first.aspect)
                == (&candidate.backbone, &candidate.levels, candidate.size, candidate.aspect)
                && first.scorer.shares_fit(&candidate.scorer)
        });
        match shared {
            Some(family) => family.push(index),
            None => families.push(vec![index]),
        }
    }
    families
}

/// Inner-CV errors name the outer fold they happened in.
fn inner_error(error: Error, fold: usize) -> Error {
    match error {
        Error::InvalidParam { name, problem } if name == "--folds" => Error::param(
            "--inner-folds",
            format!("in outer fold {}: {problem}", fold + 1).replace("--folds", "--inner-folds"),
        ),
        other => other,
    }
}

/// What `anodet fit --tuned` reads from `tune.json`.
#[derive(Debug, Clone, serde::Deserialize)]
struct TuneFile {
    version: u32,
    category: String,
    chosen_candidate: Candidate,
    #[serde(default)]
    synthetic: Option<serde_json::Value>,
    outer: OuterAuc,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct OuterAuc {
    auc: Option<f64>,
}

/// Reads the choice of a tune (`path`: its folder or its `tune.json`) for `category`.
pub fn load_choice(path: &Path, category: &str) -> Result<(Candidate, TunedFrom)> {
    let file = if path.is_dir() { path.join(TUNE_JSON) } else { path.to_path_buf() };
    let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
    let tune: TuneFile = serde_json::from_str(&text)
        .map_err(|e| Error::input(&file, format!("not a tune.json: {e}")))?;
    if tune.version != TUNE_FORMAT_VERSION {
        return Err(Error::input(&file, format!("unsupported tune.json version {}", tune.version)));
    }
    if tune.category != category {
        return Err(Error::input(
            &file,
            format!("it tuned category {}, not {category}", tune.category),
        ));
    }
    let from = TunedFrom {
        tune_json: file,
        candidate: tune.chosen_candidate.label(),
        outer_auc: tune.outer.auc,
        synthetic_defects: tune.synthetic.is_some_and(|s| !s.is_null()),
    };
    Ok((tune.chosen_candidate, from))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranking_is_auc_then_f1_then_speed() {
        let keys = [
            (0, (Some(0.9), Some(0.8), 1.0)),
            (1, (Some(0.95), Some(0.5), 9.0)),
            (2, (Some(0.95), Some(0.7), 9.0)),
            (3, (Some(0.95), Some(0.7), 3.0)),
            (4, (None, Some(1.0), 0.1)),
        ];
        assert_eq!(best(&keys), 3);
        assert_eq!(best(&keys[..3]), 2);
        assert_eq!(best(&keys[4..]), 4);
    }

    #[test]
    fn default_grid_covers_the_levers_of_installed_backbones() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("efficientnet_lite0.pt"), b"").unwrap();
        let (square, notes) = default_grid(dir.path(), true, None, None);
        assert_eq!(square.len(), 6);
        assert_eq!(square.iter().filter(|c| matches!(c.scorer, ScorerSpec::Padim(_))).count(), 1);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("efficientnet_lite1"));
        let (strips, _) = default_grid(dir.path(), false, None, None);
        assert_eq!(strips.len(), 11, "padim with squashed input only");
        assert!(strips.iter().any(|c| c.aspect == Aspect::Keep));
        assert!(strips
            .iter()
            .all(|c| !matches!(c.scorer, ScorerSpec::Padim(_)) || c.aspect == Aspect::Squash));
        assert!(check_backbones(&strips, dir.path(), "grid").is_ok());
        let mut missing = strips[0].clone();
        missing.backbone = "efficientnet_lite2".into();
        let message = check_backbones(&[missing], dir.path(), "grid").unwrap_err().to_string();
        assert!(message.contains("candidate 1: backbone efficientnet_lite2 is not installed"));
        assert!(message.contains("export_backbone.py"));
    }

    #[test]
    fn large_images_add_knn_at_a_larger_input() {
        // Lite0's 224 px: 300 px cells qualify (≥ 4/3 × 224 ≈ 299), 256 px tiles do not, and
        // 900 px photos get 1.5 × 224 = 336.
        let native = [224, 224];
        assert_eq!(larger_input(native, 256), None);
        assert_eq!(larger_input(native, 298), None);
        assert_eq!(larger_input(native, 300), Some(InputSize { width: 300, height: 300 }));
        assert_eq!(larger_input(native, 900), Some(InputSize { width: 336, height: 336 }));
        let models = crate::pipeline::default_models_dir();
        if !models.join("efficientnet_lite0.json").is_file() {
            return; // the grid part needs a real sidecar (scripts/setup.sh)
        }
        let dir = tempfile::tempdir().unwrap();
        for ext in ["pt", "json"] {
            let name = format!("efficientnet_lite0.{ext}");
            std::fs::copy(models.join(&name), dir.path().join(&name)).unwrap();
        }
        let (small, _) = default_grid(dir.path(), true, None, Some(256));
        assert_eq!(small.len(), 6);
        let (large, _) = default_grid(dir.path(), false, None, Some(300));
        assert_eq!(large.len(), 13, "one larger knn candidate per aspect");
        let extra: Vec<&Candidate> = large.iter().filter(|c| c.size.is_some()).collect();
        assert_eq!(extra.len(), 2);
        for candidate in extra {
            assert_eq!(candidate.size, Some(InputSize { width: 300, height: 300 }));
            assert!(matches!(&candidate.scorer, ScorerSpec::Knn(p) if p.border == 1));
        }
        // A size given by the user fixes every candidate's: no larger one.
        let fixed = Some(InputSize { width: 256, height: 256 });
        assert_eq!(default_grid(dir.path(), true, fixed, Some(900)).0.len(), 6);
    }

    #[test]
    fn zero_budget_is_refused() {
        let params = TuneParams {
            data_root: "data".into(),
            category: "wood".into(),
            candidates: default_grid(Path::new("/nonexistent"), true, None, None).0,
            grid_source: "default grid".into(),
            folds: 3,
            inner_folds: 3,
            seed: 0,
            budget_minutes: Some(0.0),
            min_defects: 10,
            synthetic: true,
            synthetic_dir: "synthetic".into(),
        };
        // No backbone installed: the grid is empty, which is refused first.
        assert!(params.check().unwrap_err().to_string().contains("no candidates"));
        let mut with_one = params.clone();
        with_one.candidates = vec![Candidate {
            backbone: "hlac".into(),
            levels: Levels::new(vec![7]).unwrap(),
            size: None,
            aspect: Aspect::Squash,
            scorer: ScorerSpec::Gaussian,
        }];
        assert!(with_one.check().unwrap_err().to_string().contains("--budget"));
        with_one.budget_minutes = Some(1.5);
        assert!(with_one.check().is_ok());
    }
}

//! `fit`: learn the good images of a category and write a run folder.

use std::path::PathBuf;
use std::time::Instant;

use crate::backbone::Levels;
use crate::data::Category;
use crate::error::{Error, Result};
use crate::features::FeatureSpec;
use crate::features::OnBadImage;
use crate::model::{self, BackboneRef, LevelSummary, ModelMeta, RunModel, MODEL_FORMAT_VERSION};
use crate::pipeline::embed::Embedder;
use crate::pipeline::Runtime;
use crate::progress::Progress;
use crate::report::atomic::{self, StagingDir};
use crate::scorer::ScorerSpec;
use crate::threshold::{QuantileThreshold, MIN_FIT_IMAGES};

/// What to fit and how.
#[derive(Debug, Clone)]
pub struct FitParams {
    pub data_root: PathBuf,
    pub category: String,
    pub features: FeatureSpec,
    pub scorer: ScorerSpec,
    pub threshold: QuantileThreshold,
    /// Run folder to write (replaced atomically when the fit succeeds).
    pub out: PathBuf,
    /// Where `latest` is recorded.
    pub runs_root: PathBuf,
    /// Set when the pipeline comes from `anodet tune` (recorded in `model.json`).
    pub tuned: Option<model::TunedFrom>,
}

/// The outcome of a fit.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FitReport {
    pub version: u32,
    pub run_dir: PathBuf,
    pub category: String,
    pub data_root: PathBuf,
    pub layout: crate::data::Layout,
    pub images: usize,
    pub backbone: String,
    pub device: String,
    /// The computation that ran: fp32, fp32_frozen, bf16 or hlac.
    pub precision: String,
    pub levels: Levels,
    pub input: String,
    pub scorer: ScorerSpec,
    /// Memory bank entries and megabytes (knn).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank_rows: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bank_mb: Option<f64>,
    pub threshold: crate::threshold::Threshold,
    pub training_scores: ScoreSummary,
    pub seconds: f64,
}

/// Distribution of cross-fitted training scores.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoreSummary {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

pub fn fit(params: &FitParams, runtime: &Runtime, progress: &dyn Progress) -> Result<FitReport> {
    let started = Instant::now();
    params.threshold.check()?;
    let category = Category::discover(&params.data_root, &params.category)?;
    let training: Vec<PathBuf> = category.training_good().iter().map(|s| s.path.clone()).collect();
    if training.len() < MIN_FIT_IMAGES {
        let folder = match category.layout {
            crate::data::Layout::Mvtec => category.root.join("train").join("good"),
            crate::data::Layout::Simple => category.root.join("good"),
        };
        return Err(Error::input(
            folder,
            format!("found {} good images; a fit needs at least {MIN_FIT_IMAGES}", training.len()),
        ));
    }
    // Claim the output folder before the long work, so an unwritable one fails at once.
    let staging = StagingDir::new(&params.out)?;
    let embedder = Embedder::open(runtime, &params.features, &params.scorer)?;
    let (embeddings, _, _) = embedder.embed(&training, OnBadImage::Stop, progress)?;
    let (backbone, preprocess) = (&embedder.primary().backbone, &embedder.primary().preprocess);
    let scorer = params.scorer.scorer()?;
    let held_out = params.threshold.folds_for(embeddings.len())?;
    let (fitted, training_scores) = scorer.fit_cross_fitted(&embeddings, &held_out)?;
    let threshold = params.threshold.from_cross_fitted(&training_scores)?;

    let info = backbone.info();
    let meta = ModelMeta {
        version: MODEL_FORMAT_VERSION,
        anodet_version: env!("CARGO_PKG_VERSION").into(),
        category: params.category.clone(),
        backbone: BackboneRef::of(backbone),
        levels: params.features.levels.clone(),
        preprocess: preprocess.clone(),
        scorer: params.scorer.clone(),
        covariance: "Ledoit-Wolf shrinkage (as sklearn.covariance.LedoitWolf), per level".into(),
        score: params.scorer.description(),
        threshold: threshold.clone(),
        gaussians: fitted
            .gaussians()
            .map(|g| {
                params
                    .features
                    .levels
                    .as_slice()
                    .iter()
                    .zip(g.models())
                    .map(|(&level, m)| LevelSummary {
                        level,
                        dimensions: m.dim(),
                        images: m.count(),
                        shrinkage: m.shrinkage(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        members: embedder.member_records(),
        tuned: params.tuned.clone(),
    };
    let (bank_rows, bank_mb) = match fitted.knn() {
        Some(knn) => (Some(knn.bank_rows()), Some(knn.bank_bytes() as f64 / 1e6)),
        None => (None, None),
    };
    let run = RunModel { meta, scorer: fitted };
    run.save(staging.path())?;

    let sorted = {
        let mut s = training_scores.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    let report = FitReport {
        version: MODEL_FORMAT_VERSION,
        run_dir: params.out.clone(),
        category: params.category.clone(),
        data_root: params.data_root.clone(),
        layout: category.layout,
        images: training.len(),
        backbone: info.name.clone(),
        device: format!("{:?}", backbone.device()).to_lowercase(),
        precision: backbone.precision().to_string(),
        levels: params.features.levels.clone(),
        input: format!("{} ({:?})", preprocess.size, preprocess.aspect).to_lowercase(),
        scorer: params.scorer.clone(),
        bank_rows,
        bank_mb,
        threshold,
        training_scores: ScoreSummary {
            min: sorted[0],
            median: crate::threshold::quantile(&sorted, 0.5)?,
            max: sorted[sorted.len() - 1],
        },
        seconds: started.elapsed().as_secs_f64(),
    };
    atomic::write_json(&staging.path().join(model::FIT_JSON), &report)?;
    let run_dir = staging.commit()?;
    model::remember_latest(&params.runs_root, &run_dir)?;
    Ok(report)
}

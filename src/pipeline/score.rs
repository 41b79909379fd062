//! `score`: score images with a fitted model and judge them against its threshold.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::features::{Extractor, OnBadImage};
use crate::model::RunModel;
use crate::pipeline::Runtime;
use crate::progress::Progress;

/// One scored image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScoredImage {
    pub path: PathBuf,
    pub score: f64,
    pub threshold: f64,
    pub anomalous: bool,
}

/// Scores of the readable images (in input order) and one error per unreadable one.
pub struct ScoreOutcome {
    pub scored: Vec<ScoredImage>,
    pub failures: Vec<Error>,
}

/// Scores `images` with `run` (loaded from `model_dir`); `threshold` overrides the model's.
pub fn score(
    run: &RunModel,
    model_dir: &Path,
    images: &[PathBuf],
    threshold: Option<f64>,
    runtime: &Runtime,
    progress: &dyn Progress,
) -> Result<ScoreOutcome> {
    if let Some(t) = threshold.filter(|t| !t.is_finite()) {
        return Err(Error::param("--threshold", format!("{t} is not a finite number")));
    }
    let backbone = runtime.load_backbone(&run.meta.backbone.name, &run.meta.preprocess, false)?;
    run.check_backbone(model_dir, &backbone)?;
    let extractor = Extractor {
        backbone: &backbone,
        preprocess: run.meta.preprocess.clone(),
        levels: run.meta.levels.clone(),
        batch_size: runtime.batch_size_for(backbone.device()),
        cache: None,
    };
    let extraction = extractor.extract(images, OnBadImage::Skip, progress)?;
    let scores = run.gaussians.score(&extraction.features)?;
    let threshold = threshold.unwrap_or(run.meta.threshold.value);
    let scored = extraction
        .features
        .paths
        .iter()
        .zip(scores.iter())
        .map(|(path, &score)| ScoredImage {
            path: path.clone(),
            score,
            threshold,
            anomalous: score > threshold,
        })
        .collect();
    Ok(ScoreOutcome { scored, failures: extraction.failures })
}

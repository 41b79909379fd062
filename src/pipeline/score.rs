//! `score`: score images with a fitted model and judge them against its threshold.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::features::OnBadImage;
use crate::model::RunModel;
use crate::pipeline::embed::Embedder;
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
    let no_cache = Runtime { cache_root: None, ..runtime.clone() };
    let embedder = Embedder::for_run(&no_cache, run, model_dir)?;
    let (embeddings, failures, _) = embedder.embed(images, OnBadImage::Skip, progress)?;
    let scores = run.scorer.score(&embeddings)?;
    let threshold = threshold.unwrap_or(run.meta.threshold.value);
    let scored = embeddings
        .paths()
        .iter()
        .zip(scores.iter())
        .map(|(path, &score)| ScoredImage {
            path: path.clone(),
            score,
            threshold,
            anomalous: score > threshold,
        })
        .collect();
    Ok(ScoreOutcome { scored, failures })
}

//! `score`: score image files with an opened run and judge them against its threshold.
//! Decoding the next batch (in parallel) overlaps the network's work on the current one.

use std::path::PathBuf;
use std::sync::mpsc;

use rayon::prelude::*;

use crate::error::{Error, Result};
use crate::pipeline::inspector::{Inspector, PreparedInputs};
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

/// Scores `images` with `inspector`, `batch_size` images per forward pass; `threshold`
/// overrides the run's.
pub fn score(
    inspector: &Inspector,
    images: &[PathBuf],
    threshold: Option<f64>,
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<ScoreOutcome> {
    if let Some(t) = threshold.filter(|t| !t.is_finite()) {
        return Err(Error::param("--threshold", format!("{t} is not a finite number")));
    }
    if batch_size == 0 {
        return Err(Error::param("--batch", "must be at least 1"));
    }
    let threshold = threshold.unwrap_or(inspector.threshold());
    let preparation = inspector.preparation().clone();
    progress.start(images.len() as u64, "scoring");
    let (sender, receiver) = mpsc::sync_channel::<Vec<(PathBuf, Result<PreparedInputs>)>>(2);
    let outcome = std::thread::scope(|scope| {
        scope.spawn(move || {
            for chunk in images.chunks(batch_size) {
                let decoded = chunk
                    .par_iter()
                    .map(|path| {
                        let prepared = std::fs::read(path)
                            .map_err(|e| Error::io(path, e))
                            .and_then(|bytes| preparation.prepare_bytes(path, &bytes));
                        (path.clone(), prepared)
                    })
                    .collect();
                if sender.send(decoded).is_err() {
                    break; // the network side stopped (an error): stop decoding
                }
            }
        });
        let mut outcome = ScoreOutcome { scored: Vec::new(), failures: Vec::new() };
        for decoded in receiver {
            let count = decoded.len() as u64;
            let mut paths = Vec::new();
            let mut prepared = Vec::new();
            for (path, result) in decoded {
                match result {
                    Ok(image) => {
                        paths.push(path);
                        prepared.push(image);
                    }
                    Err(error) => outcome.failures.push(error),
                }
            }
            let refs: Vec<&PreparedInputs> = prepared.iter().collect();
            for (path, score) in paths.into_iter().zip(inspector.score(&refs)?) {
                outcome.scored.push(ScoredImage {
                    path,
                    score,
                    threshold,
                    anomalous: score > threshold,
                });
            }
            progress.advance(count);
        }
        Ok(outcome)
    });
    progress.finish();
    outcome
}

/// Scores image files with the run in `model_dir` through an [`Inspector`] (the path `serve`
/// shares), as many images per forward pass as the run's own network takes.
pub fn score_run(
    model_dir: &std::path::Path,
    images: &[PathBuf],
    threshold: Option<f64>,
    runtime: &crate::pipeline::Runtime,
    progress: &dyn Progress,
) -> Result<ScoreOutcome> {
    let inspector = Inspector::load(model_dir, runtime)?;
    let batch_size = runtime.images_per_pass(inspector.backbone(), inspector.preprocess().size);
    score(&inspector, images, threshold, batch_size, progress)
}

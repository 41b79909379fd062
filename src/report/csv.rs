//! `scores.csv`: one row per evaluated image.

use std::path::Path;

use crate::error::{Error, Result};
use crate::pipeline::eval::RunMetrics;
use crate::report::atomic;

/// Writes path, label, defect_type, fold, score and the verdicts at the oracle and the honest
/// threshold (for `cv`, the honest threshold of the image's own fold).
pub fn write_scores(path: &Path, run: &RunMetrics) -> Result<()> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let header =
        ["path", "label", "defect_type", "fold", "score", "predicted_oracle", "predicted_honest"];
    writer.write_record(header).map_err(|e| Error::input(path, e.to_string()))?;
    let oracle = run.oracle.as_ref().and_then(|t| t.thresholds.first().copied());
    for sample in &run.samples {
        let honest = run.honest.as_ref().and_then(|t| match sample.fold {
            Some(fold) => t.thresholds.get(fold).copied(),
            None => t.thresholds.first().copied(),
        });
        let verdict = |threshold: Option<f64>| match threshold {
            Some(t) if sample.score > t => "defective",
            Some(_) => "good",
            None => "",
        };
        writer
            .write_record([
                sample.path.display().to_string(),
                if sample.defective { "defective" } else { "good" }.to_string(),
                sample.defect_type.clone(),
                sample.fold.map(|f| (f + 1).to_string()).unwrap_or_default(),
                format!("{:.6}", sample.score),
                verdict(oracle).to_string(),
                verdict(honest).to_string(),
            ])
            .map_err(|e| Error::input(path, e.to_string()))?;
    }
    let bytes = writer.into_inner().map_err(|e| Error::input(path, e.to_string()))?;
    atomic::write_file(path, &bytes)
}

//! `anodet score`: flags → load the run → pipeline::score → one line per image.

use std::path::PathBuf;

use clap::Args;

use super::{output, progress::Bar, RuntimeArgs};
use anodet::model;
use anodet::pipeline::score::score_run;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Images to score.
    #[arg(required = true, value_name = "IMG")]
    pub images: Vec<PathBuf>,
    /// Run folder written by `anodet fit` (default: the latest fit).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Override the run's threshold.
    #[arg(long)]
    pub threshold: Option<f64>,
    /// JSON lines with keys path, score, threshold, anomalous.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
}

pub fn run(args: ScoreArgs) -> anyhow::Result<i32> {
    let model_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => model::latest(&super::runs_root())?,
    };
    let runtime = args.runtime.runtime();
    let outcome = score_run(&model_dir, &args.images, args.threshold, &runtime, &Bar::new())?;
    for image in &outcome.scored {
        if args.json {
            output::line(&serde_json::to_string(image)?)?;
        } else {
            let verdict = if image.anomalous { "anomalous" } else { "good" };
            output::line(&format!("{}\t{:.4}\t{verdict}", image.path.display(), image.score))?;
        }
    }
    for failure in &outcome.failures {
        output::problem(failure);
    }
    Ok(if !outcome.failures.is_empty() {
        2
    } else if outcome.scored.iter().any(|i| i.anomalous) {
        1
    } else {
        0
    })
}

//! `anodet eval`: flags → EvalParams → pipeline::evaluate → outputs folder + summary.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use super::{output, progress::Bar, CacheArgs, FeatureArgs, RuntimeArgs, ScorerArgs};
use anodet::model::{self, RunModel};
use anodet::pipeline::eval::{evaluate, evaluate_keeping_inputs, EvalParams, Protocol};
use anodet::pipeline::review::{write_eval_review, REPORT_HTML};
use anodet::report::{self, atomic::StagingDir};
use anodet::threshold::QuantileThreshold;

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Category to evaluate (default: the latest fit's).
    #[arg(long)]
    pub category: Option<String>,
    /// Folder holding the categories (default: the latest fit's, else data).
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// cv: stratified k-fold over all labelled images (the seed study); mvtec: fit on
    /// train/good, score test/* (the papers' benchmark).
    #[arg(long, value_enum, default_value = "cv")]
    pub protocol: ProtocolArg,
    /// Number of folds for --protocol cv.
    #[arg(long, default_value_t = 3)]
    pub folds: usize,
    /// Seed of the fold assignment.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Repeat the whole cross-validation with seeds seed, seed+1, … and report mean and spread.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Output folder (default: runs/eval/<category>-<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print metrics.json instead of the summary table.
    #[arg(long)]
    pub json: bool,
    /// Skip report.html (the review page with thumbnails and anomaly maps of the mistakes).
    #[arg(long)]
    pub no_report: bool,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub scorer: ScorerArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProtocolArg {
    Cv,
    Mvtec,
}

pub fn run(args: EvalArgs) -> anyhow::Result<i32> {
    let runs_root = super::runs_root();
    let (category, data_root) = match (&args.category, &args.data) {
        (Some(category), Some(data)) => (category.clone(), data.clone()),
        (category, data) => {
            let latest = latest_fit(&runs_root);
            let category = match (category, &latest) {
                (Some(c), _) => c.clone(),
                (None, Some((c, _))) => c.clone(),
                (None, None) => anyhow::bail!(
                    "--category is required: no fitted model to take it from (runs/latest)"
                ),
            };
            let data = data
                .clone()
                .or_else(|| latest.map(|(_, d)| d))
                .unwrap_or_else(|| PathBuf::from("data"));
            (category, data)
        }
    };
    let scorer = args.scorer.spec(&args.features.backbone)?;
    let params = EvalParams {
        data_root,
        category: category.clone(),
        features: args.features.spec(&scorer),
        scorer,
        protocol: match args.protocol {
            ProtocolArg::Cv => Protocol::Cv,
            ProtocolArg::Mvtec => Protocol::Mvtec,
        },
        folds: args.folds,
        seed: args.seed,
        repeats: args.repeats,
        fit_threshold: QuantileThreshold::default(),
        grid: args.scorer.gaussian_grid(),
    };
    let out = args.out.clone().unwrap_or_else(|| {
        runs_root.join("eval").join(format!("{category}-{}", report::clock::timestamp_now()))
    });
    // Claim the output folder first: an unwritable one fails before the long work.
    let staging = StagingDir::new(&out)?;
    let runtime = args.cache.with(args.runtime.runtime());
    // Without the review page no pooled features are extracted for its maps.
    let (report, inputs) = if args.no_report {
        (evaluate(&params, &runtime, &Bar::new())?, None)
    } else {
        let (report, inputs) = evaluate_keeping_inputs(&params, &runtime, &Bar::new())?;
        (report, Some(inputs))
    };
    if let Some(run) = report.runs.first() {
        report::csv::write_scores(&staging.path().join("scores.csv"), run)?;
    }
    report::atomic::write_json(&staging.path().join("metrics.json"), &report)?;
    report::plots::write_all(staging.path(), &report)?;
    if let Some(inputs) = &inputs {
        let scorer = match params.grid {
            Some(n) => format!(
                "HLAC patch mode: {n}×{n} cells, one shared Gaussian, image score = highest cell"
            ),
            None => format!("{}: {}", params.scorer.name(), params.scorer.description()),
        };
        write_eval_review(&report, inputs, &scorer, staging.path(), &Bar::new())?;
    }
    drop(inputs);
    let out = staging.commit()?;
    for warning in &report.warnings {
        eprintln!("anodet: warning: {warning}");
    }
    if args.json {
        output::line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        for line in report::table::render(&report) {
            output::line(&line)?;
        }
        output::line(&format!("wrote {}", out.display()))?;
        if !args.no_report {
            output::line(&format!("review page {}", out.join(REPORT_HTML).display()))?;
        }
    }
    Ok(0)
}

/// Category and data folder of the latest fit, if any.
fn latest_fit(runs_root: &std::path::Path) -> Option<(String, PathBuf)> {
    let dir = model::latest(runs_root).ok()?;
    let run = RunModel::load(&dir).ok()?;
    let fit: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join(model::FIT_JSON)).ok()?).ok()?;
    let data = fit.get("data_root")?.as_str().map(PathBuf::from)?;
    Some((run.meta.category, data))
}

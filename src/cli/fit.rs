//! `anodet fit`: flags → FitParams → pipeline::fit → summary on stdout.

use std::path::PathBuf;

use clap::Args;

use super::{output, progress::Bar, CacheArgs, FeatureArgs, RuntimeArgs, ScorerArgs};
use anodet::pipeline::default_run_dir;
use anodet::pipeline::fit::{fit, FitParams};
use anodet::threshold::QuantileThreshold;

#[derive(Debug, Args)]
pub struct FitArgs {
    /// Category folder name under --data (MVTec AD or good/bad layout).
    #[arg(long)]
    pub category: String,
    /// Folder holding the categories.
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data: PathBuf,
    /// Run folder to write (default: runs/<category>); replaced only when the fit succeeds.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Share of good images the default threshold should pass, in (0, 1].
    #[arg(long, default_value_t = 0.99)]
    pub threshold_quantile: f64,
    /// Seed of the cross-fitting folds behind the threshold.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fit exactly the pipeline `anodet tune` chose: DIR is the tune's output folder (or its
    /// tune.json). Replaces --backbone, --levels, --scorer and their settings, --size, --aspect.
    #[arg(long, value_name = "DIR", conflicts_with_all = ["backbone", "level", "levels", "size", "aspect", "scorer", "members", "coreset", "border", "grid", "variance"])]
    pub tuned: Option<PathBuf>,
    /// Print the fit report as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub features: FeatureArgs,
    #[command(flatten)]
    pub scorer: ScorerArgs,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

pub fn run(args: FitArgs) -> anyhow::Result<i32> {
    let runs_root = super::runs_root();
    let scorer = args.scorer.spec(&args.features.backbone)?;
    if args.scorer.gaussian_grid().is_some() {
        anyhow::bail!(anodet::Error::param(
            "--grid",
            "with the Gaussian, --grid is eval's HLAC patch mode; fit cells with --scorer subspace",
        ));
    }
    let (features, scorer, tuned) = match &args.tuned {
        Some(dir) => {
            let (candidate, from) = anodet::pipeline::tune::load_choice(dir, &args.category)?;
            (candidate.features(), candidate.scorer.clone(), Some(from))
        }
        None => (args.features.spec(&scorer), scorer, None),
    };
    let params = FitParams {
        data_root: args.data.clone(),
        category: args.category.clone(),
        features,
        scorer,
        tuned,
        threshold: QuantileThreshold {
            quantile: args.threshold_quantile,
            folds: 5,
            seed: args.seed,
        },
        out: args.out.clone().unwrap_or_else(|| default_run_dir(&runs_root, &args.category)),
        runs_root,
    };
    let report = fit(&params, &args.cache.with(args.runtime.runtime()), &Bar::new())?;
    if args.json {
        output::line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        output::line(&format!(
            "fitted {} on {} good images of {} (scorer {}, backbone {}, levels {}, input {}, {} {}) in {:.1} s",
            report.run_dir.display(),
            report.images,
            report.category,
            report.scorer.name(),
            report.backbone,
            report.levels,
            report.input,
            report.device,
            report.precision,
            report.seconds
        ))?;
        if let Some(from) = &params.tuned {
            output::line(&format!(
                "pipeline chosen by tune ({}): {}; its nested AUROC {} is what to expect on new parts{}",
                from.tune_json.display(),
                from.candidate,
                from.outer_auc.map_or_else(|| "(undefined)".into(), |a| format!("{a:.4}")),
                if from.synthetic_defects { " (chosen with synthetic defects)" } else { "" }
            ))?;
        }
        if let (Some(rows), Some(mb)) = (report.bank_rows, report.bank_mb) {
            output::line(&format!("memory bank: {rows} positions, {mb:.1} MB"))?;
        }
        output::line(&format!(
            "threshold {:.4}: {}; cross-fitted training scores {:.3} / {:.3} / {:.3} (min / median / max)",
            report.threshold.value,
            report.threshold.description,
            report.training_scores.min,
            report.training_scores.median,
            report.training_scores.max
        ))?;
    }
    Ok(0)
}

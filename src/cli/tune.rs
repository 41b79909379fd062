//! `anodet tune`: flags → TuneParams → pipeline::tune → outputs folder + summary.

use std::path::PathBuf;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::{output, progress::Bar, CacheArgs, RuntimeArgs};
use anodet::data::image::InputSize;
use anodet::pipeline::review::{write_tune_review, REPORT_HTML};
use anodet::pipeline::tune::{self, grid, TuneHooks, TuneParams, TuneReport, TUNE_JSON};
use anodet::report::{self, atomic::StagingDir};

pub const LONG_HELP: &str = concat!(
    "EXAMPLES:\n  anodet tune --category wood\n  anodet tune --data ../shared/data --category magnetic-tile --budget 15\n  anodet tune --category wood --grid my-grid.toml --folds 5\n  anodet fit --category wood --tuned runs/tune/wood-20260101-120000\n\n",
    "Each outer fold chooses its candidate from its own training part (inner CV); the pooled outer\n",
    "figure is what to expect on new parts. The best candidate's own CV figure is optimistic.\n",
    "With fewer than --min-defects defective images, defects are painted onto held-out good images\n",
    "and the choice is made with them (every output says so).\n\n",
    "OUTPUTS (in --out): tune.json, metrics.json, scores.csv (nested outer scores), roc.png,\n",
    "histogram.png, strip.png, confusion.png, report.html (the review page, with report-files/),\n",
    "synthetic/ (painted images and masks, if any)\n\n",
    "EXIT STATUS:\n  0  tuned\n  2  error; nothing was written"
);

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Category folder name under --data (MVTec AD or good/bad layout).
    #[arg(long)]
    pub category: String,
    /// Folder holding the categories.
    #[arg(long, default_value = "data", value_name = "DIR")]
    pub data: PathBuf,
    /// Candidate list, TOML or JSON (see README, tune); a candidate's scorer is gaussian, knn or
    /// ensemble (members as --member takes them). Default: efficientnet_lite0/1/2 where
    /// installed × {gaussian on levels 7, 6-8, 5-9; knn on 6,7 with border 1 and 0}, aspect
    /// squash (and keep where images are not square), native size; plus knn border 1 at a
    /// larger input where the images' short side is at least 4/3 of the backbone's.
    #[arg(long, value_name = "FILE")]
    pub grid: Option<PathBuf>,
    /// Outer folds (the same stratified allocation as eval).
    #[arg(long, default_value_t = 3)]
    pub folds: usize,
    /// Inner folds, within each outer training part.
    #[arg(long, default_value_t = 3)]
    pub inner_folds: usize,
    /// Seed of the outer and inner fold assignment (and of the synthetic defects).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Repeat the whole nested CV with seeds seed, seed+1, …, and report the mean and spread of
    /// the nested figures (the outputs are the first seed's). Costs N times the fits.
    #[arg(long, default_value_t = 1)]
    pub repeats: usize,
    /// Time budget in minutes: candidates whose estimated time (from a probe before the first
    /// candidate, calibrated by those already run) no longer fits are dropped, and named; the
    /// first candidate always runs. E.g. --budget 15.
    #[arg(long, value_name = "MIN")]
    pub budget: Option<f64>,
    /// Below this many defective images, choose with synthetic defects painted onto held-out
    /// good images.
    #[arg(long, default_value_t = 10)]
    pub min_defects: usize,
    /// Refuse to paint synthetic defects (an error when defective images are too few).
    #[arg(long)]
    pub no_synthetic: bool,
    /// Input size for every candidate, N or WxH (default: each backbone's; overrides a grid
    /// file's sizes).
    #[arg(long, value_parser = super::parse::<InputSize>)]
    pub size: Option<InputSize>,
    /// Output folder (default: runs/tune/<category>-<UTC timestamp>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Print tune.json instead of the summary.
    #[arg(long)]
    pub json: bool,
    /// Do not write the review page (report.html and report-files/).
    #[arg(long)]
    pub no_report: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// The tune's progress bar (with ETA) and its notes, on stderr.
struct TuneBar(ProgressBar);

impl anodet::progress::Progress for TuneBar {
    fn start(&self, total: u64, what: &str) {
        self.0.set_length(total);
        self.0.set_position(0);
        if let Ok(style) = ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} steps, elapsed {elapsed}, eta {eta}",
        ) {
            self.0.set_style(style.progress_chars("=> "));
        }
        self.0.set_message(what.to_string());
    }

    fn advance(&self, done: u64) {
        self.0.inc(done);
    }

    fn finish(&self) {
        self.0.finish_and_clear();
    }
}

impl TuneHooks for TuneBar {
    fn note(&self, message: &str) {
        if self.0.is_hidden() {
            eprintln!("anodet: tune: {message}");
        } else {
            self.0.println(format!("anodet: tune: {message}"));
        }
    }
}

pub fn run(args: TuneArgs) -> anyhow::Result<i32> {
    if args.budget.is_some_and(|b| !(b.is_finite() && b > 0.0)) {
        anyhow::bail!(anodet::Error::param(
            "--budget",
            format!("{} minutes; give a positive number of minutes", args.budget.unwrap_or(0.0)),
        ));
    }
    let runtime = args.cache.with(args.runtime.runtime());
    let (candidates, notes, grid_source) = match &args.grid {
        Some(path) => {
            let mut candidates = grid::read_grid(path)?;
            if let Some(size) = args.size {
                candidates.iter_mut().for_each(|c| c.size = Some(size));
            }
            (candidates, Vec::new(), path.display().to_string())
        }
        None => {
            let (candidates, notes) = tune::default_candidates(
                &args.data,
                &args.category,
                &runtime.models_dir,
                args.size,
            )?;
            (candidates, notes, "default grid".to_string())
        }
    };
    let out = args.out.clone().unwrap_or_else(|| {
        super::runs_root().join("tune").join(format!(
            "{}-{}",
            args.category,
            anodet::report::clock::timestamp_now()
        ))
    });
    let staging = StagingDir::new(&out)?;
    let params = TuneParams {
        data_root: args.data.clone(),
        category: args.category.clone(),
        candidates,
        grid_source,
        folds: args.folds,
        inner_folds: args.inner_folds,
        seed: args.seed,
        budget_minutes: args.budget,
        min_defects: args.min_defects,
        synthetic: !args.no_synthetic,
        synthetic_dir: staging.path().join("synthetic"),
    };
    let bar = TuneBar(ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr()));
    let mut report = tune::tune_repeated(&params, args.repeats, &runtime, &bar, &bar)?;
    // Paths inside the staging folder become paths inside the final folder; the review page
    // reads the painted images where they are now.
    let decode_from: Vec<PathBuf> = report.outer.samples.iter().map(|s| s.path.clone()).collect();
    let staged = staging.path().to_path_buf();
    relocate(&mut report, &staged, &out);
    report.notes.splice(0..0, notes);
    let eval_view = report.outer_as_eval();
    report::atomic::write_json(&staging.path().join(TUNE_JSON), &report)?;
    let metrics = serde_json::json!({
        "version": report.version,
        "category": report.category,
        "honesty": report.honesty,
        "synthetic_defects": report.synthetic.as_ref().map(|s| &s.statement),
        "notes": report.notes,
        "outer_folds": report.outer_folds,
        "outer": report.outer,
        "chosen": report.candidates[report.chosen].label,
        "repeats": report.repeats,
        "repeat_auc": report.repeat_auc,
        "repeat_honest_f1": report.repeat_honest_f1,
    });
    report::atomic::write_json(&staging.path().join("metrics.json"), &metrics)?;
    report::csv::write_scores(&staging.path().join("scores.csv"), &report.outer)?;
    report::plots::write_all(staging.path(), &eval_view)?;
    let page = if args.no_report {
        None
    } else {
        write_tune_review(&report, &decode_from, staging.path(), &Bar::new())?;
        Some(out.join(REPORT_HTML))
    };
    let out = staging.commit()?;
    if args.json {
        output::line(&serde_json::to_string_pretty(&report)?)?;
    } else {
        for line in render(&report, &out) {
            output::line(&line)?;
        }
        if let Some(page) = page {
            output::line(&format!("review page {}", page.display()))?;
        }
    }
    Ok(0)
}

/// Rewrites painted-image paths from the staging folder to the committed one.
fn relocate(report: &mut TuneReport, staged: &std::path::Path, out: &std::path::Path) {
    let fix = |path: &mut PathBuf| {
        if let Ok(rest) = path.strip_prefix(staged) {
            *path = out.join(rest);
        }
    };
    if let Some(synthetic) = &mut report.synthetic {
        for painted in &mut synthetic.painted {
            fix(&mut painted.path);
            fix(&mut painted.mask);
        }
    }
    for (path, _) in &mut report.images_seen {
        fix(path);
    }
    for sample in &mut report.outer.samples {
        fix(&mut sample.path);
    }
}

fn figure(value: Option<f64>) -> String {
    value.map_or_else(|| "-".into(), |v| format!("{v:.4}"))
}

/// The summary table.
fn render(report: &TuneReport, out: &std::path::Path) -> Vec<String> {
    let mut lines = vec![format!(
        "tune {}: {} images ({} good, {} defective), {} candidates ({}), {} outer × {} inner folds",
        report.category,
        report.images,
        report.good_images,
        report.defective_images,
        report.candidates.len(),
        report.grid,
        report.folds,
        report.inner_folds
    )];
    if let Some(synthetic) = &report.synthetic {
        lines.push(format!("SYNTHETIC DEFECTS: {}", synthetic.statement));
    }
    for note in &report.notes {
        lines.push(format!("note: {note}"));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:>3}  {:<52} {:>17} {:>17} {:>9} {:>8}",
        "#", "candidate", "inner AUROC", "inner honest F1", "own CV", "fit s"
    ));
    for c in &report.candidates {
        let spread = |s: Option<tune::MeanSpread>| {
            s.map_or_else(|| "-".into(), |s| format!("{:.4} ± {:.4}", s.mean, s.std))
        };
        lines.push(format!(
            "{:>3}  {:<52} {:>17} {:>17} {:>9} {:>8.1}{}",
            c.index + 1,
            c.label,
            spread(c.inner_auc_spread),
            spread(c.inner_honest_f1_spread),
            figure(c.cv_auc),
            c.fit_score_seconds,
            if c.index == report.chosen { "  ← final choice" } else { "" }
        ));
    }
    lines.push(String::new());
    lines.push(format!(
        "{:>10}  {:<52} {:>8} {:>10} {:>18}",
        "outer fold", "chosen on its training part", "AUROC", "honest F1", "TN FP FN TP"
    ));
    for fold in &report.outer_folds {
        let confusion = fold.confusion.map_or_else(|| "-".into(), |c| c.counts());
        lines.push(format!(
            "{:>10}  {:<52} {:>8} {:>10} {:>18}",
            fold.fold + 1,
            fold.chosen_label,
            figure(fold.auc),
            figure(fold.honest_f1),
            confusion
        ));
    }
    let honest = report.outer.honest.as_ref();
    lines.push(format!(
        "nested (outer) AUROC {}, honest F1 {} (precision {}, recall {}){}",
        figure(report.outer.auc),
        figure(honest.and_then(|h| h.f1)),
        figure(honest.and_then(|h| h.precision)),
        figure(honest.and_then(|h| h.recall)),
        honest.map_or_else(String::new, |h| format!(", confusion {}", h.confusion.named_counts()))
    ));
    if let (Some(auc), Some(f1)) = (report.repeat_auc, report.repeat_honest_f1) {
        lines.push(format!(
            "over {} repeats (seeds {}-{}): nested AUROC {:.4} ± {:.4}, honest F1 {:.4} ± {:.4}",
            report.repeats.len(),
            report.seed,
            report.seed + report.repeats.len() as u64 - 1,
            auc.mean,
            auc.std,
            f1.mean,
            f1.std
        ));
        for repeat in &report.repeats {
            lines.push(format!(
                "  seed {}: nested AUROC {}, honest F1 {}; per fold {}; final {}",
                repeat.seed,
                figure(repeat.auc),
                figure(repeat.honest_f1),
                repeat.chosen_per_fold.join(" | "),
                repeat.chosen
            ));
        }
    }
    lines.push(format!("NOTE: {}", report.honesty));
    let chosen = &report.candidates[report.chosen];
    lines.push(format!(
        "final choice (ranked on all images): {} (own CV AUROC {}, optimistic)",
        chosen.label,
        figure(chosen.cv_auc)
    ));
    lines.push(format!(
        "fit it: anodet fit --category {} --data {} --tuned {}",
        report.category,
        report.data_root.display(),
        out.display()
    ));
    let timing = &report.timing;
    lines.push(format!(
        "time {:.1} s: estimate probe {:.1} s, network {:.1} s, fits and scoring {:.1} s \
         (fits {:.1} s, scoring {:.1} s)",
        timing.seconds,
        timing.probe_seconds,
        timing.network_seconds,
        timing.fit_score_seconds,
        timing.fit_seconds,
        timing.score_seconds
    ));
    lines.push(format!("wrote {}", out.display()));
    lines
}

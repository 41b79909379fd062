//! The compact evaluation summary printed on stdout.

use crate::pipeline::eval::{EvalReport, Protocol, ThresholdResult};

fn figure(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
}

fn threshold_line(label: &str, result: &Option<ThresholdResult>) -> String {
    match result {
        None => format!("{label:<22} n/a (needs defective images)"),
        Some(t) => {
            let c = &t.confusion;
            let shown: Vec<String> = t.thresholds.iter().map(|v| format!("{v:.3}")).collect();
            format!(
                "{label:<22} F1 {}  precision {}  recall {}  {}  threshold {}",
                figure(t.f1),
                figure(t.precision),
                figure(t.recall),
                c.named_counts(),
                shown.join("/")
            )
        }
    }
}

/// The summary, one line per figure.
pub fn render(report: &EvalReport) -> Vec<String> {
    let mut lines = Vec::new();
    let protocol = match report.protocol {
        Protocol::Cv => format!("{}-fold stratified CV", report.folds),
        Protocol::Mvtec => "MVTec protocol (fit train/good, score test)".into(),
    };
    lines.push(format!(
        "{}: {} images ({} good, {} defective), {protocol}, backbone {} ({}), levels {}, input {}",
        report.category,
        report.images,
        report.good_images,
        report.defective_images,
        report.backbone,
        report.precision,
        report.levels,
        report.input
    ));
    for run in &report.runs {
        if report.runs.len() > 1 {
            lines.push(format!("seed {}:", run.seed));
        }
        let per_fold: Vec<String> = run.folds.iter().map(|f| figure(f.auc)).collect();
        lines.push(format!(
            "{:<22} {}  (per fold: {})",
            "image AUC",
            figure(run.auc),
            per_fold.join(", ")
        ));
        let per_type: Vec<String> =
            run.auc_per_defect_type.iter().map(|(t, a)| format!("{t} {}", figure(*a))).collect();
        if !per_type.is_empty() {
            lines.push(format!("{:<22} {}", "AUC per defect type", per_type.join(", ")));
        }
        lines.push(format!(
            "{:<22} good {} / {}, defective {} / {}",
            "mean / median score",
            figure(run.good.mean),
            figure(run.good.median),
            figure(run.defective.mean),
            figure(run.defective.median)
        ));
        lines.push(threshold_line("oracle threshold", &run.oracle));
        let honest_label = match report.protocol {
            Protocol::Cv => "honest (out-of-fold)",
            Protocol::Mvtec => "honest (label-free)",
        };
        lines.push(threshold_line(honest_label, &run.honest));
    }
    for (name, spread) in &report.spread {
        lines.push(format!(
            "{name:<22} mean {:.3} ± {:.3} (min {:.3}, max {:.3}) over {} seeds",
            spread.mean,
            spread.std,
            spread.min,
            spread.max,
            report.runs.len()
        ));
    }
    lines.push(format!(
        "features {:.1} s ({} of {} from cache), total {:.1} s",
        report.feature_seconds, report.cache_hits, report.extracted_images, report.seconds
    ));
    lines
}

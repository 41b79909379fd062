//! The review page of `tune`: the eval page of the nested (outer-fold) scores, with the
//! candidates table and each outer fold's choice put right after the headline figures.

use crate::pipeline::eval::EvalReport;
use crate::pipeline::tune::{MeanSpread, TuneReport};
use crate::report::eval_page::{eval_page, EvalPictures};
use crate::report::html::{Block, Page, Section, Table};

fn figure(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
}

fn spread(value: Option<MeanSpread>) -> String {
    value.map(|s| format!("{:.3} ± {:.3}", s.mean, s.std)).unwrap_or_else(|| "n/a".into())
}

/// The page: the run and the tune's facts, the nested figures, the choice per outer fold and
/// every candidate, then the eval page's plots, mistakes and images (no maps: the folds may
/// have chosen different pipelines).
pub fn tune_page(
    report: &TuneReport,
    outer: &EvalReport,
    pictures: &EvalPictures,
    date: &str,
) -> Page {
    let chosen = &report.candidates[report.chosen];
    let scorer = format!(
        "per outer fold, the candidate it chose on its own training part (below); final choice \
         on all images: {}",
        chosen.label
    );
    let mut page = eval_page(outer, pictures, &scorer, date);
    page.title = format!("anodet tune: {}", report.category);
    // The tune's notes are shown in its own section; backbone and levels differ per candidate.
    page.run.retain(|(label, _)| {
        !matches!(label.as_str(), "backbone" | "levels" | "precision" | "warning")
    });
    page.run
        .push(("grid".into(), format!("{} ({} candidates)", report.grid, report.candidates.len())));
    page.run.push((
        "nested CV".into(),
        format!(
            "{} outer × {} inner folds, seed {}",
            report.folds, report.inner_folds, report.seed
        ),
    ));
    if let Some(synthetic) = &report.synthetic {
        page.run.push(("SYNTHETIC DEFECTS".into(), synthetic.statement.clone()));
    }
    page.run.push((
        "final choice".into(),
        format!("{} — anodet fit {}", chosen.label, report.fit_flags.join(" ")),
    ));

    let mut blocks = vec![Block::Paragraph(format!(
        "Nested (outer-fold) image AUROC {}, honest F1 {}: {}.",
        figure(report.outer.auc),
        figure(report.outer.honest.as_ref().and_then(|h| h.f1)),
        report.honesty
    ))];
    if let (Some(auc), Some(f1)) = (report.repeat_auc, report.repeat_honest_f1) {
        blocks.push(Block::Paragraph(format!(
            "Over {} repeats of the whole nested CV (seeds {}–{}): nested AUROC {:.3} ± {:.3}, \
             honest F1 {:.3} ± {:.3}. The page shows the first seed.",
            report.repeats.len(),
            report.seed,
            report.seed + report.repeats.len() as u64 - 1,
            auc.mean,
            auc.std,
            f1.mean,
            f1.std
        )));
    }
    blocks.extend(report.notes.iter().map(|note| Block::Paragraph(format!("Note: {note}"))));
    blocks.push(Block::Table(Table {
        header: ["outer fold", "chosen on its training part", "AUROC", "honest F1", "TN FP FN TP"]
            .map(String::from)
            .to_vec(),
        rows: report
            .outer_folds
            .iter()
            .map(|fold| {
                vec![
                    (fold.fold + 1).to_string(),
                    fold.chosen_label.clone(),
                    figure(fold.auc),
                    figure(fold.honest_f1),
                    fold.confusion.map_or_else(|| "n/a".into(), |c| c.counts()),
                ]
            })
            .collect(),
    }));
    blocks.push(Block::Table(Table {
        header: [
            "#",
            "candidate",
            "inner AUROC (mean ± std over outer folds)",
            "inner honest F1",
            "own CV AUROC (optimistic)",
            "fit + score s",
        ]
        .map(String::from)
        .to_vec(),
        rows: report
            .candidates
            .iter()
            .map(|c| {
                let mark = if c.index == report.chosen { " (final choice)" } else { "" };
                vec![
                    (c.index + 1).to_string(),
                    format!("{}{mark}", c.label),
                    spread(c.inner_auc_spread),
                    spread(c.inner_honest_f1_spread),
                    figure(c.cv_auc),
                    format!("{:.1}", c.fit_score_seconds),
                ]
            })
            .collect(),
    }));
    if !report.dropped.is_empty() {
        blocks
            .push(Block::Paragraph(format!("Dropped by --budget: {}.", report.dropped.join("; "))));
    }
    let section = Section { id: "tune".into(), heading: "What tune chose".into(), blocks };
    let at = page.sections.len().min(1);
    page.sections.insert(at, section);
    page
}

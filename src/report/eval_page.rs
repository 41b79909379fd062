//! The review page of an evaluation: which images were judged wrongly at the honest threshold,
//! and every image's score, built as an [`html::Page`] from an [`EvalReport`] and the pictures
//! written for it (no computation here beyond sorting and counting).

use std::collections::{BTreeMap, BTreeSet};

use crate::pipeline::eval::{EvalReport, Protocol, RunMetrics, ScoredSample, ThresholdResult};
use crate::report::html::{
    Block, Card, ColourScale, Column, Figure, ImageRow, ImageTable, Page, Section, Table,
};

/// How many of the highest-scoring good and the lowest-scoring defective images get overlays.
pub const EXTREMES: usize = 20;

/// A wrong verdict at the honest threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mistake {
    /// Index into the run's samples.
    pub index: usize,
    /// The honest threshold the image was judged at (its fold's, for `cv`).
    pub threshold: f64,
    /// How far on the wrong side: |score − threshold|.
    pub margin: f64,
}

/// The honest threshold `sample` is judged at (as in `scores.csv`): its fold's for `cv`, the
/// single label-free one for `mvtec`; `None` when undefined (no defective images).
pub fn honest_threshold(run: &RunMetrics, sample: &ScoredSample) -> Option<f64> {
    let honest = run.honest.as_ref()?;
    match sample.fold {
        Some(fold) if honest.thresholds.len() > 1 => honest.thresholds.get(fold).copied(),
        _ => honest.thresholds.first().copied(),
    }
}

/// Missed defects (false negatives) and false alarms (false positives) at the honest
/// threshold, each worst (farthest from the threshold) first.
pub fn mistakes(run: &RunMetrics) -> (Vec<Mistake>, Vec<Mistake>) {
    let mut missed = Vec::new();
    let mut false_alarms = Vec::new();
    for (index, sample) in run.samples.iter().enumerate() {
        let Some(threshold) = honest_threshold(run, sample) else { continue };
        let flagged = sample.score > threshold;
        let mistake = Mistake { index, threshold, margin: (sample.score - threshold).abs() };
        match (sample.defective, flagged) {
            (true, false) => missed.push(mistake),
            (false, true) => false_alarms.push(mistake),
            _ => {}
        }
    }
    for list in [&mut missed, &mut false_alarms] {
        list.sort_by(|a, b| b.margin.total_cmp(&a.margin).then(a.index.cmp(&b.index)));
    }
    (missed, false_alarms)
}

/// The images that get an anomaly-map overlay: the mistakes, the [`EXTREMES`] highest-scoring
/// good and the [`EXTREMES`] lowest-scoring defective images.
pub fn overlay_selection(run: &RunMetrics) -> BTreeSet<usize> {
    let (missed, false_alarms) = mistakes(run);
    let mut chosen: BTreeSet<usize> = missed.iter().chain(&false_alarms).map(|m| m.index).collect();
    let mut by_score: Vec<usize> = (0..run.samples.len()).collect();
    by_score.sort_by(|&a, &b| run.samples[a].score.total_cmp(&run.samples[b].score));
    chosen.extend(by_score.iter().rev().filter(|&&i| !run.samples[i].defective).take(EXTREMES));
    chosen.extend(by_score.iter().filter(|&&i| run.samples[i].defective).take(EXTREMES));
    chosen
}

/// The fixed colour scale of the page's overlays.
#[derive(Debug, Clone)]
pub struct OverlayScale {
    /// Map value drawn transparent (median of the scale images' maps).
    pub low: f32,
    /// Map value drawn red (their 99.9% quantile).
    pub high: f32,
    /// What computed the maps, e.g. "feature map, level 7, each image under its own fold's model".
    pub method: String,
    /// What the scale was measured on.
    pub measured_on: String,
    /// Colour stops (position, RGB) of the overlay colour map.
    pub stops: Vec<(f32, [u8; 3])>,
}

/// Files written for the page, relative to it.
#[derive(Debug, Clone, Default)]
pub struct EvalPictures {
    /// One per sample of the first run (`None`: no thumbnail).
    pub thumbnails: Vec<Option<String>>,
    /// Overlay per sample index.
    pub overlays: BTreeMap<usize, String>,
    pub scale: Option<OverlayScale>,
    /// Plot file and caption.
    pub plots: Vec<(String, String)>,
}

fn figure(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.3}")).unwrap_or_else(|| "n/a".into())
}

fn protocol(report: &EvalReport) -> String {
    match report.protocol {
        Protocol::Cv => format!("{}-fold stratified cross-validation (cv)", report.folds),
        Protocol::Mvtec => "mvtec: fit on train/good, score test/*".into(),
    }
}

/// The run as label/value pairs (shown first on the page).
pub fn run_facts(report: &EvalReport, scorer: &str, date: &str) -> Vec<(String, String)> {
    let seeds: Vec<String> = report.runs.iter().map(|r| r.seed.to_string()).collect();
    vec![
        ("data".into(), report.data_root.display().to_string()),
        ("category".into(), report.category.clone()),
        (
            "images".into(),
            format!(
                "{} ({} good, {} defective)",
                report.images, report.good_images, report.defective_images
            ),
        ),
        ("backbone".into(), format!("{} ({})", report.backbone, report.precision)),
        ("levels".into(), report.levels.to_string()),
        ("input".into(), report.input.clone()),
        ("scorer".into(), scorer.into()),
        ("protocol".into(), protocol(report)),
        ("seed".into(), seeds.join(", ")),
        ("anodet".into(), env!("CARGO_PKG_VERSION").into()),
        ("date".into(), date.into()),
        ("evaluation time".into(), format!("{:.1} s", report.seconds)),
    ]
}

fn threshold_row(name: &str, result: &Option<ThresholdResult>) -> Vec<String> {
    match result {
        None => vec![name.into(), "n/a (needs defective images)".into()],
        Some(t) => {
            let c = &t.confusion;
            let shown: Vec<String> = t.thresholds.iter().map(|v| format!("{v:.3}")).collect();
            vec![
                name.into(),
                figure(t.f1),
                figure(t.precision),
                figure(t.recall),
                c.true_negative.to_string(),
                c.false_positive.to_string(),
                c.false_negative.to_string(),
                c.true_positive.to_string(),
                shown.join(" / "),
            ]
        }
    }
}

fn headline(report: &EvalReport, run: &RunMetrics) -> Section {
    let mut blocks = Vec::new();
    let per_fold: Vec<String> = run.folds.iter().map(|f| figure(f.auc)).collect();
    let auc = match report.protocol {
        Protocol::Cv => {
            format!("Image AUROC {} (per fold: {})", figure(run.auc), per_fold.join(", "))
        }
        Protocol::Mvtec => format!("Image AUROC {}", figure(run.auc)),
    };
    blocks.push(Block::Paragraph(auc));
    let honest_name = match report.protocol {
        Protocol::Cv => "honest: each fold at the other folds' F1-optimal threshold",
        Protocol::Mvtec => "honest: label-free threshold, as `fit` stores it",
    };
    blocks.push(Block::Table(Table {
        header: ["threshold", "F1", "precision", "recall", "TN", "FP", "FN", "TP", "value"]
            .map(String::from)
            .to_vec(),
        rows: vec![
            threshold_row(honest_name, &run.honest),
            threshold_row("oracle: F1-optimal on the judged scores (optimistic)", &run.oracle),
        ],
    }));
    // Per defect type: separability and how many the honest threshold catches.
    let mut caught: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for sample in &run.samples {
        let entry = caught.entry(sample.defect_type.as_str()).or_default();
        entry.1 += 1;
        if honest_threshold(run, sample).is_some_and(|t| sample.score > t) {
            entry.0 += 1;
        }
    }
    let mut rows = Vec::new();
    let flagged = |t: &str| {
        let (hit, all) = caught.get(t).copied().unwrap_or_default();
        if run.honest.is_some() {
            format!("{hit} of {all}")
        } else {
            "n/a".into()
        }
    };
    let good_type = run.samples.iter().find(|s| !s.defective).map(|s| s.defect_type.clone());
    if let Some(good) = &good_type {
        rows.push(vec![
            format!("{good} (no defect)"),
            run.good.count.to_string(),
            "".into(),
            figure(run.good.mean),
            figure(run.good.median),
            flagged(good),
        ]);
    }
    for (defect_type, summary) in &run.per_defect_type {
        rows.push(vec![
            defect_type.clone(),
            summary.count.to_string(),
            figure(run.auc_per_defect_type.get(defect_type).copied().flatten()),
            figure(summary.mean),
            figure(summary.median),
            flagged(defect_type),
        ]);
    }
    blocks.push(Block::Table(Table {
        header: [
            "type",
            "images",
            "AUROC vs good",
            "mean score",
            "median score",
            "flagged at honest threshold",
        ]
        .map(String::from)
        .to_vec(),
        rows,
    }));
    if !report.spread.is_empty() {
        blocks.push(Block::Table(Table {
            header: ["over the repeats", "mean", "std", "min", "max"].map(String::from).to_vec(),
            rows: report
                .spread
                .iter()
                .map(|(name, s)| {
                    vec![
                        name.replace('_', " "),
                        format!("{:.3}", s.mean),
                        format!("{:.3}", s.std),
                        format!("{:.3}", s.min),
                        format!("{:.3}", s.max),
                    ]
                })
                .collect(),
        }));
        blocks.push(Block::Paragraph(format!(
            "The rest of this page shows the first repeat (seed {}).",
            run.seed
        )));
    }
    Section { id: "results".into(), heading: "Results".into(), blocks }
}

fn fold_text(sample: &ScoredSample) -> String {
    sample.fold.map(|f| (f + 1).to_string()).unwrap_or_else(|| "–".into())
}

fn card(run: &RunMetrics, index: usize, title: &str, pictures: &EvalPictures) -> Card {
    let sample = &run.samples[index];
    let threshold = honest_threshold(run, sample);
    let mut figures = Vec::new();
    if let Some(Some(thumbnail)) = pictures.thumbnails.get(index) {
        figures.push(Figure { src: thumbnail.clone(), caption: "image".into(), width: Some(160) });
    }
    if let Some(overlay) = pictures.overlays.get(&index) {
        figures.push(Figure {
            src: overlay.clone(),
            caption: "anomaly map (fixed scale)".into(),
            width: Some(160),
        });
    }
    let mut facts = vec![
        (
            "score".into(),
            match threshold {
                Some(t) => format!("{:.3} vs threshold {t:.3}", sample.score),
                None => format!("{:.3}", sample.score),
            },
        ),
        ("label".into(), if sample.defective { "defective" } else { "good" }.into()),
        ("type".into(), sample.defect_type.clone()),
    ];
    if sample.fold.is_some() {
        facts.push(("fold".into(), fold_text(sample)));
    }
    Card { title: title.into(), path: sample.path.display().to_string(), pictures: figures, facts }
}

fn mistakes_section(run: &RunMetrics, pictures: &EvalPictures) -> Section {
    let mut blocks = Vec::new();
    if run.honest.is_none() {
        blocks.push(Block::Paragraph(
            "No honest threshold: the set has no defective images, so there are no mistakes to show."
                .into(),
        ));
        return Section { id: "mistakes".into(), heading: "Mistakes".into(), blocks };
    }
    let (missed, false_alarms) = mistakes(run);
    blocks.push(Block::Paragraph(format!(
        "At the honest threshold: {} missed defects (false negatives) and {} good parts flagged (false positives), each list worst first (farthest from the threshold).",
        missed.len(),
        false_alarms.len()
    )));
    if let Some(scale) = &pictures.scale {
        blocks.push(scale_block(scale));
    }
    for list in [&missed, &false_alarms] {
        let cards: Vec<Card> = list
            .iter()
            .enumerate()
            .map(|(rank, m)| {
                let sample = &run.samples[m.index];
                let title = if sample.defective {
                    format!(
                        "{}. missed {}: {:.3} below its threshold",
                        rank + 1,
                        sample.defect_type,
                        m.margin
                    )
                } else {
                    format!("{}. false alarm: {:.3} above its threshold", rank + 1, m.margin)
                };
                card(run, m.index, &title, pictures)
            })
            .collect();
        if !cards.is_empty() {
            blocks.push(Block::Cards(cards));
        }
    }
    Section { id: "mistakes".into(), heading: "Mistakes".into(), blocks }
}

fn scale_block(scale: &OverlayScale) -> Block {
    Block::ColourScale(ColourScale {
        stops: scale.stops.clone(),
        low: format!("{:.3} (transparent)", scale.low),
        high: format!("{:.3}", scale.high),
        note: format!(
            "{}; one fixed scale for every overlay on this page: transparent at the median, red at the 99.9% quantile of {}.",
            scale.method, scale.measured_on
        ),
    })
}

/// The correctly judged images nearest to being mistakes: the highest-scoring good and the
/// lowest-scoring defective images that are not mistakes.
fn near_misses_section(run: &RunMetrics, pictures: &EvalPictures) -> Option<Section> {
    let (missed, false_alarms) = mistakes(run);
    let wrong: BTreeSet<usize> = missed.iter().chain(&false_alarms).map(|m| m.index).collect();
    let mut by_score: Vec<usize> = (0..run.samples.len()).collect();
    by_score.sort_by(|&a, &b| run.samples[a].score.total_cmp(&run.samples[b].score));
    let good: Vec<usize> = by_score
        .iter()
        .rev()
        .filter(|&&i| !run.samples[i].defective)
        .take(EXTREMES)
        .filter(|i| !wrong.contains(i))
        .copied()
        .collect();
    let defective: Vec<usize> = by_score
        .iter()
        .filter(|&&i| run.samples[i].defective)
        .take(EXTREMES)
        .filter(|i| !wrong.contains(i))
        .copied()
        .collect();
    if good.is_empty() && defective.is_empty() {
        return None;
    }
    let margin = |&i: &usize| {
        honest_threshold(run, &run.samples[i]).map(|t| (run.samples[i].score - t).abs())
    };
    let (mut good, mut defective) = (good, defective);
    for list in [&mut good, &mut defective] {
        list.sort_by(|a, b| {
            margin(a).unwrap_or(f64::INFINITY).total_cmp(&margin(b).unwrap_or(f64::INFINITY))
        });
    }
    let mut blocks = vec![Block::Paragraph(format!(
        "Judged correctly but close: of the {EXTREMES} highest-scoring good and the {EXTREMES} lowest-scoring defective images, those that are not mistakes, nearest the threshold first."
    ))];
    for list in [defective, good] {
        let cards: Vec<Card> = list
            .iter()
            .map(|&i| {
                let sample = &run.samples[i];
                let margin = honest_threshold(run, sample).map(|t| (sample.score - t).abs());
                let title = match (sample.defective, margin) {
                    (true, Some(m)) => {
                        format!("caught {}: {m:.3} above its threshold", sample.defect_type)
                    }
                    (false, Some(m)) => format!("passed good: {m:.3} below its threshold"),
                    (true, None) => format!("defective ({})", sample.defect_type),
                    (false, None) => "good".into(),
                };
                card(run, i, &title, pictures)
            })
            .collect();
        if !cards.is_empty() {
            blocks.push(Block::Cards(cards));
        }
    }
    Some(Section { id: "near".into(), heading: "Near misses".into(), blocks })
}

fn images_section(run: &RunMetrics, pictures: &EvalPictures) -> Section {
    let (missed, false_alarms) = mistakes(run);
    let missed: BTreeSet<usize> = missed.iter().map(|m| m.index).collect();
    let false_alarms: BTreeSet<usize> = false_alarms.iter().map(|m| m.index).collect();
    let columns = [
        ("path", false),
        ("label", false),
        ("type", false),
        ("fold", true),
        ("score", true),
        ("threshold", true),
        ("verdict", false),
    ]
    .map(|(name, numeric)| Column { name: name.into(), numeric })
    .to_vec();
    let rows = run
        .samples
        .iter()
        .enumerate()
        .map(|(i, sample)| {
            let threshold = honest_threshold(run, sample);
            let verdict = match threshold {
                Some(t) if sample.score > t => "defective",
                Some(_) => "good",
                None => "",
            };
            let mut kinds = vec![if sample.defective { "defective" } else { "good" }.to_string()];
            if missed.contains(&i) {
                kinds.extend(["mistake".into(), "fn".into()]);
            }
            if false_alarms.contains(&i) {
                kinds.extend(["mistake".into(), "fp".into()]);
            }
            if pictures.overlays.contains_key(&i) {
                kinds.push("overlay".into());
            }
            ImageRow {
                thumbnail: pictures.thumbnails.get(i).cloned().flatten(),
                link: pictures.overlays.get(&i).cloned(),
                cells: vec![
                    sample.path.display().to_string(),
                    if sample.defective { "defective" } else { "good" }.into(),
                    sample.defect_type.clone(),
                    fold_text(sample),
                    format!("{:.3}", sample.score),
                    threshold.map(|t| format!("{t:.3}")).unwrap_or_default(),
                    verdict.into(),
                ],
                highlight: missed.contains(&i) || false_alarms.contains(&i),
                kinds,
            }
        })
        .collect();
    let filters = [
        ("mistake", "mistakes"),
        ("fn", "missed defects"),
        ("fp", "false alarms"),
        ("good", "good"),
        ("defective", "defective"),
        ("overlay", "with anomaly map"),
    ]
    .map(|(v, l)| (v.to_string(), l.to_string()))
    .to_vec();
    Section {
        id: "images".into(),
        heading: "Every image".into(),
        blocks: vec![
            Block::Paragraph(
                "Verdicts at the honest threshold; mistakes are red. A thumbnail with an anomaly map links to it.".into(),
            ),
            Block::Images(ImageTable { columns, rows, filters }),
        ],
    }
}

/// The page: run, results, plots, mistakes, near misses, every image.
pub fn eval_page(report: &EvalReport, pictures: &EvalPictures, scorer: &str, date: &str) -> Page {
    let mut page = Page::new(&format!("anodet eval: {}", report.category));
    page.run = run_facts(report, scorer, date);
    for warning in &report.warnings {
        page.run.push(("warning".into(), warning.clone()));
    }
    let Some(run) = report.runs.first() else { return page };
    page.sections.push(headline(report, run));
    if !pictures.plots.is_empty() {
        page.sections.push(Section {
            id: "plots".into(),
            heading: "Plots".into(),
            blocks: vec![Block::Figures(
                pictures
                    .plots
                    .iter()
                    .map(|(src, caption)| Figure {
                        src: src.clone(),
                        caption: caption.clone(),
                        width: Some(640),
                    })
                    .collect(),
            )],
        });
    }
    page.sections.push(mistakes_section(run, pictures));
    if run.honest.is_some() {
        page.sections.extend(near_misses_section(run, pictures));
    }
    page.sections.push(images_section(run, pictures));
    page
}

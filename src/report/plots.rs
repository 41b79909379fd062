//! PNG charts of an evaluation: ROC curve, score histogram, per-fold strip plot, confusion
//! matrices. Drawn with plotters into memory with an embedded font (no system fonts needed),
//! then written atomically.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::error::{Error, Result};
use crate::pipeline::eval::{EvalReport, Protocol, RunMetrics, ThresholdResult};
use crate::report::atomic;
use crate::rng::Rng;
use crate::scorer::ScorerSpec;

const SIZE: (u32, u32) = (900, 640);
const FONT: &str = "sans-serif";
const GOOD: RGBColor = RGBColor(44, 123, 182);
const DEFECTIVE: RGBColor = RGBColor(215, 48, 39);
const TRAINING: RGBColor = RGBColor(120, 120, 120);
const HONEST: RGBColor = RGBColor(255, 150, 0);

/// Makes the embedded font available to plotters (once per process).
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The font is compiled in; registration cannot fail for valid TTF bytes.
        let _ = plotters::style::register_font(
            FONT,
            FontStyle::Normal,
            epaint_default_fonts::UBUNTU_LIGHT,
        );
    });
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>;

/// Renders into an RGB buffer with `draw`, then saves it as PNG at `path`.
fn render(path: &Path, draw: impl FnOnce(&Area) -> std::result::Result<(), String>) -> Result<()> {
    register_font();
    let mut buffer = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let area = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        area.fill(&WHITE).map_err(|e| Error::input(path, format!("cannot draw: {e}")))?;
        draw(&area).map_err(|e| Error::input(path, format!("cannot draw: {e}")))?;
        area.present().map_err(|e| Error::input(path, format!("cannot draw: {e}")))?;
    }
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, buffer)
        .ok_or_else(|| Error::input(path, "plot buffer has the wrong size"))?;
    let mut png = Vec::new();
    image
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .map_err(|e| Error::input(path, format!("cannot encode PNG: {e}")))?;
    atomic::write_file(path, &png)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn title(report: &EvalReport, what: &str) -> String {
    let protocol = match report.protocol {
        Protocol::Cv => format!("{}-fold CV", report.folds),
        Protocol::Mvtec => "MVTec protocol".into(),
    };
    format!("{what} — {}, levels {}, {protocol}", report.category, report.levels)
}

/// Writes roc.png, histogram.png, strip.png and confusion.png for the first run into `dir`.
pub fn write_all(dir: &Path, report: &EvalReport) -> Result<()> {
    let Some(run) = report.runs.first() else { return Ok(()) };
    roc(&dir.join("roc.png"), report, run)?;
    histogram(&dir.join("histogram.png"), report, run)?;
    strip(&dir.join("strip.png"), report, run)?;
    confusion(&dir.join("confusion.png"), report, run)
}

fn roc(path: &Path, report: &EvalReport, run: &RunMetrics) -> Result<()> {
    render(path, |area| {
        let auc = run
            .auc
            .map(|a| format!("AUC {a:.4}"))
            .unwrap_or_else(|| "AUC undefined (one class only)".into());
        let mut chart = ChartBuilder::on(area)
            .caption(title(report, "ROC"), (FONT, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..1f64, 0f64..1.001f64)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("false positive rate (good images flagged)")
            .y_desc("true positive rate (defects caught)")
            .label_style((FONT, 16))
            .draw()
            .map_err(err)?;
        chart
            .draw_series(LineSeries::new([(0.0, 0.0), (1.0, 1.0)], TRAINING.stroke_width(1)))
            .map_err(err)?
            .label("chance")
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], TRAINING));
        let points: Vec<(f64, f64)> =
            run.roc.iter().map(|p| (p.false_positive_rate, p.true_positive_rate)).collect();
        chart
            .draw_series(LineSeries::new(points, DEFECTIVE.stroke_width(3)))
            .map_err(err)?
            .label(auc)
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], DEFECTIVE.stroke_width(3)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::LowerRight)
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    })
}

fn score_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (low, high) =
        values.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| (l.min(v), h.max(v)));
    if !low.is_finite() {
        return (0.0, 1.0);
    }
    let pad = ((high - low) * 0.05).max(1e-6);
    (low - pad, high + pad)
}

fn thresholds_of(result: &Option<ThresholdResult>) -> Vec<f64> {
    result.as_ref().map(|t| t.thresholds.clone()).unwrap_or_default()
}

/// Histogram counts of the good (or defective) samples in `bins` bins of `width` from `low`.
fn bin_counts(run: &RunMetrics, defective: bool, low: f64, width: f64, bins: usize) -> Vec<usize> {
    let mut counts = vec![0; bins];
    for s in run.samples.iter().filter(|s| s.defective == defective) {
        let bin = ((s.score - low) / width).max(0.0) as usize;
        counts[bin.min(bins - 1)] += 1;
    }
    counts
}

/// Top of the count axis: about 10% above the highest bar, a whole number, at least 1.
fn count_axis_top(highest: usize) -> u32 {
    (highest + highest.div_ceil(10)).max(1) as u32
}

/// What the score axis measures, by the run's scorer.
fn score_axis(report: &EvalReport) -> &'static str {
    match report.scorer {
        ScorerSpec::Gaussian => "anomaly score (summed Mahalanobis distance, out-of-fold)",
        ScorerSpec::Knn(_) => "anomaly score (patch distance to the memory bank, out-of-fold)",
        ScorerSpec::Padim(_) => {
            "anomaly score (worst position's Mahalanobis distance, out-of-fold)"
        }
        ScorerSpec::Subspace(_) => {
            "anomaly score (residual outside the good subspace, out-of-fold)"
        }
        ScorerSpec::Ensemble(_) => "anomaly score (sum of standardised member scores, out-of-fold)",
    }
}

fn histogram(path: &Path, report: &EvalReport, run: &RunMetrics) -> Result<()> {
    let oracle = thresholds_of(&run.oracle);
    let honest = thresholds_of(&run.honest);
    let (low, high) = score_range(
        run.samples
            .iter()
            .map(|s| s.score)
            .chain(oracle.iter().copied())
            .chain(honest.iter().copied()),
    );
    let bins = 40usize;
    let width = (high - low) / bins as f64;
    let (good, bad) =
        (bin_counts(run, false, low, width, bins), bin_counts(run, true, low, width, bins));
    let top = count_axis_top(good.iter().chain(&bad).copied().max().unwrap_or(0));
    render(path, |area| {
        // Counts are whole numbers: an integer axis gives labels "10", not "10.0".
        let mut chart = ChartBuilder::on(area)
            .caption(title(report, "Score histogram"), (FONT, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(low..high, 0u32..top)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(score_axis(report))
            .y_desc("images")
            .y_labels((top as usize + 1).min(11))
            .label_style((FONT, 16))
            .draw()
            .map_err(err)?;
        for (counts, colour, label) in [(&good, GOOD, "good"), (&bad, DEFECTIVE, "defective")] {
            let total: usize = counts.iter().sum();
            chart
                .draw_series(counts.iter().enumerate().filter(|(_, &c)| c > 0).map(|(i, &c)| {
                    let x0 = low + i as f64 * width;
                    Rectangle::new([(x0, 0), (x0 + width, c as u32)], colour.mix(0.55).filled())
                }))
                .map_err(err)?
                .label(format!("{label} ({total})"))
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 16, y + 6)], colour.mix(0.55).filled())
                });
        }
        // The honest lines are wide and drawn first, the oracle line thin and on top, so the
        // oracle line stays visible where an honest threshold coincides with it.
        for (values, colour, width, label) in [
            (&honest, HONEST, 6, "honest threshold(s)"),
            (&oracle, BLACK, 2, "oracle F1 threshold"),
        ] {
            if values.is_empty() {
                continue;
            }
            let lines: Vec<PathElement<(f64, u32)>> = values
                .iter()
                .map(|&t| PathElement::new([(t, 0), (t, top)], colour.stroke_width(width)))
                .collect();
            chart.draw_series(lines).map_err(err)?.label(label).legend(move |(x, y)| {
                PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(width))
            });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FONT, 18))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    })
}

fn strip(path: &Path, report: &EvalReport, run: &RunMetrics) -> Result<()> {
    let folds = run.folds.len().max(1);
    let oracle = thresholds_of(&run.oracle);
    let all_scores = run
        .samples
        .iter()
        .map(|s| s.score)
        .chain(run.folds.iter().flat_map(|f| f.training_scores.iter().copied()))
        .chain(oracle.iter().copied());
    let (low, high) = score_range(all_scores);
    let mut rng = Rng::new(7);
    render(path, |area| {
        let mut chart = ChartBuilder::on(area)
            .caption(title(report, "Scores per fold"), (FONT, 24))
            .margin(20)
            .x_label_area_size(50)
            .y_label_area_size(60)
            .build_cartesian_2d(-0.5f64..(folds as f64 * 4.0 - 1.5), low..high)
            .map_err(err)?;
        let fold_label = move |x: &f64| {
            let column = (x + 0.5).floor() as i64;
            if column.rem_euclid(4) == 1 {
                format!("fold {}", column / 4 + 1)
            } else {
                String::new()
            }
        };
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(folds * 4)
            .x_label_formatter(&fold_label)
            .y_desc("anomaly score")
            .x_desc("per fold: training good (in-sample) | held-out good | held-out defective")
            .label_style((FONT, 16))
            .draw()
            .map_err(err)?;
        type Group<'a> = (Vec<(f64, f64)>, RGBColor, &'a str);
        let mut groups: [Group; 3] = [
            (Vec::new(), TRAINING, "training good (in-sample)"),
            (Vec::new(), GOOD, "held-out good"),
            (Vec::new(), DEFECTIVE, "held-out defective"),
        ];
        for fold in &run.folds {
            for &score in &fold.training_scores {
                groups[0].0.push((fold.fold as f64 * 4.0 + rng.range(-0.3, 0.3), score));
            }
        }
        for sample in &run.samples {
            let base = sample.fold.unwrap_or(0) as f64 * 4.0;
            let column = if sample.defective { 2.0 } else { 1.0 };
            groups[column as usize].0.push((base + column + rng.range(-0.3, 0.3), sample.score));
        }
        for (points, colour, label) in groups {
            chart
                .draw_series(
                    points.into_iter().map(|p| Circle::new(p, 3, colour.mix(0.7).filled())),
                )
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| Circle::new((x + 8, y), 5, colour.filled()));
        }
        if let Some(&t) = oracle.first() {
            chart
                .draw_series(LineSeries::new(
                    [(-0.5, t), (folds as f64 * 4.0 - 1.5, t)],
                    BLACK.stroke_width(2),
                ))
                .map_err(err)?
                .label("oracle F1 threshold")
                .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FONT, 16))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)
    })
}

fn confusion(path: &Path, report: &EvalReport, run: &RunMetrics) -> Result<()> {
    render(path, |area| {
        let (caption, body) = area.split_vertically(60);
        caption
            .draw_text(
                &title(report, "Confusion matrices"),
                &(FONT, 24).into_text_style(&caption),
                (20, 20),
            )
            .map_err(err)?;
        let panels = body.split_evenly((1, 2));
        let honest_name = match report.protocol {
            Protocol::Cv => "honest (out-of-fold threshold)",
            Protocol::Mvtec => "honest (label-free threshold)",
        };
        for (panel, (name, result)) in
            panels.iter().zip([("oracle F1 threshold", &run.oracle), (honest_name, &run.honest)])
        {
            draw_matrix(panel, name, result).map_err(err)?;
        }
        Ok(())
    })
}

fn draw_matrix(
    panel: &Area,
    name: &str,
    result: &Option<ThresholdResult>,
) -> std::result::Result<(), String> {
    let text = |size: u32| (FONT, size).into_text_style(panel);
    panel.draw_text(name, &text(20), (30, 10)).map_err(err)?;
    let Some(result) = result else {
        return panel.draw_text("undefined: no defective images", &text(18), (30, 60)).map_err(err);
    };
    let c = &result.confusion;
    let cells = [
        [(c.true_negative, "TN"), (c.false_positive, "FP")],
        [(c.false_negative, "FN"), (c.true_positive, "TP")],
    ];
    let total =
        (c.true_negative + c.false_positive + c.false_negative + c.true_positive).max(1) as f64;
    let (x0, y0, side) = (120, 80, 140);
    for (row, cells_row) in cells.iter().enumerate() {
        for (col, (count, label)) in cells_row.iter().enumerate() {
            let shade = 1.0 - 0.8 * (*count as f64 / total).sqrt();
            let correct = row == col;
            let base = if correct { GOOD } else { DEFECTIVE };
            let colour = RGBColor(
                (255.0 - (255.0 - base.0 as f64) * (1.0 - shade)) as u8,
                (255.0 - (255.0 - base.1 as f64) * (1.0 - shade)) as u8,
                (255.0 - (255.0 - base.2 as f64) * (1.0 - shade)) as u8,
            );
            let (x, y) = (x0 + col as i32 * side, y0 + row as i32 * side);
            panel
                .draw(&Rectangle::new([(x, y), (x + side, y + side)], colour.filled()))
                .map_err(err)?;
            panel.draw(&Rectangle::new([(x, y), (x + side, y + side)], BLACK)).map_err(err)?;
            panel.draw_text(&count.to_string(), &text(30), (x + 50, y + 45)).map_err(err)?;
            panel.draw_text(label, &text(16), (x + 8, y + 8)).map_err(err)?;
        }
    }
    panel.draw_text("predicted good", &text(16), (x0 + 20, y0 - 22)).map_err(err)?;
    panel.draw_text("predicted defective", &text(16), (x0 + side + 5, y0 - 22)).map_err(err)?;
    panel.draw_text("good", &text(16), (x0 - 60, y0 + 60)).map_err(err)?;
    panel.draw_text("defective", &text(16), (x0 - 100, y0 + side + 60)).map_err(err)?;
    let figures = format!(
        "F1 {}   precision {}   recall {}",
        result.f1.map(|v| format!("{v:.3}")).unwrap_or("n/a".into()),
        result.precision.map(|v| format!("{v:.3}")).unwrap_or("n/a".into()),
        result.recall.map(|v| format!("{v:.3}")).unwrap_or("n/a".into())
    );
    panel.draw_text(&figures, &text(18), (30, y0 + 2 * side + 30)).map_err(err)?;
    let shown: Vec<String> = result.thresholds.iter().map(|t| format!("{t:.2}")).collect();
    panel
        .draw_text(&format!("threshold {}", shown.join(" / ")), &text(16), (30, y0 + 2 * side + 60))
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::Levels;
    use crate::metrics::{Confusion, Summary};
    use crate::pipeline::eval::{ScoredSample, EVAL_FORMAT_VERSION};
    use std::collections::BTreeMap;

    /// 30 good and 10 defective images, both thresholds at 20.
    fn report() -> EvalReport {
        let samples: Vec<ScoredSample> = (0..40)
            .map(|i| ScoredSample {
                path: format!("{i}.png").into(),
                defect_type: if i < 30 { "good" } else { "hole" }.into(),
                defective: i >= 30,
                fold: Some(i % 3),
                score: if i < 30 { 1.0 + i as f64 * 0.7 } else { 18.0 + i as f64 * 0.5 },
            })
            .collect();
        let threshold = ThresholdResult {
            method: "test".into(),
            thresholds: vec![20.0],
            confusion: Confusion::default(),
            precision: None,
            recall: None,
            f1: None,
        };
        let run = RunMetrics {
            seed: 0,
            auc: Some(0.9),
            auc_per_defect_type: BTreeMap::new(),
            good: Summary::of(&[1.0]),
            defective: Summary::of(&[2.0]),
            per_defect_type: BTreeMap::new(),
            oracle: Some(threshold.clone()),
            honest: Some(threshold),
            folds: Vec::new(),
            samples,
            roc: Vec::new(),
        };
        EvalReport {
            version: EVAL_FORMAT_VERSION,
            category: "test".into(),
            data_root: "data".into(),
            protocol: Protocol::Cv,
            backbone: "b".into(),
            precision: "fp32".into(),
            levels: Levels::new(vec![7]).unwrap(),
            input: "224".into(),
            scorer: crate::scorer::ScorerSpec::Gaussian,
            folds: 3,
            images: 40,
            good_images: 30,
            defective_images: 10,
            warnings: Vec::new(),
            runs: vec![run],
            spread: BTreeMap::new(),
            feature_seconds: 0.0,
            extracted_images: 40,
            cache_hits: 0,
            seconds: 0.0,
        }
    }

    #[test]
    fn oracle_line_stays_visible_on_the_honest_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("histogram.png");
        let report = report();
        histogram(&path, &report, &report.runs[0]).unwrap();
        let image = image::open(&path).unwrap().to_rgb8();
        let column = |x: u32, colour: [u8; 3]| {
            (0..image.height()).filter(|&y| image.get_pixel(x, y).0 == colour).count()
        };
        let tall = |x: u32, colour| column(x, colour) > 300;
        let both = (3..image.width() - 3).any(|x| {
            tall(x, [0, 0, 0])
                && (1..=3).any(|d| tall(x - d, [255, 150, 0]))
                && (1..=3).any(|d| tall(x + d, [255, 150, 0]))
        });
        assert!(both, "a black oracle line inside an orange honest line");
    }

    #[test]
    fn histogram_counts_are_whole_numbers_covering_every_image() {
        let report = report();
        let run = &report.runs[0];
        let good = bin_counts(run, false, 0.0, 1.0, 40);
        let bad = bin_counts(run, true, 0.0, 1.0, 40);
        assert_eq!(good.iter().sum::<usize>() + bad.iter().sum::<usize>(), 40);
        assert_eq!(count_axis_top(0), 1);
        assert_eq!(count_axis_top(50), 55);
        assert_eq!(count_axis_top(3), 4);
    }
}

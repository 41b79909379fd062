//! `anodet heatmap`: overlays and raw maps of images, or (`--eval`) pixel-level evaluation of a
//! category's test images against their masks.

use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};

use super::{output, progress::Bar, CacheArgs, RuntimeArgs};
use anodet::backbone::Levels;
use anodet::data::image::decode;
use anodet::heatmap::Method;
use anodet::model::{self, RunModel};
use anodet::pipeline::heatmap::{evaluate_pixels, run_category, Heatmapper, PixelReport};
use anodet::pipeline::review::{write_pixel_review, PixelResult};
use anodet::progress::Progress;
use anodet::report::{atomic, npy, overlay};
use anodet::scorer::ScorerSpec;

#[derive(Debug, Args)]
pub struct HeatmapArgs {
    /// Images to map (not needed with --eval).
    #[arg(value_name = "IMG", required_unless_present = "eval")]
    pub images: Vec<PathBuf>,
    /// Run folder written by `anodet fit` (default: the latest fit).
    #[arg(long, value_name = "DIR")]
    pub model: Option<PathBuf>,
    /// Map method(s): patch (per-position Gaussians over levels 3-5, PaDiM-style; the default
    /// for Gaussian CNN runs), knn (distance of each position to the nearest good position; the
    /// default for knn runs, and for ensembles: the sum of their knn and padim members' maps,
    /// each standardised as its score is), padim (each position's distance to the good
    /// images' Gaussian at that position; the default for padim runs), feature (one level's Gaussian at every position, or at
    /// every cell of a 16×16 grid for HLAC runs, their default), subspace (HLAC cells' residuals
    /// outside the good cells' subspace; the default for subspace runs), gradient (d score / d
    /// pixels). Comma-separated to compare.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub method: Vec<MethodArg>,
    /// Level(s) for the feature method, e.g. 7 or 2,4,7 for a side-by-side comparison
    /// (default: the run's last level).
    #[arg(long, alias = "level", value_parser = super::parse::<Levels>)]
    pub levels: Option<Levels>,
    /// Output folder (default: runs/heatmap/<category>).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Evaluate maps against the ground-truth masks of the run's category (test images; good
    /// images count as all-normal): pixel AUC overall and per defect type, PRO up to 30% FPR,
    /// and a gallery of the best and worst maps.
    #[arg(long)]
    pub eval: bool,
    /// Print the evaluation as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub runtime: RuntimeArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, ValueEnum)]
pub enum MethodArg {
    Patch,
    Feature,
    Gradient,
    Knn,
    Padim,
    Subspace,
}

impl From<MethodArg> for Method {
    fn from(value: MethodArg) -> Method {
        match value {
            MethodArg::Patch => Method::Patch,
            MethodArg::Feature => Method::Feature,
            MethodArg::Gradient => Method::Gradient,
            MethodArg::Knn => Method::Knn,
            MethodArg::Padim => Method::Padim,
            MethodArg::Subspace => Method::Subspace,
        }
    }
}

/// Each (method, level) to draw: the feature method once per requested level.
fn variants(args: &HeatmapArgs, run: &ScorerSpec, hlac_run: bool) -> Vec<(Method, Option<u8>)> {
    let mut out = Vec::new();
    let methods: Vec<Method> = if args.method.is_empty() {
        vec![Method::default_for(run, hlac_run)]
    } else {
        args.method.iter().map(|&m| m.into()).collect()
    };
    for method in methods {
        match method {
            Method::Feature => match &args.levels {
                Some(levels) => {
                    out.extend(levels.as_slice().iter().map(|&l| (Method::Feature, Some(l))))
                }
                None => out.push((Method::Feature, None)),
            },
            other => out.push((other, None)),
        }
    }
    out.dedup();
    out
}

fn label(heatmapper: &Heatmapper) -> String {
    match heatmapper.level {
        Some(level) => format!("{} level {level}", heatmapper.method.name()),
        None => heatmapper.method.name().to_string(),
    }
}

pub fn run(args: HeatmapArgs) -> anyhow::Result<i32> {
    let run_dir = match &args.model {
        Some(dir) => dir.clone(),
        None => model::latest(&super::runs_root())?,
    };
    let runtime = args.cache.with(args.runtime.runtime());
    let bar = Bar::new();
    let meta = RunModel::load(&run_dir)?.meta;
    let heatmappers = variants(&args, &meta.scorer, meta.backbone.name == "hlac")
        .into_iter()
        .map(|(method, level)| Heatmapper::open(&run_dir, method, level, &runtime, &bar))
        .collect::<anodet::Result<Vec<_>>>()?;
    let category = heatmappers.first().map(|h| h.run.meta.category.clone()).unwrap_or_default();
    let out =
        args.out.clone().unwrap_or_else(|| super::runs_root().join("heatmap").join(&category));
    std::fs::create_dir_all(&out).map_err(|e| anodet::Error::io(&out, e))?;
    if args.eval {
        evaluate(&args, &run_dir, &heatmappers, &out)
    } else {
        draw(&args, &heatmappers, &out)
    }
}

/// A file name for an image's outputs: `<parent folder>-<stem>`, unique in one run.
fn output_stem(path: &Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "image".into());
    match path.parent().and_then(|p| p.file_name()) {
        Some(parent) => format!("{}-{stem}", parent.to_string_lossy()),
        None => stem,
    }
}

fn draw(args: &HeatmapArgs, heatmappers: &[Heatmapper], out: &Path) -> anyhow::Result<i32> {
    let bar = Bar::new();
    let threshold = heatmappers[0].run.meta.threshold.value;
    let mut used = std::collections::HashSet::new();
    let mut failures = Vec::new();
    bar.start(args.images.len() as u64, "drawing maps");
    // Each chunk is decoded once and serves every method (all share the run's preprocessing).
    for chunk in args.images.chunks(heatmappers[0].batch_size()) {
        let (decoded, failed) = heatmappers[0].decode(chunk);
        failures.extend(failed);
        let per_variant = heatmappers
            .iter()
            .map(|h| h.map_decoded(&decoded))
            .collect::<anodet::Result<Vec<_>>>()?;
        for (index, image) in decoded.iter().enumerate() {
            let base = output_stem(&image.path);
            let mut stem = base.clone();
            let mut n = 2;
            while !used.insert(stem.clone()) {
                stem = format!("{base}-{n}");
                n += 1;
            }
            let score = per_variant[0][index].score;
            let verdict = if score > threshold { "anomalous" } else { "good" };
            let mut pictures = Vec::new();
            for (heatmapper, maps) in heatmappers.iter().zip(&per_variant) {
                let map = &maps[index];
                let name = if heatmappers.len() > 1 {
                    format!("{stem}-{}", label(heatmapper).replace(' ', ""))
                } else {
                    stem.clone()
                };
                npy::write(
                    &out.join(format!("{name}.npy")),
                    &map.values,
                    map.height as usize,
                    map.width as usize,
                )?;
                let caption = format!(
                    "{} — score {:.2} ({verdict}, threshold {threshold:.2})",
                    label(heatmapper),
                    map.score
                );
                let blended = overlay::blend(&image.image, &map.values, &heatmapper.scale, None);
                pictures.push(overlay::with_colour_bar(&blended, &heatmapper.scale, &caption)?);
            }
            let picture = if pictures.len() == 1 {
                pictures.remove(0)
            } else {
                overlay::side_by_side(&pictures)
            };
            let picture_path = out.join(format!("{stem}.png"));
            atomic::write_file(&picture_path, &overlay::png(&picture)?)?;
            output::line(&format!(
                "{}\t{score:.4}\t{verdict}\t{}",
                image.path.display(),
                picture_path.display()
            ))?;
        }
        bar.advance(chunk.len() as u64);
    }
    bar.finish();
    for failure in &failures {
        output::problem(failure);
    }
    Ok(if failures.is_empty() { 0 } else { 2 })
}

fn evaluate(
    args: &HeatmapArgs,
    run_dir: &Path,
    heatmappers: &[Heatmapper],
    out: &Path,
) -> anyhow::Result<i32> {
    let category = run_category(run_dir)?;
    let samples = category.test_samples();
    if !samples.iter().any(|s| s.mask.is_some()) {
        anyhow::bail!("{}: no ground-truth masks (ground_truth/<type>/<stem>_mask.png); pixel evaluation needs them", category.root.display());
    }
    let bar = Bar::new();
    let mut reports = Vec::new();
    let mut galleries = Vec::new();
    for heatmapper in heatmappers {
        let report = evaluate_pixels(heatmapper, &samples, &bar)?;
        let gallery = format!("gallery-{}.png", label(heatmapper).replace(' ', ""));
        write_gallery(heatmapper, &report, &samples, &out.join(&gallery))?;
        galleries.push(out.join(&gallery).is_file().then_some(gallery));
        reports.push(report);
    }
    atomic::write_json(&out.join("pixel-metrics.json"), &reports)?;
    let meta = &heatmappers[0].run.meta;
    let facts = vec![
        ("run".to_string(), run_dir.display().to_string()),
        ("data".to_string(), category.root.display().to_string()),
        ("category".to_string(), meta.category.clone()),
        ("backbone".to_string(), meta.backbone.name.clone()),
        ("levels (image score)".to_string(), meta.levels.to_string()),
        ("map methods".to_string(), heatmappers.iter().map(label).collect::<Vec<_>>().join(", ")),
        ("images".to_string(), samples.len().to_string()),
    ];
    let results: Vec<PixelResult> = heatmappers
        .iter()
        .zip(&reports)
        .zip(galleries)
        .map(|((h, report), gallery)| PixelResult { label: label(h), report, gallery })
        .collect();
    let page = write_pixel_review(facts, &results, out, &bar)?;
    if args.json {
        output::line(&serde_json::to_string_pretty(&reports)?)?;
        return Ok(0);
    }
    let figure = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into());
    for (heatmapper, report) in heatmappers.iter().zip(&reports) {
        let per_type: Vec<String> = report
            .pixel_auc_per_defect_type
            .iter()
            .map(|(t, a)| format!("{t} {}", figure(*a)))
            .collect();
        output::line(&format!(
            "{:<18} pixel AUC {}  PRO(30%) {}  {:.3} s/image  ({})",
            label(heatmapper),
            figure(report.pixel_auc),
            figure(report.pro_30),
            report.seconds_per_image,
            per_type.join(", ")
        ))?;
    }
    output::line(&format!("wrote {}", out.join("pixel-metrics.json").display()))?;
    output::line(&format!("review page {}", page.display()))?;
    Ok(0)
}

/// The four best and four worst maps of defective images (by pixel AUC within the image), with
/// their masks outlined.
fn write_gallery(
    heatmapper: &Heatmapper,
    report: &PixelReport,
    samples: &[&anodet::data::Sample],
    path: &Path,
) -> anyhow::Result<()> {
    let mut ranked: Vec<(usize, f64)> =
        report.per_image.iter().enumerate().filter_map(|(i, r)| r.auc.map(|a| (i, a))).collect();
    ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
    if ranked.is_empty() {
        return Ok(());
    }
    let take = 4.min(ranked.len());
    let mut rows = Vec::new();
    for (title, chosen) in [("best", &ranked[..take]), ("worst", &ranked[ranked.len() - take..])] {
        let paths: Vec<PathBuf> = chosen.iter().map(|(i, _)| samples[*i].path.clone()).collect();
        let (maps, _) = heatmapper.map_files(&paths, &anodet::progress::Silent)?;
        let mut tiles = Vec::new();
        for ((i, auc), map) in chosen.iter().zip(&maps) {
            let image = decode(&samples[*i].path)?;
            let mask =
                samples[*i].mask.as_ref().map(|m| decode(m).map(|d| d.to_luma8())).transpose()?;
            let blended = overlay::blend(&image, &map.values, &heatmapper.scale, mask.as_ref());
            let small = image::imageops::resize(
                &blended,
                256,
                (256 * blended.height() / blended.width().max(1)).max(1),
                image::imageops::FilterType::Triangle,
            );
            let caption = format!("{title}: {} pixel AUC {auc:.3}", output_stem(&samples[*i].path));
            tiles.push(overlay::with_colour_bar(&small, &heatmapper.scale, &caption)?);
        }
        rows.push(overlay::side_by_side(&tiles));
    }
    atomic::write_file(path, &overlay::png(&overlay::stacked(&rows))?)?;
    Ok(())
}

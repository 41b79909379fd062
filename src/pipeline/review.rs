//! The review page (`report.html`) of `eval` and `heatmap --eval`: decides which images get
//! thumbnails and anomaly-map overlays, computes those maps, writes the pictures into
//! `report-files/` (staged and renamed as a whole) and the page beside it (atomically).
//!
//! Overlays of `eval` are honest: each image is mapped by the model of the fold that scored it
//! (fitted without it), through [`overlay_maps`]; only the images the page shows with a map
//! (the mistakes and the extremes, see [`eval_page::overlay_selection`]) and a few good images
//! for the colour scale are mapped, so the page costs a fraction of the evaluation.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use crate::backbone::Backbone;
use crate::data::image::{decode, Preprocess};
use crate::data::Category;
use crate::error::{Error, Result};
use crate::features::{Embeddings, FeatureSet, LevelMap};
use crate::gaussian::{GaussianModel, GaussianParams};
use crate::heatmap::{smooth, ImageScorer, MapModel, Method, TensorGaussian};
use crate::pipeline::eval::{
    review_map_level, EvalInputs, EvalReport, FoldMapper, Protocol, ReviewMaps, RunMetrics,
};
use crate::pipeline::heatmap::{position_method, DecodedImage, MapScale, PixelReport};
use crate::pipeline::tune::TuneReport;
use crate::progress::Progress;
use crate::report::atomic::StagingDir;
use crate::report::eval_page::{self, EvalPictures, OverlayScale};
use crate::report::html::{self, Block, Column, Figure, ImageRow, ImageTable, Page, Section};
use crate::report::tune_page::tune_page;
use crate::report::{clock, overlay, pictures};
use crate::scorer::ScorerSpec;
use crate::threshold::quantile;

/// The page's file name.
pub const REPORT_HTML: &str = "report.html";
/// The folder of its pictures, beside it.
pub const REPORT_FILES: &str = "report-files";
/// Good images whose maps set the colour scale (evenly spread over the good scores).
const SCALE_IMAGES: usize = 16;
/// Images decoded (and mapped) at once.
const CHUNK: usize = 32;

/// One fold's fitted model as the overlays need it: the Gaussian of the map level, fitted on
/// the fold's good training images.
pub struct FoldModel {
    pub level: u8,
    pub gaussian: GaussianModel,
}

/// Anomaly maps of `images` under one fold's model, each at its image's own size: the
/// `feature` method (the level's Gaussian at every position of the level's map; for HLAC,
/// at every cell of the 16×16 grid), smoothed like `heatmap`'s maps.
pub fn overlay_maps(
    fold: &FoldModel,
    backbone: &Backbone,
    images: &[&DecodedImage],
) -> Result<Vec<Vec<f32>>> {
    let device = backbone.device();
    let gaussian = || TensorGaussian::new(&fold.gaussian, device);
    let model = match backbone {
        Backbone::Torch(_) => MapModel::Feature { level: fold.level, gaussian: gaussian()? },
        Backbone::Hlac(_) => MapModel::Cells { level: fold.level, gaussian: gaussian()? },
    };
    let image_scorer = ImageScorer::Gaussians(vec![(fold.level, gaussian()?)]);
    let mut groups: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
    for (i, image) in images.iter().enumerate() {
        groups.entry((image.prepared.width, image.prepared.height)).or_default().push(i);
    }
    let mut maps = vec![Vec::new(); images.len()];
    for ((width, height), members) in groups {
        let prepared: Vec<_> = members.iter().map(|&i| &images[i].prepared).collect();
        let batch = model.run(backbone, &prepared, &image_scorer)?;
        smooth_into(&batch.raw, &members, images, (width, height), &mut maps)?;
    }
    Ok(maps)
}

/// [`overlay_maps`] from the map level's spatial features the evaluation's own pass kept
/// (`kept[k]` belongs to `images[k]`): the same Gaussian at every position, no network pass.
pub fn overlay_maps_from_kept(
    fold: &FoldModel,
    kept: &[&LevelMap],
    images: &[&DecodedImage],
) -> Result<Vec<Vec<f32>>> {
    let gaussian = TensorGaussian::new(&fold.gaussian, tch::Device::Cpu)?;
    type Shape = ((u32, u32), (usize, usize, usize));
    let mut groups: BTreeMap<Shape, Vec<usize>> = BTreeMap::new();
    for (i, (image, map)) in images.iter().zip(kept).enumerate() {
        let input = (image.prepared.width, image.prepared.height);
        groups.entry((input, (map.channels, map.height, map.width))).or_default().push(i);
    }
    let mut maps = vec![Vec::new(); images.len()];
    for ((input, (channels, height, width)), members) in groups {
        let values: Vec<f32> =
            members.iter().flat_map(|&i| kept[i].values.iter().copied()).collect();
        let features = tch::Tensor::from_slice(&values)
            .view([members.len() as i64, channels as i64, height as i64, width as i64])
            .permute([0, 2, 3, 1]);
        let raw = tch::no_grad(|| gaussian.distances(&features))?;
        smooth_into(&raw, &members, images, input, &mut maps)?;
    }
    Ok(maps)
}

/// Smooths `raw` position maps (one per member, all of input size `input`) like `heatmap`'s
/// maps and stores each, resized to its image, in `maps`.
fn smooth_into(
    raw: &tch::Tensor,
    members: &[usize],
    images: &[&DecodedImage],
    (width, height): (u32, u32),
    maps: &mut [Vec<f32>],
) -> Result<()> {
    let smoothed = smooth::to_input_size(raw, height as i64, width as i64)?;
    for (k, &i) in members.iter().enumerate() {
        let (w, h) = (images[i].image.width() as i64, images[i].image.height() as i64);
        maps[i] = smooth::to_vec(&smooth::resize(&smoothed.get(k as i64), h, w)?)?;
    }
    Ok(())
}

/// The level whose map the overlays show.
fn map_level(report: &EvalReport) -> Result<u8> {
    review_map_level(&report.levels)
}

/// Per fold of the first run: the fold model (fitted on the fold's good training images).
fn fold_models(
    report: &EvalReport,
    run: &RunMetrics,
    features: &FeatureSet,
) -> Result<Vec<FoldModel>> {
    let level = map_level(report)?;
    let offset = judged_offset(&features.paths, run)?;
    let matrix = features
        .level(level)
        .ok_or_else(|| Error::numeric("review", format!("level {level} features missing")))?;
    fold_training_rows(report, run, offset)
        .into_iter()
        .map(|rows| {
            let selected = matrix.select(ndarray::Axis(0), &rows);
            Ok(FoldModel { level, gaussian: GaussianParams::new().fit(selected.view())? })
        })
        .collect()
}

/// Where the judged images start among embeddings of the fit images (`mvtec`) then the judged
/// ones; checks that they are the run's samples, in order.
fn judged_offset(paths: &[PathBuf], run: &RunMetrics) -> Result<usize> {
    let offset = paths
        .len()
        .checked_sub(run.samples.len())
        .ok_or_else(|| Error::numeric("review", "fewer features than evaluated images"))?;
    if run.samples.iter().enumerate().any(|(i, s)| paths[offset + i] != s.path) {
        return Err(Error::numeric("review", "features and evaluated images disagree"));
    }
    Ok(offset)
}

/// Per fold of the first run (one for `mvtec`): the rows of the good images it was fitted on.
fn fold_training_rows(report: &EvalReport, run: &RunMetrics, offset: usize) -> Vec<Vec<usize>> {
    match report.protocol {
        Protocol::Mvtec => vec![(0..offset).collect()],
        Protocol::Cv => (0..report.folds)
            .map(|fold| {
                run.samples
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| !s.defective && s.fold != Some(fold))
                    .map(|(i, _)| offset + i)
                    .collect()
            })
            .collect(),
    }
}

/// The mapped images that fold `fold`'s model scored.
fn fold_members(
    report: &EvalReport,
    run: &RunMetrics,
    mapped: &BTreeSet<usize>,
    fold: usize,
) -> Vec<usize> {
    mapped
        .iter()
        .copied()
        .filter(|&i| report.protocol == Protocol::Mvtec || run.samples[i].fold == Some(fold))
        .collect()
}

/// Position-score maps (knn, padim) of the mapped images, each under the models of the fold
/// that scored it (kept from the evaluation in `fold_mappers`; a plain run's missing fold is
/// refitted on that fold's good images with the run's settings and seed: the same model), from
/// the evaluation's patch features, each model's map smoothed at its network's input size and resized to the
/// image like `heatmap`'s maps; an ensemble's members' maps standardised as their scores were
/// and summed (as `heatmap` draws an ensemble's map).
pub fn position_fold_maps(
    report: &EvalReport,
    run: &RunMetrics,
    (spec, fold_mappers): (Option<&ScorerSpec>, &[Vec<FoldMapper>]),
    (embeddings, inputs): (&Embeddings, &[Preprocess]),
    mapped: &BTreeSet<usize>,
    decoded: &HashMap<usize, DecodedImage>,
    progress: &dyn Progress,
) -> Result<HashMap<usize, Vec<f32>>> {
    let offset = judged_offset(embeddings.paths(), run)?;
    let mut maps = HashMap::new();
    progress.start(mapped.len() as u64, "review page: anomaly maps");
    for (fold, rows) in fold_training_rows(report, run, offset).into_iter().enumerate() {
        let members: Vec<usize> = fold_members(report, run, mapped, fold)
            .into_iter()
            .filter(|i| decoded.contains_key(i))
            .collect();
        if members.is_empty() {
            continue;
        }
        let refitted;
        let mappers = match (fold_mappers.get(fold), spec) {
            (Some(mappers), _) => mappers.as_slice(),
            (None, Some(spec)) => {
                let fitted = spec.scorer()?.fit(&embeddings.select(&rows))?;
                let model = fitted
                    .positions()
                    .ok_or_else(|| Error::numeric("review", "the run's scorer draws no map"))?
                    .share();
                refitted = [FoldMapper { member: None, model, centre: 0.0, spread: 1.0 }];
                &refitted[..]
            }
            (None, None) => {
                return Err(Error::numeric("review", format!("fold {} kept no model", fold + 1)))
            }
        };
        if mappers.is_empty() {
            return Err(Error::numeric("review", "no knn or padim model draws this run's maps"));
        }
        let rows: Vec<usize> = members.iter().map(|&i| offset + i).collect();
        let selected = embeddings.select(&rows);
        let mut totals: Vec<Vec<f32>> = members
            .iter()
            .map(|i| {
                let image = &decoded[i].image;
                vec![0.0; (image.width() * image.height()) as usize]
            })
            .collect();
        for mapper in mappers {
            let (part, preprocess) = match mapper.member {
                None => (&selected, inputs.first()),
                Some(member) => (&selected.members()?[member], inputs.get(member)),
            };
            let preprocess = preprocess
                .ok_or_else(|| Error::numeric("review", "a map model without its network"))?;
            let position_maps = mapper
                .model
                .maps(part)?
                .ok_or_else(|| Error::numeric("review", "the map model gave no maps"))?;
            for ((&i, position), total) in members.iter().zip(position_maps).zip(&mut totals) {
                let image = &decoded[&i].image;
                let (w, h) = (image.width(), image.height());
                let input = preprocess.target_size(w, h);
                let raw = tch::Tensor::from_slice(&position.values).view([
                    1,
                    position.height as i64,
                    position.width as i64,
                ]);
                let smoothed =
                    smooth::to_input_size(&raw, input.height as i64, input.width as i64)?;
                let values =
                    smooth::to_vec(&smooth::resize(&smoothed.get(0), h as i64, w as i64)?)?;
                for (t, v) in total.iter_mut().zip(values) {
                    *t += ((v as f64 - mapper.centre) / mapper.spread) as f32;
                }
            }
        }
        for (&i, total) in members.iter().zip(totals) {
            maps.insert(i, total);
            progress.advance(1);
        }
    }
    progress.finish();
    Ok(maps)
}

/// Good images spread evenly over the good scores, whose maps set the colour scale.
fn scale_images(run: &RunMetrics) -> Vec<usize> {
    let mut good: Vec<usize> =
        (0..run.samples.len()).filter(|&i| !run.samples[i].defective).collect();
    good.sort_by(|&a, &b| run.samples[a].score.total_cmp(&run.samples[b].score));
    let n = good.len().min(SCALE_IMAGES);
    if n == 0 {
        return Vec::new();
    }
    let step = good.len() as f64 / n as f64;
    (0..n).map(|k| good[((k as f64 + 0.5) * step) as usize]).collect()
}

/// Thumbnail file per image (relative to the page), and the decoded images that were kept.
type Thumbnails = (Vec<Option<String>>, HashMap<usize, DecodedImage>);

/// Decodes `paths` (in parallel, `CHUNK` at a time), writes each one's thumbnail as
/// `folder/t<index>.jpg`, and returns the decoded images of the indices in `keep`.
fn thumbnails_keeping(
    paths: &[PathBuf],
    folder: &Path,
    keep: &BTreeSet<usize>,
    prepare: Option<&crate::data::image::Preprocess>,
    progress: &dyn Progress,
) -> Result<Thumbnails> {
    let mut names = Vec::with_capacity(paths.len());
    let mut kept = HashMap::new();
    progress.start(paths.len() as u64, "review page: thumbnails");
    let indices: Vec<usize> = (0..paths.len()).collect();
    for chunk in indices.chunks(CHUNK) {
        let results: Vec<Result<(String, Option<DecodedImage>)>> = chunk
            .par_iter()
            .map(|&i| {
                let image = decode(&paths[i])?;
                let name = format!("t{i:05}.jpg");
                pictures::write_jpeg(&folder.join(&name), &pictures::thumbnail(&image))?;
                let decoded = match prepare {
                    Some(preprocess) if keep.contains(&i) => {
                        let prepared = preprocess.prepare_decoded(&image);
                        Some(DecodedImage::new(paths[i].clone(), image, prepared))
                    }
                    _ => None,
                };
                Ok((name, decoded))
            })
            .collect();
        for (&i, result) in chunk.iter().zip(results) {
            let (name, decoded) = result?;
            names.push(Some(format!("{REPORT_FILES}/{name}")));
            if let Some(decoded) = decoded {
                kept.insert(i, decoded);
            }
        }
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok((names, kept))
}

/// Mask file per image path of the category (empty when the category cannot be read again).
fn masks(data_root: &Path, category: &str) -> HashMap<PathBuf, PathBuf> {
    Category::discover(data_root, category)
        .map(|c| c.samples.into_iter().filter_map(|s| Some((s.path, s.mask?))).collect())
        .unwrap_or_default()
}

fn colour_stops() -> Vec<(f32, [u8; 3])> {
    [0.0f32, 0.3, 0.55, 0.8, 1.0]
        .iter()
        .map(|&t| {
            let c = overlay::colour(t);
            (t, [c[0] as u8, c[1] as u8, c[2] as u8])
        })
        .collect()
}

/// Plot files of `eval` that exist in `dir`, with captions.
fn plots(dir: &Path) -> Vec<(String, String)> {
    [
        ("roc.png", "ROC curve of the out-of-fold scores"),
        ("histogram.png", "score histogram with the oracle and honest thresholds"),
        ("strip.png", "scores per fold: training (in-sample), held-out good, held-out defective"),
        ("confusion.png", "confusion matrices at the oracle and honest thresholds"),
    ]
    .iter()
    .filter(|(file, _)| dir.join(file).is_file())
    .map(|(file, caption)| (file.to_string(), caption.to_string()))
    .collect()
}

/// Writes `report.html` and `report-files/` for an evaluation into `dir` (which holds its
/// plots) and returns the page's path. `scorer` describes how images were scored.
pub fn write_eval_review(
    report: &EvalReport,
    inputs: &EvalInputs,
    scorer: &str,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let staging = StagingDir::new(&dir.join(REPORT_FILES))?;
    let mut pictures = EvalPictures { plots: plots(dir), ..EvalPictures::default() };
    if let Some(run) = report.runs.first() {
        let shown = eval_page::overlay_selection(run);
        let scale_set = scale_images(run);
        let mapped: BTreeSet<usize> = shown.iter().chain(&scale_set).copied().collect();
        let paths: Vec<PathBuf> = run.samples.iter().map(|s| s.path.clone()).collect();
        let (thumbnails, decoded) = thumbnails_keeping(
            &paths,
            staging.path(),
            &mapped,
            Some(&inputs.preprocess),
            progress,
        )?;
        pictures.thumbnails = thumbnails;
        // Maps, each by the model of the fold that scored the image.
        let level = map_level(report)?;
        let (maps, method, map_level, described) = match &inputs.maps_from {
            ReviewMaps::Positions { spec, patches, fold_mappers, inputs: preprocesses } => (
                position_fold_maps(
                    report,
                    run,
                    (spec.as_ref(), fold_mappers),
                    (patches, preprocesses),
                    &mapped,
                    &decoded,
                    progress,
                )?,
                spec.as_ref().and_then(position_method).unwrap_or(Method::Knn),
                None,
                match spec {
                    Some(spec) => format!("{} position scores (levels {})", spec.name(), report.levels),
                    None => "the ensemble's map: its knn and padim members' position scores, each standardised as its score is, summed".to_string(),
                },
            ),
            ReviewMaps::Pooled { features, maps: kept } => {
                let mut maps: HashMap<usize, Vec<f32>> = HashMap::new();
                let offset = judged_offset(&features.paths, run)?;
                let kept_of = |i: usize| kept.get(offset + i).filter(|_| kept.level == Some(level));
                progress.start(mapped.len() as u64, "review page: anomaly maps");
                for (fold, model) in fold_models(report, run, features)?.iter().enumerate() {
                    // Images whose map level the evaluation kept need no second network pass.
                    let (from_kept, from_network): (Vec<usize>, Vec<usize>) =
                        fold_members(report, run, &mapped, fold)
                            .into_iter()
                            .filter(|i| decoded.contains_key(i))
                            .partition(|&i| kept_of(i).is_some());
                    for chunk in from_kept.chunks(CHUNK) {
                        let images: Vec<&DecodedImage> =
                            chunk.iter().map(|i| &decoded[i]).collect();
                        let levels: Vec<&LevelMap> =
                            chunk.iter().filter_map(|&i| kept_of(i)).collect();
                        let chunk_maps = overlay_maps_from_kept(model, &levels, &images)?;
                        maps.extend(chunk.iter().copied().zip(chunk_maps));
                        progress.advance(chunk.len() as u64);
                    }
                    for chunk in from_network.chunks(CHUNK) {
                        let images: Vec<&DecodedImage> =
                            chunk.iter().map(|i| &decoded[i]).collect();
                        let chunk_maps = overlay_maps(model, &inputs.backbone, &images)?;
                        maps.extend(chunk.iter().copied().zip(chunk_maps));
                        progress.advance(chunk.len() as u64);
                    }
                }
                progress.finish();
                let described = if report.backbone == "hlac" {
                    format!("HLAC cell map (16×16 cells), level {level}")
                } else if matches!(report.scorer, ScorerSpec::Ensemble(_)) {
                    // An ensemble without a knn or padim member draws no map of its own.
                    format!(
                        "feature map, level {level} of {} under a Gaussian fitted on the fold's good images (the ensemble has no knn or padim member to draw its own map)",
                        report.backbone
                    )
                } else {
                    format!("feature map, level {level}")
                };
                (maps, Method::Feature, Some(level), described)
            }
        };
        let mut values: Vec<f64> = Vec::new();
        for i in &scale_set {
            if let Some(map) = maps.get(i) {
                // Every 7th pixel is plenty for a median and a 99.9% quantile.
                values.extend(map.iter().step_by(7).map(|&v| v as f64));
            }
        }
        if !values.is_empty() {
            let low = quantile(&values, 0.5)? as f32;
            let high = (quantile(&values, 0.999)? as f32).max(low + f32::EPSILON);
            // Drawn on the page only, never stored: no levels to check against.
            let scale = MapScale {
                method,
                level: map_level,
                position_levels: Vec::new(),
                low,
                high,
                images: scale_set.len(),
            };
            let mask_of = masks(&report.data_root, &report.category);
            let written: Vec<Result<(usize, String)>> = shown
                .par_iter()
                .filter_map(|&i| Some((i, decoded.get(&i)?, maps.get(&i)?)))
                .map(|(i, image, map)| {
                    let mask =
                        mask_of.get(&image.path).and_then(|m| decode(m).ok()).map(|m| m.to_luma8());
                    let blended = overlay::blend(&image.image, map, &scale, mask.as_ref());
                    let name = format!("o{i:05}.jpg");
                    pictures::write_jpeg(
                        &staging.path().join(&name),
                        &pictures::shrink(&blended, pictures::OVERLAY_SIDE),
                    )?;
                    Ok((i, format!("{REPORT_FILES}/{name}")))
                })
                .collect();
            pictures.overlays = written.into_iter().collect::<Result<_>>()?;
            pictures.scale = Some(OverlayScale {
                low,
                high,
                method: format!(
                    "{described}, each image under the model of the fold that scored it; the ground-truth mask, where there is one, outlined in white"
                ),
                measured_on: format!("the maps of {} held-out good images spread over the good scores", scale_set.len()),
                stops: colour_stops(),
            });
        }
    }
    staging.commit()?;
    let page = eval_page::eval_page(report, &pictures, scorer, &clock::readable_now());
    let path = dir.join(REPORT_HTML);
    html::write(&path, &page)?;
    Ok(path)
}

/// One map method's pixel-level results, with its gallery file (relative to the page).
pub struct PixelResult<'a> {
    pub label: String,
    pub report: &'a PixelReport,
    pub gallery: Option<String>,
}

/// Writes `report.html` and `report-files/` for `heatmap --eval` into `dir`: pixel AUROC and
/// PRO per method and defect type, the galleries, and every test image with its image score
/// and per-method pixel AUROC. `run` describes the run (label/value pairs).
pub fn write_pixel_review(
    run: Vec<(String, String)>,
    results: &[PixelResult],
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let figure = |v: Option<f64>| v.map(|x| format!("{x:.3}")).unwrap_or_else(|| "n/a".into());
    let category = results.first().map(|r| r.report.category.clone()).unwrap_or_default();
    let mut page = Page::new(&format!("anodet heatmap --eval: {category}"));
    page.run = run;
    page.run.push(("anodet".into(), env!("CARGO_PKG_VERSION").into()));
    page.run.push(("date".into(), clock::readable_now()));
    let types: BTreeSet<String> =
        results.iter().flat_map(|r| r.report.pixel_auc_per_defect_type.keys().cloned()).collect();
    let mut header: Vec<String> =
        ["method", "pixel AUROC", "PRO (FPR ≤ 30%)", "s / image"].map(String::from).to_vec();
    header.extend(types.iter().map(|t| format!("pixel AUROC {t}")));
    let rows = results
        .iter()
        .map(|r| {
            let mut row = vec![
                r.label.clone(),
                figure(r.report.pixel_auc),
                figure(r.report.pro_30),
                format!("{:.3}", r.report.seconds_per_image),
            ];
            row.extend(
                types
                    .iter()
                    .map(|t| figure(r.report.pixel_auc_per_defect_type.get(t).copied().flatten())),
            );
            row
        })
        .collect();
    page.sections.push(Section {
        id: "results".into(),
        heading: "Pixel-level results".into(),
        blocks: vec![
            Block::Paragraph(format!(
                "Maps compared with the ground-truth masks of the test images (good images count as all-normal), at most {} px a side.",
                crate::pipeline::heatmap::EVALUATION_SIDE
            )),
            Block::Table(html::Table { header, rows }),
        ],
    });
    let galleries: Vec<Figure> = results
        .iter()
        .filter_map(|r| {
            Some(Figure {
                src: r.gallery.clone()?,
                caption: format!(
                    "{}: the four best and four worst maps by pixel AUROC, masks outlined",
                    r.label
                ),
                width: None,
            })
        })
        .collect();
    if !galleries.is_empty() {
        page.sections.push(Section {
            id: "galleries".into(),
            heading: "Galleries".into(),
            blocks: vec![Block::Figures(galleries)],
        });
    }
    let staging = StagingDir::new(&dir.join(REPORT_FILES))?;
    if let Some(first) = results.first() {
        let paths: Vec<PathBuf> = first.report.per_image.iter().map(|p| p.path.clone()).collect();
        let (thumbnails, _) =
            thumbnails_keeping(&paths, staging.path(), &BTreeSet::new(), None, progress)?;
        let mut columns = vec![
            Column { name: "path".into(), numeric: false },
            Column { name: "type".into(), numeric: false },
            Column { name: "image score".into(), numeric: true },
        ];
        columns.extend(
            results
                .iter()
                .map(|r| Column { name: format!("pixel AUROC {}", r.label), numeric: true }),
        );
        let rows = first
            .report
            .per_image
            .iter()
            .enumerate()
            .map(|(i, image)| {
                let mut cells = vec![
                    image.path.display().to_string(),
                    image.defect_type.clone(),
                    format!("{:.3}", image.score),
                ];
                cells.extend(results.iter().map(|r| {
                    r.report
                        .per_image
                        .get(i)
                        .and_then(|p| p.auc)
                        .map(|a| format!("{a:.3}"))
                        .unwrap_or_default()
                }));
                let kind = if image.defect_type == "good" { "good" } else { "defective" };
                ImageRow {
                    thumbnail: thumbnails.get(i).cloned().flatten(),
                    link: None,
                    cells,
                    kinds: vec![kind.into()],
                    highlight: false,
                }
            })
            .collect();
        page.sections.push(Section {
            id: "images".into(),
            heading: "Every test image".into(),
            blocks: vec![Block::Images(ImageTable {
                columns,
                rows,
                filters: vec![
                    ("good".into(), "good".into()),
                    ("defective".into(), "defective".into()),
                ],
            })],
        });
    }
    staging.commit()?;
    let path = dir.join(REPORT_HTML);
    html::write(&path, &page)?;
    Ok(path)
}

/// Writes `report.html` and `report-files/` for `tune` into `dir`: the nested outer scores as
/// the eval page shows them (thumbnails, no maps: the folds may have chosen different
/// pipelines), with the candidates and each outer fold's choice. `decode_from` gives, per outer
/// sample, the file to read its thumbnail from (the painted images still lie in the staging
/// folder while the page is written).
pub fn write_tune_review(
    report: &TuneReport,
    decode_from: &[PathBuf],
    dir: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf> {
    let staging = StagingDir::new(&dir.join(REPORT_FILES))?;
    let (thumbnails, _) =
        thumbnails_keeping(decode_from, staging.path(), &BTreeSet::new(), None, progress)?;
    let pictures = EvalPictures { thumbnails, plots: plots(dir), ..EvalPictures::default() };
    staging.commit()?;
    let page = tune_page(report, &report.outer_as_eval(), &pictures, &clock::readable_now());
    let path = dir.join(REPORT_HTML);
    html::write(&path, &page)?;
    Ok(path)
}

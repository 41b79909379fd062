//! `heatmap`: anomaly maps of images under a fitted run, and their evaluation against masks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use image::DynamicImage;
use rayon::prelude::*;
use tch::Tensor;

use crate::backbone::{Backbone, Levels};
use crate::data::image::{decode, Aspect, PreparedImage, Preprocess};
use crate::data::{Category, Sample};
use crate::error::{Error, Result};
use crate::features::OnBadImage;
use crate::gaussian::GaussianParams;
use crate::gaussian::PositionAccumulator;
use crate::heatmap::{
    image_scores, smooth, ImageScorer, MapModel, Method, PatchModel, TensorGaussian,
};
use crate::metrics::pro::{pro_auc, LabelledMap};
use crate::metrics::roc_auc;
use crate::model::{RunModel, FIT_JSON};
use crate::pipeline::embed::{Embedder, Opened};
use crate::pipeline::inspector::{Preparation, PreparedInputs};
use crate::pipeline::Runtime;
use crate::progress::Progress;
use crate::report::atomic;
use crate::scorer::{KnnParams, PadimParams, PositionScorer, ScorerSpec};
use crate::threshold::quantile;

/// The fixed colour scale of a run's maps, from its good training images, so that a good image
/// does not light up just because each map would otherwise be stretched to its own range.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MapScale {
    pub method: Method,
    pub level: Option<u8>,
    /// The levels of each knn or padim model drawing the maps (empty for other methods). A
    /// position model fitted for a run of another scorer takes the scorer's default levels,
    /// which can change between versions (padim's did): a scale stored for other levels is
    /// measured again. Scales stored before this field read as empty, so they are too.
    #[serde(default)]
    pub position_levels: Vec<Vec<u8>>,
    /// Median map value over good training images: drawn fully transparent.
    pub low: f32,
    /// 99.9% quantile of map values over good training images: the top of the colour bar.
    pub high: f32,
    pub images: usize,
}

/// Images used for the scale (evenly spread over the training set).
const SCALE_IMAGES: usize = 32;

/// A run opened for drawing maps.
pub struct Heatmapper {
    pub run: RunModel,
    pub method: Method,
    pub level: Option<u8>,
    /// The networks the maps read: the run's own; for an ensemble also its members' others.
    networks: Vec<Opened>,
    /// What maps and scores images: the run's scorer, or each member of an ensemble.
    sources: Vec<MapSource>,
    pub scale: MapScale,
    batch_size: usize,
}

/// One scorer's share of a run's maps and image scores.
struct MapSource {
    /// The index of the network it reads in [`Heatmapper::networks`].
    network: usize,
    /// What draws its map; `None` for an ensemble's pooled members, which only score.
    model: Option<MapModel>,
    image_scorer: ImageScorer,
    /// An ensemble member: its index and standardisation (centre, spread). Its map and score
    /// enter the sums as `(value − centre) / spread`, as its score enters the ensemble's.
    member: Option<(usize, f64, f64)>,
}

/// A decoded image, kept for drawing, with its network input.
pub struct DecodedImage {
    pub path: PathBuf,
    pub image: DynamicImage,
    /// The input of the run's own network.
    pub prepared: PreparedImage,
    /// The inputs of an ensemble's further networks (see [`Heatmapper::decode`]); empty for
    /// runs that read one network.
    pub other_networks: Vec<PreparedImage>,
}

impl DecodedImage {
    /// An image prepared for a run that reads one network.
    pub fn new(path: PathBuf, image: DynamicImage, prepared: PreparedImage) -> Self {
        DecodedImage { path, image, prepared, other_networks: Vec::new() }
    }

    /// An image prepared for every network of a run (the run's own first).
    pub fn from_inputs(path: PathBuf, image: DynamicImage, inputs: PreparedInputs) -> Result<Self> {
        let mut networks = inputs.networks.into_iter();
        let prepared = networks
            .next()
            .ok_or_else(|| Error::numeric("map", "the image was not prepared for the network"))?;
        Ok(DecodedImage { path, image, prepared, other_networks: networks.collect() })
    }

    fn prepared_for(&self, network: usize) -> Result<&PreparedImage> {
        match network {
            0 => Ok(&self.prepared),
            n => self.other_networks.get(n - 1).ok_or_else(|| {
                Error::numeric("map", "the image was not prepared for every network of the run")
            }),
        }
    }
}

/// The map of one image at the image's own size.
pub struct ImageMap {
    pub path: PathBuf,
    pub score: f64,
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
}

/// The size maps are resized to.
#[derive(Clone, Copy)]
enum MapSize {
    /// The image's own size.
    Image,
    /// The input size of the first mapping scorer's network (the colour scale's values).
    Input,
}

#[derive(serde::Deserialize)]
struct FitFacts {
    category: String,
    data_root: PathBuf,
}

impl Heatmapper {
    /// Opens the run in `run_dir` for `method` (at `level` for the feature method: default the
    /// run's last level). Builds and stores what the method needs the first time.
    pub fn open(
        run_dir: &Path,
        method: Method,
        level: Option<u8>,
        runtime: &Runtime,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let run = RunModel::load(run_dir)?;
        if run.scorer.ensemble().is_some() {
            return Heatmapper::open_ensemble(run, run_dir, method, runtime, progress);
        }
        let backbone = runtime.load_backbone(
            &run.meta.backbone.name,
            &run.meta.preprocess,
            method == Method::Gradient,
        )?;
        run.check_backbone(run_dir, &backbone)?;
        let device = backbone.device();
        let image_scorer = match (run.scorer.gaussians(), run.scorer.positions()) {
            _ if run.scorer.subspace().is_some() => ImageScorer::Subspace(
                run.scorer
                    .subspace()
                    .cloned()
                    .ok_or_else(|| Error::param("--method", "subspace model missing"))?,
            ),
            (Some(gaussians), _) => ImageScorer::Gaussians(
                run.meta
                    .levels
                    .as_slice()
                    .iter()
                    .zip(gaussians.models())
                    .map(|(&l, g)| Ok((l, TensorGaussian::new(g, device)?)))
                    .collect::<Result<Vec<_>>>()?,
            ),
            (None, Some(positions)) => ImageScorer::Positions(positions.share()),
            (None, None) => return Err(Error::param("--model", "this run's scorer draws no map")),
        };
        let level = match method {
            Method::Feature => {
                Some(level.unwrap_or(*run.meta.levels.as_slice().last().unwrap_or(&7)))
            }
            _ => None,
        };
        if let Some(l) = level {
            Levels::new(vec![l])?;
        }
        if method == Method::Subspace && backbone.as_torch().is_some() {
            return Err(Error::param(
                "--method",
                "subspace maps are HLAC's; CNN runs have knn, padim and patch",
            ));
        }
        if !matches!(method, Method::Feature | Method::Subspace) && backbone.as_torch().is_none() {
            return Err(Error::param(
                "--method",
                "gradient, patch, knn and padim maps need a CNN backbone; HLAC runs support --method feature",
            ));
        }
        if method == Method::Gradient && matches!(image_scorer, ImageScorer::Positions(_)) {
            return Err(Error::param(
                "--method",
                "gradient maps differentiate a Gaussian run's score; use --method knn or padim \
                 for knn and padim runs",
            ));
        }
        if method == Method::Patch && run.meta.preprocess.aspect == Aspect::Keep {
            return Err(Error::param(
                "--method",
                "the patch method needs one input size for all images; refit with --aspect squash",
            ));
        }
        let training = || training_paths(run_dir);
        let batch_size = runtime.images_per_pass(&backbone, run.meta.preprocess.size).max(1);
        let model = match method {
            Method::Gradient => MapModel::Gradient,
            Method::Feature => {
                let l = level.unwrap_or(7);
                let own = run.scorer.gaussians().and_then(|g| {
                    let i = run.meta.levels.as_slice().iter().position(|&x| x == l)?;
                    g.models().get(i)
                });
                match own {
                    Some(gaussian) => {
                        feature_model(&backbone, l, TensorGaussian::new(gaussian, device)?)
                    }
                    // A level the run was not fitted on: fit it on the run's training images.
                    None => {
                        fit_map_model(
                            method,
                            level,
                            &run,
                            &backbone,
                            &training()?,
                            runtime,
                            progress,
                        )?
                        .0
                    }
                }
            }
            Method::Subspace => match run.scorer.subspace() {
                Some(model) => MapModel::Subspace(model.clone()),
                None => {
                    fit_map_model(method, level, &run, &backbone, &training()?, runtime, progress)?
                        .0
                }
            },
            Method::Knn | Method::Padim => match run.scorer.positions() {
                Some(own) if position_method(&own.spec()) == Some(method) => {
                    MapModel::Positions(own.share())
                }
                _ => {
                    fit_map_model(method, level, &run, &backbone, &training()?, runtime, progress)?
                        .0
                }
            },
            Method::Patch => {
                let file = run_dir.join("heatmap-patch.safetensors");
                if file.is_file() {
                    MapModel::Patch(PatchModel::load(&file, device)?)
                } else {
                    let model =
                        fit_patch_model(&backbone, &run, &training()?, batch_size, progress)?;
                    model.save(&file)?;
                    MapModel::Patch(model)
                }
            }
        };
        let networks = vec![Opened { backbone, preprocess: run.meta.preprocess.clone() }];
        let source = MapSource { network: 0, model: Some(model), image_scorer, member: None };
        Heatmapper::assemble(run, method, level, networks, vec![source], batch_size)
            .with_scale(run_dir, runtime, progress)
    }

    /// An ensemble run's maps: the sum of its knn and padim members' standardised position
    /// scores, each member's map drawn by its own network and resized to the image; the image
    /// score is the ensemble's (its pooled members score without a map).
    fn open_ensemble(
        run: RunModel,
        run_dir: &Path,
        method: Method,
        runtime: &Runtime,
        progress: &dyn Progress,
    ) -> Result<Self> {
        if !matches!(method, Method::Knn | Method::Padim) {
            return Err(Error::param(
                "--method",
                format!(
                    "an ensemble run maps with its knn and padim members (--method knn or \
                     padim); {} maps need a run of one scorer",
                    method.name()
                ),
            ));
        }
        let ensemble = run.scorer.ensemble().ok_or_else(|| {
            Error::input(run_dir.join(crate::model::MODEL_JSON), "not an ensemble run")
        })?;
        if !ensemble.members().iter().any(|m| m.scorer.positions().is_some()) {
            return Err(Error::param(
                "--method",
                "this ensemble has no knn or padim member to draw a map; fit a member's scorer \
                 alone to draw its maps",
            ));
        }
        let (networks, part_networks) = Embedder::for_run(runtime, &run, run_dir)?.into_networks();
        let mut sources = Vec::new();
        for (index, (member, &network)) in ensemble.members().iter().zip(&part_networks).enumerate()
        {
            let device = networks[network].backbone.device();
            let (model, image_scorer) = match (member.scorer.positions(), member.scorer.gaussians())
            {
                (Some(own), _) => {
                    (Some(MapModel::Positions(own.share())), ImageScorer::Positions(own.share()))
                }
                (None, Some(gaussians)) => {
                    let levels = member.spec.levels.as_slice().iter();
                    let scorers = levels
                        .zip(gaussians.models())
                        .map(|(&l, g)| Ok((l, TensorGaussian::new(g, device)?)))
                        .collect::<Result<Vec<_>>>()?;
                    (None, ImageScorer::Gaussians(scorers))
                }
                (None, None) => {
                    return Err(Error::param(
                        "--model",
                        format!("ensemble member {index} has a scorer that draws no map"),
                    ))
                }
            };
            sources.push(MapSource {
                network,
                model,
                image_scorer,
                member: Some((index, member.centre, member.spread)),
            });
        }
        let batch_size = networks
            .iter()
            .map(|o| runtime.images_per_pass(&o.backbone, o.preprocess.size))
            .min()
            .unwrap_or(1)
            .max(1);
        Heatmapper::assemble(run, method, None, networks, sources, batch_size)
            .with_scale(run_dir, runtime, progress)
    }

    /// A heatmapper whose colour scale is still to be read or measured.
    fn assemble(
        run: RunModel,
        method: Method,
        level: Option<u8>,
        networks: Vec<Opened>,
        sources: Vec<MapSource>,
        batch_size: usize,
    ) -> Self {
        Heatmapper {
            run,
            method,
            level,
            networks,
            sources,
            scale: MapScale {
                method,
                level,
                position_levels: Vec::new(),
                low: 0.0,
                high: 1.0,
                images: 0,
            },
            batch_size,
        }
    }

    /// Reads the run's stored colour scale for this method, or measures and stores it.
    fn with_scale(
        mut self,
        run_dir: &Path,
        runtime: &Runtime,
        progress: &dyn Progress,
    ) -> Result<Self> {
        let (method, level) = (self.method, self.level);
        let scale_file = run_dir.join(match level {
            Some(l) => format!("heatmap-{}-level{l}.json", method.name()),
            None => format!("heatmap-{}.json", method.name()),
        });
        self.scale = match std::fs::read_to_string(&scale_file)
            .ok()
            .and_then(|t| serde_json::from_str::<MapScale>(&t).ok())
        {
            Some(scale)
                if scale.method == method
                    && scale.level == level
                    && scale.position_levels == self.position_levels() =>
            {
                scale
            }
            _ => {
                let scale = self.measure_scale(&training_paths(run_dir)?, runtime, progress)?;
                atomic::write_json(&scale_file, &scale)?;
                scale
            }
        };
        Ok(self)
    }

    /// Decodes files in parallel and prepares them for each network the maps read; unreadable
    /// files come back as errors.
    pub fn decode(&self, paths: &[PathBuf]) -> (Vec<DecodedImage>, Vec<Error>) {
        // The preprocessings alone cross threads (a network does not). Each network's input is
        // prepared as `anodet score` prepares it, so each member's part of the score is the same.
        let preparation =
            match Preparation::new(self.networks.iter().map(|o| o.preprocess.clone()).collect()) {
                Ok(preparation) => preparation,
                Err(e) => return (Vec::new(), vec![e]),
            };
        let results: Vec<Result<DecodedImage>> = paths
            .par_iter()
            .map(|path| {
                let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
                let (image, inputs) = preparation.decode_and_prepare(path, &bytes)?;
                DecodedImage::from_inputs(path.clone(), image, inputs)
            })
            .collect();
        let mut decoded = Vec::new();
        let mut failures = Vec::new();
        for result in results {
            match result {
                Ok(image) => decoded.push(image),
                Err(e) => failures.push(e),
            }
        }
        (decoded, failures)
    }

    /// Maps of decoded images at their own size, in order.
    pub fn map_decoded(&self, decoded: &[DecodedImage]) -> Result<Vec<ImageMap>> {
        self.combined_maps(&self.sources, decoded, MapSize::Image)
    }

    /// Maps and image scores of decoded images under `sources`, resized to `size`: one forward
    /// pass per network and group of equal input size; an ensemble's members' maps and scores
    /// standardised and summed (members without a map add to the score only).
    fn combined_maps(
        &self,
        sources: &[MapSource],
        decoded: &[DecodedImage],
        size: MapSize,
    ) -> Result<Vec<ImageMap>> {
        let first_mapping = sources
            .iter()
            .find(|s| s.model.is_some())
            .ok_or_else(|| Error::numeric("map", "no scorer of the run draws a map"))?
            .network;
        let mut maps = decoded
            .iter()
            .map(|d| {
                let (width, height) = match size {
                    MapSize::Image => (d.image.width(), d.image.height()),
                    MapSize::Input => {
                        let input = d.prepared_for(first_mapping)?;
                        (input.width, input.height)
                    }
                };
                let values = vec![0.0; (width * height) as usize];
                Ok(ImageMap { path: d.path.clone(), score: 0.0, width, height, values })
            })
            .collect::<Result<Vec<_>>>()?;
        for source in sources {
            let backbone = &self.networks[source.network].backbone;
            let mut groups: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
            for (i, d) in decoded.iter().enumerate() {
                let input = d.prepared_for(source.network)?;
                groups.entry((input.width, input.height)).or_default().push(i);
            }
            let (centre, spread) = source.member.map_or((0.0, 1.0), |(_, c, s)| (c, s));
            for (&(width, height), members) in &groups {
                let images = members
                    .iter()
                    .map(|&i| decoded[i].prepared_for(source.network))
                    .collect::<Result<Vec<_>>>()?;
                let (smoothed, scores) = match &source.model {
                    Some(model) => {
                        let batch = model.run(backbone, &images, &source.image_scorer)?;
                        let smoothed =
                            smooth::to_input_size(&batch.raw, height as i64, width as i64)?;
                        (Some(smoothed), batch.scores)
                    }
                    None => (None, image_scores(backbone, &images, &source.image_scorer)?),
                };
                for (k, (&i, score)) in members.iter().zip(scores).enumerate() {
                    let map = &mut maps[i];
                    map.score += (score - centre) / spread;
                    if let Some(smoothed) = &smoothed {
                        let resized = smooth::resize(
                            &smoothed.get(k as i64),
                            map.height as i64,
                            map.width as i64,
                        )?;
                        let values = smooth::to_vec(&resized)?;
                        if source.member.is_none() {
                            map.values = values;
                        } else {
                            for (total, v) in map.values.iter_mut().zip(values) {
                                *total += ((v as f64 - centre) / spread) as f32;
                            }
                        }
                    }
                }
            }
        }
        Ok(maps)
    }

    /// Maps of image files at their own size; unreadable files are returned as errors.
    pub fn map_files(
        &self,
        paths: &[PathBuf],
        progress: &dyn Progress,
    ) -> Result<(Vec<ImageMap>, Vec<Error>)> {
        let mut maps = Vec::new();
        let mut failures = Vec::new();
        progress.start(paths.len() as u64, "drawing maps");
        for chunk in paths.chunks(self.batch_size) {
            let (decoded, failed) = self.decode(chunk);
            failures.extend(failed);
            maps.extend(self.map_decoded(&decoded)?);
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        Ok((maps, failures))
    }

    /// Images per forward pass.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The colour scale from good images the map model has not seen: models fitted on the
    /// even-numbered training images map (up to 32 of) the odd-numbered ones. In-sample maps
    /// would be biased low (markedly so for the per-position patch Gaussians) and make every
    /// new good image light up. An ensemble's knn and padim members are each refitted so.
    fn measure_scale(
        &self,
        training: &[PathBuf],
        runtime: &Runtime,
        progress: &dyn Progress,
    ) -> Result<MapScale> {
        let fitted: Vec<PathBuf> = training.iter().step_by(2).cloned().collect();
        let held_out: Vec<PathBuf> = training.iter().skip(1).step_by(2).cloned().collect();
        if fitted.len() < 2 || held_out.is_empty() {
            return Err(Error::param(
                "training images",
                format!("{} good images are too few for a map scale", training.len()),
            ));
        }
        let mut sources = Vec::new();
        for source in self.sources.iter().filter(|s| s.model.is_some()) {
            let opened = &self.networks[source.network];
            let (model, image_scorer) = match source.member {
                None => fit_map_model(
                    self.method,
                    self.level,
                    &self.run,
                    &opened.backbone,
                    &fitted,
                    runtime,
                    progress,
                )?,
                Some((index, _, _)) => {
                    let own = self
                        .run
                        .scorer
                        .ensemble()
                        .and_then(|e| e.members().get(index))
                        .and_then(|m| m.scorer.positions())
                        .ok_or_else(|| Error::numeric("map scale", "a map member is missing"))?;
                    let model = fit_position_map(
                        (&opened.backbone, &opened.preprocess),
                        &own.spec(),
                        own.levels(),
                        &fitted,
                        runtime,
                        progress,
                    )?;
                    (MapModel::Positions(model.share()), ImageScorer::Positions(model))
                }
            };
            sources.push(MapSource {
                network: source.network,
                model: Some(model),
                image_scorer,
                member: source.member,
            });
        }
        let step = (held_out.len() as f64 / SCALE_IMAGES as f64).max(1.0);
        let chosen: Vec<PathBuf> = (0..held_out.len().min(SCALE_IMAGES))
            .map(|i| held_out[(i as f64 * step) as usize].clone())
            .collect();
        let mut values: Vec<f64> = Vec::new();
        progress.start(chosen.len() as u64, "scale from good images");
        for chunk in chosen.chunks(self.batch_size) {
            let (decoded, failures) = self.decode(chunk);
            if let Some(first) = failures.into_iter().next() {
                return Err(first);
            }
            for map in self.combined_maps(&sources, &decoded, MapSize::Input)? {
                values.extend(map.values.into_iter().map(f64::from));
            }
            progress.advance(chunk.len() as u64);
        }
        progress.finish();
        let low = quantile(&values, 0.5)? as f32;
        let high = (quantile(&values, 0.999)? as f32).max(low + f32::EPSILON);
        Ok(MapScale {
            method: self.method,
            level: self.level,
            position_levels: self.position_levels(),
            low,
            high,
            images: chosen.len(),
        })
    }

    /// The levels of each knn or padim model that draws this heatmapper's maps.
    fn position_levels(&self) -> Vec<Vec<u8>> {
        self.sources
            .iter()
            .filter_map(|source| match &source.model {
                Some(MapModel::Positions(model)) => Some(model.levels().as_slice().to_vec()),
                _ => None,
            })
            .collect()
    }
}

/// Fits a map model and the image-score Gaussians of the run's levels on `paths` alone (the
/// gradient method differentiates those; the others only need the map).
fn fit_map_model(
    method: Method,
    level: Option<u8>,
    run: &RunModel,
    backbone: &Backbone,
    paths: &[PathBuf],
    runtime: &Runtime,
    progress: &dyn Progress,
) -> Result<(MapModel, ImageScorer)> {
    let device = backbone.device();
    if method == Method::Subspace {
        let params = run.scorer.subspace().map(|m| m.params().clone()).unwrap_or_default();
        let extractor = runtime.extractor(backbone, &run.meta.preprocess, &run.meta.levels)?;
        let (cells, _, _) = extractor.embed(
            paths,
            crate::features::EmbeddingKind::Cells { grid: params.grid },
            OnBadImage::Stop,
            progress,
        )?;
        let model = params.fit_cells(cells.patches()?)?;
        return Ok((MapModel::Subspace(model.clone()), ImageScorer::Subspace(model)));
    }
    let mut wanted: Vec<u8> = run.meta.levels.as_slice().to_vec();
    wanted.extend(level);
    let extractor = runtime.extractor(backbone, &run.meta.preprocess, &Levels::new(wanted)?)?;
    let features = extractor.extract(paths, OnBadImage::Stop, progress)?.features;
    let gaussian_of = |l: u8| -> Result<TensorGaussian> {
        let matrix = features
            .level(l)
            .ok_or_else(|| Error::param("--levels", format!("level {l} missing")))?;
        TensorGaussian::new(&GaussianParams::new().fit(matrix)?, device)
    };
    let image_gaussians = run
        .meta
        .levels
        .as_slice()
        .iter()
        .map(|&l| Ok((l, gaussian_of(l)?)))
        .collect::<Result<Vec<_>>>()?;
    let model = match method {
        Method::Gradient => MapModel::Gradient,
        Method::Feature => {
            let l = level.unwrap_or(7);
            feature_model(backbone, l, gaussian_of(l)?)
        }
        Method::Patch => MapModel::Patch(fit_patch_model(
            backbone,
            run,
            paths,
            runtime.images_per_pass(backbone, run.meta.preprocess.size),
            progress,
        )?),
        Method::Subspace => unreachable!("handled above"),
        Method::Knn | Method::Padim => {
            // The run's own settings when it has this scorer, else the scorer's defaults.
            let (spec, levels) = match run.scorer.positions() {
                Some(own) if position_method(&own.spec()) == Some(method) => {
                    (own.spec(), own.levels().clone())
                }
                _ => {
                    let spec = match method {
                        Method::Padim => ScorerSpec::Padim(PadimParams::default()),
                        _ => ScorerSpec::Knn(KnnParams::default()),
                    };
                    let levels = spec.default_levels();
                    (spec, levels)
                }
            };
            let network = (backbone, &run.meta.preprocess);
            MapModel::Positions(fit_position_map(
                network, &spec, &levels, paths, runtime, progress,
            )?)
        }
    };
    Ok((model, ImageScorer::Gaussians(image_gaussians)))
}

/// The map method that draws a position scorer's own maps.
pub fn position_method(spec: &ScorerSpec) -> Option<Method> {
    match spec {
        ScorerSpec::Knn(_) => Some(Method::Knn),
        ScorerSpec::Padim(_) => Some(Method::Padim),
        _ => None,
    }
}

/// A knn or padim map model (`spec`) on `levels`, fitted on the good images in `paths` as a
/// network (backbone and preprocessing) sees them.
fn fit_position_map(
    (backbone, preprocess): (&Backbone, &Preprocess),
    spec: &ScorerSpec,
    levels: &Levels,
    paths: &[PathBuf],
    runtime: &Runtime,
    progress: &dyn Progress,
) -> Result<Box<dyn PositionScorer>> {
    let extractor = runtime.extractor(backbone, preprocess, levels)?;
    let (patches, _, _) = extractor.extract_patches(paths, levels, OnBadImage::Stop, progress)?;
    let fitted = spec.scorer()?.fit(&crate::features::Embeddings::Patches(patches))?;
    fitted
        .positions()
        .map(|own| own.share())
        .ok_or_else(|| Error::numeric("map model", format!("{} draws no map", spec.name())))
}

/// The category a run was fitted on, found again in the data folder recorded in its fit.json.
pub fn run_category(run_dir: &Path) -> Result<Category> {
    let fit_path = run_dir.join(FIT_JSON);
    let text = std::fs::read_to_string(&fit_path).map_err(|e| Error::io(&fit_path, e))?;
    let facts: FitFacts = serde_json::from_str(&text)
        .map_err(|e| Error::input(&fit_path, format!("corrupt fit report: {e}")))?;
    Category::discover(&facts.data_root, &facts.category)
}

/// The good training images of the run's category.
pub fn training_paths(run_dir: &Path) -> Result<Vec<PathBuf>> {
    Ok(run_category(run_dir)?.training_good().iter().map(|s| s.path.clone()).collect())
}

/// The feature method's model: per position of a CNN level map, or per HLAC cell.
fn feature_model(backbone: &Backbone, level: u8, gaussian: TensorGaussian) -> MapModel {
    match backbone {
        Backbone::Torch(_) => MapModel::Feature { level, gaussian },
        Backbone::Hlac(_) => MapModel::Cells { level, gaussian },
    }
}

fn fit_patch_model(
    backbone: &Backbone,
    run: &RunModel,
    training: &[PathBuf],
    batch_size: usize,
    progress: &dyn Progress,
) -> Result<PatchModel> {
    let torch_backbone = backbone
        .as_torch()
        .ok_or_else(|| Error::param("--method", "patch maps need a CNN backbone"))?;
    if run.meta.preprocess.aspect == Aspect::Auto {
        // Per-image aspect: the patch Gaussians need every training image at one input size.
        let mut sizes = std::collections::BTreeSet::new();
        for path in training {
            let (w, h) = image::image_dimensions(path)
                .map_err(|e| Error::input(path, format!("cannot read the image size: {e}")))?;
            let target = run.meta.preprocess.target_size(w, h);
            sizes.insert((target.width, target.height));
        }
        if sizes.len() > 1 {
            return Err(Error::param(
                "--method",
                "the patch method needs one input size for all images, and --aspect auto kept \
                 the shape of some training images; refit with --aspect squash",
            ));
        }
    }
    let mut accumulator = PositionAccumulator::new();
    progress.start(training.len() as u64, "fitting patch model");
    let preprocess = &run.meta.preprocess;
    for chunk in training.chunks(batch_size.max(1)) {
        let prepared =
            chunk.par_iter().map(|p| preprocess.prepare(p)).collect::<Result<Vec<_>>>()?;
        let images: Vec<&PreparedImage> = prepared.iter().collect();
        let levels = torch_backbone.forward(&torch_backbone.batch_tensor(&images)?)?;
        let (features, grid) = crate::heatmap::patch::patch_features(&levels)?;
        accumulator.push(&features, grid)?;
        progress.advance(chunk.len() as u64);
    }
    progress.finish();
    Ok(accumulator.finish(backbone.device())?.into())
}

/// Pixel-level results of one evaluated image.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PixelImage {
    pub path: PathBuf,
    pub defect_type: String,
    pub score: f64,
    /// Pixel AUC within this image (defective images with a non-empty mask only).
    pub auc: Option<f64>,
}

/// Pixel-level evaluation of a category's test images against their masks.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PixelReport {
    pub version: u32,
    pub category: String,
    pub method: Method,
    pub level: Option<u8>,
    pub images: usize,
    /// Maps and masks are compared at the image size scaled to at most this many pixels a side.
    pub evaluation_side: u32,
    pub pixel_auc: Option<f64>,
    pub pixel_auc_per_defect_type: BTreeMap<String, Option<f64>>,
    /// Per-region overlap averaged over false-positive rates up to 30%, normalised to [0, 1].
    pub pro_30: Option<f64>,
    pub seconds_per_image: f64,
    pub per_image: Vec<PixelImage>,
}

/// Longest side at which maps are compared with masks.
pub const EVALUATION_SIDE: u32 = 256;

/// Evaluates maps of the test samples (good ones count as all-normal) against their masks.
pub fn evaluate_pixels(
    heatmapper: &Heatmapper,
    samples: &[&Sample],
    progress: &dyn Progress,
) -> Result<PixelReport> {
    let started = Instant::now();
    let paths: Vec<PathBuf> = samples.iter().map(|s| s.path.clone()).collect();
    let (maps, failures) = heatmapper.map_files(&paths, progress)?;
    if let Some(first) = failures.into_iter().next() {
        return Err(first);
    }
    let seconds_per_image = started.elapsed().as_secs_f64() / samples.len().max(1) as f64;
    let evaluated: Vec<(Vec<f32>, Vec<bool>, usize)> = maps
        .par_iter()
        .zip(samples.par_iter())
        .map(|(map, sample)| downscale_pair(map, sample))
        .collect::<Result<Vec<_>>>()?;
    let mut per_image = Vec::new();
    let mut by_type: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (i, ((values, labels, _), sample)) in evaluated.iter().zip(samples).enumerate() {
        let scores: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let auc = if sample.is_defective() { roc_auc(&scores, labels)? } else { None };
        per_image.push(PixelImage {
            path: sample.path.clone(),
            defect_type: sample.defect_type.clone(),
            score: maps[i].score,
            auc,
        });
        by_type.entry(sample.defect_type.clone()).or_default().push(i);
    }
    let pooled_auc = |indices: &[usize]| -> Result<Option<f64>> {
        let mut scores = Vec::new();
        let mut labels = Vec::new();
        for &i in indices {
            scores.extend(evaluated[i].0.iter().map(|&v| v as f64));
            labels.extend_from_slice(&evaluated[i].1);
        }
        roc_auc(&scores, &labels)
    };
    let all: Vec<usize> = (0..samples.len()).collect();
    let good: Vec<usize> = by_type.get("good").cloned().unwrap_or_default();
    let mut per_type = BTreeMap::new();
    for (defect_type, members) in by_type.iter().filter(|(t, _)| t.as_str() != "good") {
        let mut indices = good.clone();
        indices.extend(members);
        per_type.insert(defect_type.clone(), pooled_auc(&indices)?);
    }
    let labelled: Vec<LabelledMap> = evaluated
        .iter()
        .map(|(values, labels, width)| LabelledMap { values, labels, width: *width })
        .collect();
    let pro_30 = pro_auc(&labelled, 0.3)?;
    Ok(PixelReport {
        version: 1,
        category: heatmapper.run.meta.category.clone(),
        method: heatmapper.method,
        level: heatmapper.level,
        images: samples.len(),
        evaluation_side: EVALUATION_SIDE,
        pixel_auc: pooled_auc(&all)?,
        pixel_auc_per_defect_type: per_type,
        pro_30,
        seconds_per_image,
        per_image,
    })
}

/// The map and the mask (good images: all normal) at the evaluation size: values, labels, width.
fn downscale_pair(map: &ImageMap, sample: &Sample) -> Result<(Vec<f32>, Vec<bool>, usize)> {
    let scale = (EVALUATION_SIDE as f64 / map.width.max(map.height) as f64).min(1.0);
    let (w, h) = (
        ((map.width as f64 * scale).round() as u32).max(1),
        ((map.height as f64 * scale).round() as u32).max(1),
    );
    let full = Tensor::from_slice(&map.values).view([map.height as i64, map.width as i64]);
    let values = smooth::to_vec(&smooth::resize(&full, h as i64, w as i64)?)?;
    let labels = match &sample.mask {
        Some(mask_path) if sample.is_defective() => {
            let mask = decode(mask_path)?.to_luma8();
            let mask = image::imageops::resize(&mask, w, h, image::imageops::FilterType::Nearest);
            mask.pixels().map(|p| p.0[0] > 127).collect()
        }
        _ => vec![false; (w * h) as usize],
    };
    Ok((values, labels, w as usize))
}

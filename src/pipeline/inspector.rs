//! A run opened once for inspection: the one place that knows how a run turns already-decoded
//! images into scores, verdicts and maps. `anodet score` and `anodet serve` both go through it,
//! so they give identical scores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use image::DynamicImage;

use crate::backbone::{Backbone, BatchLimit};
use crate::data::image::{decode_slice, PreparedImage, Preprocess};
use crate::error::{Error, Result};
use crate::features::embed_prepared;
use crate::heatmap::Method;
use crate::model::{RunModel, MODEL_JSON};
use crate::pipeline::heatmap::{DecodedImage, Heatmapper, MapScale};
use crate::pipeline::Runtime;
use crate::progress::Progress;
use crate::report::overlay;
use crate::threshold::Threshold;

/// A loaded, checked run with its backbone, ready to score prepared images.
pub struct Inspector {
    dir: PathBuf,
    run: RunModel,
    backbone: Backbone,
    card: ModelCard,
    maps: Option<Heatmapper>,
    /// Input pixels per forward pass at most (see [`BatchLimit`]); `None` under `--batch`.
    pass_pixels: Option<usize>,
}

/// What a run is, for people and for monitoring (`GET /v1/model`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ModelCard {
    pub version: u32,
    pub run_dir: PathBuf,
    pub category: String,
    pub backbone: String,
    pub architecture: String,
    pub weights: String,
    /// SHA-256 of the backbone's fp32 TorchScript file: the network's identity.
    pub backbone_sha256: String,
    /// SHA-256 of `model.json` and `model.safetensors` together: this run's identity.
    pub identity: String,
    /// The computation that runs: fp32, fp32_frozen, bf16 or hlac.
    pub precision: String,
    pub device: String,
    pub levels: Vec<u8>,
    pub input: String,
    pub aspect: String,
    /// How an image's score is computed.
    pub scorer: String,
    pub covariance: String,
    pub threshold: Threshold,
    /// When `model.json` was written (RFC 3339, UTC).
    pub fitted_at: Option<String>,
    pub anodet_version: String,
    /// The map method of `map` (`None` until maps are opened).
    pub map_method: Option<String>,
}

/// An anomaly map of one image at the image's own size, with the run's fixed colour scale.
pub struct RunMap {
    pub width: u32,
    pub height: u32,
    pub values: Vec<f32>,
    pub scale: MapScale,
    pub method: Method,
}

impl Inspector {
    /// Loads the run in `model_dir` and its backbone, and checks that they belong together.
    pub fn load(model_dir: &Path, runtime: &Runtime) -> Result<Inspector> {
        let run = RunModel::load(model_dir)?;
        if run.meta.scorer.embedding() == crate::features::EmbeddingKind::Members {
            return Err(Error::input(
                model_dir.join(MODEL_JSON),
                "an ensemble run reads several backbones; serving one is not supported (score it with `anodet score`)",
            ));
        }
        let backbone =
            runtime.load_backbone(&run.meta.backbone.name, &run.meta.preprocess, false)?;
        run.check_backbone(model_dir, &backbone)?;
        let card = ModelCard::new(model_dir, &run, &backbone)?;
        let pass_pixels = runtime.batch_limit(&backbone).pixels;
        Ok(Inspector { dir: model_dir.to_path_buf(), run, backbone, card, maps: None, pass_pixels })
    }

    /// Opens the run's map method (patch for CNN runs, feature for HLAC runs, as
    /// `anodet heatmap` does). The first time, this fits what the method needs on the run's
    /// training images and stores it in the run folder; later loads read it back.
    pub fn open_maps(&mut self, runtime: &Runtime, progress: &dyn Progress) -> Result<()> {
        let method = match &self.run.meta.scorer {
            crate::scorer::ScorerSpec::Knn(_) => Method::Knn,
            crate::scorer::ScorerSpec::Subspace(_) => Method::Subspace,
            _ if self.run.meta.backbone.name == "hlac" => Method::Feature,
            _ => Method::Patch,
        };
        let heatmapper = Heatmapper::open(&self.dir, method, None, runtime, progress)?;
        if heatmapper.run.meta != self.run.meta {
            return Err(Error::input(
                self.dir.join(MODEL_JSON),
                "the run changed while it was being opened; try again",
            ));
        }
        self.card.map_method = Some(method.name().to_string());
        self.maps = Some(heatmapper);
        Ok(())
    }

    /// Where the network runs.
    pub fn device(&self) -> tch::Device {
        self.backbone.device()
    }

    pub fn backbone(&self) -> &Backbone {
        &self.backbone
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn run(&self) -> &RunModel {
        &self.run
    }

    pub fn card(&self) -> &ModelCard {
        &self.card
    }

    /// The run's stored threshold: scores above it are anomalous.
    pub fn threshold(&self) -> f64 {
        self.run.meta.threshold.value
    }

    pub fn preprocess(&self) -> &Preprocess {
        &self.run.meta.preprocess
    }

    /// Scores of prepared images, in order: one forward pass per group of equal input size
    /// (one for the whole batch with `--aspect squash`, the default).
    pub fn score(&self, images: &[&PreparedImage]) -> Result<Vec<f64>> {
        let mut groups: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
        for (i, image) in images.iter().enumerate() {
            groups.entry((image.width, image.height)).or_default().push(i);
        }
        let levels = &self.run.meta.levels;
        let kind = self.run.meta.scorer.embedding();
        let mut scores = vec![0.0; images.len()];
        // Callers bound the image count (serve's --max-batch, score's batch); large inputs
        // also respect the backbone's pixels per pass.
        let limit = BatchLimit { images: usize::MAX, pixels: self.pass_pixels };
        for (&(width, height), members) in &groups {
            for members in members.chunks(limit.images_of(width, height)) {
                let group: Vec<&PreparedImage> = members.iter().map(|&i| images[i]).collect();
                let embeddings = embed_prepared(&self.backbone, kind, levels, &group)?;
                for (&i, score) in members.iter().zip(self.run.scorer.score(&embeddings)?) {
                    scores[i] = score;
                }
            }
        }
        Ok(scores)
    }

    /// Runs the network once on a blank image of the input size, so the first real request
    /// does not pay for libtorch's lazy initialisation.
    pub fn warm_up(&self) -> Result<()> {
        let size = self.preprocess().size;
        let blank = PreparedImage {
            width: size.width,
            height: size.height,
            chw: vec![0.0; 3 * (size.width * size.height) as usize],
        };
        let scores = self.score(&[&blank])?;
        match scores.first() {
            Some(score) if score.is_finite() => Ok(()),
            _ => Err(Error::numeric(
                format!("{}: warm-up", self.dir.display()),
                "the run gives no finite score for a blank image",
            )),
        }
    }

    /// Whether maps are open (see [`Inspector::open_maps`]).
    pub fn has_maps(&self) -> bool {
        self.maps.is_some()
    }

    /// The run's anomaly map of one image, as `anodet heatmap` computes it.
    pub fn map(&self, image: &DynamicImage, prepared: &PreparedImage) -> Result<RunMap> {
        let heatmapper = self.maps.as_ref().ok_or_else(|| {
            Error::param("maps", "maps are not open for this run (Inspector::open_maps)")
        })?;
        let decoded = [DecodedImage::new(PathBuf::from("image"), image.clone(), prepared.clone())];
        let map = heatmapper
            .map_decoded(&decoded)?
            .pop()
            .ok_or_else(|| Error::numeric("map", "no map came back"))?;
        Ok(RunMap {
            width: map.width,
            height: map.height,
            values: map.values,
            scale: heatmapper.scale.clone(),
            method: heatmapper.method,
        })
    }
}

impl RunMap {
    /// The map over `image` with the run's fixed colour scale and a colour bar, as PNG bytes.
    pub fn overlay_png(&self, image: &DynamicImage, caption: &str) -> Result<Vec<u8>> {
        let blended = overlay::blend(image, &self.values, &self.scale, None);
        overlay::png(&overlay::with_colour_bar(&blended, &self.scale, caption)?)
    }
}

/// Decodes image bytes (`name` appears in errors) in full, for a picture of the image, and
/// prepares them for the network exactly as `fit` and `eval` do ([`Preprocess::prepare_bytes`]:
/// a large JPEG is reduced in the DCT), so a map's score is the image's score. Pure CPU work
/// that needs no network: callers may run it on any thread.
pub fn decode_and_prepare(
    preprocess: &Preprocess,
    name: &Path,
    bytes: &[u8],
) -> Result<(DynamicImage, PreparedImage)> {
    let image = decode_slice(name, bytes)?;
    let prepared = prepare_decoded_file(preprocess, name, bytes, &image)?;
    Ok((image, prepared))
}

/// Prepares a file already decoded in full (`image`, from `bytes`) for the network as
/// [`Preprocess::prepare_bytes`] would: only JPEGs take another path to the network input
/// (reduced in the DCT); anything else is prepared from the decoded pixels, not decoded again.
pub fn prepare_decoded_file(
    preprocess: &Preprocess,
    name: &Path,
    bytes: &[u8],
    image: &DynamicImage,
) -> Result<PreparedImage> {
    if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) {
        preprocess.prepare_bytes(name, bytes)
    } else {
        Ok(preprocess.prepare_decoded(image))
    }
}

impl ModelCard {
    fn new(dir: &Path, run: &RunModel, backbone: &Backbone) -> Result<ModelCard> {
        let meta = &run.meta;
        let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
        let mut fitted_at = None;
        for name in [MODEL_JSON, crate::model::MODEL_TENSORS] {
            let path = dir.join(name);
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            sha2::Digest::update(&mut hasher, &bytes);
            if name == MODEL_JSON {
                fitted_at = std::fs::metadata(&path).and_then(|m| m.modified()).ok().map(rfc3339);
            }
        }
        let identity = format!("{:x}", sha2::Digest::finalize(hasher));
        Ok(ModelCard {
            version: 1,
            run_dir: dir.to_path_buf(),
            category: meta.category.clone(),
            backbone: meta.backbone.name.clone(),
            architecture: meta.backbone.architecture.clone(),
            weights: meta.backbone.weights.clone(),
            backbone_sha256: meta.backbone.torchscript_sha256.clone(),
            identity,
            precision: backbone.precision().to_string(),
            device: format!("{:?}", backbone.device()).to_lowercase(),
            levels: meta.levels.as_slice().to_vec(),
            input: meta.preprocess.size.to_string(),
            aspect: format!("{:?}", meta.preprocess.aspect).to_lowercase(),
            scorer: meta.score.clone(),
            covariance: meta.covariance.clone(),
            threshold: meta.threshold.clone(),
            fitted_at,
            anodet_version: meta.anodet_version.clone(),
            map_method: None,
        })
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

//! A run opened once for inspection: the one place that knows how a run turns already-decoded
//! images into scores, verdicts and maps. `anodet score` and `anodet serve` both go through it,
//! so they give identical scores. An ensemble run reads several networks, each at its own input
//! size: an image is prepared once per network ([`Preparation`]), each member scores its
//! network's input, and the members' standardised scores are summed as the ensemble's model
//! does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use image::DynamicImage;

use crate::backbone::{Backbone, BatchLimit, Levels};
use crate::data::image::{decode_slice, PreparedImage, Preprocess};
use crate::error::{Error, Result};
use crate::features::{embed_prepared_shared, EmbeddingKind};
use crate::heatmap::Method;
use crate::model::{RunModel, MODEL_JSON};
use crate::pipeline::embed::Embedder;
use crate::pipeline::heatmap::{DecodedImage, Heatmapper, MapScale};
use crate::pipeline::Runtime;
use crate::progress::Progress;
use crate::report::overlay;
use crate::scorer::{FittedScorer, ScorerSpec};
use crate::threshold::Threshold;

/// How a run's networks take an image: one preprocessing per network it reads, the run's own
/// first (one for a single scorer; an ensemble's members may add others).
#[derive(Debug, Clone, PartialEq)]
pub struct Preparation {
    preprocesses: Vec<Preprocess>,
}

/// An image prepared for every network of a run, in [`Preparation`]'s order.
#[derive(Debug, Clone)]
pub struct PreparedInputs {
    pub networks: Vec<PreparedImage>,
}

impl Preparation {
    /// One preprocessing per network, the run's own first.
    pub fn new(preprocesses: Vec<Preprocess>) -> Result<Preparation> {
        if preprocesses.is_empty() {
            return Err(Error::numeric("preparation", "a run reads at least one network"));
        }
        Ok(Preparation { preprocesses })
    }

    /// The run's own network's preprocessing.
    pub fn primary(&self) -> &Preprocess {
        &self.preprocesses[0]
    }

    /// Prepares image file bytes (`name` appears in errors) for every network as `fit` and
    /// `eval` do ([`Preprocess::prepare_bytes`]); a file that is not a JPEG is decoded once for
    /// all of them.
    pub fn prepare_bytes(&self, name: &Path, bytes: &[u8]) -> Result<PreparedInputs> {
        if let [only] = &self.preprocesses[..] {
            return Ok(PreparedInputs { networks: vec![only.prepare_bytes(name, bytes)?] });
        }
        if image::guess_format(bytes).ok() == Some(image::ImageFormat::Jpeg) {
            let networks = self
                .preprocesses
                .iter()
                .map(|p| p.prepare_bytes(name, bytes))
                .collect::<Result<_>>()?;
            return Ok(PreparedInputs { networks });
        }
        Ok(self.decode_and_prepare(name, bytes)?.1)
    }

    /// Decodes image bytes in full (for a picture of the image) and prepares them for every
    /// network exactly as `fit` and `eval` do: a large JPEG reduced in the DCT (see
    /// [`Preprocess::prepare_bytes`]), anything else from the decoded pixels. Pure CPU work that
    /// needs no network: callers may run it on any thread.
    pub fn decode_and_prepare(
        &self,
        name: &Path,
        bytes: &[u8],
    ) -> Result<(DynamicImage, PreparedInputs)> {
        let image = decode_slice(name, bytes)?;
        let networks = self
            .preprocesses
            .iter()
            .map(|p| prepare_decoded_file(p, name, bytes, &image))
            .collect::<Result<_>>()?;
        Ok((image, PreparedInputs { networks }))
    }
}

/// One network the run reads, opened.
struct Network {
    backbone: Backbone,
    /// Input pixels per forward pass at most (see [`BatchLimit`]); `None` under `--batch`.
    pass_pixels: Option<usize>,
}

/// A loaded, checked run with its backbone(s), ready to score prepared images.
pub struct Inspector {
    dir: PathBuf,
    run: RunModel,
    /// The run's own network first.
    networks: Vec<Network>,
    preparation: Preparation,
    /// Per part of the scorer (one; an ensemble's members), the network it reads.
    part_networks: Vec<usize>,
    card: ModelCard,
    maps: Option<Heatmapper>,
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
    /// An ensemble's members, each with the network it reads (absent for other runs).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberCard>,
}

/// One ensemble member in a [`ModelCard`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct MemberCard {
    pub scorer: String,
    pub levels: Vec<u8>,
    pub backbone: String,
    /// SHA-256 of the member backbone's fp32 TorchScript file.
    pub backbone_sha256: String,
    pub precision: String,
    pub input: String,
    pub aspect: String,
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
    /// Loads the run in `model_dir` and its backbone(s), and checks that they belong together
    /// (an ensemble's member networks each against its record).
    pub fn load(model_dir: &Path, runtime: &Runtime) -> Result<Inspector> {
        let run = RunModel::load(model_dir)?;
        let (opened, part_networks) = Embedder::for_run(runtime, &run, model_dir)?.into_networks();
        let preparation = Preparation::new(opened.iter().map(|o| o.preprocess.clone()).collect())?;
        let networks: Vec<Network> = opened
            .into_iter()
            .map(|o| Network {
                pass_pixels: runtime.batch_limit(&o.backbone).pixels,
                backbone: o.backbone,
            })
            .collect();
        let mut card = ModelCard::new(model_dir, &run, &networks[0].backbone)?;
        if let ScorerSpec::Ensemble(params) = &run.meta.scorer {
            card.members = params
                .members
                .iter()
                .zip(&run.meta.members)
                .zip(&part_networks)
                .map(|((member, record), &network)| MemberCard {
                    scorer: member.scorer.name().to_string(),
                    levels: member.levels.as_slice().to_vec(),
                    backbone: record.backbone.name.clone(),
                    backbone_sha256: record.backbone.torchscript_sha256.clone(),
                    precision: networks[network].backbone.precision().to_string(),
                    input: record.preprocess.size.to_string(),
                    aspect: format!("{:?}", record.preprocess.aspect).to_lowercase(),
                })
                .collect();
        }
        Ok(Inspector {
            dir: model_dir.to_path_buf(),
            run,
            networks,
            preparation,
            part_networks,
            card,
            maps: None,
        })
    }

    /// Opens the run's map method (patch for CNN runs, feature for HLAC runs, as
    /// `anodet heatmap` does). The first time, this fits what the method needs on the run's
    /// training images and stores it in the run folder; later loads read it back.
    pub fn open_maps(&mut self, runtime: &Runtime, progress: &dyn Progress) -> Result<()> {
        let method =
            Method::default_for(&self.run.meta.scorer, self.run.meta.backbone.name == "hlac");
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
        self.backbone().device()
    }

    /// The run's own network.
    pub fn backbone(&self) -> &Backbone {
        &self.networks[0].backbone
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

    /// The run's own network's preprocessing.
    pub fn preprocess(&self) -> &Preprocess {
        self.preparation.primary()
    }

    /// How images are prepared for the run's networks.
    pub fn preparation(&self) -> &Preparation {
        &self.preparation
    }

    /// Scores of prepared images, in order: per network, one forward pass per group of equal
    /// input size (one for the whole batch with `--aspect squash`, the default), shared by every
    /// part of the scorer that reads the network; an ensemble's members' scores standardised
    /// and summed in member order, as its model does.
    pub fn score(&self, images: &[&PreparedInputs]) -> Result<Vec<f64>> {
        let Some(ensemble) = self.run.scorer.ensemble() else {
            let meta = &self.run.meta;
            let reader = (&*self.run.scorer, meta.scorer.embedding(), &meta.levels);
            return Ok(self.network_scores(0, &[reader], images)?.remove(0));
        };
        let members = ensemble.members();
        let mut part_scores: Vec<Vec<f64>> = vec![Vec::new(); members.len()];
        for network in 0..self.networks.len() {
            let parts: Vec<usize> = (0..members.len())
                .filter(|&p| self.part_networks.get(p) == Some(&network))
                .collect();
            if parts.is_empty() {
                continue;
            }
            let readers: Vec<_> = parts
                .iter()
                .map(|&p| {
                    let m = &members[p];
                    (&*m.scorer, m.spec.scorer.embedding(), &m.spec.levels)
                })
                .collect();
            for (&p, scores) in parts.iter().zip(self.network_scores(network, &readers, images)?) {
                part_scores[p] = scores;
            }
        }
        ensemble.combine(&part_scores)
    }

    /// Scores of `images` by each reader of network `index` (a scorer, the kind of features it
    /// reads and their levels), one forward pass per group of equal input size serving them all.
    fn network_scores(
        &self,
        index: usize,
        readers: &[(&dyn FittedScorer, EmbeddingKind, &Levels)],
        images: &[&PreparedInputs],
    ) -> Result<Vec<Vec<f64>>> {
        let network = &self.networks[index];
        let inputs = images
            .iter()
            .map(|image| {
                image.networks.get(index).ok_or_else(|| {
                    Error::numeric("inspector", "an image was not prepared for every network")
                })
            })
            .collect::<Result<Vec<&PreparedImage>>>()?;
        let mut groups: BTreeMap<(u32, u32), Vec<usize>> = BTreeMap::new();
        for (i, image) in inputs.iter().enumerate() {
            groups.entry((image.width, image.height)).or_default().push(i);
        }
        let reads: Vec<(EmbeddingKind, &Levels)> =
            readers.iter().map(|&(_, kind, levels)| (kind, levels)).collect();
        let mut scores = vec![vec![0.0; images.len()]; readers.len()];
        // Callers bound the image count (serve's --max-batch, score's batch); large inputs
        // also respect the backbone's pixels per pass.
        let limit = BatchLimit { images: usize::MAX, pixels: network.pass_pixels };
        for (&(width, height), members) in &groups {
            for members in members.chunks(limit.images_of(width, height)) {
                let group: Vec<&PreparedImage> = members.iter().map(|&i| inputs[i]).collect();
                let embedded = embed_prepared_shared(&network.backbone, &reads, &group)?;
                for ((scorer, _, _), (embeddings, out)) in
                    readers.iter().zip(embedded.iter().zip(scores.iter_mut()))
                {
                    for (&i, score) in members.iter().zip(scorer.score(embeddings)?) {
                        out[i] = score;
                    }
                }
            }
        }
        Ok(scores)
    }

    /// Runs each network once on a blank image of its input size, so the first real request
    /// does not pay for libtorch's lazy initialisation.
    pub fn warm_up(&self) -> Result<()> {
        let networks = self
            .preparation
            .preprocesses
            .iter()
            .map(|p| PreparedImage {
                width: p.size.width,
                height: p.size.height,
                chw: vec![0.0; 3 * (p.size.width * p.size.height) as usize],
            })
            .collect();
        let scores = self.score(&[&PreparedInputs { networks }])?;
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
    pub fn map(&self, image: &DynamicImage, prepared: &PreparedInputs) -> Result<RunMap> {
        let heatmapper = self.maps.as_ref().ok_or_else(|| {
            Error::param("maps", "maps are not open for this run (Inspector::open_maps)")
        })?;
        let decoded =
            [DecodedImage::from_inputs(PathBuf::from("image"), image.clone(), prepared.clone())?];
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

/// Prepares a file already decoded in full (`image`, from `bytes`) for the network as
/// [`Preprocess::prepare_bytes`] would: only JPEGs take another path to the network input
/// (reduced in the DCT); anything else is prepared from the decoded pixels, not decoded again.
fn prepare_decoded_file(
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
            members: Vec::new(),
        })
    }
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

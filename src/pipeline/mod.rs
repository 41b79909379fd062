//! Orchestration of the verbs: each function checks its params, then runs data → backbone →
//! features → Gaussian → threshold, and returns plain results the CLI prints.

pub mod embed;
pub mod eval;
pub mod fit;
pub mod heatmap;
pub mod inspector;
pub mod review;
pub mod score;
pub mod tune;

use std::path::{Path, PathBuf};

use crate::backbone::hlac::Hlac;
use crate::backbone::precision::cpu_has_bf16;
use crate::backbone::sidecar::BackboneFiles;
use crate::backbone::{
    Backbone, BackboneInfo, BatchLimit, DeviceSpec, Levels, Precision, TorchBackbone,
};
use crate::data::image::{InputSize, Preprocess};
use crate::error::{Error, Result};
use crate::features::{all_levels_width, preprocess_for, Extractor, FeatureCache, FeatureSpec};

/// Where backbones and the network run: shared by every verb that runs a network.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub models_dir: PathBuf,
    pub device: DeviceSpec,
    /// Images per forward pass (`None`: [`default_batch_size`] for the device).
    pub batch_size: Option<usize>,
    /// Feature cache folder for fit and eval (`None`: always run the network).
    pub cache_root: Option<PathBuf>,
    pub precision: Precision,
}

impl Runtime {
    /// Opens the backbone of `spec` (`hlac`: the built-in weight-free one) with its input size
    /// and aspect (default size: the backbone's own): fit, eval and features.
    pub fn open_backbone(&self, spec: &FeatureSpec) -> Result<(Backbone, Preprocess)> {
        let (name_or_path, size, aspect) = (spec.backbone.as_str(), spec.size, spec.aspect);
        if name_or_path == "hlac" {
            let hlac = Hlac::new();
            let preprocess = preprocess_for(hlac.info(), size, aspect);
            return Ok((Backbone::Hlac(hlac), preprocess));
        }
        let files = BackboneFiles::locate(name_or_path, &self.models_dir)?;
        let preprocess = preprocess_for(&files.info, size, aspect);
        let backbone = self.load_files(files, &preprocess, false)?;
        Ok((backbone, preprocess))
    }

    /// Loads a run's backbone for the run's preprocessing: score and heatmap. Gradient maps
    /// need autograd, which only the plain fp32 file offers.
    pub fn load_backbone(
        &self,
        name_or_path: &str,
        preprocess: &Preprocess,
        needs_autograd: bool,
    ) -> Result<Backbone> {
        if name_or_path == "hlac" {
            return Ok(Backbone::Hlac(Hlac::new()));
        }
        let files = BackboneFiles::locate(name_or_path, &self.models_dir)?;
        self.load_files(files, preprocess, needs_autograd)
    }

    fn load_files(
        &self,
        files: BackboneFiles,
        preprocess: &Preprocess,
        needs_autograd: bool,
    ) -> Result<Backbone> {
        let device = self.device.resolve()?;
        if device.is_cuda() {
            let backbone = TorchBackbone::load(files, device)?;
            return Ok(Backbone::Torch(if self.cuda_autocast(needs_autograd)? {
                backbone.with_cuda_autocast()?
            } else {
                backbone
            }));
        }
        let variant = self.choose_variant(&files.info, preprocess, needs_autograd)?;
        Ok(Backbone::Torch(TorchBackbone::load_variant(files, device, variant)?))
    }

    /// Images per forward pass of `backbone`: `--batch` images, else [`default_batch_size`]
    /// images of at most the backbone's [`pass_pixels`](Backbone::pass_pixels).
    pub fn batch_limit(&self, backbone: &Backbone) -> BatchLimit {
        match self.batch_size {
            Some(images) => BatchLimit::images(images),
            None => BatchLimit {
                images: default_batch_size(backbone.device()),
                pixels: backbone.pass_pixels(),
            },
        }
    }

    /// Images per forward pass of `backbone` on inputs of `size` (see [`Self::batch_limit`]).
    pub fn images_per_pass(&self, backbone: &Backbone, size: InputSize) -> usize {
        self.batch_limit(backbone).images_of(size.width, size.height)
    }

    /// CUDA runs the plain fp32 file, under fp16 autocast unless fp32 was asked for or gradient
    /// maps need it.
    fn cuda_autocast(&self, needs_autograd: bool) -> Result<bool> {
        match self.precision {
            Precision::Auto => Ok(!needs_autograd),
            Precision::Fp32 => Ok(false),
            Precision::Fp16 if needs_autograd => {
                Err(Error::param("--precision", "gradient maps need --precision fp32"))
            }
            Precision::Fp16 => Ok(true),
            Precision::Bf16 => Err(Error::param(
                "--precision",
                "bf16 is anodet's CPU path; on CUDA use fp16 (autocast) or fp32",
            )),
        }
    }

    /// The fastest CPU variant that computes what was asked: bf16 (every input size unless an
    /// old export traced it at one), frozen fp32 (any size), or the plain fp32 file (autograd).
    fn choose_variant(
        &self,
        info: &BackboneInfo,
        preprocess: &Preprocess,
        needs_autograd: bool,
    ) -> Result<Option<&'static str>> {
        let size = [preprocess.size.height, preprocess.size.width];
        let bf16 = info.variants.get("bf16");
        let bf16_fits = bf16.is_some_and(|v| v.serves(size, preprocess.aspect));
        let fp32 = if !needs_autograd && info.variants.contains_key("fp32_frozen") {
            Some("fp32_frozen")
        } else {
            None
        };
        match self.precision {
            Precision::Bf16 => {
                let refusal = if needs_autograd {
                    Some("gradient maps need --precision fp32".to_string())
                } else if bf16.is_none() {
                    Some(format!(
                        "{} has no bf16 variant; re-export it with scripts/export_backbone.py",
                        info.name
                    ))
                } else if !bf16_fits {
                    Some(format!(
                        "the bf16 variant of {} was traced at one input size and serves only that \
                         size with --aspect squash; re-export it with scripts/export_backbone.py \
                         (scripts/setup.sh does) to serve every size",
                        info.name
                    ))
                } else {
                    None
                };
                match refusal {
                    Some(reason) => Err(Error::param("--precision", reason)),
                    None => Ok(Some("bf16")),
                }
            }
            Precision::Auto if !needs_autograd && bf16_fits && cpu_has_bf16() => Ok(Some("bf16")),
            Precision::Auto | Precision::Fp32 => Ok(fp32),
            Precision::Fp16 => Err(Error::param(
                "--precision",
                "fp16 is anodet's CUDA path (autocast); on the CPU use bf16 or fp32",
            )),
        }
    }

    /// A feature extractor for `backbone` with the runtime's batch size and feature cache.
    pub fn extractor<'a>(
        &self,
        backbone: &'a Backbone,
        preprocess: &Preprocess,
        levels: &Levels,
    ) -> Result<Extractor<'a>> {
        Ok(Extractor {
            backbone,
            preprocess: preprocess.clone(),
            levels: levels.clone(),
            batch: self.batch_limit(backbone),
            cache: self.feature_cache(backbone, preprocess)?,
            map_level: None,
        })
    }

    /// The feature cache for `backbone` and `preprocess`, when caching is on.
    pub fn feature_cache(
        &self,
        backbone: &Backbone,
        preprocess: &Preprocess,
    ) -> Result<Option<FeatureCache>> {
        self.cache_root
            .as_ref()
            .map(|root| {
                FeatureCache::open(
                    root,
                    backbone.cache_key(),
                    preprocess,
                    all_levels_width(backbone.info()),
                )
            })
            .transpose()
    }
}

/// Images per forward pass unless `--batch` says otherwise: 64 on CUDA (the GPU is busy only
/// with large batches), 16 on the CPU (larger batches are no faster there and need more memory;
/// large inputs get fewer, see [`Runtime::batch_limit`]).
pub fn default_batch_size(device: tch::Device) -> usize {
    if device.is_cuda() {
        64
    } else {
        16
    }
}

/// The default models folder: `./models` if it exists, else the one of the project the binary
/// was built in (`target/release/anodet` → `../../models`).
pub fn default_models_dir() -> PathBuf {
    let local = PathBuf::from("models");
    if local.is_dir() {
        return local;
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent()?.parent()?.parent().map(|root| root.join("models")))
        .filter(|dir| dir.is_dir())
        .unwrap_or(local)
}

/// `runs/<category>` under `runs_root`.
pub fn default_run_dir(runs_root: &Path, category: &str) -> PathBuf {
    runs_root.join(category)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image::{Aspect, InputSize};

    fn info(bf16_input_size: Option<[u32; 2]>) -> BackboneInfo {
        let traced = bf16_input_size.map(|s| serde_json::json!(s));
        let mut bf16 = serde_json::json!({"file_suffix": "bf16.pt", "sha256": "b", "relative_error": 0.02, "device": "cpu"});
        if let Some(size) = traced {
            bf16["input_size"] = size;
        }
        serde_json::from_value(serde_json::json!({
            "version": 1, "name": "net", "architecture": "a", "input_size": [224, 224],
            "interpolation": "bilinear", "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5],
            "channels": [1, 1, 1, 1, 1, 1, 1, 1, 1], "weights": "w", "weights_sha256": null,
            "torchscript_sha256": "t",
            "variants": {
                "fp32_frozen": {"file_suffix": "frozen.pt", "sha256": "f", "relative_error": 0.0, "device": "cpu"},
                "bf16": bf16,
            }
        }))
        .unwrap()
    }

    fn runtime(precision: Precision) -> Runtime {
        Runtime {
            models_dir: PathBuf::from("models"),
            device: DeviceSpec::Cpu,
            batch_size: None,
            cache_root: None,
            precision,
        }
    }

    fn preprocess(width: u32, height: u32, aspect: Aspect) -> Preprocess {
        Preprocess { size: InputSize { width, height }, aspect, mean: [0.5; 3], std: [0.5; 3] }
    }

    fn choose(
        precision: Precision,
        info: &BackboneInfo,
        p: &Preprocess,
    ) -> Result<Option<&'static str>> {
        runtime(precision).choose_variant(info, p, false)
    }

    #[test]
    fn scripted_bf16_serves_every_size_and_aspect() {
        let scripted = info(None);
        for p in [
            preprocess(224, 224, Aspect::Squash),
            preprocess(320, 320, Aspect::Squash),
            preprocess(576, 224, Aspect::Squash),
            preprocess(224, 224, Aspect::Keep),
            preprocess(256, 256, Aspect::Auto),
        ] {
            assert_eq!(choose(Precision::Bf16, &scripted, &p).unwrap(), Some("bf16"), "{p:?}");
            let auto = choose(Precision::Auto, &scripted, &p).unwrap();
            let expected = if cpu_has_bf16() { "bf16" } else { "fp32_frozen" };
            assert_eq!(auto, Some(expected), "{p:?}");
            assert_eq!(choose(Precision::Fp32, &scripted, &p).unwrap(), Some("fp32_frozen"));
        }
    }

    #[test]
    fn a_traced_bf16_variant_serves_its_own_squashed_size_only() {
        let traced = info(Some([224, 224]));
        let native = preprocess(224, 224, Aspect::Squash);
        assert_eq!(choose(Precision::Bf16, &traced, &native).unwrap(), Some("bf16"));
        for p in [preprocess(320, 320, Aspect::Squash), preprocess(224, 224, Aspect::Keep)] {
            let error = choose(Precision::Bf16, &traced, &p).unwrap_err().to_string();
            assert!(error.contains("--precision") && error.contains("re-export"), "{error}");
            assert_eq!(choose(Precision::Auto, &traced, &p).unwrap(), Some("fp32_frozen"));
        }
    }

    #[test]
    fn bf16_is_refused_without_a_variant_and_for_gradients() {
        let mut none = info(None);
        none.variants.remove("bf16");
        let p = preprocess(224, 224, Aspect::Squash);
        let error = choose(Precision::Bf16, &none, &p).unwrap_err().to_string();
        assert!(error.contains("no bf16 variant"), "{error}");
        let gradient = runtime(Precision::Bf16).choose_variant(&info(None), &p, true);
        assert!(gradient.unwrap_err().to_string().contains("gradient"));
    }
}

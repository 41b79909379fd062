//! Orchestration of the verbs: each function checks its params, then runs data → backbone →
//! features → Gaussian → threshold, and returns plain results the CLI prints.

pub mod embed;
pub mod eval;
pub mod fit;
pub mod heatmap;
pub mod score;
pub mod tune;

use std::path::{Path, PathBuf};

use crate::backbone::hlac::Hlac;
use crate::backbone::precision::cpu_has_bf16;
use crate::backbone::sidecar::BackboneFiles;
use crate::backbone::{Backbone, BackboneInfo, DeviceSpec, Levels, Precision, TorchBackbone};
use crate::data::image::{Aspect, Preprocess};
use crate::error::{Error, Result};
use crate::features::{all_levels_width, preprocess_for, Extractor, FeatureCache, FeatureSpec};

/// Where backbones and the network run: shared by every verb that runs a network.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub models_dir: PathBuf,
    pub device: DeviceSpec,
    pub batch_size: usize,
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
        let variant = self.choose_variant(&files.info, preprocess, device, needs_autograd)?;
        Ok(Backbone::Torch(TorchBackbone::load_variant(files, device, variant)?))
    }

    /// The fastest variant that computes what was asked: bf16 (traced at one size, CPU only),
    /// frozen fp32 (CPU only, any size), or the plain fp32 file (any device, autograd).
    fn choose_variant(
        &self,
        info: &BackboneInfo,
        preprocess: &Preprocess,
        device: tch::Device,
        needs_autograd: bool,
    ) -> Result<Option<&'static str>> {
        let on_cpu = device == tch::Device::Cpu;
        let size = [preprocess.size.height, preprocess.size.width];
        let bf16_fits = preprocess.aspect == Aspect::Squash
            && info.variants.get("bf16").is_some_and(|v| v.input_size == Some(size));
        let fp32 = if on_cpu && !needs_autograd && info.variants.contains_key("fp32_frozen") {
            Some("fp32_frozen")
        } else {
            None
        };
        match self.precision {
            Precision::Bf16 => {
                let refusal = if !on_cpu {
                    Some("bf16 is anodet's CPU path; on CUDA use --precision fp32")
                } else if needs_autograd {
                    Some("gradient maps need --precision fp32")
                } else if !bf16_fits {
                    Some("the bf16 variant serves the backbone's own input size with --aspect squash only")
                } else {
                    None
                };
                match refusal {
                    Some(reason) => Err(Error::param("--precision", reason)),
                    None => Ok(Some("bf16")),
                }
            }
            Precision::Auto if on_cpu && !needs_autograd && bf16_fits && cpu_has_bf16() => {
                Ok(Some("bf16"))
            }
            Precision::Auto | Precision::Fp32 => Ok(fp32),
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
            batch_size: self.batch_size,
            cache: self.feature_cache(backbone, preprocess)?,
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

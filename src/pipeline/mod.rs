//! Orchestration of the verbs: each function checks its params, then runs data → backbone →
//! features → Gaussian → threshold, and returns plain results the CLI prints.

pub mod eval;
pub mod fit;
pub mod heatmap;
pub mod score;

use std::path::{Path, PathBuf};

use crate::backbone::hlac::Hlac;
use crate::backbone::sidecar::BackboneFiles;
use crate::backbone::{Backbone, DeviceSpec, TorchBackbone};
use crate::data::image::Preprocess;
use crate::error::Result;
use crate::features::{all_levels_width, FeatureCache};

/// Where backbones and the network run: shared by every verb that runs a network.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub models_dir: PathBuf,
    pub device: DeviceSpec,
    pub batch_size: usize,
    /// Feature cache folder for fit and eval (`None`: always run the network).
    pub cache_root: Option<PathBuf>,
}

impl Runtime {
    /// Finds and loads a backbone by name or path; `hlac` is the built-in weight-free one.
    pub fn load_backbone(&self, name_or_path: &str) -> Result<Backbone> {
        if name_or_path == "hlac" {
            return Ok(Backbone::Hlac(Hlac::new()));
        }
        let files = BackboneFiles::locate(name_or_path, &self.models_dir)?;
        Ok(Backbone::Torch(TorchBackbone::load(files, self.device.resolve()?)?))
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
                    backbone.sha256(),
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

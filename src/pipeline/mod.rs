//! Orchestration of the verbs: each function checks its params, then runs data → backbone →
//! features → Gaussian → threshold, and returns plain results the CLI prints.

pub mod fit;
pub mod score;

use std::path::{Path, PathBuf};

use crate::backbone::sidecar::BackboneFiles;
use crate::backbone::{DeviceSpec, TorchBackbone};
use crate::error::Result;

/// Where backbones and the network run: shared by every verb that runs a network.
#[derive(Debug, Clone)]
pub struct Runtime {
    pub models_dir: PathBuf,
    pub device: DeviceSpec,
    pub batch_size: usize,
}

impl Runtime {
    /// Finds and loads a backbone by name or path.
    pub fn load_backbone(&self, name_or_path: &str) -> Result<TorchBackbone> {
        let files = BackboneFiles::locate(name_or_path, &self.models_dir)?;
        TorchBackbone::load(files, self.device.resolve()?)
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

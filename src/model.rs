//! The fitted model on disk: a run folder holding `model.json` (everything needed to score, human
//! readable), `model.safetensors` (per-level mean and precision, float64) and `fit.json` (what
//! the fit saw). Model files are data, never pickles or code.

use std::fs;
use std::path::{Path, PathBuf};

use ndarray::{Array1, Array2};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::backbone::Levels;
use crate::data::image::Preprocess;
use crate::error::{Error, Result};
use crate::gaussian::{GaussianModel, MultiLevelGaussian};
use crate::report::atomic;
use crate::threshold::Threshold;

/// Version of the run folder format; bumped on incompatible changes.
pub const MODEL_FORMAT_VERSION: u32 = 1;
pub const MODEL_JSON: &str = "model.json";
pub const MODEL_TENSORS: &str = "model.safetensors";
pub const FIT_JSON: &str = "fit.json";

/// Identifies the exact backbone a model was fitted with.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackboneRef {
    pub name: String,
    pub architecture: String,
    pub torchscript_sha256: String,
    pub weights: String,
}

/// Per-level facts about the fitted Gaussians.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LevelSummary {
    pub level: u8,
    pub dimensions: usize,
    pub images: usize,
    pub shrinkage: f64,
}

/// Everything in `model.json`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ModelMeta {
    pub version: u32,
    pub anodet_version: String,
    pub category: String,
    pub backbone: BackboneRef,
    pub levels: Levels,
    pub preprocess: Preprocess,
    pub covariance: String,
    pub score: String,
    pub threshold: Threshold,
    pub gaussians: Vec<LevelSummary>,
}

/// A fitted model: metadata and Gaussians.
#[derive(Debug, Clone)]
pub struct RunModel {
    pub meta: ModelMeta,
    pub gaussians: MultiLevelGaussian,
}

impl RunModel {
    /// Checks the model against the backbone it will score with: same file (sha256), and each
    /// level's dimension equal to the backbone's channels there.
    pub fn check_backbone(&self, dir: &Path, backbone: &crate::backbone::Backbone) -> Result<()> {
        let expected = &self.meta.backbone.torchscript_sha256;
        if backbone.sha256() != expected {
            return Err(Error::input(
                backbone.identity_path(),
                format!(
                    "the model in {} was fitted with another {} (sha256 {}…); refit or restore that backbone",
                    dir.display(),
                    self.meta.backbone.name,
                    &expected[..12.min(expected.len())]
                ),
            ));
        }
        for (level, model) in self.meta.levels.as_slice().iter().zip(self.gaussians.models()) {
            let channels = backbone.info().channels[*level as usize - 1];
            if model.dim() != channels {
                return Err(Error::input(
                    dir.join(MODEL_JSON),
                    format!(
                        "level {level} of the model has {} dimensions, the backbone gives {channels}; \
                         the run was made with other levels",
                        model.dim()
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl RunModel {
    /// Writes `model.json` and `model.safetensors` into `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (level, model) in self.meta.levels.as_slice().iter().zip(self.gaussians.models()) {
            let bytes = |values: &mut dyn Iterator<Item = &f64>| {
                values.flat_map(|v| v.to_le_bytes()).collect::<Vec<u8>>()
            };
            buffers.push((
                format!("level{level}.mean"),
                vec![model.dim()],
                bytes(&mut model.mean().iter()),
            ));
            buffers.push((
                format!("level{level}.precision"),
                vec![model.dim(), model.dim()],
                bytes(&mut model.precision().iter()),
            ));
        }
        let views = buffers
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F64, shape.clone(), data)
                    .map(|view| (name.clone(), view))
                    .map_err(|e| Error::numeric("model file", e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let path = dir.join(MODEL_TENSORS);
        let bytes =
            safetensors::serialize(views, None).map_err(|e| Error::input(&path, e.to_string()))?;
        atomic::write_file(&path, &bytes)?;
        atomic::write_json(&dir.join(MODEL_JSON), &self.meta)
    }

    /// Reads a run folder written by [`RunModel::save`], checking every part.
    pub fn load(dir: &Path) -> Result<RunModel> {
        let meta_path = dir.join(MODEL_JSON);
        if !dir.is_dir() {
            return Err(Error::input(
                dir,
                "no such run folder; run `anodet fit` first or pass --model",
            ));
        }
        let text = fs::read_to_string(&meta_path).map_err(|e| Error::io(&meta_path, e))?;
        let meta: ModelMeta = serde_json::from_str(&text)
            .map_err(|e| Error::input(&meta_path, format!("corrupt model file: {e}")))?;
        if meta.version != MODEL_FORMAT_VERSION {
            return Err(Error::input(
                &meta_path,
                format!("model format version {} is not supported (expected {MODEL_FORMAT_VERSION}); refit", meta.version),
            ));
        }
        let tensor_path = dir.join(MODEL_TENSORS);
        let bytes = fs::read(&tensor_path).map_err(|e| Error::io(&tensor_path, e))?;
        let tensors = SafeTensors::deserialize(&bytes)
            .map_err(|e| Error::input(&tensor_path, format!("corrupt model tensors: {e}")))?;
        let read = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
            let tensor = tensors
                .tensor(name)
                .map_err(|_| Error::input(&tensor_path, format!("missing tensor {name}")))?;
            if tensor.dtype() != Dtype::F64 || tensor.shape() != shape {
                return Err(Error::input(
                    &tensor_path,
                    format!("tensor {name} has the wrong type or shape"),
                ));
            }
            Ok(tensor
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect())
        };
        let mut models = Vec::new();
        if meta.gaussians.len() != meta.levels.as_slice().len() {
            return Err(Error::input(&meta_path, "gaussians do not match levels"));
        }
        for (level, summary) in meta.levels.as_slice().iter().zip(&meta.gaussians) {
            let d = summary.dimensions;
            let mean = Array1::from(read(&format!("level{level}.mean"), &[d])?);
            let precision =
                Array2::from_shape_vec((d, d), read(&format!("level{level}.precision"), &[d, d])?)
                    .map_err(|e| Error::input(&tensor_path, e.to_string()))?;
            let model =
                GaussianModel::from_parts(mean, precision, summary.shrinkage, summary.images)
                    .map_err(|e| Error::input(&tensor_path, e.to_string()))?;
            models.push(model);
        }
        let gaussians = MultiLevelGaussian::from_parts(meta.levels.clone(), models)?;
        Ok(RunModel { meta, gaussians })
    }
}

/// Where `runs/latest` records the most recent fit.
pub fn latest_pointer(runs_root: &Path) -> PathBuf {
    runs_root.join("latest")
}

/// Records `run_dir` as the latest run.
pub fn remember_latest(runs_root: &Path, run_dir: &Path) -> Result<()> {
    fs::create_dir_all(runs_root).map_err(|e| Error::io(runs_root, e))?;
    let absolute = fs::canonicalize(run_dir).map_err(|e| Error::io(run_dir, e))?;
    atomic::write_file(&latest_pointer(runs_root), format!("{}\n", absolute.display()).as_bytes())
}

/// The latest run recorded under `runs_root`.
pub fn latest(runs_root: &Path) -> Result<PathBuf> {
    let pointer = latest_pointer(runs_root);
    let text = fs::read_to_string(&pointer).map_err(|_| {
        Error::input(&pointer, "no fitted model yet; run `anodet fit` first or pass --model DIR")
    })?;
    Ok(PathBuf::from(text.trim()))
}

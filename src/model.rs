//! The fitted model on disk: a run folder holding `model.json` (everything needed to score, human
//! readable), `model.safetensors` (the fitted scorer's tensors: per-level mean and precision,
//! float64, for the Gaussian; the memory bank, float32, for knn) and `fit.json` (what the fit
//! saw). Model files are data, never pickles or code.

use std::fs;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;

use crate::backbone::Levels;
use crate::data::image::Preprocess;
use crate::error::{Error, Result};
use crate::report::atomic;
use crate::scorer::{self, FittedScorer, ScorerSpec, TensorData};
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

impl BackboneRef {
    /// The identity of a loaded backbone.
    pub fn of(backbone: &crate::backbone::Backbone) -> Self {
        let info = backbone.info();
        BackboneRef {
            name: info.name.clone(),
            architecture: info.architecture.clone(),
            torchscript_sha256: backbone.sha256().to_string(),
            weights: info.weights.clone(),
        }
    }
}

/// An ensemble member's backbone and preprocessing, as fitted.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberRecord {
    pub backbone: BackboneRef,
    pub preprocess: Preprocess,
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
    /// The scorer and its settings (runs made before scorers existed are Gaussian).
    #[serde(default)]
    pub scorer: ScorerSpec,
    pub covariance: String,
    pub score: String,
    pub threshold: Threshold,
    /// Per-level facts of the Gaussian scorer (empty for other scorers).
    #[serde(default)]
    pub gaussians: Vec<LevelSummary>,
    /// An ensemble's members, in the order of its settings (empty for other scorers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberRecord>,
    /// Set when the pipeline was chosen by `anodet tune` (`fit --tuned`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tuned: Option<TunedFrom>,
}

/// How a run's pipeline came from `anodet tune`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TunedFrom {
    pub tune_json: PathBuf,
    /// The chosen candidate, as tune names it.
    pub candidate: String,
    /// The tune's nested (outer-fold) AUROC: what to expect on new parts.
    pub outer_auc: Option<f64>,
    /// True when the choice was made with synthetic defects.
    pub synthetic_defects: bool,
}

/// A fitted model: metadata and the fitted scorer.
pub struct RunModel {
    pub meta: ModelMeta,
    pub scorer: Box<dyn FittedScorer>,
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
        let channels = &backbone.info().channels;
        let mismatch = |what: String, model: usize, backbone: usize| {
            Error::input(
                dir.join(MODEL_JSON),
                format!(
                    "{what} of the model has {model} dimensions, the backbone gives {backbone}; \
                     the run was made with other levels or another backbone"
                ),
            )
        };
        if let Some(gaussians) = self.scorer.gaussians() {
            for (level, model) in self.meta.levels.as_slice().iter().zip(gaussians.models()) {
                let width = channels[*level as usize - 1];
                if model.dim() != width {
                    return Err(mismatch(format!("level {level}"), model.dim(), width));
                }
            }
        }
        if let Some(knn) = self.scorer.knn() {
            let width = crate::features::patches::patch_dim(channels, &self.meta.levels);
            if knn.dim() != width {
                return Err(mismatch("the memory bank".into(), knn.dim(), width));
            }
        }
        if let Some(padim) = self.scorer.padim() {
            let width = crate::features::patches::patch_dim(channels, &self.meta.levels);
            if padim.dim() != width {
                return Err(mismatch("the per-position Gaussians".into(), padim.dim(), width));
            }
        }
        Ok(())
    }
}

impl RunModel {
    /// Writes `model.json` and `model.safetensors` into `dir` (each atomically).
    pub fn save(&self, dir: &Path) -> Result<()> {
        let buffers: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = self
            .scorer
            .tensors()
            .into_iter()
            .map(|t| match t.data {
                TensorData::F64(v) => {
                    (t.name, Dtype::F64, t.shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
                TensorData::F32(v) => {
                    (t.name, Dtype::F32, t.shape, v.iter().flat_map(|x| x.to_le_bytes()).collect())
                }
            })
            .collect();
        let views = buffers
            .iter()
            .map(|(name, dtype, shape, data)| {
                TensorView::new(*dtype, shape.clone(), data)
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
        let tensor = |name: &str, dtype: Dtype| {
            let tensor = tensors
                .tensor(name)
                .map_err(|_| Error::input(&tensor_path, format!("missing tensor {name}")))?;
            if tensor.dtype() != dtype {
                return Err(Error::input(
                    &tensor_path,
                    format!("tensor {name} has the wrong type"),
                ));
            }
            Ok(tensor)
        };
        let read_f64 = |name: &str, shape: &[usize]| -> Result<Vec<f64>> {
            let tensor = tensor(name, Dtype::F64)?;
            if tensor.shape() != shape {
                return Err(Error::input(
                    &tensor_path,
                    format!("tensor {name} has the wrong shape"),
                ));
            }
            Ok(tensor
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap_or([0; 8])))
                .collect())
        };
        let read_f32 = |name: &str| -> Result<(Vec<usize>, Vec<f32>)> {
            let tensor = tensor(name, Dtype::F32)?;
            let values = tensor
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
                .collect();
            Ok((tensor.shape().to_vec(), values))
        };
        let read_f64_any = |name: &str| -> Result<(Vec<usize>, Vec<f64>)> {
            let shape = tensor(name, Dtype::F64)?.shape().to_vec();
            Ok((shape.clone(), read_f64(name, &shape)?))
        };
        if meta.scorer == ScorerSpec::Gaussian
            && meta.gaussians.len() != meta.levels.as_slice().len()
        {
            return Err(Error::input(&meta_path, "gaussians do not match levels"));
        }
        let facts: Vec<(usize, f64, usize)> =
            meta.gaussians.iter().map(|g| (g.dimensions, g.shrinkage, g.images)).collect();
        let readers = scorer::TensorReaders {
            f64_shaped: &read_f64,
            f32_any: &read_f32,
            f64_any: &read_f64_any,
        };
        let scorer = scorer::load_fitted(&meta.scorer, &meta.levels, &facts, &readers).map_err(
            |e| match e {
                Error::Input { .. } => e,
                other => Error::input(&tensor_path, other.to_string()),
            },
        )?;
        Ok(RunModel { meta, scorer })
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

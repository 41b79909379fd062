//! Scorers: how a run turns the features of an image into an anomaly score and an anomaly map.
//!
//! One seam, in linfa's style: scorer params ([`Scorer`]) → `fit` on the embeddings of good
//! images → a fitted scorer ([`FittedScorer`], stored in the run folder) → image scores and, where
//! the scorer localises, a map of position scores per image. `fit`, `score`, `eval` and `heatmap`
//! go through it, so a new scorer is one new implementation, not a branch in every verb.
//!
//! Implementations:
//! - [`gaussian`]: the Gaussian AD method (Rippel et al.): a Ledoit-Wolf Gaussian per level of
//!   global-average-pooled features, score = summed Mahalanobis distance.
//! - [`knn`]: patch memory (PatchCore-style) on deep levels: every position of every good
//!   image in a memory bank (optionally a greedy coreset of it), score = the largest distance of
//!   an image position to its nearest bank entry.
//! - [`padim`]: a Gaussian per grid position (PaDiM) on the same patch features as knn; score =
//!   the largest Mahalanobis distance of a position to its own position's Gaussian.
//! - [`ensemble`]: members of their own backbone, levels and scorer; each member's score
//!   standardised by its cross-fitted good-image scores, then summed.
//! - [`subspace`]: HLAC's classic subspace method on grid cells: the residual of a cell outside
//!   the principal subspace of good cells; score = the worst cell.

pub mod ensemble;
pub mod gaussian;
pub mod knn;
pub mod nearest;
pub mod padim;
pub mod subspace;

use ndarray::Array1;
use tch::Tensor;

use crate::backbone::Levels;
use crate::error::Result;
pub use crate::features::{EmbeddingKind, Embeddings};
use crate::gaussian::MultiLevelGaussian;
use crate::threshold::scores_over_folds;

pub use ensemble::{EnsembleModel, EnsembleParams, MemberSpec, TensorReaders};
pub use gaussian::GaussianScorer;
pub use knn::{KnnModel, KnnParams};
pub use padim::{PadimModel, PadimParams};
pub use subspace::{SubspaceModel, SubspaceParams};

/// A scorer's settings as stored in `model.json` (runs made before scorers existed have none
/// and are Gaussian).
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ScorerSpec {
    #[default]
    Gaussian,
    Knn(KnnParams),
    Padim(PadimParams),
    Subspace(SubspaceParams),
    Ensemble(EnsembleParams),
}

impl ScorerSpec {
    /// Whether one fit serves both settings: knn (or padim) settings that differ only in
    /// `border` (which changes how position scores become an image score, not the fit).
    pub fn shares_fit(&self, other: &ScorerSpec) -> bool {
        match (self, other) {
            (ScorerSpec::Knn(a), ScorerSpec::Knn(b)) => a.coreset == b.coreset && a.seed == b.seed,
            (ScorerSpec::Padim(_), ScorerSpec::Padim(_)) => true,
            (a, b) => a == b,
        }
    }

    /// Whether it scores every position of the patch features (knn, padim).
    pub fn scores_positions(&self) -> bool {
        matches!(self, ScorerSpec::Knn(_) | ScorerSpec::Padim(_))
    }

    /// Whether its maps are position scores: a knn or padim scorer's own, or an ensemble's with
    /// such a member.
    pub fn maps_by_positions(&self) -> bool {
        match self {
            ScorerSpec::Ensemble(p) => p.members.iter().any(|m| m.scorer.scores_positions()),
            other => other.scores_positions(),
        }
    }

    /// The short name used by `--scorer`.
    pub fn name(&self) -> &'static str {
        match self {
            ScorerSpec::Gaussian => "gaussian",
            ScorerSpec::Knn(_) => "knn",
            ScorerSpec::Padim(_) => "padim",
            ScorerSpec::Subspace(_) => "subspace",
            ScorerSpec::Ensemble(_) => "ensemble",
        }
    }

    /// The unfitted scorer with these settings, checked.
    pub fn scorer(&self) -> Result<Box<dyn Scorer>> {
        Ok(match self {
            ScorerSpec::Gaussian => Box::new(GaussianScorer::default()),
            ScorerSpec::Knn(params) => {
                params.check()?;
                Box::new(params.clone())
            }
            ScorerSpec::Padim(params) => Box::new(params.clone()),
            ScorerSpec::Subspace(params) => {
                params.check()?;
                Box::new(params.clone())
            }
            ScorerSpec::Ensemble(params) => {
                params.check()?;
                Box::new(params.clone())
            }
        })
    }

    /// What the scorer reads.
    pub fn embedding(&self) -> EmbeddingKind {
        match self {
            ScorerSpec::Gaussian => EmbeddingKind::Pooled,
            ScorerSpec::Knn(_) | ScorerSpec::Padim(_) => EmbeddingKind::Patches,
            ScorerSpec::Subspace(p) => EmbeddingKind::Cells { grid: p.grid },
            ScorerSpec::Ensemble(_) => EmbeddingKind::Members,
        }
    }

    /// The levels the scorer uses when `--levels` is not given: level 7 for the pooled
    /// Gaussian (the original study's), 6+7 for patch memory (deep levels localise well with
    /// EfficientNet-Lite; mid levels 4+5 as in PatchCore's ResNets were far weaker), 5+6+7 for
    /// PaDiM: level 5 lies on level 6's grid, so it adds finer features without adding positions,
    /// and a Gaussian per position gained from them wherever the figure moved (3-fold CV, five
    /// seeds: elpv-poly 0.924 → 0.928, magnetic-tile 0.975 → 0.977, wood 0.906 → 0.908;
    /// elpv-mono and bottle equal). knn did not gain alike (seed 0: elpv-poly 0.912 → 0.918,
    /// magnetic-tile 0.965 → 0.964).
    pub fn default_levels(&self) -> Levels {
        match self {
            ScorerSpec::Gaussian => Levels::new(vec![7]),
            ScorerSpec::Knn(_) => Levels::new(vec![6, 7]),
            ScorerSpec::Padim(_) => Levels::new(vec![5, 6, 7]),
            // HLAC's levels (the subspace method is HLAC's).
            ScorerSpec::Subspace(_) => Levels::new((1..=9).collect()),
            // Members carry their own levels; the run records the first member's.
            ScorerSpec::Ensemble(p) => match p.members.first() {
                Some(member) => Ok(member.levels.clone()),
                None => Levels::new(vec![7]),
            },
        }
        .unwrap_or_else(|_| unreachable!("constant levels are valid"))
    }

    /// One sentence for `model.json`: how an image's score is computed.
    pub fn description(&self) -> String {
        match self {
            ScorerSpec::Gaussian => {
                "Mahalanobis distance sqrt((x-mean)' precision (x-mean)) of the \
                 global-average-pooled features, summed over levels"
                    .into()
            }
            ScorerSpec::Knn(p) => format!(
                "largest distance of an image position (3x3-averaged features of the levels, \
                 upsampled to the finest level's grid and concatenated; the outer {} ring(s) \
                 ignored) to its nearest entry in a memory bank of good-image positions \
                 ({})",
                p.border,
                if p.coreset >= 1.0 {
                    "all positions".to_string()
                } else {
                    format!("greedy k-center coreset of {}% of them", p.coreset * 100.0)
                }
            ),
            ScorerSpec::Padim(p) => format!(
                "largest Mahalanobis distance of an image position (the knn scorer's features) \
                 to the Ledoit-Wolf Gaussian of the good images' features at that position (the \
                 outer {} ring(s) ignored)",
                p.border
            ),
            ScorerSpec::Subspace(p) => format!(
                "largest residual norm, outside the principal subspace of good cells ({}% of \
                 their variance), of the standardised HLAC features of the cells of a {g}x{g} grid",
                p.variance * 100.0,
                g = p.grid
            ),
            ScorerSpec::Ensemble(p) => format!(
                "sum over {} members of each member's score standardised by the mean and standard \
                 deviation of its {}-fold cross-fitted good-image scores: {}",
                p.members.len(),
                p.folds,
                p.members
                    .iter()
                    .map(|m| format!("{} levels {} on {}", m.scorer.name(), m.levels, m.backbone))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        }
    }
}

/// Unfitted scorer settings.
pub trait Scorer {
    fn spec(&self) -> ScorerSpec;

    /// Fits on the embeddings of good images.
    fn fit(&self, good: &Embeddings) -> Result<Box<dyn FittedScorer>>;

    /// Fits on all of `good` and also scores each image by a fit on the images outside its
    /// cross-fitting fold (`held_out`: each fold's image indices), as the label-free threshold
    /// and an ensemble's standardisation need. Scorers that can share work between these fits
    /// override it.
    fn fit_cross_fitted(
        &self,
        good: &Embeddings,
        held_out: &[Vec<usize>],
    ) -> Result<(Box<dyn FittedScorer>, Array1<f64>)> {
        refit_per_fold(self, good, held_out)
    }
}

/// [`Scorer::fit_cross_fitted`] by plain refitting: one fit on all of `good`, one per fold on
/// the images outside it.
fn refit_per_fold<S: Scorer + ?Sized>(
    scorer: &S,
    good: &Embeddings,
    held_out: &[Vec<usize>],
) -> Result<(Box<dyn FittedScorer>, Array1<f64>)> {
    let fitted = scorer.fit(good)?;
    let scores = scores_over_folds(good.len(), held_out, |training, held| {
        scorer.fit(&good.select(training))?.score(&good.select(held))
    })?;
    Ok((fitted, scores))
}

/// Reads a stored float64 tensor by name, checking it has the expected shape.
pub type ReadF64Shaped<'a> = dyn Fn(&str, &[usize]) -> Result<Vec<f64>> + 'a;
/// Reads a stored tensor by name, with its shape.
pub type ReadWithShape<'a, T> = dyn Fn(&str) -> Result<(Vec<usize>, Vec<T>)> + 'a;

/// A tensor of a fitted scorer, for the run's safetensors file.
#[derive(Debug, Clone)]
pub struct StoredTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

#[derive(Debug, Clone)]
pub enum TensorData {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Position scores of one image, row major.
#[derive(Debug, Clone)]
pub struct PositionMap {
    pub height: usize,
    pub width: usize,
    pub values: Vec<f32>,
}

/// A fitted scorer that scores every position of an image's patch features (knn, padim): the
/// seam `heatmap`, the review page and `serve` draw maps through.
pub trait PositionScorer: FittedScorer {
    /// The levels its patch features concatenate.
    fn levels(&self) -> &Levels;

    /// Position scores `n × h × w` of patch features `n × h × w × dims` (CPU).
    fn position_maps(&self, features: &Tensor) -> Result<Tensor>;

    /// An image's score from its position scores on an `h × w` grid.
    fn image_score(&self, scores: &[f32], h: usize, w: usize) -> Result<f64>;

    /// The same model, sharing its tensors.
    fn share(&self) -> Box<dyn PositionScorer>;

    /// Where its tensors live: equal for a model and its [`share`](Self::share)s.
    fn storage(&self) -> usize;
}

/// Whether `a` is `b` or a share of it (same settings, same tensors).
pub fn same_position_scorer(a: &dyn PositionScorer, b: &dyn PositionScorer) -> bool {
    a.storage() == b.storage() && a.spec() == b.spec()
}

/// A fitted scorer.
pub trait FittedScorer: Send {
    fn spec(&self) -> ScorerSpec;

    /// One score per image (higher = more anomalous).
    fn score(&self, embeddings: &Embeddings) -> Result<Vec<f64>>;

    /// One list of image scores per variant: settings that share this fit (see
    /// [`ScorerSpec::shares_fit`]), from one pass over the embeddings where the scorer can.
    fn score_variants(
        &self,
        embeddings: &Embeddings,
        variants: &[ScorerSpec],
    ) -> Result<Vec<Vec<f64>>> {
        let own = self.spec();
        if let Some(other) = variants.iter().find(|v| **v != own) {
            return Err(other_fit(&own, other));
        }
        let scores = self.score(embeddings)?;
        Ok(vec![scores; variants.len()])
    }

    /// Position scores per image, for scorers that localise (`None` for pooled scorers, whose
    /// maps come from `heatmap`'s methods).
    fn maps(&self, embeddings: &Embeddings) -> Result<Option<Vec<PositionMap>>>;

    /// What the run folder stores.
    fn tensors(&self) -> Vec<StoredTensor>;

    /// The per-level Gaussians, for the Gaussian scorer (heatmap's feature and gradient maps
    /// derive from them).
    fn gaussians(&self) -> Option<&MultiLevelGaussian> {
        None
    }

    /// The patch memory, for the knn scorer.
    fn knn(&self) -> Option<&KnnModel> {
        None
    }

    /// The per-position Gaussians, for the PaDiM scorer.
    fn padim(&self) -> Option<&PadimModel> {
        None
    }

    /// Its position scores, for scorers that score every position (knn, padim).
    fn positions(&self) -> Option<&dyn PositionScorer> {
        None
    }

    /// The members, for an ensemble.
    fn ensemble(&self) -> Option<&EnsembleModel> {
        None
    }

    /// The principal subspace, for the subspace scorer.
    fn subspace(&self) -> Option<&SubspaceModel> {
        None
    }
}

/// The `border` of each variant a knn or padim fit (`own`) scores: variants that share its fit
/// (see [`ScorerSpec::shares_fit`]), else the error naming the one that needs its own fit.
pub(crate) fn variant_borders(own: &ScorerSpec, variants: &[ScorerSpec]) -> Result<Vec<usize>> {
    variants
        .iter()
        .map(|variant| match variant {
            ScorerSpec::Knn(KnnParams { border, .. })
            | ScorerSpec::Padim(PadimParams { border })
                if own.shares_fit(variant) =>
            {
                Ok(*border)
            }
            other => Err(other_fit(own, other)),
        })
        .collect()
}

/// A fitted scorer asked to score with settings another fit needs.
pub(crate) fn other_fit(own: &ScorerSpec, other: &ScorerSpec) -> crate::error::Error {
    crate::error::Error::numeric(
        "scoring",
        format!("a fitted {} scorer cannot score as {other:?}: that needs its own fit", own.name()),
    )
}

/// Rebuilds a fitted scorer from its settings and stored tensors; `gaussian_facts` holds
/// (dimensions, shrinkage, images) per level of a Gaussian scorer.
pub fn load_fitted(
    spec: &ScorerSpec,
    levels: &Levels,
    gaussian_facts: &[(usize, f64, usize)],
    read: &TensorReaders,
) -> Result<Box<dyn FittedScorer>> {
    Ok(match spec {
        ScorerSpec::Gaussian => Box::new(gaussian::load(levels, gaussian_facts, read.f64_shaped)?),
        ScorerSpec::Knn(params) => Box::new(knn::load(params, levels, read.f32_any)?),
        ScorerSpec::Padim(params) => Box::new(padim::load(params, levels, read.f32_any)?),
        ScorerSpec::Subspace(params) => Box::new(subspace::load(params, levels, read.f64_any)?),
        ScorerSpec::Ensemble(params) => Box::new(ensemble::load(params, read)?),
    })
}

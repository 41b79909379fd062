//! Anomaly maps: where in an image the anomaly is, as numbers (drawing lives in `report`).
//!
//! Methods:
//! - `feature`: each spatial position's feature vector at one level, scored by that level's
//!   Gaussian (fitted on pooled features). No backward pass.
//! - `gradient`: the gradient of the image score (summed Mahalanobis distance of the pooled
//!   levels) with respect to the input pixels, as in the original study's code; magnitude.
//! - `patch` (PaDiM-style): a Gaussian per spatial position over levels 3, 4 and 5 (upsampled
//!   to level 3's grid and concatenated), fitted on the good training images.
//! - `knn`: the knn scorer's position scores (distance to the nearest good position in the
//!   memory bank); a knn run's own bank, or one fitted on a Gaussian run's training images.
//! - `padim`: the padim scorer's position scores (Mahalanobis distance to the good images'
//!   Gaussian at that position, on patch features made as knn's); a padim run's own, or fitted
//!   on another run's training images.
//!   An ensemble run sums its knn and padim members' maps, each standardised as its score is
//!   (see `pipeline::heatmap`); `--method knn` and `padim` both draw that sum.
//!
//! Every map is computed at network resolution, smoothed (Gaussian, σ = 4 px at the input
//! size) and resized to the image (bilinear).

pub mod patch;
pub mod smooth;

use tch::{Device, Kind, Tensor};

use crate::backbone::{Backbone, TorchBackbone};
use crate::data::image::PreparedImage;
use crate::error::{Error, Result};
use crate::features::patches::patch_embedding;
use crate::gaussian::GaussianModel;
use crate::scorer::{
    same_position_scorer, FittedScorer, PositionScorer, ScorerSpec, SubspaceModel,
};

pub use patch::PatchModel;

/// How a map is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Feature,
    Gradient,
    Patch,
    Knn,
    Padim,
    Subspace,
}

impl Method {
    pub fn name(self) -> &'static str {
        match self {
            Method::Feature => "feature",
            Method::Gradient => "gradient",
            Method::Patch => "patch",
            Method::Knn => "knn",
            Method::Padim => "padim",
            Method::Subspace => "subspace",
        }
    }
}

impl Method {
    /// The map a run draws when none is asked for (`anodet heatmap`, `serve`): its scorer's own
    /// (knn, padim, an ensemble's knn and padim members, subspace), else the feature map for
    /// HLAC runs and the patch map for CNN runs.
    pub fn default_for(scorer: &ScorerSpec, hlac_run: bool) -> Method {
        match scorer {
            // An ensemble without a knn or padim member says so when its maps are opened.
            ScorerSpec::Knn(_) | ScorerSpec::Ensemble(_) => Method::Knn,
            ScorerSpec::Padim(_) => Method::Padim,
            ScorerSpec::Subspace(_) => Method::Subspace,
            ScorerSpec::Gaussian if hlac_run => Method::Feature,
            ScorerSpec::Gaussian => Method::Patch,
        }
    }
}

/// How a batch's image scores are computed: the run's scorer.
pub enum ImageScorer {
    /// Summed distances of the pooled levels (Gaussian runs).
    Gaussians(Vec<(u8, TensorGaussian)>),
    /// The worst interior position's score (knn and padim runs).
    Positions(Box<dyn PositionScorer>),
    /// The worst cell's residual outside the good cells' subspace (HLAC subspace runs).
    Subspace(SubspaceModel),
}

/// A fitted Gaussian as tensors on the network's device, for batched distances.
pub struct TensorGaussian {
    mean: Tensor,
    precision: Tensor,
}

impl TensorGaussian {
    pub fn new(model: &GaussianModel, device: Device) -> Result<Self> {
        let d = model.dim() as i64;
        let mean: Vec<f32> = model.mean().iter().map(|&v| v as f32).collect();
        let precision: Vec<f32> = model.precision().iter().map(|&v| v as f32).collect();
        Ok(TensorGaussian {
            mean: Tensor::from_slice(&mean).to_device(device),
            precision: Tensor::from_slice(&precision).view([d, d]).to_device(device),
        })
    }

    /// Mahalanobis distance of each vector along the last dimension of `x`.
    pub fn distances(&self, x: &Tensor) -> Result<Tensor> {
        let centred = x.f_sub(&self.mean).map_err(torch("distances"))?;
        let quadratic = centred
            .f_matmul(&self.precision)
            .and_then(|p| p.f_mul(&centred))
            .and_then(|p| p.f_sum_dim_intlist(-1, false, Kind::Float))
            .map_err(torch("distances"))?;
        Ok(quadratic.clamp_min(0.0).sqrt())
    }
}

/// Maps a tch error with a context.
pub(crate) fn torch(context: &'static str) -> impl Fn(tch::TchError) -> Error {
    move |e| Error::torch(context, e)
}

/// Cells a side of the HLAC cell map.
pub const HLAC_GRID: usize = 16;

/// What computes the maps for a run.
pub enum MapModel {
    /// One level's Gaussian applied at every position of that level's map.
    Feature {
        level: u8,
        gaussian: TensorGaussian,
    },
    /// Gradient of the image score with respect to the input pixels.
    Gradient,
    Patch(PatchModel),
    /// Position scores of a knn or padim model.
    Positions(Box<dyn PositionScorer>),
    /// HLAC cell residuals outside the good cells' subspace.
    Subspace(SubspaceModel),
    /// HLAC: one level's Gaussian applied to the HLAC features of each cell of a grid.
    Cells {
        level: u8,
        gaussian: TensorGaussian,
    },
}

/// Maps and image scores of one batch.
pub struct BatchMaps {
    /// `n × h × w` at network (or cell-grid) resolution, on the CPU.
    pub raw: Tensor,
    /// The run's image scores (summed pooled distances).
    pub scores: Vec<f64>,
}

impl MapModel {
    /// Maps and image scores of same-sized images: one forward pass (and a backward pass for
    /// `gradient`) for a CNN; whole-image and per-cell features for HLAC.
    /// `image_scorer` is the run's scorer, which defines the image score.
    pub fn run(
        &self,
        backbone: &Backbone,
        images: &[&PreparedImage],
        image_scorer: &ImageScorer,
    ) -> Result<BatchMaps> {
        match (self, backbone) {
            (MapModel::Subspace(model), Backbone::Hlac(hlac)) => {
                let grid = model.params().grid as i64;
                let embedded = model.cells(hlac, images)?;
                let maps = model.maps(&embedded)?.unwrap_or_default();
                let values: Vec<f32> = maps.iter().flat_map(|m| m.values.iter().copied()).collect();
                let raw = Tensor::from_slice(&values).view([images.len() as i64, grid, grid]);
                let scores = image_scores(backbone, images, image_scorer)?;
                Ok(BatchMaps { raw, scores })
            }
            (MapModel::Cells { level, gaussian }, Backbone::Hlac(hlac)) => {
                let scores = image_scores(backbone, images, image_scorer)?;
                let (start, width) = hlac.info().level_span(*level);
                let mut values = Vec::with_capacity(images.len() * HLAC_GRID * HLAC_GRID * width);
                for image in images {
                    for cell in hlac.cell_features(image, HLAC_GRID)? {
                        values.extend_from_slice(&cell[start..start + width]);
                    }
                }
                let features = Tensor::from_slice(&values).view([
                    images.len() as i64,
                    (HLAC_GRID * HLAC_GRID) as i64,
                    width as i64,
                ]);
                let raw =
                    gaussian.distances(&features)?.view([-1, HLAC_GRID as i64, HLAC_GRID as i64]);
                Ok(BatchMaps { raw, scores })
            }
            (MapModel::Cells { .. } | MapModel::Subspace(_), Backbone::Torch(_)) => {
                Err(Error::param("--method", "cell maps are for the HLAC backbone"))
            }
            (_, Backbone::Hlac(_)) => Err(Error::param(
                "--method",
                "gradient, patch, knn and padim maps need a CNN backbone; HLAC runs support --method feature",
            )),
            (_, Backbone::Torch(torch_backbone)) => {
                let input = torch_backbone.batch_tensor(images)?;
                self.run_torch(torch_backbone, &input, image_scorer)
            }
        }
    }

    fn run_torch(
        &self,
        backbone: &TorchBackbone,
        input: &Tensor,
        image_scorer: &ImageScorer,
    ) -> Result<BatchMaps> {
        let tracked = matches!(self, MapModel::Gradient);
        let leaf =
            if tracked { input.detach().set_requires_grad(true) } else { input.shallow_clone() };
        let levels =
            if tracked { backbone.forward_tracked(&leaf)? } else { backbone.forward(&leaf)? };
        let mut total = Tensor::zeros([input.size()[0]], (Kind::Float, input.device()));
        let mut position_scores = None;
        let mut own_maps = None;
        match image_scorer {
            ImageScorer::Gaussians(image_gaussians) => {
                for (level, gaussian) in image_gaussians {
                    let pooled = levels[*level as usize - 1]
                        .f_mean_dim(&[2i64, 3][..], false, Kind::Float)
                        .map_err(torch("image score"))?;
                    // Out of place: in the gradient method, `total` is part of the autograd graph.
                    total =
                        total.f_add(&gaussian.distances(&pooled)?).map_err(torch("image score"))?;
                }
            }
            ImageScorer::Positions(_) if tracked => return Err(Error::param(
                "--method",
                "gradient maps differentiate a Gaussian run's score; use --method knn or padim \
                 for knn and padim runs",
            )),
            ImageScorer::Positions(scorer) => {
                let (maps, scores) = tch::no_grad(|| position_maps(scorer.as_ref(), &levels))?;
                position_scores = Some(scores);
                // A run mapped with its own model: one pass gives both.
                if matches!(self, MapModel::Positions(map)
                    if same_position_scorer(map.as_ref(), scorer.as_ref()))
                {
                    own_maps = Some(maps);
                }
            }
            ImageScorer::Subspace(_) => {
                return Err(Error::param("--method", "subspace runs are HLAC runs"))
            }
        }
        let raw = match (self, own_maps) {
            (_, Some(maps)) => maps,
            (MapModel::Feature { level, gaussian }, None) => tch::no_grad(|| {
                gaussian.distances(&levels[*level as usize - 1].permute([0, 2, 3, 1]))
            })?,
            (MapModel::Gradient, None) => {
                // Each image's score depends on its own pixels only: one backward pass serves all.
                let grads =
                    Tensor::f_run_backward(&[total.sum(Kind::Float)], &[&leaf], false, false)
                        .map_err(torch("gradient map"))?;
                let grad = grads
                    .into_iter()
                    .next()
                    .ok_or_else(|| Error::numeric("gradient map", "no gradient"))?;
                grad.pow_tensor_scalar(2).sum_dim_intlist(1, false, Kind::Float).sqrt()
            }
            (MapModel::Patch(model), None) => tch::no_grad(|| model.maps_from_levels(&levels))?,
            (MapModel::Positions(scorer), None) => {
                tch::no_grad(|| position_maps(scorer.as_ref(), &levels))?.0
            }
            (MapModel::Cells { .. } | MapModel::Subspace(_), None) => {
                return Err(Error::param("--method", "cell maps are for the HLAC backbone"))
            }
        };
        let scores = match position_scores {
            Some(scores) => scores,
            None => Vec::<f32>::try_from(total.detach().to_device(Device::Cpu).contiguous())
                .map_err(torch("image score"))?
                .into_iter()
                .map(f64::from)
                .collect(),
        };
        Ok(BatchMaps { raw: raw.detach().to_device(Device::Cpu).to_kind(Kind::Float), scores })
    }
}

/// Image scores of same-sized images without a map: pooled Gaussians (an HLAC run's, or an
/// ensemble's pooled members on any backbone) or a subspace model's worst cell.
pub fn image_scores(
    backbone: &Backbone,
    images: &[&PreparedImage],
    image_scorer: &ImageScorer,
) -> Result<Vec<f64>> {
    let image_gaussians = match (image_scorer, backbone) {
        (ImageScorer::Gaussians(g), _) => g,
        (ImageScorer::Subspace(model), Backbone::Hlac(hlac)) => {
            return model.score(&model.cells(hlac, images)?)
        }
        _ => return Err(Error::param("--method", "this run's scorer needs a CNN backbone")),
    };
    let levels = crate::backbone::Levels::new(image_gaussians.iter().map(|(l, _)| *l).collect())?;
    let pooled = backbone.pooled(images, &levels)?;
    let mut total = vec![0.0; images.len()];
    for (matrix, (_, gaussian)) in pooled.iter().zip(image_gaussians) {
        let values: Vec<f32> = matrix.iter().copied().collect();
        let tensor =
            Tensor::from_slice(&values).view([matrix.nrows() as i64, matrix.ncols() as i64]);
        let distances = Vec::<f32>::try_from(gaussian.distances(&tensor)?.contiguous())
            .map_err(torch("image score"))?;
        for (t, d) in total.iter_mut().zip(distances) {
            *t += d as f64;
        }
    }
    Ok(total)
}

/// Position scores `n × h × w` (CPU) and image scores of a batch under a knn or padim model,
/// from the batch's nine level maps: the same patch features and scores as the scorer's.
pub fn position_maps(scorer: &dyn PositionScorer, levels: &[Tensor]) -> Result<(Tensor, Vec<f64>)> {
    let embedded = patch_embedding(levels, scorer.levels())?.to_device(Device::Cpu);
    let (n, h, w) = (embedded.size()[0], embedded.size()[1], embedded.size()[2]);
    let scores = scorer.position_maps(&embedded)?;
    let image_scores = (0..n)
        .map(|i| {
            let values = Vec::<f32>::try_from(scores.get(i).contiguous().view(-1))
                .map_err(torch("position map"))?;
            scorer.image_score(&values, h as usize, w as usize)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((scores, image_scores))
}

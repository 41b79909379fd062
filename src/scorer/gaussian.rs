//! The Gaussian AD scorer (Rippel et al. 2020): a Ledoit-Wolf Gaussian per level of pooled
//! features, fitted on good images; score = Mahalanobis distance summed over levels.

use ndarray::{Array1, Array2};

use super::{Embeddings, FittedScorer, PositionMap, Scorer, ScorerSpec, StoredTensor, TensorData};
use crate::backbone::Levels;
use crate::error::{Error, Result};
use crate::gaussian::{GaussianModel, GaussianParams, MultiLevelGaussian};

/// Settings of the Gaussian scorer.
#[derive(Debug, Clone, Default)]
pub struct GaussianScorer {
    pub params: GaussianParams,
}

impl Scorer for GaussianScorer {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Gaussian
    }

    fn fit(&self, good: &Embeddings) -> Result<Box<dyn FittedScorer>> {
        Ok(Box::new(MultiLevelGaussian::fit(good.pooled()?, &self.params)?))
    }
}

impl FittedScorer for MultiLevelGaussian {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Gaussian
    }

    fn score(&self, embeddings: &Embeddings) -> Result<Vec<f64>> {
        Ok(MultiLevelGaussian::score(self, embeddings.pooled()?)?.to_vec())
    }

    fn maps(&self, _: &Embeddings) -> Result<Option<Vec<PositionMap>>> {
        Ok(None)
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out = Vec::new();
        for (level, model) in self.levels().as_slice().iter().zip(self.models()) {
            out.push(StoredTensor {
                name: format!("level{level}.mean"),
                shape: vec![model.dim()],
                data: TensorData::F64(model.mean().to_vec()),
            });
            out.push(StoredTensor {
                name: format!("level{level}.precision"),
                shape: vec![model.dim(), model.dim()],
                data: TensorData::F64(model.precision().iter().copied().collect()),
            });
        }
        out
    }

    fn gaussians(&self) -> Option<&MultiLevelGaussian> {
        Some(self)
    }
}

/// Rebuilds the per-level Gaussians: `facts` holds (dimensions, shrinkage, images) per level.
pub fn load(
    levels: &Levels,
    facts: &[(usize, f64, usize)],
    read: &super::ReadF64Shaped,
) -> Result<MultiLevelGaussian> {
    if facts.len() != levels.as_slice().len() {
        return Err(Error::numeric("model", "the Gaussians do not match the levels"));
    }
    let mut models = Vec::new();
    for (level, &(d, shrinkage, images)) in levels.as_slice().iter().zip(facts) {
        let mean = Array1::from(read(&format!("level{level}.mean"), &[d])?);
        let precision =
            Array2::from_shape_vec((d, d), read(&format!("level{level}.precision"), &[d, d])?)
                .map_err(|e| Error::numeric("model", e.to_string()))?;
        models.push(GaussianModel::from_parts(mean, precision, shrinkage, images)?);
    }
    MultiLevelGaussian::from_parts(levels.clone(), models)
}

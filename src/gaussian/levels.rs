//! One Gaussian per chosen level; an image's score is the sum of its per-level distances.

use ndarray::Array1;

use super::{GaussianModel, GaussianParams};
use crate::backbone::Levels;
use crate::error::{Error, Result};
use crate::features::FeatureSet;

/// Gaussians for the levels of a [`FeatureSet`], in level order.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiLevelGaussian {
    levels: Levels,
    models: Vec<GaussianModel>,
}

impl MultiLevelGaussian {
    /// Fits one Gaussian per level on all images of `features`.
    pub fn fit(features: &FeatureSet, params: &GaussianParams) -> Result<Self> {
        let models = features
            .per_level
            .iter()
            .zip(features.levels.as_slice())
            .map(|(matrix, level)| {
                params.fit(matrix.view()).map_err(|e| match e {
                    Error::Numeric { context, problem } => {
                        Error::numeric(format!("{context} (level {level})"), problem)
                    }
                    other => other,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(MultiLevelGaussian { levels: features.levels.clone(), models })
    }

    /// Rebuilds from stored per-level models.
    pub fn from_parts(levels: Levels, models: Vec<GaussianModel>) -> Result<Self> {
        if levels.as_slice().len() != models.len() {
            return Err(Error::numeric(
                "model",
                format!("{} levels but {} Gaussians", levels.as_slice().len(), models.len()),
            ));
        }
        Ok(MultiLevelGaussian { levels, models })
    }

    pub fn levels(&self) -> &Levels {
        &self.levels
    }

    pub fn models(&self) -> &[GaussianModel] {
        &self.models
    }

    /// Summed Mahalanobis distance of each image; the feature levels must match the model's.
    pub fn score(&self, features: &FeatureSet) -> Result<Array1<f64>> {
        if features.levels != self.levels {
            return Err(Error::param(
                "--levels",
                format!(
                    "features are for levels {}, the model for levels {}",
                    features.levels, self.levels
                ),
            ));
        }
        let mut total = Array1::zeros(features.len());
        for (model, matrix) in self.models.iter().zip(&features.per_level) {
            total += &model.score(matrix.view())?;
        }
        Ok(total)
    }
}

//! Ensembles: several members (each its own backbone, levels and scorer) score every image;
//! each member's score is standardised by its own cross-fitted good-image scores (the scores of
//! good images under members fitted on the other folds, which behave like scores of new good
//! parts), and the standardised scores are summed.
//!
//! Standardising puts a Mahalanobis sum and a patch distance on one scale, without labels.

use super::{
    Embeddings, FittedScorer, PositionMap, ReadF64Shaped, ReadWithShape, Scorer, ScorerSpec,
    StoredTensor, TensorData,
};
use crate::backbone::Levels;
use crate::error::{Error, Result};
use crate::threshold::cross_fit_folds;

/// One member: where its features come from and how it scores.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MemberSpec {
    /// A backbone name in the models folder (or `hlac`).
    pub backbone: String,
    pub levels: Levels,
    pub scorer: ScorerSpec,
}

impl MemberSpec {
    /// `SCORER[:LEVELS][@BACKBONE]`, e.g. `knn`, `gaussian:6-8`, `knn:6,7@efficientnet_lite1`;
    /// knn members take `knn` as their settings (padim members its border), the backbone
    /// defaults to `backbone`.
    pub fn parse(text: &str, knn: &super::KnnParams, backbone: &str) -> Result<MemberSpec> {
        let bad = |why: &str| {
            Error::param("--member", format!("'{text}': {why} (form: SCORER[:LEVELS][@BACKBONE])"))
        };
        let (rest, member_backbone) = match text.split_once('@') {
            Some((rest, b)) if !b.trim().is_empty() => (rest, b.trim().to_string()),
            Some(_) => return Err(bad("empty backbone")),
            None => (text, backbone.to_string()),
        };
        let (name, levels) = match rest.split_once(':') {
            Some((name, levels)) => (name.trim(), Some(levels)),
            None => (rest.trim(), None),
        };
        let scorer = match name {
            "gaussian" => ScorerSpec::Gaussian,
            "knn" => ScorerSpec::Knn(knn.clone()),
            "padim" => ScorerSpec::Padim(super::PadimParams { border: knn.border }),
            "" => return Err(bad("no scorer")),
            other => {
                return Err(bad(&format!(
                    "unknown scorer {other}; members are gaussian, knn or padim"
                )))
            }
        };
        let levels = match levels {
            Some(levels) => levels.parse::<Levels>().map_err(|_| bad("bad levels"))?,
            None => scorer.default_levels(),
        };
        Ok(MemberSpec { backbone: member_backbone, levels, scorer })
    }
}

/// Settings of an ensemble.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EnsembleParams {
    pub members: Vec<MemberSpec>,
    /// Cross-fitting folds behind each member's standardisation.
    pub folds: usize,
    pub seed: u64,
}

impl EnsembleParams {
    pub fn new(members: Vec<MemberSpec>) -> Self {
        EnsembleParams { members, folds: 5, seed: 0 }
    }

    pub fn check(&self) -> Result<()> {
        if self.members.is_empty() {
            return Err(Error::param("--member", "an ensemble needs at least one member"));
        }
        if self.members.iter().any(|m| matches!(m.scorer, ScorerSpec::Ensemble(_))) {
            return Err(Error::param("--member", "ensembles do not nest"));
        }
        if self.folds < 2 {
            return Err(Error::param("folds", "standardising needs at least 2 folds"));
        }
        Ok(())
    }
}

/// Standardisation below this spread would blow one member up: the spread is floored relative
/// to the member's typical score.
const MIN_RELATIVE_SPREAD: f64 = 1e-6;

impl Scorer for EnsembleParams {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Ensemble(self.clone())
    }

    fn fit(&self, good: &Embeddings) -> Result<Box<dyn FittedScorer>> {
        self.check()?;
        let embeddings = good.members()?;
        if embeddings.len() != self.members.len() {
            return Err(Error::numeric("ensemble", "one embedding per member is needed"));
        }
        let mut members = Vec::new();
        for (spec, member_good) in self.members.iter().zip(embeddings) {
            let scorer = spec.scorer.scorer()?;
            let held_out = cross_fit_folds(member_good.len(), self.folds, self.seed)?;
            let (fitted, cross_fitted) = scorer.fit_cross_fitted(member_good, &held_out)?;
            let n = cross_fitted.len() as f64;
            let centre = cross_fitted.sum() / n;
            let spread = (cross_fitted.iter().map(|s| (s - centre).powi(2)).sum::<f64>()
                / (n - 1.0).max(1.0))
            .sqrt()
            .max(centre.abs() * MIN_RELATIVE_SPREAD)
            .max(f64::MIN_POSITIVE);
            members.push(FittedMember { spec: spec.clone(), scorer: fitted, centre, spread });
        }
        Ok(Box::new(EnsembleModel { params: self.clone(), members }))
    }
}

/// A fitted member and its standardisation.
pub struct FittedMember {
    pub spec: MemberSpec,
    pub scorer: Box<dyn FittedScorer>,
    /// Mean and standard deviation of its cross-fitted good-image scores.
    pub centre: f64,
    pub spread: f64,
}

/// A fitted ensemble.
pub struct EnsembleModel {
    params: EnsembleParams,
    members: Vec<FittedMember>,
}

impl EnsembleModel {
    pub fn members(&self) -> &[FittedMember] {
        &self.members
    }

    /// The ensemble's scores from its members' scores of the same images (one list per member,
    /// in member order): each standardised, summed in member order.
    pub fn combine(&self, member_scores: &[Vec<f64>]) -> Result<Vec<f64>> {
        let images = member_scores.first().map_or(0, Vec::len);
        if member_scores.len() != self.members.len()
            || member_scores.iter().any(|scores| scores.len() != images)
        {
            return Err(Error::numeric("ensemble", "one score per image and member is needed"));
        }
        let mut total = vec![0.0; images];
        for (member, scores) in self.members.iter().zip(member_scores) {
            for (t, s) in total.iter_mut().zip(scores) {
                *t += (s - member.centre) / member.spread;
            }
        }
        Ok(total)
    }
}

impl FittedScorer for EnsembleModel {
    fn spec(&self) -> ScorerSpec {
        ScorerSpec::Ensemble(self.params.clone())
    }

    fn score(&self, embeddings: &Embeddings) -> Result<Vec<f64>> {
        let parts = embeddings.members()?;
        if parts.len() != self.members.len() {
            return Err(Error::numeric("ensemble", "one embedding per member is needed"));
        }
        let member_scores = self
            .members
            .iter()
            .zip(parts)
            .map(|(member, part)| member.scorer.score(part))
            .collect::<Result<Vec<_>>>()?;
        self.combine(&member_scores)
    }

    fn maps(&self, _: &Embeddings) -> Result<Option<Vec<PositionMap>>> {
        Ok(None)
    }

    fn tensors(&self) -> Vec<StoredTensor> {
        let mut out = Vec::new();
        for (i, member) in self.members.iter().enumerate() {
            out.push(StoredTensor {
                name: format!("member{i}.standardise"),
                shape: vec![2],
                data: TensorData::F64(vec![member.centre, member.spread]),
            });
            if let Some(gaussians) = member.scorer.gaussians() {
                let facts: Vec<f64> = gaussians
                    .models()
                    .iter()
                    .flat_map(|m| [m.dim() as f64, m.shrinkage(), m.count() as f64])
                    .collect();
                out.push(StoredTensor {
                    name: format!("member{i}.gaussian_facts"),
                    shape: vec![gaussians.models().len(), 3],
                    data: TensorData::F64(facts),
                });
            }
            for mut tensor in member.scorer.tensors() {
                tensor.name = format!("member{i}.{}", tensor.name);
                out.push(tensor);
            }
        }
        out
    }

    fn ensemble(&self) -> Option<&EnsembleModel> {
        Some(self)
    }
}

/// Readers of a run's stored tensors by name: float64 with an expected shape, float32 and
/// float64 with their stored shape.
pub struct TensorReaders<'a> {
    pub f64_shaped: &'a ReadF64Shaped<'a>,
    pub f32_any: &'a ReadWithShape<'a, f32>,
    pub f64_any: &'a ReadWithShape<'a, f64>,
}

/// Rebuilds a fitted ensemble from its stored members.
pub fn load(params: &EnsembleParams, read: &TensorReaders) -> Result<EnsembleModel> {
    params.check()?;
    let mut members = Vec::new();
    for (i, spec) in params.members.iter().enumerate() {
        let prefix = format!("member{i}.");
        let (_, standardise) = (read.f64_any)(&format!("{prefix}standardise"))?;
        let [centre, spread] = standardise[..] else {
            return Err(Error::numeric("ensemble", "damaged standardisation"));
        };
        let facts: Vec<(usize, f64, usize)> = if spec.scorer == ScorerSpec::Gaussian {
            let (_, values) = (read.f64_any)(&format!("{prefix}gaussian_facts"))?;
            values.chunks(3).map(|c| (c[0] as usize, c[1], c[2] as usize)).collect()
        } else {
            Vec::new()
        };
        let f64_shaped =
            |name: &str, shape: &[usize]| (read.f64_shaped)(&format!("{prefix}{name}"), shape);
        let f32_any = |name: &str| (read.f32_any)(&format!("{prefix}{name}"));
        let f64_any = |name: &str| (read.f64_any)(&format!("{prefix}{name}"));
        let readers =
            TensorReaders { f64_shaped: &f64_shaped, f32_any: &f32_any, f64_any: &f64_any };
        let scorer = super::load_fitted(&spec.scorer, &spec.levels, &facts, &readers)?;
        members.push(FittedMember { spec: spec.clone(), scorer, centre, spread });
    }
    Ok(EnsembleModel { params: params.clone(), members })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::KnnParams;

    #[test]
    fn members_parse_with_defaults_and_errors_name_the_flag() {
        let knn = KnnParams::default();
        let m = MemberSpec::parse("knn", &knn, "efficientnet_lite0").unwrap();
        assert_eq!(m.levels.as_slice(), &[6, 7]);
        assert_eq!(m.backbone, "efficientnet_lite0");
        let m = MemberSpec::parse("gaussian:6-8@efficientnet_lite1", &knn, "x").unwrap();
        assert_eq!(
            (m.levels.as_slice(), m.backbone.as_str()),
            (&[6u8, 7, 8][..], "efficientnet_lite1")
        );
        for bad in ["", "pca:7", "knn:ten", "knn@", "gaussian:0"] {
            let error = MemberSpec::parse(bad, &knn, "x").unwrap_err();
            assert!(error.to_string().starts_with("--member"), "{bad}: {error}");
        }
        assert!(EnsembleParams::new(vec![])
            .check()
            .unwrap_err()
            .to_string()
            .starts_with("--member"));
    }
}

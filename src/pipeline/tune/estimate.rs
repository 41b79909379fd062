//! Time estimates for tune's remaining candidates, from the families of candidates already run.
//!
//! A family's time is its network pass plus its fits and scoring, and the two scale differently:
//! the feature cache serves a family whose features an earlier family read (pooled features hold
//! every level, and a pass for patch features stores them too; patch features are cached per
//! level set), and fits cost what the scorer and the feature width make them cost.

use super::Candidate;
use crate::features::EmbeddingKind;

/// What one family of candidates (sharing one fit) cost, led by its first candidate.
#[derive(Debug, Clone)]
pub(super) struct FamilyCost {
    pub lead: Candidate,
    pub network_seconds: f64,
    pub fit_score_seconds: f64,
}

impl FamilyCost {
    fn same_input(&self, other: &Candidate) -> bool {
        (&self.lead.backbone, self.lead.size, self.lead.aspect)
            == (&other.backbone, other.size, other.aspect)
    }

    fn same_scorer_on_backbone(&self, other: &Candidate) -> bool {
        self.lead.scorer.name() == other.scorer.name() && self.lead.backbone == other.backbone
    }

    /// Whether this family's pass left the features `other` reads in the cache.
    fn left_features_for(&self, other: &Candidate) -> bool {
        let (own, wanted) = (self.lead.scorer.embedding(), other.scorer.embedding());
        let stored = match wanted {
            EmbeddingKind::Pooled => {
                matches!(own, EmbeddingKind::Pooled | EmbeddingKind::Patches)
            }
            EmbeddingKind::Patches => own == wanted && self.lead.levels == other.levels,
            _ => false,
        };
        self.same_input(other) && stored
    }
}

/// Seconds a family led by `next` should take, or `None` before any family has run.
/// - Fits and scoring: the mean of earlier families with the same scorer and backbone, else with
///   the same scorer, else of all.
/// - Network: none when an earlier family left the features `next` reads in the cache (it serves
///   them); otherwise the longest pass measured on the same input, else the same backbone, else
///   any (a lower bound for a larger backbone). A pass measured on cached features is short,
///   so the longest is the one that ran the network.
pub(super) fn family_seconds(next: &Candidate, done: &[FamilyCost]) -> Option<f64> {
    if done.is_empty() {
        return None;
    }
    let mean = |costs: Vec<f64>| {
        (!costs.is_empty()).then(|| costs.iter().sum::<f64>() / costs.len() as f64)
    };
    let fits = |keep: &dyn Fn(&FamilyCost) -> bool| {
        mean(done.iter().filter(|d| keep(d)).map(|d| d.fit_score_seconds).collect())
    };
    let fit_seconds = fits(&|d| d.same_scorer_on_backbone(next))
        .or_else(|| fits(&|d| d.lead.scorer.name() == next.scorer.name()))
        .or_else(|| fits(&|_| true))?;
    let cached = done.iter().any(|d| d.left_features_for(next));
    let longest_pass = |keep: &dyn Fn(&FamilyCost) -> bool| {
        done.iter().filter(|d| keep(d)).map(|d| d.network_seconds).reduce(f64::max)
    };
    let network_seconds = if cached {
        0.0
    } else {
        longest_pass(&|d| d.same_input(next))
            .or_else(|| longest_pass(&|d| d.lead.backbone == next.backbone))
            .or_else(|| longest_pass(&|_| true))
            .unwrap_or(0.0)
    };
    Some(network_seconds + fit_seconds)
}

/// Seconds the families led by `leads` should take together, or `None` before any has run.
pub(super) fn remaining_seconds<'a>(
    leads: impl IntoIterator<Item = &'a Candidate>,
    done: &[FamilyCost],
) -> Option<f64> {
    leads.into_iter().map(|lead| family_seconds(lead, done)).sum()
}

/// Whether a family led by `lead` is the first of its scorer on its backbone: after it, the
/// estimate rests on a new kind of measurement.
pub(super) fn measures_something_new(lead: &Candidate, done: &[FamilyCost]) -> bool {
    !done.iter().any(|d| d.same_scorer_on_backbone(lead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::Levels;
    use crate::data::image::Aspect;
    use crate::scorer::{KnnParams, ScorerSpec};

    fn candidate(backbone: &str, scorer: ScorerSpec, aspect: Aspect) -> Candidate {
        Candidate {
            backbone: backbone.into(),
            levels: Levels::new(vec![7]).unwrap(),
            size: None,
            aspect,
            scorer,
        }
    }

    fn knn() -> ScorerSpec {
        ScorerSpec::Knn(KnnParams { coreset: 0.1, border: 1, seed: 0 })
    }

    #[test]
    fn estimates_follow_scorer_backbone_and_cached_input() {
        let lite0 = candidate("efficientnet_lite0", ScorerSpec::Gaussian, Aspect::Squash);
        assert_eq!(family_seconds(&lite0, &[]), None);
        let done = vec![
            FamilyCost { lead: lite0.clone(), network_seconds: 30.0, fit_score_seconds: 1.0 },
            FamilyCost {
                lead: candidate("efficientnet_lite0", knn(), Aspect::Squash),
                network_seconds: 40.0,
                fit_score_seconds: 200.0,
            },
        ];
        // Another pooled family on the same input: the cache serves the features.
        assert_eq!(family_seconds(&lite0, &done), Some(1.0));
        // The same knn features again: cached; knn on other levels reads new patch features.
        let knn_lite0 = candidate("efficientnet_lite0", knn(), Aspect::Squash);
        assert_eq!(family_seconds(&knn_lite0, &done), Some(200.0));
        let mut knn_wider = knn_lite0.clone();
        knn_wider.levels = Levels::new(vec![6, 7, 8]).unwrap();
        assert_eq!(family_seconds(&knn_wider, &done), Some(240.0));
        // A kept aspect is a new input: the longest pass on that backbone.
        let keep = candidate("efficientnet_lite0", ScorerSpec::Gaussian, Aspect::Keep);
        assert_eq!(family_seconds(&keep, &done), Some(41.0));
        // A knn pass on the kept input stores its pooled features too.
        let knn_keep = FamilyCost {
            lead: candidate("efficientnet_lite0", knn(), Aspect::Keep),
            network_seconds: 60.0,
            fit_score_seconds: 300.0,
        };
        let after_knn = [done.clone(), vec![knn_keep]].concat();
        assert_eq!(family_seconds(&keep, &after_knn), Some(1.0));
        // Another backbone: the longest pass measured anywhere, the scorer's mean fit.
        let lite1 = candidate("efficientnet_lite1", knn(), Aspect::Squash);
        assert_eq!(family_seconds(&lite1, &done), Some(240.0));
        assert_eq!(remaining_seconds([&lite0, &knn_wider], &done), Some(241.0));
        assert!(!measures_something_new(&knn_lite0, &done));
        assert!(measures_something_new(&lite1, &done));
    }
}

//! Time estimates for tune's candidates: before the first one runs, from a short probe (see
//! [`super::probe`]) and a model of the work each family does; afterwards, the same model
//! calibrated by what the families already run really took.
//!
//! A family's time is its network pass plus its fits and scoring, and the two scale differently:
//! the feature cache serves a family whose features an earlier family read (pooled features hold
//! every level, and a pass for patch features stores them too; patch features are cached per
//! level set), and fits cost what the scorer, the feature width and the number of images make
//! them cost. An ensemble costs what its members cost, each fitted once and cross-fitted (the
//! standardisation) on top, and reads what its members read.

use super::Candidate;
use crate::features::EmbeddingKind;
use crate::scorer::knn::CORESET_PART_ROWS;
use crate::scorer::nearest::PROJECTION_DIMS;
use crate::scorer::ScorerSpec;

/// The features a scorer fits on, as far as its cost goes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum FeatureShape {
    /// Pooled vectors of these widths (one per level).
    Pooled { widths: Vec<usize> },
    /// Patch features: positions per image (a mean, for kept aspects) and values per position.
    Patches { rows_per_image: f64, dim: usize, coreset: f64 },
    /// Patch features modelled by a Gaussian per position (padim): positions per image and
    /// values per position.
    Positions { positions: f64, dim: usize },
}

impl FeatureShape {
    /// Multiply-adds of one fit on `good` images: for the Gaussian the covariances and their
    /// inverses, for knn the projection and the greedy coreset selection (part by part, as
    /// [`crate::scorer::nearest::partitioned_coreset`] selects).
    pub fn fit_work(&self, good: f64) -> f64 {
        match self {
            FeatureShape::Pooled { widths } => {
                widths.iter().map(|&d| (d * d) as f64 * good + (d * d * d) as f64).sum()
            }
            FeatureShape::Patches { rows_per_image, dim, coreset } => {
                // A whole bank is kept as it is.
                if *coreset >= 1.0 {
                    return 0.0;
                }
                let rows = rows_per_image * good;
                let projection = rows * *dim as f64 * PROJECTION_DIMS as f64;
                let selection = {
                    let part = CORESET_PART_ROWS as f64;
                    let whole_parts = (rows / part).floor();
                    let rest = rows - whole_parts * part;
                    let select = |r: f64| r * (r * coreset).ceil() * PROJECTION_DIMS as f64;
                    if whole_parts >= 1.0 && rest < part / 2.0 {
                        // The last part joins its predecessor.
                        (whole_parts - 1.0) * select(part) + select(part + rest)
                    } else {
                        whole_parts * select(part) + select(rest)
                    }
                };
                projection + selection
            }
            // The per-position covariance sums, and a Cholesky factor and inverse per position.
            FeatureShape::Positions { positions, dim } => {
                let d = *dim as f64;
                positions * (good * d * d + d * d * d)
            }
        }
    }

    /// Multiply-adds of scoring `scored` images with a model fitted on `good` images: a quadratic
    /// form per level, or each position's search through the bank.
    pub fn score_work(&self, good: f64, scored: f64) -> f64 {
        match self {
            FeatureShape::Pooled { widths } => {
                widths.iter().map(|&d| (d * d) as f64).sum::<f64>() * scored
            }
            FeatureShape::Patches { rows_per_image, dim, coreset } => {
                let bank = (rows_per_image * good * coreset.min(1.0)).ceil();
                rows_per_image * scored * bank * *dim as f64
            }
            FeatureShape::Positions { positions, dim } => positions * scored * (dim * dim) as f64,
        }
    }
}

/// The fits one family runs in tune: per fit, the good images it fits on and the images it
/// scores; the plain CV's fits first.
#[derive(Debug, Clone)]
pub(super) struct FitPlan {
    fits: Vec<(f64, f64)>,
    plain: usize,
}

impl FitPlan {
    /// Nested CV on `images` (`good` of them good): the plain CV (each fold fits on the other
    /// folds' good images and scores them and its own images) and, per outer fold, the inner CV
    /// on its training part (fits on the inner training part's good images, scores the inner
    /// held-out images).
    pub fn nested(images: usize, good: usize, folds: usize, inner_folds: usize) -> Self {
        let (n, g) = (images as f64, good as f64);
        let (k, m) = (folds as f64, inner_folds as f64);
        let outer_good = g * (k - 1.0) / k;
        let outer_images = n * (k - 1.0) / k;
        let mut fits = vec![(outer_good, outer_good + n / k); folds];
        let inner = (outer_good * (m - 1.0) / m, outer_images / m);
        fits.extend(std::iter::repeat_n(inner, folds * inner_folds));
        FitPlan { fits, plain: folds }
    }

    /// Good images of the largest fit.
    pub fn largest_fit(&self) -> f64 {
        self.fits.iter().map(|&(good, _)| good).fold(0.0, f64::max)
    }

    /// Seconds of the plain CV's fits and of the inner CVs' fits, under `work`.
    fn seconds(&self, work: &WorkModel) -> (f64, f64) {
        let seconds = |fits: &[(f64, f64)]| {
            fits.iter().map(|&(good, scored)| work.seconds(good, scored)).sum::<f64>()
        };
        (seconds(&self.fits[..self.plain]), seconds(&self.fits[self.plain..]))
    }
}

/// How a family's fits turn into seconds: one scorer's work at its speed, or an ensemble's
/// members'.
#[derive(Debug, Clone)]
pub(super) enum WorkModel {
    Single(FeatureShape, ScorerSpeed),
    /// Each member fits once on the good images and once per cross-fitting fold on the others
    /// (scoring the held-out part), then scores the scored images.
    Ensemble {
        members: Vec<(FeatureShape, ScorerSpeed)>,
        folds: usize,
    },
}

impl WorkModel {
    /// Seconds of one fit on `good` images that then scores `scored` images.
    pub fn seconds(&self, good: f64, scored: f64) -> f64 {
        let single = |shape: &FeatureShape, speed: &ScorerSpeed, good: f64, scored: f64| {
            shape.fit_work(good) / speed.fit_per_second
                + shape.score_work(good, scored) / speed.score_per_second
        };
        match self {
            WorkModel::Single(shape, speed) => single(shape, speed, good, scored),
            WorkModel::Ensemble { members, folds } => {
                let k = *folds as f64;
                members
                    .iter()
                    .map(|(shape, speed)| {
                        single(shape, speed, good, scored)
                            + k * single(shape, speed, good * (k - 1.0) / k, good / k)
                    })
                    .sum()
            }
        }
    }
}

/// How fast one scorer fits and scores on this machine, in multiply-adds of its work model per
/// second (timed on synthetic features by the probe).
#[derive(Debug, Clone, Copy)]
pub(super) struct ScorerSpeed {
    pub fit_per_second: f64,
    pub score_per_second: f64,
}

/// A family's expected costs before it runs, from the probe.
#[derive(Debug, Clone)]
pub(super) struct FamilyPrior {
    pub lead: Candidate,
    /// Per feature read (see [`reads`]): seconds of its network pass over all images (cache
    /// reads where the probe found them cached).
    pub pass_seconds: Vec<f64>,
    pub fit_score_seconds: f64,
    /// The plain CV's share of the fits' seconds (the rest is the inner CVs').
    pub plain_share: f64,
}

impl FamilyPrior {
    /// `seconds_per_image`: one per read of `lead`.
    pub fn new(
        lead: &Candidate,
        work: &WorkModel,
        seconds_per_image: &[f64],
        images: usize,
        plan: &FitPlan,
    ) -> Self {
        let (plain, inner) = plan.seconds(work);
        let total = plain + inner;
        FamilyPrior {
            lead: lead.clone(),
            pass_seconds: seconds_per_image.iter().map(|s| s * images as f64).collect(),
            fit_score_seconds: total,
            plain_share: if total > 0.0 { plain / total } else { 0.5 },
        }
    }
}

/// The features a candidate reads, each as the single-scorer candidate that reads them: the
/// candidate itself, or an ensemble's members on the ensemble's input.
pub(super) fn reads(candidate: &Candidate) -> Vec<Candidate> {
    match &candidate.scorer {
        ScorerSpec::Ensemble(params) => params
            .members
            .iter()
            .map(|member| Candidate {
                backbone: member.backbone.clone(),
                levels: member.levels.clone(),
                size: candidate.size,
                aspect: candidate.aspect,
                scorer: member.scorer.clone(),
            })
            .collect(),
        _ => vec![candidate.clone()],
    }
}

/// Each family's expected seconds before anything has run, split into its network pass (none
/// where an earlier family leaves its features in the cache) and its fits.
pub(super) fn upfront(priors: &[FamilyPrior]) -> Vec<(f64, f64)> {
    let planned: Vec<&FamilyPrior> = priors.iter().collect();
    (0..planned.len()).map(|i| family_split(planned[i], &planned[..i], &[])).collect()
}

/// What one family of candidates (sharing one fit) cost, led by its first candidate, with what
/// the probe expected of it.
#[derive(Debug, Clone)]
pub(super) struct FamilyCost {
    pub lead: Candidate,
    pub network_seconds: f64,
    pub fit_score_seconds: f64,
    pub prior_fit_score_seconds: f64,
}

/// Whether a pass over `earlier`'s features (a single scorer's read) left in the cache the
/// features `later` (another) reads.
pub(super) fn leaves_features_for(earlier: &Candidate, later: &Candidate) -> bool {
    let same_input = (&earlier.backbone, earlier.size, earlier.aspect)
        == (&later.backbone, later.size, later.aspect);
    let stored = match later.scorer.embedding() {
        EmbeddingKind::Pooled => {
            matches!(earlier.scorer.embedding(), EmbeddingKind::Pooled | EmbeddingKind::Patches)
        }
        EmbeddingKind::Patches => {
            earlier.scorer.embedding() == EmbeddingKind::Patches && earlier.levels == later.levels
        }
        _ => false,
    };
    same_input && stored
}

fn same_scorer(a: &ScorerSpec, b: &ScorerSpec) -> bool {
    a.name() == b.name()
}

fn same_scorer_on_backbone(a: &Candidate, b: &Candidate) -> bool {
    same_scorer(&a.scorer, &b.scorer) && a.backbone == b.backbone
}

/// Seconds a family should take, given the families run so far (`done`) and those that will
/// have run before it without having run yet (`planned_before`); see [`family_split`].
pub(super) fn family_seconds(
    next: &FamilyPrior,
    planned_before: &[&FamilyPrior],
    done: &[FamilyCost],
) -> f64 {
    let (network, fits) = family_split(next, planned_before, done);
    network + fits
}

/// [`family_seconds`], split into the network pass and the fits and scoring:
/// - network: none when an earlier family leaves the features it reads in the cache; otherwise
///   the longest pass measured on the same input, else the probe's;
/// - fits and scoring: the probe's model, scaled by how the measured families of the same scorer
///   (on the same backbone where there are any) compared with the model.
fn family_split(
    next: &FamilyPrior,
    planned_before: &[&FamilyPrior],
    done: &[FamilyCost],
) -> (f64, f64) {
    let lead = &next.lead;
    let earlier: Vec<Candidate> = done
        .iter()
        .map(|d| &d.lead)
        .chain(planned_before.iter().map(|p| &p.lead))
        .flat_map(reads)
        .collect();
    // Each read: free when an earlier family, or an earlier member of the same ensemble, left
    // its features in the cache; otherwise the longest pass measured on the same input by a
    // single scorer (an ensemble's time is its members' together), else the probe's.
    let own = reads(lead);
    let network_seconds = own
        .iter()
        .zip(&next.pass_seconds)
        .enumerate()
        .map(|(j, (read, &probed))| {
            if earlier.iter().chain(&own[..j]).any(|e| leaves_features_for(e, read)) {
                return 0.0;
            }
            let same_input = |d: &&FamilyCost| {
                !matches!(d.lead.scorer, ScorerSpec::Ensemble(_))
                    && (&d.lead.backbone, d.lead.size, d.lead.aspect)
                        == (&read.backbone, read.size, read.aspect)
            };
            done.iter()
                .filter(same_input)
                .map(|d| d.network_seconds)
                .reduce(f64::max)
                .unwrap_or(probed)
        })
        .sum();
    let ratio = |keep: &dyn Fn(&FamilyCost) -> bool| {
        let (measured, expected) = done
            .iter()
            .filter(|d| keep(d) && d.prior_fit_score_seconds > 0.0)
            .fold((0.0, 0.0), |(m, e), d| (m + d.fit_score_seconds, e + d.prior_fit_score_seconds));
        (expected > 0.0).then(|| measured / expected)
    };
    // An ensemble with none of its kind measured yet goes by its members' scorers.
    let member_scorers: Vec<&'static str> = match &lead.scorer {
        ScorerSpec::Ensemble(params) => params.members.iter().map(|m| m.scorer.name()).collect(),
        _ => Vec::new(),
    };
    let calibration = ratio(&|d| same_scorer_on_backbone(&d.lead, lead))
        .or_else(|| ratio(&|d| same_scorer(&d.lead.scorer, &lead.scorer)))
        .or_else(|| ratio(&|d| member_scorers.contains(&d.lead.scorer.name())))
        .unwrap_or(1.0);
    (network_seconds, next.fit_score_seconds * calibration)
}

/// Seconds the families of `priors` should take together, in that order, after `done`.
pub(super) fn remaining_seconds(priors: &[&FamilyPrior], done: &[FamilyCost]) -> f64 {
    (0..priors.len()).map(|i| family_seconds(priors[i], &priors[..i], done)).sum()
}

/// Whether a family led by `lead` is the first of its scorer on its backbone: after it, the
/// estimate rests on a new kind of measurement.
pub(super) fn measures_something_new(lead: &Candidate, done: &[FamilyCost]) -> bool {
    !done.iter().any(|d| same_scorer_on_backbone(&d.lead, lead))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backbone::Levels;
    use crate::data::image::Aspect;
    use crate::scorer::{EnsembleParams, KnnParams, MemberSpec, ScorerSpec};

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

    fn prior(lead: Candidate, pass_seconds: f64, fit_score_seconds: f64) -> FamilyPrior {
        FamilyPrior { lead, pass_seconds: vec![pass_seconds], fit_score_seconds, plain_share: 0.5 }
    }

    fn cost(prior: &FamilyPrior, network_seconds: f64, fit_score_seconds: f64) -> FamilyCost {
        FamilyCost {
            lead: prior.lead.clone(),
            network_seconds,
            fit_score_seconds,
            prior_fit_score_seconds: prior.fit_score_seconds,
        }
    }

    #[test]
    fn knn_work_grows_with_the_bank_and_gaussian_work_with_the_width() {
        let patches = FeatureShape::Patches { rows_per_image: 196.0, dim: 304, coreset: 0.1 };
        // Search: every scored position against a bank of a tenth of the fitted positions.
        let bank = (196.0f64 * 600.0 * 0.1).ceil();
        assert_eq!(patches.score_work(600.0, 100.0), 196.0 * 100.0 * bank * 304.0);
        // Selection within one part is quadratic in the rows; parts make it linear.
        let small = patches.fit_work(300.0);
        let double = patches.fit_work(600.0);
        assert!(double > 3.5 * small && double < 4.1 * small, "{small} {double}");
        let parts = patches.fit_work(6000.0) / patches.fit_work(3000.0);
        assert!(parts > 1.5 && parts < 2.5, "{parts}");
        let whole = FeatureShape::Patches { rows_per_image: 196.0, dim: 304, coreset: 1.0 };
        assert_eq!(whole.fit_work(600.0), 0.0);
        assert!(whole.score_work(600.0, 100.0) > 9.9 * patches.score_work(600.0, 100.0));
        let l7 = FeatureShape::Pooled { widths: vec![192] };
        let l5_9 = FeatureShape::Pooled { widths: vec![80, 112, 192, 320, 1280] };
        assert!(l5_9.fit_work(600.0) > 100.0 * l7.fit_work(600.0));
        // Nested CV with 3 × 3 folds: 3 plain fits and 9 inner ones.
        let plan = FitPlan::nested(900, 600, 3, 3);
        assert_eq!((plan.fits.len(), plan.plain), (12, 3));
        assert_eq!(plan.fits[0], (400.0, 700.0));
        assert_eq!(plan.fits[3], (400.0 * 2.0 / 3.0, 200.0));
        // The plain CV scores about as many positions as all the inner CVs, against larger
        // banks: most of knn's time.
        let speed = ScorerSpeed { fit_per_second: 1e9, score_per_second: 1e9 };
        let prior = FamilyPrior::new(
            &candidate("efficientnet_lite0", knn(), Aspect::Squash),
            &WorkModel::Single(patches.clone(), speed),
            &[0.02],
            900,
            &plan,
        );
        assert_eq!(prior.pass_seconds, vec![18.0]);
        assert!(prior.plain_share > 0.55 && prior.plain_share < 0.8, "{}", prior.plain_share);
    }

    #[test]
    fn estimates_follow_the_cache_and_calibrate_by_scorer_and_backbone() {
        let gaussian =
            prior(candidate("efficientnet_lite0", ScorerSpec::Gaussian, Aspect::Squash), 30.0, 2.0);
        let knn_lite0 = prior(candidate("efficientnet_lite0", knn(), Aspect::Squash), 40.0, 100.0);
        // Before anything runs: the probe's figures; the knn pass is new, the Gaussian's after a
        // knn pass on the same input is not.
        assert_eq!(family_seconds(&knn_lite0, &[&gaussian], &[]), 140.0);
        assert_eq!(family_seconds(&gaussian, &[&knn_lite0], &[]), 2.0);
        assert_eq!(remaining_seconds(&[&gaussian, &knn_lite0], &[]), 172.0);
        let planned = [gaussian.clone(), knn_lite0.clone(), gaussian.clone()];
        assert_eq!(upfront(&planned), vec![(30.0, 2.0), (40.0, 100.0), (0.0, 2.0)]);

        // The Gaussian ran at twice its model's time: other Gaussians are scaled, knn is not, and
        // its pass costs what the measured pass on the same input cost.
        let done = vec![cost(&gaussian, 35.0, 4.0)];
        let mut wider = gaussian.clone();
        wider.lead.levels = Levels::new(vec![6, 7, 8]).unwrap();
        wider.fit_score_seconds = 5.0;
        assert_eq!(family_seconds(&wider, &[], &done), 10.0);
        assert_eq!(family_seconds(&knn_lite0, &[], &done), 135.0);
        // A kept aspect is a new input: the probe's pass for it.
        let mut keep = gaussian.clone();
        keep.lead.aspect = Aspect::Keep;
        keep.pass_seconds = vec![50.0];
        assert_eq!(family_seconds(&keep, &[], &done), 54.0);

        // knn ran at half its model on lite0: lite1's knn is scaled so until one of its own runs.
        let done = [done, vec![cost(&knn_lite0, 45.0, 50.0)]].concat();
        let knn_lite1 = prior(candidate("efficientnet_lite1", knn(), Aspect::Squash), 60.0, 300.0);
        assert_eq!(family_seconds(&knn_lite1, &[], &done), 210.0);
        let lite1_done = [done.clone(), vec![cost(&knn_lite1, 60.0, 600.0)]].concat();
        let mut knn_lite1_b = knn_lite1.clone();
        knn_lite1_b.lead.levels = Levels::new(vec![6, 7, 8]).unwrap();
        assert_eq!(family_seconds(&knn_lite1_b, &[], &lite1_done), 60.0 + 600.0);
        // The same knn features again come from the cache; measured passes beat the probe's.
        assert_eq!(family_seconds(&knn_lite0, &[], &done), 50.0);
        let mut knn_wider = knn_lite0.clone();
        knn_wider.lead.levels = Levels::new(vec![6, 7, 8]).unwrap();
        assert_eq!(family_seconds(&knn_wider, &[], &done), 45.0 + 50.0);
        assert!(!measures_something_new(&knn_lite0.lead, &done));
        assert!(measures_something_new(&knn_lite1.lead, &done));
    }

    fn ensemble(backbones: &[&str]) -> Candidate {
        let knn = KnnParams { coreset: 0.1, border: 1, seed: 0 };
        let members = backbones
            .iter()
            .map(|b| MemberSpec {
                backbone: b.to_string(),
                levels: Levels::new(vec![6, 7]).unwrap(),
                scorer: ScorerSpec::Knn(knn.clone()),
            })
            .collect();
        Candidate {
            backbone: backbones[0].into(),
            levels: Levels::new(vec![6, 7]).unwrap(),
            size: None,
            aspect: Aspect::Squash,
            scorer: ScorerSpec::Ensemble(EnsembleParams::new(members)),
        }
    }

    /// Swaps an ensemble's two members.
    fn params_swap(prior: &mut FamilyPrior) {
        let ScorerSpec::Ensemble(params) = &mut prior.lead.scorer else { unreachable!() };
        params.members.swap(0, 1);
    }

    #[test]
    fn an_ensemble_costs_its_members_with_their_cross_fitting() {
        let shape = FeatureShape::Pooled { widths: vec![100] };
        let speed = ScorerSpeed { fit_per_second: 1e6, score_per_second: 1e6 };
        let single = WorkModel::Single(shape.clone(), speed);
        let two = WorkModel::Ensemble { members: vec![(shape.clone(), speed); 2], folds: 5 };
        // Per member: the fit itself, and five fits on four fifths scoring the fifth left out.
        let expected = 2.0 * (single.seconds(600.0, 300.0) + 5.0 * single.seconds(480.0, 120.0));
        assert!((two.seconds(600.0, 300.0) - expected).abs() < 1e-9);

        // Its reads are its members' on its own input.
        let both = ensemble(&["efficientnet_lite0", "efficientnet_lite1"]);
        let read = reads(&both);
        assert_eq!(read.len(), 2);
        assert_eq!(read[1].backbone, "efficientnet_lite1");
        assert_eq!(read[1].scorer, knn());
        assert_eq!(read[1].levels.to_string(), "6,7");

        // Network: a member's pass is free once a knn family on its backbone read the same
        // levels, and costs the measured single pass on its input otherwise.
        let both = FamilyPrior {
            lead: both,
            pass_seconds: vec![40.0, 60.0],
            fit_score_seconds: 1000.0,
            plain_share: 0.5,
        };
        let mut lite0 = prior(candidate("efficientnet_lite0", knn(), Aspect::Squash), 40.0, 100.0);
        lite0.lead.levels = Levels::new(vec![6, 7]).unwrap();
        assert_eq!(family_split(&both, &[], &[]), (100.0, 1000.0));
        assert_eq!(family_split(&both, &[&lite0], &[]), (60.0, 1000.0));
        let gaussian_lite1 =
            prior(candidate("efficientnet_lite1", ScorerSpec::Gaussian, Aspect::Squash), 30.0, 2.0);
        let done = [cost(&lite0, 45.0, 200.0), cost(&gaussian_lite1, 70.0, 2.0)];
        // knn ran at twice its model: the first ensemble of knn members is scaled alike.
        assert_eq!(family_split(&both, &[], &done), (70.0, 2000.0));
        // Once an ensemble ran, later ensembles go by it, and the ensemble's network time is no
        // single pass's.
        let done = [done.to_vec(), vec![cost(&both, 300.0, 1500.0)]].concat();
        assert_eq!(family_split(&both, &[], &done), (0.0, 1500.0));
        // Within one ensemble, a knn member's pass leaves the pooled features a later Gaussian
        // member on the same backbone reads (not the other way round).
        let mut mixed = both.clone();
        let ScorerSpec::Ensemble(params) = &mut mixed.lead.scorer else { unreachable!() };
        params.members[1] = MemberSpec {
            backbone: "efficientnet_lite0".into(),
            levels: Levels::new(vec![7]).unwrap(),
            scorer: ScorerSpec::Gaussian,
        };
        assert_eq!(family_split(&mixed, &[], &[]).0, 40.0);
        params_swap(&mut mixed);
        assert_eq!(family_split(&mixed, &[], &[]).0, 100.0);
        let mut lite2 = prior(candidate("efficientnet_lite2", knn(), Aspect::Squash), 80.0, 10.0);
        lite2.lead.levels = Levels::new(vec![7]).unwrap();
        assert_eq!(family_split(&lite2, &[], &done).0, 80.0);
    }
}

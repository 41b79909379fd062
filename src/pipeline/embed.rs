//! Embedding images for a scorer: opens the backbone(s) it reads and extracts what each part
//! reads. A single scorer reads the run's backbone; an ensemble's members may each name their
//! own, and members sharing a backbone share one loaded network (and, with the feature cache,
//! one network pass: patch extraction stores the pooled levels as a by-product).

use std::path::PathBuf;

use crate::backbone::{Backbone, Levels};
use crate::data::image::Preprocess;
use crate::error::{Error, Result};
use crate::features::{EmbeddingKind, Embeddings, FeatureSpec, LevelMaps, OnBadImage};
use crate::model::{BackboneRef, MemberRecord, RunModel};
use crate::pipeline::Runtime;
use crate::progress::Progress;
use crate::scorer::{MemberSpec, ScorerSpec};

/// A backbone opened once, with its preprocessing.
pub struct Opened {
    pub backbone: Backbone,
    pub preprocess: Preprocess,
}

/// What one part of the scorer reads: which opened backbone, which levels, which kind.
struct Part {
    network: usize,
    levels: Levels,
    kind: EmbeddingKind,
}

/// The backbones a scorer reads, opened, and how to embed images for it.
pub struct Embedder<'r> {
    runtime: &'r Runtime,
    /// `networks[0]` is the run's own backbone.
    networks: Vec<Opened>,
    /// One part for a single scorer; one per member for an ensemble.
    parts: Vec<Part>,
    ensemble: bool,
}

impl<'r> Embedder<'r> {
    /// Opens what `scorer` reads with the features of `spec` (fit, eval).
    pub fn open(runtime: &'r Runtime, spec: &FeatureSpec, scorer: &ScorerSpec) -> Result<Self> {
        let (backbone, preprocess) = runtime.open_backbone(spec)?;
        Embedder::assemble(
            runtime,
            Opened { backbone, preprocess },
            scorer,
            &spec.levels,
            |_, member, name| {
                runtime.open_backbone(&FeatureSpec {
                    backbone: name.to_string(),
                    levels: member.levels.clone(),
                    size: spec.size,
                    aspect: spec.aspect,
                })
            },
        )
    }

    /// Opens what a fitted run reads, checking each backbone against the one it was fitted with
    /// (score, serve).
    pub fn for_run(
        runtime: &'r Runtime,
        run: &RunModel,
        run_dir: &std::path::Path,
    ) -> Result<Self> {
        let backbone =
            runtime.load_backbone(&run.meta.backbone.name, &run.meta.preprocess, false)?;
        run.check_backbone(run_dir, &backbone)?;
        if let ScorerSpec::Ensemble(params) = &run.meta.scorer {
            if run.meta.members.len() != params.members.len() {
                return Err(Error::input(
                    run_dir.join(crate::model::MODEL_JSON),
                    "the ensemble's members do not match their records",
                ));
            }
        }
        Embedder::assemble(
            runtime,
            Opened { backbone, preprocess: run.meta.preprocess.clone() },
            &run.meta.scorer,
            &run.meta.levels,
            |index, _, name| {
                // Checked above: one record per member.
                let record = &run.meta.members[index];
                let backbone = runtime.load_backbone(name, &record.preprocess, false)?;
                check_identity(&backbone, &record.backbone, run_dir)?;
                Ok((backbone, record.preprocess.clone()))
            },
        )
    }

    /// The parts `scorer` reads over the opened `primary` backbone: one on `levels` for a single
    /// scorer; one per member for an ensemble, member `index`'s backbone opened by
    /// `open_member(index, member, name)` the first time a member names it.
    fn assemble(
        runtime: &'r Runtime,
        primary: Opened,
        scorer: &ScorerSpec,
        levels: &Levels,
        mut open_member: impl FnMut(usize, &MemberSpec, &str) -> Result<(Backbone, Preprocess)>,
    ) -> Result<Self> {
        let mut embedder =
            Embedder { runtime, networks: vec![primary], parts: Vec::new(), ensemble: false };
        match scorer {
            ScorerSpec::Ensemble(params) => {
                embedder.ensemble = true;
                for (index, member) in params.members.iter().enumerate() {
                    let network = embedder
                        .network_for(&member.backbone, |name| open_member(index, member, name))?;
                    embedder.parts.push(Part {
                        network,
                        levels: member.levels.clone(),
                        kind: member.scorer.embedding(),
                    });
                }
            }
            other => embedder.parts.push(Part {
                network: 0,
                levels: levels.clone(),
                kind: other.embedding(),
            }),
        }
        Ok(embedder)
    }

    /// The index of the opened network named `name`, opening it with `open` the first time.
    fn network_for(
        &mut self,
        name: &str,
        open: impl FnOnce(&str) -> Result<(Backbone, Preprocess)>,
    ) -> Result<usize> {
        if let Some(i) = self.networks.iter().position(|o| o.backbone.info().name == name) {
            return Ok(i);
        }
        let (backbone, preprocess) = open(name)?;
        self.networks.push(Opened { backbone, preprocess });
        Ok(self.networks.len() - 1)
    }

    /// How many parts embed each image: one, or an ensemble's member count.
    pub fn parts(&self) -> usize {
        self.parts.len()
    }

    /// The run's own backbone and preprocessing.
    pub fn primary(&self) -> &Opened {
        &self.networks[0]
    }

    /// The run's own backbone and preprocessing, by value.
    pub fn into_primary(mut self) -> Opened {
        self.networks.swap_remove(0)
    }

    /// The opened networks (the run's own first) and, per part, the index of the network it
    /// reads.
    pub fn into_networks(self) -> (Vec<Opened>, Vec<usize>) {
        let part_networks = self.parts.iter().map(|part| part.network).collect();
        (self.networks, part_networks)
    }

    /// The preprocessing of each part's network (the run's own for a single scorer; one per
    /// member for an ensemble).
    pub fn part_preprocesses(&self) -> Vec<Preprocess> {
        self.parts.iter().map(|part| self.networks[part.network].preprocess.clone()).collect()
    }

    /// Backbone and preprocessing of each ensemble member (empty for a single scorer).
    pub fn member_records(&self) -> Vec<MemberRecord> {
        if !self.ensemble {
            return Vec::new();
        }
        self.parts
            .iter()
            .map(|part| {
                let opened = &self.networks[part.network];
                MemberRecord {
                    backbone: BackboneRef::of(&opened.backbone),
                    preprocess: opened.preprocess.clone(),
                }
            })
            .collect()
    }

    /// [`Embedder::embed`], also keeping the spatial map of `level` of every image the network
    /// runs on where the scorer reads the run's own pooled features (the review page maps
    /// those images without a second pass); other scorers keep none.
    pub fn embed_keeping_maps(
        &self,
        paths: &[PathBuf],
        policy: OnBadImage,
        progress: &dyn Progress,
        level: u8,
    ) -> Result<(Embeddings, Vec<Error>, usize, LevelMaps)> {
        let part = &self.parts[0];
        if self.ensemble || part.kind != EmbeddingKind::Pooled {
            let (embeddings, failures, hits) = self.embed(paths, policy, progress)?;
            return Ok((embeddings, failures, hits, LevelMaps::default()));
        }
        let opened = &self.networks[0];
        let mut extractor =
            self.runtime.extractor(&opened.backbone, &opened.preprocess, &part.levels)?;
        extractor.map_level = Some(level);
        let extraction = extractor.extract(paths, policy, progress)?;
        Ok((
            Embeddings::Pooled(extraction.features),
            extraction.failures,
            extraction.cache_hits,
            extraction.maps,
        ))
    }

    /// Embeds `paths` for the scorer, in order: the embeddings of the images every part could
    /// read, the errors of the others (once per image), and the cache hits.
    pub fn embed(
        &self,
        paths: &[PathBuf],
        policy: OnBadImage,
        progress: &dyn Progress,
    ) -> Result<(Embeddings, Vec<Error>, usize)> {
        if !self.ensemble {
            let part = &self.parts[0];
            let opened = &self.networks[0];
            let extractor =
                self.runtime.extractor(&opened.backbone, &opened.preprocess, &part.levels)?;
            return extractor.embed(paths, part.kind, policy, progress);
        }
        // Patch members first: their pass fills the pooled cache for pooled members.
        let mut order: Vec<usize> = (0..self.parts.len()).collect();
        order.sort_by_key(|&i| self.parts[i].kind == EmbeddingKind::Pooled);
        let mut slots: Vec<Option<Embeddings>> = (0..self.parts.len()).map(|_| None).collect();
        let mut failures = Vec::new();
        let mut hits = 0;
        for i in order {
            let part = &self.parts[i];
            let opened = &self.networks[part.network];
            let extractor =
                self.runtime.extractor(&opened.backbone, &opened.preprocess, &part.levels)?;
            let (embeddings, part_failures, part_hits) =
                extractor.embed(paths, part.kind, policy, progress)?;
            // Every part decodes the same files: the failures are the same images.
            if failures.is_empty() {
                failures = part_failures;
            }
            hits += part_hits;
            slots[i] = Some(embeddings);
        }
        let members: Vec<Embeddings> = slots.into_iter().flatten().collect();
        Ok((Embeddings::Members(members), failures, hits))
    }
}

/// Checks that `backbone` is the network recorded as `expected`.
fn check_identity(
    backbone: &Backbone,
    expected: &BackboneRef,
    run_dir: &std::path::Path,
) -> Result<()> {
    if backbone.sha256() != expected.torchscript_sha256 {
        return Err(Error::input(
            backbone.identity_path(),
            format!(
                "the ensemble in {} was fitted with another {}; refit or restore that backbone",
                run_dir.display(),
                expected.name
            ),
        ));
    }
    Ok(())
}
